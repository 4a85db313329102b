//! The opening handshake: the request head as it arrives, the application's
//! decision (accept, reject, answer), the 101 and the HTTP answers.

use std::rc::Rc;
use std::time::Instant;

use super::super::deflate::{self, DeflateConfig, SharedCodec};
use super::super::error::HandshakeError;
use super::super::handshake::{self, Request};
use super::super::output::Chunk;
use super::plain::{BodyState, PlainInfo};
use super::{Connection, Deflate, State};

/// What only the opening handshake needs; freed when the connection opens.
#[derive(Debug, Default)]
pub(super) struct Handshake {
    /// Request bytes (while `Handshake`), then bytes that followed the request
    /// head (while `Decide`).
    pub(super) pending: Vec<u8>,
    /// The upgrade request reported by [`Event::Upgrade`], until accepted.
    pub(super) accept: Option<Request>,
    /// The status of the HTTP answer queued instead of an upgrade, and why
    /// the request was refused if it was (kept until the connection ends,
    /// for the server's counters).
    pub(super) answer: Option<u16>,
    pub(super) refused: Option<HandshakeError>,
    /// The plain request being decided on (body framing, keep-alive).
    pub(super) plain: Option<PlainInfo>,
    /// Its body, while it is read.
    pub(super) body: Option<Box<BodyState>>,
    /// A plain request was answered with the connection kept for another.
    pub(super) kept_alive: bool,
    /// Events left before an event stream ends (`drop=N`).
    pub(super) events_left: Option<u64>,
    /// The client role's handshake (`client.rs`).
    pub(super) client: Option<Box<super::client::ClientHs>>,
}

impl Connection {
    pub(super) fn receive_request(&mut self, data: &[u8], now: Instant) {
        let State::Handshake { .. } = self.state else {
            return;
        };
        let Some(hs) = self.hs.as_mut() else { return };
        hs.pending.extend_from_slice(data);
        // A head can only complete with a '\n'; do not re-parse otherwise.
        if !data.contains(&b'\n') && hs.pending.len() <= handshake::MAX_REQUEST_HEAD {
            return;
        }
        self.parse_request(now);
    }

    /// Accepts the Upgrade request reported by [`Event::Upgrade`], declining
    /// any extension offered.
    pub fn accept(&mut self, now: Instant) {
        self.accept_upgrade(now, None, None);
    }

    /// Accepts the Upgrade request, with permessage-deflate if the client
    /// offered it in a form `config` can honour (RFC 7692 §5). `shared` holds
    /// the loop-wide compressors.
    pub fn accept_deflate(
        &mut self,
        now: Instant,
        config: &DeflateConfig,
        shared: &Rc<SharedCodec>,
    ) {
        self.accept_upgrade(now, Some((config, shared)), None);
    }

    /// Accepts the Upgrade request: permessage-deflate as
    /// [`Connection::accept_deflate`] when `deflate` is given, and `protocol`
    /// (one of the client's offers, see `handshake::select_protocol`) named
    /// in the 101 as the subprotocol. Does nothing unless an upgrade request
    /// is waiting for a decision (after an [`Event::HttpRequest`] the request
    /// stays to be answered with [`Connection::respond`] or rejected).
    pub fn accept_upgrade(
        &mut self,
        now: Instant,
        deflate: Option<(&DeflateConfig, &Rc<SharedCodec>)>,
        protocol: Option<&str>,
    ) {
        self.accept_upgrade_with(now, deflate, protocol, "");
    }

    /// [`Connection::accept_upgrade`] with more header lines in the 101
    /// (`Name: value\r\n` each; a stub's `accept.headers`).
    pub fn accept_upgrade_with(
        &mut self,
        now: Instant,
        deflate: Option<(&DeflateConfig, &Rc<SharedCodec>)>,
        protocol: Option<&str>,
        headers: &str,
    ) {
        let waiting = matches!(self.state, State::Decide { .. })
            && self.hs.as_ref().is_some_and(|h| h.accept.is_some());
        if !waiting {
            return;
        }
        let hs = self.hs.take().expect("checked above");
        let req = hs.accept.expect("checked above");
        let agreed = deflate.and_then(|(config, shared)| {
            let offers: Vec<&str> = req.extensions.iter().map(String::as_str).collect();
            let agreed = deflate::negotiate(&offers, config)?;
            self.ctl.get_or_insert_with(Box::default).deflate =
                Some(Deflate::new(agreed, config.threshold, shared.clone()));
            Some(agreed.response())
        });
        let mut response = handshake::accept_response(&req, agreed.as_deref(), protocol);
        if !headers.is_empty() {
            // Before the blank line that ends the head.
            response.truncate(response.len() - 2);
            response.extend_from_slice(headers.as_bytes());
            response.extend_from_slice(b"\r\n");
        }
        self.out.push(Chunk::Owned(response));
        self.release_out = true;
        self.opened = true;
        self.state = State::Open { last_ping: None };
        // The handshake's event storage is not needed by an idle connection.
        self.items.release();
        self.start_knobs(now);
        self.receive_frames(&hs.pending, now);
        self.hand_out_piece();
    }

    /// Refuses the request with an HTTP error, then closes.
    pub fn reject(&mut self, err: HandshakeError, now: Instant) {
        self.reject_with(err, None, now);
    }

    /// [`Connection::reject`] with one more line of body after the error's
    /// own message.
    pub fn reject_with(&mut self, err: HandshakeError, detail: Option<&str>, now: Instant) {
        if self.state.is_handshaking() {
            self.respond(handshake::error_response_with(err, detail), now);
            if let Some(hs) = self.hs.as_mut() {
                hs.refused = Some(err);
            }
        }
    }

    /// The HTTP answer given instead of an upgrade, if any: its status and,
    /// for a refusal, why.
    pub fn http_answer(&self) -> Option<(u16, Option<HandshakeError>)> {
        let hs = self.hs.as_ref()?;
        Some((hs.answer?, hs.refused))
    }

    /// Answers a plain HTTP request with a complete response, then closes.
    pub fn respond(&mut self, response: Vec<u8>, now: Instant) {
        if self.state.is_handshaking() {
            // "HTTP/1.1 NNN ...": the status, for `http_answer`.
            let status = response
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
            self.out.push(Chunk::Owned(response));
            // The request's bytes are freed; the small record stays.
            let hs = self.hs.get_or_insert_with(Box::default);
            hs.pending = Vec::new();
            hs.accept = None;
            hs.plain = None;
            hs.body = None;
            hs.answer = status;
            self.enter_flushing(now);
        }
    }

    /// Whether no byte has arrived yet (a driver may look at the first bytes
    /// to choose a transport before any reach the core).
    pub fn is_untouched(&self) -> bool {
        matches!(self.state, State::Handshake { .. })
            && self
                .hs
                .as_ref()
                .is_some_and(|h| h.pending.is_empty() && !h.kept_alive && h.client.is_none())
    }
}
