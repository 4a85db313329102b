//! Frames in: each frame type's rules (RFC 9113 §6) and what it does to
//! the streams and windows; a complete header block becomes a request.

use super::*;

impl Session {
    pub(super) fn on_frame(&mut self, head: Head, payload: &[u8]) {
        if !self.settings_seen && head.kind != frame::SETTINGS {
            return self.fail(
                ErrorCode::ProtocolError,
                "the first frame is not SETTINGS (RFC 9113 §3.4)",
            );
        }
        if let Some((stream, _, _)) = &self.continuation {
            if head.kind != frame::CONTINUATION || head.stream != *stream {
                return self.fail(
                    ErrorCode::ProtocolError,
                    "a frame inside a header block (RFC 9113 §6.10)",
                );
            }
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    self.fail(ErrorCode::ProtocolError, "PRIORITY on stream 0");
                } else if payload.len() != 5 {
                    self.reset(
                        head.stream,
                        ErrorCode::FrameSizeError,
                        "PRIORITY not 5 bytes",
                    );
                }
            }
            frame::RST_STREAM => self.on_rst_stream(head, payload),
            frame::SETTINGS => self.on_settings(head, payload),
            frame::PUSH_PROMISE => {
                self.fail(ErrorCode::ProtocolError, "PUSH_PROMISE from a client")
            }
            frame::PING => {
                if head.stream != 0 {
                    self.fail(ErrorCode::ProtocolError, "PING on a stream");
                } else if payload.len() != 8 {
                    self.fail(ErrorCode::FrameSizeError, "PING not 8 bytes");
                } else if !head.has(frame::ACK) {
                    frame::put_ping_ack(&mut self.out, payload);
                }
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    self.fail(ErrorCode::ProtocolError, "GOAWAY on a stream");
                } else {
                    self.peer_gone_away = true;
                }
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            _ => {} // unknown types are ignored (RFC 9113 §4.1)
        }
    }

    pub(super) fn on_settings(&mut self, head: Head, payload: &[u8]) {
        if head.stream != 0 {
            return self.fail(ErrorCode::ProtocolError, "SETTINGS on a stream");
        }
        if head.has(frame::ACK) {
            if !payload.is_empty() {
                self.fail(ErrorCode::FrameSizeError, "a SETTINGS ACK with a payload");
            }
            return;
        }
        if payload.len() % 6 != 0 {
            return self.fail(
                ErrorCode::FrameSizeError,
                "SETTINGS not a multiple of 6 bytes",
            );
        }
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH | frame::SETTINGS_ENABLE_CONNECT_PROTOCOL
                    if value > 1 =>
                {
                    return self.fail(ErrorCode::ProtocolError, "a boolean setting above 1");
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > MAX_WINDOW {
                        return self.fail(
                            ErrorCode::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        );
                    }
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    let mut over = false;
                    for (id, s) in self.streams.iter_mut() {
                        s.send_window += delta;
                        over |= s.send_window > MAX_WINDOW;
                        if s.send_window > 0 && s.unsent() > 0 && !s.queued {
                            s.queued = true;
                            self.sendable.push_back(*id);
                        }
                    }
                    if over {
                        return self
                            .fail(ErrorCode::FlowControlError, "a stream window over 2^31-1");
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return self.fail(
                            ErrorCode::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        );
                    }
                    self.peer_max_frame = value as usize;
                }
                _ => {} // table size (our encoder keeps no table), limits we do not exceed
            }
        }
        frame::put_settings(&mut self.out, &[], true);
        if !self.settings_seen {
            self.settings_seen = true;
            self.deadline = None;
        }
    }

    pub(super) fn on_window_update(&mut self, head: Head, payload: &[u8]) {
        if payload.len() != 4 {
            return self.fail(ErrorCode::FrameSizeError, "WINDOW_UPDATE not 4 bytes");
        }
        let inc = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if inc == 0 {
                return self.fail(ErrorCode::ProtocolError, "a WINDOW_UPDATE of 0");
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return self.fail(
                    ErrorCode::FlowControlError,
                    "the connection window over 2^31-1",
                );
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            if head.stream > self.last_stream {
                self.fail(ErrorCode::ProtocolError, "WINDOW_UPDATE on an idle stream");
            }
            return;
        };
        if inc == 0 {
            return self.reset(
                head.stream,
                ErrorCode::ProtocolError,
                "a WINDOW_UPDATE of 0",
            );
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            return self.reset(
                head.stream,
                ErrorCode::FlowControlError,
                "a stream window over 2^31-1",
            );
        }
        self.queue(head.stream);
    }

    pub(super) fn on_rst_stream(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.fail(ErrorCode::ProtocolError, "RST_STREAM on stream 0");
        }
        if payload.len() != 4 {
            return self.fail(ErrorCode::FrameSizeError, "RST_STREAM not 4 bytes");
        }
        if head.stream > self.last_stream {
            return self.fail(ErrorCode::ProtocolError, "RST_STREAM on an idle stream");
        }
        let code = ErrorCode::from_code(u32::from_be_bytes([
            payload[0], payload[1], payload[2], payload[3],
        ]));
        let Some(s) = self.streams.remove(&head.stream) else {
            return;
        };
        self.events.push_back(Event::Reset {
            stream: head.stream,
            code,
            by_peer: true,
            why: format!("the client reset the stream ({code})"),
        });
        if s.answer.is_unanswered() {
            if self.now.duration_since(self.resets_since) > RESET_WINDOW {
                self.resets_since = self.now;
                self.early_resets = 0;
            }
            self.early_resets += 1;
            if self.early_resets > MAX_EARLY_RESETS {
                self.fail(
                    ErrorCode::EnhanceYourCalm,
                    "over 200 streams reset before their answer within a second (rapid reset)",
                );
            }
        }
    }

    pub(super) fn on_data(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.fail(ErrorCode::ProtocolError, "DATA on stream 0");
        }
        let Some(data) = unpad(head, payload) else {
            return self.fail(ErrorCode::ProtocolError, "padding longer than the frame");
        };
        let len = payload.len() as i64;
        self.recv_window -= len;
        if self.recv_window < 0 {
            return self.fail(
                ErrorCode::FlowControlError,
                "DATA over the connection window",
            );
        }
        // The connection window is given back on receipt: what a stream
        // holds is bounded by its own window.
        self.recv_unacked += len;
        if self.recv_unacked >= CONNECTION_WINDOW / 2 {
            frame::put_window_update(&mut self.out, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked;
            self.recv_unacked = 0;
        }
        let id = head.stream;
        let Some(s) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return self.fail(ErrorCode::ProtocolError, "DATA on an idle stream");
            }
            frame::put_rst_stream(&mut self.out, id, ErrorCode::StreamClosed);
            return;
        };
        if s.recv_ended {
            return self.reset(id, ErrorCode::StreamClosed, "DATA after END_STREAM");
        }
        s.recv_window -= len;
        if s.recv_window < 0 {
            return self.reset(
                id,
                ErrorCode::FlowControlError,
                "DATA over the stream window",
            );
        }
        s.received += data.len() as u64;
        if s.content_length.is_some_and(|n| s.received > n) {
            return self.reset(
                id,
                ErrorCode::ProtocolError,
                "DATA beyond content-length (RFC 9113 §8.1.1)",
            );
        }
        if s.detached {
            // Nobody reads it any more: the window goes back at once.
            frame::put_window_update(&mut self.out, id, payload.len() as u32);
            s.recv_window += len;
            if head.has(frame::END_STREAM) {
                self.end_of_request(id);
            }
            return;
        }
        // Padding is given back with the data it came with.
        s.inbound_data += payload.len();
        if s.chunked && !data.is_empty() {
            s.inbound
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            s.inbound.extend_from_slice(data);
            s.inbound.extend_from_slice(b"\r\n");
        } else {
            s.inbound.extend_from_slice(data);
        }
        if head.has(frame::END_STREAM) {
            self.end_of_request(id);
        }
        self.events.push_back(Event::Readable(id));
    }

    /// The peer's END_STREAM.
    pub(super) fn end_of_request(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_ended = true;
        if s.content_length.is_some_and(|n| s.received != n) {
            return self.reset(
                id,
                ErrorCode::ProtocolError,
                "DATA short of content-length (RFC 9113 §8.1.1)",
            );
        }
        if s.chunked {
            s.inbound.extend_from_slice(b"0\r\n\r\n");
        }
        self.retire(id);
    }

    pub(super) fn on_headers(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.fail(ErrorCode::ProtocolError, "HEADERS on stream 0");
        }
        let Some(mut block) = unpad(head, payload) else {
            return self.fail(ErrorCode::ProtocolError, "padding longer than the frame");
        };
        if head.has(frame::PRIORITY_FLAG) {
            let Some(rest) = block.get(5..) else {
                return self.fail(
                    ErrorCode::FrameSizeError,
                    "HEADERS too short for its priority",
                );
            };
            block = rest;
        }
        let end_stream = head.has(frame::END_STREAM);
        if head.has(frame::END_HEADERS) {
            self.on_block(head.stream, end_stream, block.to_vec());
        } else {
            self.continuation = Some((head.stream, end_stream, block.to_vec()));
        }
    }

    pub(super) fn on_continuation(&mut self, head: Head, payload: &[u8]) {
        let Some((stream, end_stream, mut block)) = self.continuation.take() else {
            return self.fail(ErrorCode::ProtocolError, "CONTINUATION without HEADERS");
        };
        block.extend_from_slice(payload);
        if block.len() > self.config.max_header_list {
            return self.fail(
                ErrorCode::EnhanceYourCalm,
                "a header block over the header list size",
            );
        }
        if head.has(frame::END_HEADERS) {
            self.on_block(stream, end_stream, block);
        } else {
            self.continuation = Some((stream, end_stream, block));
        }
    }

    /// A complete header block: a request, or a request's trailers.
    pub(super) fn on_block(&mut self, id: u32, end_stream: bool, block: Vec<u8>) {
        let mut list = Vec::new();
        let mut size = 0;
        let max = self.config.max_header_list;
        // Every field is decoded (the table must stay in step with the
        // client's), but fields past the limit are not kept: a small block
        // of references to a large entry would otherwise decode to far
        // more than its size (an HPACK bomb).
        let decoded = self.decoder.decode_with_cb(&block, |n, v| {
            size += n.len() + v.len() + 32;
            if size <= max {
                list.push((n.into_owned(), v.into_owned()));
            }
        });
        if let Err(e) = decoded {
            return self.fail(ErrorCode::CompressionError, &format!("HPACK: {e}"));
        }
        if let Some(s) = self.streams.get(&id) {
            if s.recv_ended {
                // Half-closed (remote): nothing but WINDOW_UPDATE, PRIORITY
                // and RST_STREAM may come (RFC 9113 §5.1).
                return self.reset(id, ErrorCode::StreamClosed, "HEADERS after END_STREAM");
            }
            // Trailers: they end the request; their fields are not used.
            if !end_stream {
                return self.reset(id, ErrorCode::ProtocolError, "trailers without END_STREAM");
            }
            self.end_of_request(id);
            self.events.push_back(Event::Readable(id));
            return;
        }
        if id % 2 == 0 || id <= self.last_stream {
            return self.fail(
                if id % 2 == 0 {
                    ErrorCode::ProtocolError
                } else {
                    ErrorCode::StreamClosed
                },
                "HEADERS on a stream id not new and odd (RFC 9113 §5.1.1)",
            );
        }
        self.last_stream = id;
        if self.draining || self.streams.len() >= self.config.max_streams as usize {
            frame::put_rst_stream(&mut self.out, id, ErrorCode::RefusedStream);
            return;
        }
        if size > self.config.max_header_list {
            return self.answer_directly(id, end_stream, 431, "the header list is over 64 KiB\n");
        }
        let req = match Request::parse(list) {
            Ok(r) => r,
            Err(why) => {
                frame::put_rst_stream(&mut self.out, id, ErrorCode::ProtocolError);
                self.events.push_back(Event::Reset {
                    stream: id,
                    code: ErrorCode::ProtocolError,
                    by_peer: false,
                    why: format!("a malformed request: {why}"),
                });
                return;
            }
        };
        let websocket = match (&req.kind, self.config.websockets) {
            (Kind::WebSocket, WebSockets::Offered) => true,
            (Kind::WebSocket, WebSockets::Refused) => {
                return self.answer_directly(
                    id,
                    end_stream,
                    501,
                    "WebSockets over HTTP/2 are refused here (--http2 refuse-websockets)\n",
                );
            }
            (Kind::WebSocket, WebSockets::NotOffered) => {
                frame::put_rst_stream(&mut self.out, id, ErrorCode::ProtocolError);
                self.events.push_back(Event::Reset {
                    stream: id,
                    code: ErrorCode::ProtocolError,
                    by_peer: false,
                    why: "extended CONNECT without SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3)"
                        .into(),
                });
                return;
            }
            (Kind::OtherProtocol(p), _) => {
                let text = format!("no protocol {p:?} here: only websocket\n");
                return self.answer_directly(id, end_stream, 501, &text);
            }
            (Kind::Connect, _) => {
                return self.answer_directly(
                    id,
                    end_stream,
                    405,
                    "CONNECT to another host is not served here\n",
                );
            }
            (Kind::Plain, _) => false,
        };
        let chunked = !end_stream && !websocket && req.content_length.is_none();
        let stream = Stream {
            inbound: req.http1_head(chunked),
            pos: 0,
            inbound_data: 0,
            chunked,
            tunnel: websocket,
            recv_ended: false,
            eof_given: false,
            received: 0,
            content_length: req.content_length.filter(|_| !websocket),
            recv_window: STREAM_WINDOW,
            send_window: self.peer_initial_window,
            pending: Vec::new(),
            sent: 0,
            end_pending: false,
            sent_end: false,
            starved: false,
            queued: false,
            detached: false,
            answer: Answer::new(websocket, req.method == "HEAD"),
        };
        self.streams.insert(id, Box::new(stream));
        self.events.push_back(Event::Request {
            stream: id,
            websocket,
        });
        if end_stream {
            self.end_of_request(id);
        }
    }

    /// An answer the session gives itself (no session for the stream).
    pub(super) fn answer_directly(&mut self, id: u32, end_stream: bool, status: u16, text: &str) {
        let fields = vec![
            (
                b"content-type".to_vec(),
                b"text/plain; charset=utf-8".to_vec(),
            ),
            (
                b"content-length".to_vec(),
                text.len().to_string().into_bytes(),
            ),
        ];
        let block = encode_head(status, &fields);
        frame::put_headers(&mut self.out, id, &block, false, self.peer_max_frame);
        // Small, and ahead of any DATA of this stream: sent whatever the
        // window (a few bytes over it is what RFC 9113 forbids; stay in it).
        let n = text
            .len()
            .min(self.send_window.max(0) as usize)
            .min(self.peer_initial_window.max(0) as usize);
        if n == text.len() {
            frame::put_data(&mut self.out, id, text.as_bytes(), true);
            self.send_window -= n as i64;
        } else {
            frame::put_data(&mut self.out, id, &[], true);
        }
        if !end_stream {
            frame::put_rst_stream(&mut self.out, id, ErrorCode::NoError);
        }
    }
}
