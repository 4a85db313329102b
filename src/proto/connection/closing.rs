//! Closing: our close frame from decided to written ([`OurClose`]), the
//! peer's close, failing on a protocol error, shedding and aborting, and the
//! flushing that ends every connection.

use std::time::Instant;

use super::super::close::CloseCode;
use super::super::error::ProtocolError;
use super::super::message::validate_utf8_prefix;
use super::{Chunk, Connection, Item, OpCode, State, What};

/// Our close frame, from the moment it is decided until its last byte is
/// written. What `/stats` reports as sent is only [`OurClose::Written`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OurClose {
    /// No close decided.
    None,
    /// Decided, behind events the application has not taken yet
    /// (`Item::Close`) or echoes held by `delay`: answers may still be
    /// queued ahead of it.
    Pending(CloseCode),
    /// Its turn came, behind echoes held by `delay`: those go out first,
    /// nothing new is queued (a message that completes now is not answered).
    Held(CloseCode),
    /// In the output queue, last: it is written once the queue is empty
    /// (nothing is queued after our close frame).
    Queued(CloseCode),
    /// Its last byte was written (to the socket, or to the TLS layer).
    Written(CloseCode),
}

impl OurClose {
    pub(super) fn is_pending(self) -> bool {
        matches!(self, OurClose::Pending(_))
    }

    /// The output queue was written to its end.
    pub(super) fn drained(&mut self) {
        if let OurClose::Queued(code) = *self {
            *self = OurClose::Written(code);
        }
    }
}

impl Connection {
    /// Starts the closing handshake with an empty close frame (no code).
    pub(super) fn close_without_code(&mut self, now: Instant) {
        if let State::Open { .. } = self.state {
            self.queue_close(None, "");
            self.state = State::Closing {
                deadline: self.closing_deadline(now),
            };
        }
    }

    /// Starts the closing handshake with `code` (and a short reason).
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        match self.state {
            State::Open { .. } => {
                self.queue_close(Some(code), reason);
                self.state = State::Closing {
                    deadline: self.closing_deadline(now),
                };
            }
            State::Handshake { .. } | State::Decide { .. } => self.die(),
            _ => {}
        }
    }

    /// Closes a peer that does not keep up: frames not yet started are dropped
    /// (the one being written is finished, so the stream stays valid), then our
    /// close frame follows. The peer sees a prefix of what was sent, then the close.
    pub fn close_discarding(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if self.state.is_open() {
            self.discard_unsent();
            self.close(code, reason, now);
        }
    }

    /// Frees what this connection holds because the server is over its memory
    /// budget and this connection holds the most, and closes it: with 1009
    /// `memory budget` if most of what it held was an incoming message, 1008
    /// `memory budget` if it was output (echoes held by `delay` included).
    /// The message being received, the messages not yet taken and every
    /// unstarted output frame are dropped (the frame being written is
    /// finished, so the peer's stream stays valid), and the close frame
    /// follows at once. A connection that is not open is aborted instead (its
    /// socket is to be dropped now). Returns the code sent.
    pub fn shed(&mut self, now: Instant) -> Option<CloseCode> {
        if self.is_event_stream() {
            // An event stream's subscriber is told why, and may resume.
            self.end_events(b"event: error\ndata: memory budget\n\n", true, now);
            return None;
        }
        if !self.state.is_open() {
            self.abort();
            return None;
        }
        let incoming = self.message().map_or(0, |m| m.capacity()) + self.items.memory();
        // Echoes held by `delay` are output not yet queued.
        let outgoing = self.out.memory() + self.mis().map_or(0, |m| m.held_bytes());
        let code = if incoming >= outgoing {
            CloseCode::MESSAGE_TOO_BIG
        } else {
            CloseCode::POLICY_VIOLATION
        };
        self.drop_incoming();
        self.items.drop_data();
        self.discard_unsent();
        self.out.release_spares();
        self.queue_close(Some(code), "memory budget");
        self.enter_flushing(now);
        Some(code)
    }

    /// Drops everything unsent and stops: the connection is to be closed at once
    /// (used for a consumer too slow to take its queue, after the close frame was
    /// given a chance, or at shutdown).
    pub fn abort(&mut self) {
        self.out.clear();
        self.die();
    }

    /// The code of the close frame we sent, once its last byte was written.
    pub fn close_sent(&self) -> Option<CloseCode> {
        match self.close {
            OurClose::Written(code) => Some(code),
            _ => None,
        }
    }

    /// The code of a close frame we decided on but did not (entirely) write:
    /// at the end of a connection, a close that never reached the peer.
    pub fn close_unsent(&self) -> Option<CloseCode> {
        match self.close {
            OurClose::Pending(code) | OurClose::Held(code) | OurClose::Queued(code) => Some(code),
            OurClose::None | OurClose::Written(_) => None,
        }
    }

    /// Whether a deadline (handshake or close timeout) ended the connection.
    pub fn timed_out(&self) -> bool {
        self.state == State::Dead { timed_out: true }
    }

    /// The reason in the peer's close frame, if it opened the closing
    /// handshake with one.
    pub fn close_reason(&self) -> Option<&str> {
        self.ctl.as_ref()?.close_reason.as_deref()
    }

    /// The code of the close frame we received (1005 for an empty body), if any.
    pub fn close_received(&self) -> Option<CloseCode> {
        self.ctl.as_ref()?.close_received
    }

    /// Drops what is not started: unstarted frames, the pong owed, echoes
    /// held by `delay`.
    fn discard_unsent(&mut self) {
        self.out.discard_unstarted();
        self.take_pending_pong();
        if let Some(m) = self.mis_mut() {
            m.clear_held();
        }
    }

    pub(super) fn enter_flushing(&mut self, now: Instant) {
        self.state = State::Flushing {
            deadline: self.closing_deadline(now),
            shutdown_requested: false,
        };
    }

    /// The close timeout runs from now, or from when the last echo held by
    /// `delay` goes out.
    fn closing_deadline(&self, now: Instant) -> Instant {
        let start = self
            .mis()
            .and_then(|m| m.last_due())
            .map_or(now, |t| t.max(now));
        start + self.limits.close_timeout
    }

    /// Decides our close frame (`None`: an empty body). It is queued once the
    /// application has taken every event received before it, so the answers to
    /// messages that arrived ahead of the close (or of the error) go out first.
    fn queue_close(&mut self, code: Option<CloseCode>, reason: &str) {
        let mut body = Vec::new();
        if let Some(code) = code {
            body.extend_from_slice(&code.0.to_be_bytes());
            // A close body is a control payload: at most 125 bytes.
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            body.extend_from_slice(&reason.as_bytes()[..cut]);
        }
        self.take_pending_pong();
        self.close = OurClose::Pending(code.unwrap_or(CloseCode::NO_STATUS));
        if self.items.is_empty() {
            self.emit_close(body);
        } else {
            self.items.push_back(Item::Close(body));
        }
    }

    /// Our close frame's turn among the events came: queued now, or behind
    /// echoes held by `delay` (then the connection can send until it goes out).
    pub(super) fn emit_close(&mut self, body: Vec<u8>) {
        if let Some(c) = self.ctl.as_mut().filter(|c| c.hold_next) {
            c.hold_next = false;
            c.held_close = Some(body);
            return;
        }
        match self.mis_mut().filter(|m| m.has_held()) {
            Some(m) => {
                m.hold_close(body);
                if let OurClose::Pending(code) = self.close {
                    self.close = OurClose::Held(code);
                }
            }
            None => self.queue_close_frame(body),
        }
    }

    /// Our close frame goes into the output queue, last.
    pub(super) fn queue_close_frame(&mut self, body: Vec<u8>) {
        let (OurClose::Pending(code) | OurClose::Held(code)) = self.close else {
            return;
        };
        self.queue_frame(OpCode::Close, Chunk::Owned(body));
        self.close = OurClose::Queued(code);
    }

    /// Fails the connection: the failing message goes no further (its pieces
    /// not yet taken are dropped, and so are the unsent frames of its streamed
    /// echo, but the frame being written), so our close frame follows at most
    /// one frame even when the peer does not read. Answers to messages that
    /// arrived complete before the failure keep their place ahead of it.
    pub(super) fn fail(&mut self, err: ProtocolError, now: Instant) {
        // The frame and message in progress go (the inspector gets what
        // arrived of the frame, then the error).
        self.drop_incoming();
        if self.tapping() {
            self.record(What::Error {
                close_code: err.close_code().0,
                rule: err.rule(),
            });
        }
        self.ctl.get_or_insert_with(Box::default).error = Some(err);
        if self.close == OurClose::None && self.state.is_open() {
            // A streamed message whose last piece is still among the events
            // was complete before the failure: its echo is finished, not
            // dropped (the application sends that last piece next).
            let stream_finished = self.items.has_final_piece();
            self.items.drop_unfinished_pieces();
            if !stream_finished {
                self.out.discard_stream();
            }
            self.hold_own_close();
            self.queue_close(Some(err.close_code()), err.reason());
        }
        self.enter_flushing(now);
    }

    /// In hold mode, the close about to be queued waits for
    /// [`Connection::release_close`].
    fn hold_own_close(&mut self) {
        if let Some(c) = self.ctl.as_mut().filter(|c| c.hold_closes) {
            c.hold_next = true;
        }
    }

    /// Makes the closes the core decides itself (its answer to the peer's
    /// close, a protocol error's close) wait for [`Connection::release_close`]
    /// while messages can still be sent ahead of them: a proxy's leg waits
    /// for the other side's closing handshake, so what that side sent before
    /// its close reaches this peer first. A held close goes out by itself
    /// halfway through the close timeout.
    pub fn hold_closes(&mut self) {
        self.ctl.get_or_insert_with(Box::default).hold_closes = true;
    }

    /// Sends the close held by [`Connection::hold_closes`], if any.
    pub fn release_close(&mut self) {
        if let Some(body) = self.ctl.as_mut().and_then(|c| c.held_close.take()) {
            self.queue_close_frame(body);
        }
    }

    /// When a held close goes out by itself (halfway through the close
    /// timeout), if one is held.
    pub(super) fn held_close_due(&self) -> Option<Instant> {
        self.ctl.as_ref()?.held_close.as_ref()?;
        let d = self.state.deadline()?;
        Some(d.checked_sub(self.limits.close_timeout / 2).unwrap_or(d))
    }

    /// The peer's close frame: the answer to ours, or its own (answered by
    /// echoing its code; an empty close with an empty close).
    pub(super) fn receive_close(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let body = self.take_control();
        if matches!(self.state, State::Closing { .. }) {
            // The answer to our close: the closing handshake is complete.
            let code = close_code_of(&body).ok().flatten();
            self.ctl.get_or_insert_with(Box::default).close_received =
                Some(code.unwrap_or(CloseCode::NO_STATUS));
            self.enter_flushing(now);
            return Ok(());
        }
        let code = close_code_of(&body)?;
        let ctl = self.ctl.get_or_insert_with(Box::default);
        ctl.close_received = Some(code.unwrap_or(CloseCode::NO_STATUS));
        // Checked as UTF-8 by `close_code_of`.
        ctl.close_reason = body
            .get(2..)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into());
        self.take_pending_pong();
        self.hold_own_close();
        self.queue_close(code, "");
        self.enter_flushing(now);
        Ok(())
    }
}

/// Validates a close body: empty (no code), or a receivable code and a UTF-8 reason.
fn close_code_of(body: &[u8]) -> Result<Option<CloseCode>, ProtocolError> {
    match body.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::CloseBodyTooShort),
        _ => {
            let code = CloseCode(u16::from_be_bytes([body[0], body[1]]));
            if !code.is_allowed_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = &body[2..];
            match validate_utf8_prefix(reason) {
                Ok(n) if n == reason.len() => {}
                _ => return Err(ProtocolError::InvalidCloseReason),
            }
            Ok(Some(code))
        }
    }
}
