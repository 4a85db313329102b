//! Plain HTTP after the request head: reading a request's body (RFC 9112
//! §6–§7, with `Expect: 100-continue`), answering and keeping the connection
//! for the next request, and event streams (a `text/event-stream` answer the
//! application keeps writing to, WHATWG HTML §9.2).
//!
//! ```text
//! Decide ─read_body─► Body ─complete─► Decide ─respond_keep_alive─► Handshake (next request)
//!    │                  └─bad/too large─► Decide (Event::Body(Err)) ─respond─► Flushing
//!    └─start_events─► Stream ─end_events / drop=N / EOF─► Flushing / Dead
//! ```

use std::rc::Rc;
use std::time::Instant;

use super::super::body::{self, BodyError, BodyReader, Framing};
use super::super::handshake::{self, Parsed};
use super::super::sse;
use super::{Chunk, Connection, Event, Item, State};

/// What a plain request needs once it is decided on.
#[derive(Debug, Clone, Copy)]
pub(super) struct PlainInfo {
    framing: Result<Framing, BodyError>,
    expect_continue: bool,
    keep_alive: bool,
}

impl PlainInfo {
    pub(super) fn of(req: &handshake::PlainRequest) -> PlainInfo {
        PlainInfo {
            framing: req.framing,
            expect_continue: req.expect_continue,
            keep_alive: req.keep_alive,
        }
    }
}

/// A body being read: its reader and what it gave so far.
#[derive(Debug)]
pub(super) struct BodyState {
    reader: BodyReader,
    data: Vec<u8>,
}

impl BodyState {
    pub(super) fn memory(&self) -> usize {
        self.data.capacity() + self.reader.memory()
    }
}

impl Connection {
    /// Reads the body of the plain request just reported by
    /// [`Event::HttpRequest`]; [`Event::Body`] follows once it is complete
    /// (or refused). A body must be declared (`Content-Length` or chunked)
    /// and at most the message size limit. `Expect: 100-continue` is
    /// answered with `100 Continue` unless body bytes already came. An
    /// error here means nothing was read: answer it with [`Connection::respond`]
    /// ([`BodyError::status`]).
    pub fn read_body(&mut self, now: Instant) -> Result<(), BodyError> {
        let max = self.limits.max_message_size as u64;
        let State::Decide { .. } = self.state else {
            return Err(BodyError::Malformed);
        };
        let Some(hs) = self.hs.as_mut() else {
            return Err(BodyError::Malformed);
        };
        let Some(info) = hs.plain.as_mut() else {
            return Err(BodyError::Malformed);
        };
        let framing = match info.framing {
            Ok(Framing::None) => Err(BodyError::LengthRequired),
            Ok(Framing::Length(n)) if n > max => Err(BodyError::TooLarge),
            other => other,
        };
        let framing = match framing {
            Ok(f) => f,
            Err(e) => {
                // The body is not read: the connection cannot be reused.
                info.keep_alive = false;
                return Err(e);
            }
        };
        if info.expect_continue && hs.pending.is_empty() {
            self.out.push(Chunk::Owned(body::CONTINUE.to_vec()));
        }
        hs.body = Some(Box::new(BodyState {
            reader: BodyReader::new(framing, max),
            data: Vec::new(),
        }));
        let pending = std::mem::take(&mut hs.pending);
        self.state = State::Body {
            deadline: now + self.limits.handshake_timeout,
        };
        self.receive_body(&pending, now);
        Ok(())
    }

    /// Body bytes; each arrival gives the client another handshake timeout.
    pub(super) fn receive_body(&mut self, data: &[u8], now: Instant) {
        let deadline = now + self.limits.handshake_timeout;
        let Some(hs) = self.hs.as_mut() else { return };
        let Some(b) = hs.body.as_mut() else { return };
        let result = match b.reader.push(data, &mut b.data) {
            Ok(used) if b.reader.is_done() => {
                // What follows the body is the next request.
                hs.pending.extend_from_slice(&data[used..]);
                Ok(std::mem::take(&mut b.data))
            }
            Ok(_) => {
                self.state = State::Body { deadline };
                return;
            }
            Err(e) => {
                if let Some(p) = hs.plain.as_mut() {
                    p.keep_alive = false;
                }
                Err(e)
            }
        };
        hs.body = None;
        self.state = State::Decide { deadline };
        self.items.push_back(Item::Event(Event::Body(result)));
    }

    /// Whether the plain request being answered allows another request
    /// after the answer (HTTP/1.1, no `Connection: close`, its body read).
    pub fn keeps_alive(&self) -> bool {
        matches!(self.state, State::Decide { .. })
            && !self.eof
            && self
                .hs
                .as_ref()
                .is_some_and(|h| h.body.is_none() && h.plain.is_some_and(|p| p.keep_alive))
    }

    /// Answers a plain request and waits for the next one on the same
    /// connection, when the request allows it ([`Connection::keeps_alive`];
    /// build the answer with `handshake::keep_alive_response`). Otherwise
    /// the answer is sent with `Connection: close` as by
    /// [`Connection::respond`]. Returns whether the connection stays. A
    /// kept connection has the handshake timeout to send its next request.
    pub fn respond_keep_alive(&mut self, response: Vec<u8>, now: Instant) -> bool {
        if !self.keeps_alive() {
            let response = if response.windows(13).any(|w| w == b"\r\nConnection:") {
                response
            } else {
                handshake::with_headers(response, "Connection: close\r\n")
            };
            self.respond(response, now);
            return false;
        }
        self.out.push(Chunk::Owned(response));
        let Some(hs) = self.hs.as_mut() else {
            return false;
        };
        hs.plain = None;
        hs.answer = None;
        hs.kept_alive = true;
        self.state = State::Handshake {
            deadline: now + self.limits.handshake_timeout,
        };
        // A request already pipelined behind this one.
        self.parse_request(now);
        true
    }

    /// Whether a plain request was answered on this connection with it
    /// kept for another (so ending while waiting for the next is not an
    /// incomplete handshake).
    pub fn served_keep_alive(&self) -> bool {
        self.hs.as_ref().is_some_and(|h| h.kept_alive)
    }

    /// Answers the plain request just reported with an event stream:
    /// `head` (the response head, and anything to send first) goes out, then
    /// whatever [`Connection::send_event`] queues, until
    /// [`Connection::end_events`]. After `drop_after` counted events the
    /// stream ends by itself (the `drop=N` knob). Bytes from the client are
    /// ignored; its EOF ends the stream. Every `Limits::sse_keepalive` of
    /// quiet a comment line goes out. Returns false (nothing queued) unless
    /// a plain request is waiting for its answer.
    pub fn start_events(&mut self, head: Vec<u8>, drop_after: Option<u64>, now: Instant) -> bool {
        if !matches!(self.state, State::Decide { .. }) {
            return false;
        }
        let Some(hs) = self.hs.as_mut() else {
            return false;
        };
        if hs.plain.is_none() || hs.body.is_some() {
            return false;
        }
        hs.plain = None;
        hs.pending = Vec::new();
        hs.answer = Some(200);
        hs.events_left = drop_after;
        self.out.push(Chunk::Owned(head));
        self.state = State::Stream { last_out: now };
        true
    }

    /// Whether this connection is an event stream ([`Connection::start_events`]).
    pub fn is_event_stream(&self) -> bool {
        matches!(self.state, State::Stream { .. })
    }

    /// Queues one encoded event on an event stream (`sse::event`); a
    /// `counted` one counts toward `drop_after`. Returns false (nothing
    /// queued) unless the stream is on.
    pub fn send_event(&mut self, event: Chunk, counted: bool, now: Instant) -> bool {
        if !self.is_event_stream() {
            return false;
        }
        self.out.push(event);
        self.recent = true;
        self.state = State::Stream { last_out: now };
        if counted {
            let hs = self.hs.get_or_insert_with(Box::default);
            if let Some(left) = hs.events_left.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.enter_flushing(now);
                }
            }
        }
        true
    }

    /// Whether this event stream ends after a number of events (`drop`):
    /// room messages then come one by one ([`Connection::send_event`]), so
    /// that it ends exactly there.
    pub fn counts_events(&self) -> bool {
        self.hs.as_ref().is_some_and(|h| h.events_left.is_some())
    }

    /// Queues a run of room messages' events, encoded once for every
    /// subscriber, as one chunk (never copied). Returns false (nothing
    /// queued) unless the stream is on and does not count its events
    /// ([`Connection::counts_events`]).
    pub fn send_events(&mut self, events: Rc<[u8]>, now: Instant) -> bool {
        if !self.is_event_stream() || self.counts_events() {
            return false;
        }
        self.out.push_shared(events);
        self.recent = true;
        self.state = State::Stream { last_out: now };
        true
    }

    /// Ends an event stream after `last` (a final event, or nothing):
    /// what is queued is written, then the connection closes.
    /// `discard`: what is queued and not started is dropped first (a slow
    /// subscriber, or the memory budget).
    pub fn end_events(&mut self, last: &[u8], discard: bool, now: Instant) {
        if !self.is_event_stream() {
            return;
        }
        if discard {
            self.out.discard_unstarted();
            self.out.release_spares();
        }
        if !last.is_empty() {
            self.out.push(Chunk::Owned(last.to_vec()));
        }
        self.enter_flushing(now);
    }

    /// The keepalive comment of a quiet event stream, when due.
    pub(super) fn stream_keepalive(&mut self, now: Instant) {
        let State::Stream { last_out } = self.state else {
            return;
        };
        if self
            .stream_keepalive_due(last_out)
            .is_some_and(|d| now >= d)
        {
            let mut comment = Vec::new();
            sse::comment(&mut comment, "keepalive");
            self.out.push(Chunk::Owned(comment));
            self.state = State::Stream { last_out: now };
        }
    }

    pub(super) fn stream_keepalive_due(&self, last_out: Instant) -> Option<Instant> {
        let every = self.limits.sse_keepalive.filter(|d| !d.is_zero())?;
        Some(last_out + every)
    }

    /// A body that stopped arriving: 408, then close.
    pub(super) fn body_timed_out(&mut self, now: Instant) {
        self.respond(
            handshake::line_response(
                408,
                "Request Timeout",
                "the request body stopped arriving (--handshake-timeout)",
            ),
            now,
        );
    }

    /// Parses the request head in `hs.pending`, if complete (or refuses it).
    pub(super) fn parse_request(&mut self, now: Instant) {
        let State::Handshake { deadline } = self.state else {
            return;
        };
        let Some(hs) = self.hs.as_mut() else { return };
        match handshake::parse_request(&hs.pending) {
            Ok(None) => {}
            Ok(Some((parsed, n))) => {
                let keep = self.limits.tap.is_on() || self.limits.keep_heads;
                let head = keep.then(|| hs.pending[..n].into());
                hs.pending.drain(..n);
                self.state = State::Decide { deadline };
                match parsed {
                    Parsed::Upgrade(mut req) => {
                        req.head = head;
                        hs.accept = Some(req.clone());
                        self.items.push_back(Item::Event(Event::Upgrade(req)));
                    }
                    Parsed::Plain(req) => {
                        hs.plain = Some(PlainInfo::of(&req));
                        self.items.push_back(Item::Event(Event::HttpRequest(req)));
                    }
                }
            }
            Err(e) => self.reject(e, now),
        }
    }
}
