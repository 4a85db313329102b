//! Rooms over HTTP: a `POST` to a room path publishes its body to the room
//! (WebSocket members and subscribers alike, in the room's one order); a
//! `GET` with `Accept: text/event-stream` subscribes (Server-Sent Events,
//! WHATWG HTML §9.2), resuming after `Last-Event-ID` from the room's history
//! with an `event: gap` for what was already evicted; an `OPTIONS`
//! preflight from another origin is answered. CORS headers go on these
//! answers only (never on `/stats`, `/metrics` or the inspector's).
//! The body is read by the core (`Connection::read_body`); rooms.rs keeps
//! the order and the history; this file is the HTTP in between.

use std::rc::Rc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use log::{debug, info};
use mio::Token;
use serde::Serialize;

use super::{stats, Server};
use crate::proto::body::BodyError;
use crate::proto::handshake::{keep_alive_response, line_response, with_headers, PlainRequest};
use crate::proto::output::Chunk;
use crate::proto::{knobs, sse, MessageKind};

/// The reconnection delay subscribers are told (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 1000;

/// A `POST` whose body is being read: where it goes and how.
pub(super) struct PendingPublish {
    room: String,
    kind: MessageKind,
    cors: String,
}

/// One room message as an event: `id:` the message id, the text in `data:`
/// lines; binary as `event: binary` with base64 data.
pub(super) fn encode(id: u64, kind: MessageKind, data: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(data.len() + 32);
    match kind {
        MessageKind::Text => {
            // Room text messages are valid UTF-8 (checked on the way in).
            sse::event(&mut out, Some(id), None, &String::from_utf8_lossy(data));
        }
        MessageKind::Binary => {
            sse::event(&mut out, Some(id), Some("binary"), &STANDARD.encode(data));
        }
    }
    out.into()
}

/// Whether a `Content-Type` makes a published body text: `text/*`,
/// `application/json`, or any type naming a charset.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct.to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence == "application/json"
        || ct
            .split(';')
            .skip(1)
            .any(|p| p.trim().starts_with("charset="))
}

/// Whether the request asks for an event stream (`Accept` names
/// `text/event-stream`).
pub(super) fn wants_events(req: &PlainRequest) -> bool {
    req.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("accept")
            && v.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
            })
    })
}

/// The value of a query parameter (not unescaped: ids are digits).
fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The data of an `event: gap`: the first and last id not delivered.
#[derive(Serialize)]
struct Gap {
    from: u64,
    to: u64,
}

#[derive(Serialize)]
struct Published<'a> {
    room: &'a str,
    id: u64,
    members: usize,
}

impl Server {
    /// The CORS headers of a room endpoint's answer to `origin`, or the
    /// refusal of an origin `--allow-origin` does not list (as for a
    /// WebSocket upgrade). No `Origin`: none needed.
    fn cors(&self, origin: Option<&str>) -> Result<String, ()> {
        let Some(o) = origin else {
            return Ok(String::new());
        };
        let allowed = self.config.allow_origins.is_empty()
            || self
                .config
                .allow_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o));
        if !allowed {
            return Err(());
        }
        // The origin is a header value httparse accepted: no CR or LF.
        Ok(format!(
            "Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"
        ))
    }

    /// A plain request on a room path: `POST` publishes, `OPTIONS` is a
    /// preflight, `GET` with `Accept: text/event-stream` subscribes.
    /// Returns false if it is none of these (the caller answers it).
    pub(super) fn answer_room(
        &mut self,
        t: Token,
        req: &PlainRequest,
        room: &str,
        now: Instant,
    ) -> bool {
        let preflight =
            req.method == "OPTIONS" && req.header("access-control-request-method").is_some();
        let subscribe = req.method == "GET" && wants_events(req);
        if req.method != "POST" && !preflight && !subscribe {
            return false;
        }
        let cors = match self.cors(req.origin.as_deref()) {
            Ok(c) => c,
            Err(()) => {
                let what = format!(
                    "{} {} from origin {:?}",
                    req.method,
                    req.path,
                    req.origin.as_deref().unwrap_or_default()
                );
                let why = "origin not allowed (--allow-origin)";
                self.refuse(t, &what, (403, "Forbidden"), why, "", now);
                return true;
            }
        };
        if preflight {
            let Some(c) = self.client_mut(t) else {
                return true;
            };
            debug!("{}: OPTIONS {}: 204 (preflight)", c.id, req.path);
            let head = format!(
                "HTTP/1.1 204 No Content\r\n\
                 {cors}\
                 Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
                 Access-Control-Allow-Headers: Content-Type, Last-Event-ID\r\n\
                 Access-Control-Max-Age: 600\r\n\
                 Server: echocast\r\n\r\n"
            );
            if c.proto.respond_keep_alive(head.into_bytes(), now) {
                stats::count(&mut self.stats.http, 204);
            }
            return true;
        }
        if subscribe {
            self.subscribe(t, req, room, cors, now);
        } else {
            self.start_publish(t, req, room, cors, now);
        }
        true
    }

    /// A `POST` to a room: its body is read by the core; `published` (on
    /// `Event::Body`) sends it.
    fn start_publish(
        &mut self,
        t: Token,
        req: &PlainRequest,
        room: &str,
        cors: String,
        now: Instant,
    ) {
        let kind = if is_text(req.header("content-type")) {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let Some(c) = self.client_mut(t) else { return };
        match c.proto.read_body(now) {
            // The body may be complete already: `published` follows.
            Ok(()) => {
                let room = room.to_owned();
                self.pending_publish
                    .insert(t, PendingPublish { room, kind, cors });
            }
            Err(e) => {
                let what = format!("POST {}", req.path);
                self.refuse(t, &what, e.status(), e.message(), &cors, now);
            }
        }
    }

    /// The body of a `POST` to a room arrived (or could not be read).
    pub(super) fn published(&mut self, t: Token, body: Result<Vec<u8>, BodyError>, now: Instant) {
        let Some(p) = self.pending_publish.remove(&t) else {
            // Not ours to read: nothing asked for it.
            if let Some(c) = self.client_mut(t) {
                c.proto.abort();
            }
            return;
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                let what = format!("POST {}", p.room);
                return self.refuse(t, &what, e.status(), e.message(), &p.cors, now);
            }
        };
        let Some(c) = self.client_mut(t) else { return };
        if p.kind == MessageKind::Text && std::str::from_utf8(&body).is_err() {
            info!("{}: POST {}: 400, the text body is not UTF-8", c.id, p.room);
            let answer = line_response(
                400,
                "Bad Request",
                "the body is not valid UTF-8, and its Content-Type says text \
                 (send binary as application/octet-stream)",
            );
            let answer = with_headers(answer, &p.cors);
            if c.proto.respond_keep_alive(answer, now) {
                stats::count(&mut self.stats.http, 400);
            }
            return;
        }
        let from = c.id.0;
        let room = self.room_id(&p.room, now);
        self.stats.messages_in += 1;
        self.stats.bytes_in += body.len() as u64;
        self.stats.http_publishes += 1;
        let (id, members) = self.publish(room, p.kind, &body, now);
        self.inspect_broadcast(from, room, p.kind, &body, members, now);
        let json = serde_json::to_string(&Published {
            room: &p.room,
            id,
            members,
        })
        .unwrap_or_default()
            + "\n";
        let Some(c) = self.client_mut(t) else { return };
        debug!(
            "{}: POST {}: 200, id {id} to {members} members",
            c.id, p.room
        );
        let answer = keep_alive_response(
            200,
            "OK",
            "application/json",
            &format!("Cache-Control: no-store\r\n{}", p.cors),
            json.as_bytes(),
        );
        if c.proto.respond_keep_alive(answer, now) {
            stats::count(&mut self.stats.http, 200);
        }
    }

    /// A `GET` with `Accept: text/event-stream` on a room: the stream's
    /// head, the greeting, what the client missed (after `Last-Event-ID`),
    /// then live messages.
    fn subscribe(&mut self, t: Token, req: &PlainRequest, room: &str, cors: String, now: Instant) {
        let what = format!("GET {} (events)", req.path);
        let bad = (400, "Bad Request");
        let knobs = knobs::parse(&req.path).and_then(|k| k.check_events().map(|()| k));
        let mut knobs = match knobs {
            Ok(k) => k,
            Err(e) => return self.refuse(t, &what, bad, &e.to_string(), &cors, now),
        };
        let last = req
            .header("last-event-id")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| query_param(&req.path, "lastEventId"));
        let last = match last.map(|v| v.trim().parse::<u64>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                let why = format!(
                    "Last-Event-ID must be a message id of this room (a decimal number), not {:?}",
                    last.unwrap_or_default()
                );
                return self.refuse(t, &what, bad, &why, &cors, now);
            }
        };
        if let Err(why) = self.check_history(knobs.history) {
            return self.refuse(t, &what, bad, &why, &cors, now);
        }
        if knobs.greeting.is_none() {
            knobs.greeting.clone_from(&self.config.greeting);
        }
        let mut head = format!(
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/event-stream\r\n\
             Cache-Control: no-store\r\n\
             Connection: close\r\n\
             X-Accel-Buffering: no\r\n\
             Server: echocast\r\n\
             {cors}\r\n"
        )
        .into_bytes();
        sse::retry(&mut head, RETRY_MS);
        let drop_after = knobs.drop.map(|(n, _)| n);
        let id = self.join(room, t, now);
        let Some(c) = self.client_mut(t) else { return };
        if let Some(g) = knobs.greeting.as_mut() {
            *g = g.replace("{id}", &c.id.0.to_string());
            sse::event(&mut head, None, None, g);
        }
        c.room = std::num::NonZeroU32::new(id as u32 + 1);
        c.proto.start_events(head, drop_after, now);
        info!("{}: subscribed to {} ({})", c.id, room, c.http_scheme());
        let cid = c.id;
        // What the client missed, or asked for.
        let r = &self.rooms[id];
        let (first, last_id) = (r.first_retained(), r.last_id());
        let after = match (last, knobs.history) {
            (Some(l), _) if l > last_id => {
                // Not an id of this room as it is now: it was forgotten
                // (`--room-linger`) or the server restarted.
                info!(
                    "{}: Last-Event-ID {l} is ahead of {room} (last id {last_id}): \
                     resuming from its start",
                    cid
                );
                Some(0)
            }
            (Some(l), _) => Some(l),
            (None, Some(n)) => Some(last_id.saturating_sub(n as u64)),
            (None, None) => None,
        };
        let mut out: Vec<(Chunk, bool)> = Vec::new();
        if let Some(after) = after {
            if after + 1 < first {
                let mut gap = Vec::new();
                let data = serde_json::to_string(&Gap {
                    from: after + 1,
                    to: first - 1,
                })
                .unwrap_or_default();
                sse::event(&mut gap, None, Some("gap"), &data);
                out.push((Chunk::Owned(gap), false));
            }
            for m in r.history.iter().filter(|m| m.id > after) {
                out.push((Chunk::Shared(encode(m.id, m.kind, &m.data)), true));
            }
        }
        let Some(c) = self.client_mut(t) else { return };
        for (chunk, counted) in out {
            if !c.proto.send_event(chunk, counted, now) {
                break;
            }
        }
        self.mark_dirty(t);
    }

    /// Refuses a room request with `status` and a one-line body saying why
    /// (with the CORS headers, so a page can read it), logged; then closes.
    fn refuse(
        &mut self,
        t: Token,
        what: &str,
        (status, reason): (u16, &str),
        why: &str,
        cors: &str,
        now: Instant,
    ) {
        let Some(c) = self.client_mut(t) else { return };
        info!("{}: {what}: {status}, {why}", c.id);
        let answer = with_headers(line_response(status, reason, why), cors);
        c.proto.respond(answer, now);
    }

    /// `history=N` asks for at most what a room keeps.
    pub(super) fn check_history(&self, n: Option<usize>) -> Result<(), String> {
        match n {
            Some(n) if n > self.config.room_history => Err(format!(
                "bad value for history: at most --room-history ({}) messages, not {n}",
                self.config.room_history
            )),
            _ => Ok(()),
        }
    }

    /// The last `n` retained messages of a room to a new WebSocket member
    /// (`?history=N`), before live ones.
    pub(super) fn replay_history(&mut self, t: Token, room: usize, n: usize) {
        let h = &self.rooms[room].history;
        let msgs: Vec<(MessageKind, Vec<u8>)> = h
            .iter()
            .skip(h.len().saturating_sub(n))
            .map(|m| (m.kind, m.data.to_vec()))
            .collect();
        let Some(c) = self.client_mut(t) else { return };
        for (kind, data) in msgs {
            c.proto.send(kind, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_or_binary_from_the_content_type() {
        for t in [
            "text/plain",
            "Text/HTML; charset=utf-8",
            "application/json",
            "application/x-thing; charset=utf-8",
        ] {
            assert!(is_text(Some(t)), "{t}");
        }
        for b in [
            "application/octet-stream",
            "application/x-www-form-urlencoded",
            "image/png",
        ] {
            assert!(!is_text(Some(b)), "{b}");
        }
        assert!(!is_text(None));
    }

    #[test]
    fn binary_events_are_base64() {
        let e = encode(7, MessageKind::Binary, &[0, 1, 2, 255]);
        assert_eq!(&*e, b"id: 7\nevent: binary\ndata: AAEC/w==\n\n");
        let e = encode(8, MessageKind::Text, b"a\nb");
        assert_eq!(&*e, b"id: 8\ndata: a\ndata: b\n\n");
    }
}
