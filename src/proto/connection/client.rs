//! The client role (a proxy's upstream leg): our request queued at the
//! start, the server's answer (a 101 checked as RFC 6455 §4.1 says, or a
//! refusal read with its body, bounded), and the masking keys of the frames
//! we send. Everything after the 101 is the same state machine as the server
//! role: `receive.rs` refuses masked frames instead of unmasked ones and
//! `send.rs` masks what it queues.

use std::rc::Rc;
use std::time::Instant;

use super::super::body::{BodyReader, Framing};
use super::super::client::{self, ClientRequest, MaskKeys, Opened, Response};
use super::super::deflate::{DeflateConfig, DeflateMode, SharedCodec};
use super::super::output::Chunk;
use super::{Connection, Deflate, Event, Item, Limits, State};

/// Why the server's answer did not open the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// An HTTP answer other than 101 (a 401, a 404 …): pass it on.
    Answered,
    /// A 101 that breaks a rule of §4.1, or an answer that is not HTTP.
    Invalid,
    /// The connection ended before a whole answer.
    Closed,
    /// No whole answer within the handshake timeout.
    TimedOut,
}

/// The server's answer when it did not open the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The answer's status (0 if no whole head arrived).
    pub status: u16,
    /// The reason phrase, or what was wrong.
    pub why: String,
    /// The answer's header fields (empty if no whole head arrived).
    pub headers: Vec<(String, String)>,
    /// Its body, up to [`client::MAX_REFUSAL_BODY`] bytes.
    pub body: Vec<u8>,
}

/// What only the client's opening handshake needs; freed when it ends.
#[derive(Debug)]
pub(super) struct ClientHs {
    /// Our `Sec-WebSocket-Key`.
    key: String,
    /// What we asked for (the 101 is checked against it).
    req: ClientRequest,
    /// The threshold and loop-wide codec, when deflate is offered.
    deflate: Option<(usize, Rc<SharedCodec>)>,
    /// A refusal's head, once read, while its body arrives.
    refusal: Option<(Response, Option<BodyReader>, Vec<u8>)>,
}

impl Connection {
    /// A connection in the client role, about to send `req` on a socket
    /// just opened at `now` (the handshake timeout runs from now). With
    /// `deflate` (not `off`), permessage-deflate is offered
    /// ([`super::super::deflate::CLIENT_OFFER`]). `keys` mask every frame we
    /// send ([`MaskKeys::random`] outside tests). The next events are
    /// [`Event::Opened`] then messages, or [`Event::Refused`].
    pub fn client(
        limits: Rc<Limits>,
        now: Instant,
        mut req: ClientRequest,
        deflate: Option<(&DeflateConfig, &Rc<SharedCodec>)>,
        mut keys: MaskKeys,
    ) -> Connection {
        let mut c = Connection::with_limits(limits, now);
        let deflate = deflate.filter(|(config, _)| config.mode != DeflateMode::Off);
        req.deflate = deflate.is_some();
        let key = client::new_key(&mut keys);
        c.out.push(Chunk::Owned(client::request(&req, &key)));
        c.release_out = true;
        c.ctl.get_or_insert_with(Box::default).keys = Some(Box::new(keys));
        c.hs.get_or_insert_with(Box::default).client = Some(Box::new(ClientHs {
            key,
            req,
            deflate: deflate.map(|(config, shared)| (config.threshold, shared.clone())),
            refusal: None,
        }));
        c
    }

    /// When the current state ends by itself (the handshake deadline while
    /// a request or answer is awaited), if it does.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.deadline()
    }

    /// Brings the handshake deadline forward to `deadline` (a proxy gives
    /// its upstream until shortly before its client's own deadline).
    pub fn shorten_deadline(&mut self, deadline: Instant) {
        if let State::Handshake { deadline: d } = &mut self.state {
            *d = (*d).min(deadline);
        }
    }

    /// Whether this connection is in the client role.
    pub fn is_client(&self) -> bool {
        self.ctl.as_ref().is_some_and(|c| c.keys.is_some())
    }

    /// The next masking key (client role only).
    pub(super) fn mask_key(&mut self) -> Option<[u8; 4]> {
        Some(self.ctl.as_mut()?.keys.as_mut()?.next_key())
    }

    /// Whether the client's handshake is waiting for the server's answer.
    pub(super) fn awaits_answer(&self) -> bool {
        matches!(self.state, State::Handshake { .. })
            && self.hs.as_ref().is_some_and(|h| h.client.is_some())
    }

    /// The server's answer as it arrives.
    pub(super) fn receive_answer(&mut self, data: &[u8], now: Instant) {
        let Some(hs) = self.hs.as_mut() else { return };
        let Some(ch) = hs.client.as_mut() else { return };
        if ch.refusal.is_some() {
            return self.receive_refusal_body(data);
        }
        hs.pending.extend_from_slice(data);
        let (head, n) = match client::parse_response(&hs.pending) {
            Ok(None) => return,
            Ok(Some(parsed)) => parsed,
            Err(why) => return self.refused(RefusalKind::Invalid, 0, why, Vec::new(), Vec::new()),
        };
        if head.status != 101 {
            let rest = hs.pending.split_off(n);
            hs.pending = Vec::new();
            // 1xx, 204 and 304 have no body (RFC 9112 §6.3 item 1).
            let framing = if head.status < 200 || head.status == 204 || head.status == 304 {
                Some(Framing::None)
            } else if head.is_chunked() {
                Some(Framing::Chunked)
            } else {
                head.content_length()
                    .map(|n| Framing::Length((n as u64).min(client::MAX_REFUSAL_BODY as u64)))
            };
            let reader = framing.map(|f| BodyReader::new(f, client::MAX_REFUSAL_BODY as u64));
            ch.refusal = Some((head, reader, Vec::new()));
            return self.receive_refusal_body(&rest);
        }
        match client::check_upgrade(&head, &ch.key, &ch.req) {
            Ok(opened) => self.opened(opened, n, now),
            Err(why) => self.refused(RefusalKind::Invalid, 101, why, head.headers, Vec::new()),
        }
    }

    /// A valid 101: the connection opens, the bytes after it are frames.
    fn opened(&mut self, opened: Opened, n: usize, now: Instant) {
        let mut hs = self.hs.take().expect("handshaking");
        let ch = hs.client.take().expect("client role");
        if let (Some(agreed), Some((threshold, shared))) = (opened.deflate, ch.deflate) {
            self.ctl.get_or_insert_with(Box::default).deflate =
                Some(Deflate::new(agreed, threshold, shared));
        }
        self.opened = true;
        self.state = State::Open { last_ping: None };
        self.items.push_back(Item::Event(Event::Opened(opened)));
        let rest = hs.pending.split_off(n);
        self.receive_frames(&rest, now);
        self.hand_out_piece();
    }

    /// A refusal's body bytes: up to its length when the head gave one
    /// (a reader), else until the connection ends, at most
    /// `MAX_REFUSAL_BODY` either way.
    fn receive_refusal_body(&mut self, data: &[u8]) {
        let Some((_, reader, body)) = self
            .hs
            .as_mut()
            .and_then(|h| h.client.as_mut())
            .and_then(|c| c.refusal.as_mut())
        else {
            return;
        };
        let done = match reader.as_mut() {
            Some(r) => r.push(data, body).is_err() || r.is_done(),
            None => {
                let room = client::MAX_REFUSAL_BODY.saturating_sub(body.len());
                body.extend_from_slice(&data[..data.len().min(room)]);
                body.len() >= client::MAX_REFUSAL_BODY
            }
        };
        if done {
            self.refusal_complete();
        }
    }

    /// The refusal is whole (or as whole as it will be): reported, and the
    /// connection ends.
    fn refusal_complete(&mut self) {
        let Some((head, _, body)) = self
            .hs
            .as_mut()
            .and_then(|h| h.client.as_mut())
            .and_then(|c| c.refusal.take())
        else {
            return;
        };
        self.refused(
            RefusalKind::Answered,
            head.status,
            head.reason,
            head.headers,
            body,
        );
    }

    fn refused(
        &mut self,
        kind: RefusalKind,
        status: u16,
        why: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) {
        if let Some(hs) = self.hs.as_mut() {
            hs.client = None;
            hs.pending = Vec::new();
        }
        self.items.push_back(Item::Event(Event::Refused(Refusal {
            kind,
            status,
            why,
            headers,
            body,
        })));
        self.out.clear();
        self.die();
    }

    /// The connection ended while the answer was awaited: a refusal whose
    /// body runs to the end is complete; anything else was cut short.
    pub(super) fn answer_cut_short(&mut self, timed_out: bool) {
        let refusal = self
            .hs
            .as_ref()
            .and_then(|h| h.client.as_ref())
            .is_some_and(|c| c.refusal.is_some());
        if refusal && !timed_out {
            return self.refusal_complete();
        }
        let (kind, why) = if timed_out {
            (
                RefusalKind::TimedOut,
                "no answer within the handshake timeout",
            )
        } else {
            (RefusalKind::Closed, "the connection ended before an answer")
        };
        self.refused(kind, 0, why.into(), Vec::new(), Vec::new());
        if timed_out {
            self.state = State::Dead { timed_out: true };
        }
    }
}
