//! The streams' side: bytes read by a stream's session (window given back),
//! its answer taken and framed as HEADERS and DATA as the windows allow,
//! its end, reset or departure.

use super::*;

impl Session {
    /// Bytes for the stream's session; window is given back once a
    /// stream's received bytes are all read.
    pub fn read(&mut self, id: u32, buf: &mut [u8]) -> Read {
        let Some(s) = self.streams.get_mut(&id) else {
            return Read::Eof;
        };
        let left = s.inbound.len() - s.pos;
        if left > 0 {
            let n = left.min(buf.len());
            buf[..n].copy_from_slice(&s.inbound[s.pos..s.pos + n]);
            s.pos += n;
            if s.pos == s.inbound.len() {
                // Freed, not kept: an idle stream holds no buffer (an
                // active one allocates once per read, which costs less than
                // a kilobyte per idle stream would).
                s.inbound = Vec::new();
                s.pos = 0;
                let credit = std::mem::take(&mut s.inbound_data) as i64;
                if credit > 0 && !s.recv_ended {
                    s.recv_window += credit;
                    frame::put_window_update(&mut self.out, id, credit as u32);
                }
            }
            return Read::Data(n);
        }
        if s.recv_ended && s.tunnel && !s.eof_given {
            s.eof_given = true;
            return Read::Eof;
        }
        Read::Empty
    }

    /// The stream's session's output (HTTP/1.1 bytes): returns how much was
    /// taken (less when the stream's queue is full; [`Event::Writable`]
    /// follows when it has room).
    pub fn write(&mut self, id: u32, bytes: &[u8]) -> usize {
        let Some(s) = self.streams.get_mut(&id) else {
            return bytes.len(); // reset: the bytes have nowhere to go
        };
        if s.sent_end || s.end_pending {
            return bytes.len();
        }
        let room = PENDING_CAP.saturating_sub(s.unsent());
        let take = bytes.len().min(room);
        if take < bytes.len() {
            s.starved = true;
        }
        if take == 0 {
            return 0;
        }
        let mut t = Translated::default();
        if let Err(why) = s.answer.push(&bytes[..take], &mut t) {
            self.reset(id, ErrorCode::InternalError, &why);
            return bytes.len();
        }
        for (status, fields) in &t.heads {
            let block = encode_head(*status, fields);
            frame::put_headers(&mut self.out, id, &block, false, self.peer_max_frame);
        }
        let s = self.streams.get_mut(&id).expect("present above");
        if s.sent > 0 && s.sent * 2 >= s.pending.len() {
            s.pending.drain(..s.sent);
            s.sent = 0;
        }
        s.pending.extend_from_slice(&t.data);
        s.end_pending |= t.done;
        self.queue(id);
        self.pump();
        take
    }

    /// Whether the stream's answer is complete and is not a tunnel (its
    /// session can go).
    pub fn is_answered(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_none_or(|s| s.answer.is_done() || (s.end_pending && !s.tunnel))
    }

    /// Whether the stream's WebSocket was accepted (a `200` sent).
    pub fn is_tunnel(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_some_and(|s| s.answer.is_open_tunnel())
    }

    /// The stream's session shut its write half: END_STREAM once its
    /// answer is out (or a reset when it never answered).
    pub fn end(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.answer.is_unanswered() {
            return self.reset(
                id,
                ErrorCode::InternalError,
                "the stream's session ended unanswered",
            );
        }
        s.end_pending = true;
        self.queue(id);
        self.pump();
    }

    /// Resets the stream (RST_STREAM `code`) and forgets it.
    pub fn reset(&mut self, id: u32, code: ErrorCode, why: &str) {
        if self.streams.remove(&id).is_some() {
            frame::put_rst_stream(&mut self.out, id, code);
            self.events.push_back(Event::Reset {
                stream: id,
                code,
                by_peer: false,
                why: why.to_string(),
            });
        }
        self.check_drained();
    }

    /// The stream's session is gone. An answer not ended is cancelled; an
    /// ended one is still sent, and the stream then goes.
    pub fn forget(&mut self, id: u32, code: ErrorCode) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !(s.end_pending || s.sent_end) {
            self.streams.remove(&id);
            frame::put_rst_stream(&mut self.out, id, code);
            return self.check_drained();
        }
        s.detached = true;
        self.retire(id);
        self.check_drained();
    }

    pub(super) fn queue(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            let ready = (s.unsent() > 0 && s.send_window > 0) || (s.end_pending && !s.sent_end);
            if ready && !s.queued {
                s.queued = true;
                self.sendable.push_back(id);
            }
        }
    }

    /// Frames DATA from the streams in turn while the windows and the
    /// output cap allow.
    pub(super) fn pump(&mut self) {
        while self.output_len() < OUT_CAP {
            let Some(id) = self.sendable.pop_front() else {
                return;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            let unsent = s.unsent();
            let n = unsent
                .min(self.peer_max_frame)
                .min(self.send_window.max(0) as usize)
                .min(s.send_window.max(0) as usize);
            if n == 0 && unsent > 0 {
                if self.send_window <= 0 {
                    // The connection window: every stream waits for it.
                    s.queued = true;
                    self.sendable.push_front(id);
                    return;
                }
                continue; // the stream's own window: its WINDOW_UPDATE requeues it
            }
            let end = s.end_pending && n == unsent && !s.sent_end;
            frame::put_data(&mut self.out, id, &s.pending[s.sent..s.sent + n], end);
            s.sent += n;
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            if s.sent == s.pending.len() {
                s.pending = Vec::new();
                s.sent = 0;
            }
            if end {
                s.sent_end = true;
            }
            if s.starved && s.unsent() < PENDING_CAP / 2 {
                s.starved = false;
                self.events.push_back(Event::Writable(id));
            }
            if end {
                self.retire(id);
            } else {
                self.queue(id);
            }
        }
    }

    /// A stream both sides ended (and whose session is gone) leaves the table.
    pub(super) fn retire(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.sent_end && s.detached {
            if !s.recv_ended {
                if s.tunnel {
                    // A WebSocket's END_STREAM is answered by the client's.
                    return;
                }
                // The answer is complete: the client need not send the rest
                // (RFC 9113 §8.1).
                frame::put_rst_stream(&mut self.out, id, ErrorCode::NoError);
            }
            self.streams.remove(&id);
        }
    }
}
