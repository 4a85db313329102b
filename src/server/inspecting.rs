//! The frame inspector in the loop: draining the core's tap once per turn,
//! the driver's own records (open, closed, HTTP answers, broadcasts), live
//! subscribers on `/.inspect`, and the answers of `/connections`,
//! `/connections/ID` and `/frames` with their access rules (docs/inspector.md).
//! The ring and the JSON are inspect.rs.

use std::time::Instant;

use log::info;
use mio::Token;
use serde::Serialize;

use super::inspect::{self, Body, ConnInfo, Filter, Inspector, Subscriber};
use super::{Client, Server};
use crate::config::InspectMode;
use crate::proto::handshake::{line_response, Request};
use crate::proto::inspect::FrameInfo;
use crate::proto::{knobs, MessageKind};

/// The id a live inspector's core tags its records with: they are not
/// recorded.
const INSPECTOR_CONN: u32 = u32::MAX;

/// An inspector endpoint's answer when it is not 200: status and one line.
pub(super) type Refusal = (u16, &'static str, String);

#[derive(Serialize)]
struct ConnectionJson {
    id: u32,
    peer: Option<String>,
    path: Option<String>,
    room: Option<String>,
    transport: &'static str,
    state: &'static str,
    extensions: Option<String>,
    subprotocol: Option<String>,
    knobs: Option<String>,
    opened_at: Option<String>,
    messages_in: u64,
    messages_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<serde_json::Value>,
}

/// The query string of the knobs in `target` (known knob names only).
fn knobs_of(target: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            knobs::NAMES.contains(&name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

impl Server {
    /// Moves the core's records into the ring (the turn's time stamped on
    /// them), and to the live subscribers. An inspector's own frames are not
    /// recorded.
    pub(super) fn drain_tap(&mut self, now: Instant) {
        if self.inspector.is_none() || self.limits.tap.is_empty() {
            return;
        }
        let mut records = std::mem::take(&mut self.tap_buf);
        self.limits.tap.swap_into(&mut records);
        for r in records.drain(..) {
            if r.conn != INSPECTOR_CONN {
                let conn = r.conn;
                self.inspect_push(conn, Inspector::body_of(r), now);
            }
        }
        self.tap_buf = records;
    }

    /// Records an entry and sends it to the live subscribers that want it.
    pub(super) fn inspect_push(&mut self, conn: u32, body: Body, now: Instant) {
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        ins.push(conn, body, now);
        let Some(entry) = ins.last().filter(|_| !ins.subscribers.is_empty()) else {
            return;
        };
        let wanted: Vec<Token> = ins
            .subscribers
            .iter()
            .filter(|s| ins.matches(&s.filter, entry))
            .map(|s| s.token)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let text = ins.json(entry);
        for t in wanted {
            self.send_to_subscriber(t, &text);
        }
    }

    /// One record to one live subscriber: dropped (and counted) while it is
    /// more than `SUBSCRIBER_BACKLOG` behind; once it caught up, it first
    /// learns how many it missed.
    fn send_to_subscriber(&mut self, t: Token, text: &str) {
        let Some(c) = self.client_mut(t) else { return };
        let behind = c.proto.backlog() > inspect::SUBSCRIBER_BACKLOG;
        let id = c.id.0;
        let Some(sub) = self
            .inspector
            .as_mut()
            .and_then(|i| i.subscribers.iter_mut().find(|s| s.conn == id))
        else {
            return;
        };
        if behind {
            sub.dropped += 1;
            return;
        }
        let dropped = std::mem::take(&mut sub.dropped);
        let Some(c) = self.client_mut(t) else { return };
        if dropped > 0 {
            let note = format!("{{\"event\":\"dropped\",\"count\":{dropped}}}");
            c.proto.send(MessageKind::Text, note.into_bytes());
        }
        c.proto.send(MessageKind::Text, text.as_bytes().to_vec());
        self.account(t);
        self.mark_dirty(t);
    }

    /// A WebSocket opened (not an inspector): what is kept of it, and the
    /// `open` record.
    pub(super) fn inspect_open(
        &mut self,
        t: Token,
        req: &Request,
        protocol: Option<&str>,
        now: Instant,
    ) {
        let Some(c) = self.client_mut(t) else { return };
        let (id, peer) = (c.id.0, c.stream.peer_addr().ok());
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        let opened_us = ins.micros(now);
        ins.infos.insert(
            id,
            Box::new(ConnInfo {
                path: req.path.as_str().into(),
                subprotocol: protocol.map(Into::into),
                head: req.head.clone(),
                opened_us,
                messages_in: 0,
                bytes_in: 0,
                messages_out: 0,
                bytes_out: 0,
            }),
        );
        let path = req.path.as_str().into();
        self.inspect_push(id, Body::Open { peer, path }, now);
    }

    /// A connection ended: the `closed` record (or, for one that never
    /// opened, the HTTP answer it got), and what was kept of it goes.
    pub(super) fn inspect_closed(&mut self, c: &Client) {
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        let id = c.id.0;
        ins.infos.remove(&id);
        if let Some(pos) = ins.subscribers.iter().position(|s| s.conn == id) {
            ins.subscribers.swap_remove(pos);
            return;
        }
        let now = Instant::now();
        let body = if c.proto.was_opened() {
            Body::Closed {
                sent: c.proto.close_sent().map(|c| c.0),
                received: c.proto.close_received().map(|c| c.0),
                not_delivered: c.proto.close_unsent().map(|c| c.0),
            }
        } else {
            match c.proto.http_answer() {
                Some((status, refused)) if status >= 400 => Body::Http {
                    status,
                    why: refused
                        .map_or("refused (see the answer's body)", |e| e.message())
                        .lines()
                        .next()
                        .unwrap_or("")
                        .into(),
                },
                _ => return,
            }
        };
        self.inspect_push(id, body, now);
    }

    /// A broadcast, recorded once per message (not once per member).
    pub(super) fn inspect_broadcast(
        &mut self,
        from: u32,
        room: usize,
        kind: MessageKind,
        data: &[u8],
        members: usize,
        now: Instant,
    ) {
        if self.inspector.is_none() {
            return;
        }
        let frame = FrameInfo::outgoing(kind.opcode().as_u8(), true, 0, data);
        let room = self.rooms[room].name().into();
        self.inspect_push(
            from,
            Body::Broadcast {
                frame,
                room,
                members,
            },
            now,
        );
    }

    /// Whether a request may use the inspector's endpoints: its `Origin`
    /// absent or the server's own, and in `local` mode a loopback `Host`.
    fn inspect_allowed(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), Refusal> {
        if let Some(o) = origin {
            if !is_own_origin(o, host) {
                return Err((
                    403,
                    "Forbidden",
                    format!("the inspector answers only its own page and tools without Origin (got Origin {o})"),
                ));
            }
        }
        if self.config.inspect == InspectMode::Local && !host.is_some_and(is_loopback_host) {
            return Err((
                403,
                "Forbidden",
                "the inspector answers only requests whose Host names a loopback address".into(),
            ));
        }
        Ok(())
    }

    /// The answer to an inspector endpoint: JSON, or a status and one line.
    pub(super) fn inspector_answer(
        &self,
        target: &str,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<String, Refusal> {
        self.inspect_allowed(origin, host)?;
        let ins = self
            .inspector
            .as_ref()
            .expect("the caller checked the inspector is on");
        let (bare, query) = target.split_once('?').unwrap_or((target, ""));
        let bad = |what: String| (400, "Bad Request", what);
        if bare == "/frames" {
            let (mut conn, mut limit) = (None, 100usize);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("conn", v)) => {
                        conn =
                            Some(v.parse::<u32>().map_err(|_| {
                                bad(format!("bad conn: {v:?} is not a connection id"))
                            })?)
                    }
                    Some(("limit", v)) => {
                        limit = v.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                            bad(format!("bad limit: {v:?} is not a count of at least 1"))
                        })?
                    }
                    _ => {
                        return Err(bad(format!(
                            "unknown parameter {pair:?} (use conn=ID and limit=N)"
                        )))
                    }
                }
            }
            return Ok(ins.frames_json(conn, limit));
        }
        if bare == "/connections" {
            let list: Vec<ConnectionJson> = self
                .slots
                .iter()
                .filter_map(|s| s.client.as_ref())
                .map(|c| self.connection_json(c, false))
                .collect();
            return Ok(serde_json::to_string(&list).unwrap_or_default());
        }
        let id_text = &bare["/connections/".len()..];
        let id: u32 = id_text
            .parse()
            .map_err(|_| bad(format!("bad connection id {id_text:?}")))?;
        let c = self
            .slots
            .iter()
            .filter_map(|s| s.client.as_ref())
            .find(|c| c.id.0 == id)
            .ok_or((404, "Not Found", format!("no open connection {id}")))?;
        Ok(serde_json::to_string(&self.connection_json(c, true)).unwrap_or_default())
    }

    fn connection_json(&self, c: &Client, with_request: bool) -> ConnectionJson {
        let ins = self.inspector.as_ref().expect("inspector on");
        let info = ins.infos.get(&c.id.0);
        let state = if c.proto.is_handshaking() {
            "handshaking"
        } else if c.proto.is_open() {
            "open"
        } else {
            "closing"
        };
        ConnectionJson {
            id: c.id.0,
            peer: c.stream.peer_addr().ok().map(|a| a.to_string()),
            path: info.map(|i| i.path.to_string()),
            room: c.room().map(|r| self.rooms[r].name().to_string()),
            transport: if c.tls.is_some() { "wss" } else { "ws" },
            state,
            extensions: c.proto.deflate().map(|a| a.response()),
            subprotocol: info.and_then(|i| i.subprotocol.as_deref().map(str::to_string)),
            knobs: info.and_then(|i| knobs_of(&i.path)),
            opened_at: info.map(|i| inspect::rfc3339_micros(i.opened_us)),
            messages_in: info.map_or(0, |i| i.messages_in),
            messages_out: info.map_or(0, |i| i.messages_out),
            bytes_in: info.map_or(0, |i| i.bytes_in),
            bytes_out: info.map_or(0, |i| i.bytes_out),
            request: with_request.then(|| {
                info.and_then(|i| i.head.as_deref())
                    .map_or(serde_json::Value::Null, |h| {
                        inspect::request_json(h, ins.secrets)
                    })
            }),
        }
    }

    /// An upgrade on `/.inspect`: refused as the endpoints are, or accepted
    /// as a live subscriber (its messages are ignored; it is sent records).
    pub(super) fn open_inspector(&mut self, t: Token, req: Request, now: Instant) {
        let refusal = self.inspect_allowed(req.origin.as_deref(), Some(&req.host));
        let (_, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let mut filter = Ok(Filter::All);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            filter = match pair.split_once('=') {
                Some(("conn", v)) => v
                    .parse()
                    .map(Filter::Conn)
                    .map_err(|_| format!("bad conn: {v:?} is not a connection id")),
                Some(("path", v)) if v.starts_with('/') => Ok(Filter::Path(v.to_string())),
                Some(("path", v)) => Err(format!("bad path: {v:?} does not start with /")),
                _ => Err(format!(
                    "unknown parameter {pair:?} (use conn=ID or path=PREFIX)"
                )),
            };
            if filter.is_err() {
                break;
            }
        }
        let Some(c) = self.client_mut(t) else { return };
        let (status, reason, why) = match (refusal, filter) {
            (Err(r), _) => r,
            (Ok(()), Err(why)) => (400, "Bad Request", why),
            (Ok(()), Ok(filter)) => {
                c.proto.set_id(INSPECTOR_CONN);
                c.proto.accept(now);
                c.inspecting = true;
                info!("{}: inspector subscribed ({filter:?})", c.id);
                let sub = Subscriber {
                    token: t,
                    conn: c.id.0,
                    filter,
                    dropped: 0,
                };
                if let Some(ins) = self.inspector.as_mut() {
                    ins.subscribers.push(sub);
                }
                return;
            }
        };
        info!("{}: /.inspect: {status}, {why}", c.id);
        c.proto.respond(line_response(status, reason, &why), now);
    }
}

/// Whether `host` (a `Host` header) names a loopback address.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `origin` is the server's own (the page it serves): `http://HOST`
/// or `https://HOST` for the request's own `Host`.
fn is_own_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|o| o.eq_ignore_ascii_case(host))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_own_origins() {
        for h in [
            "localhost",
            "localhost:9001",
            "127.0.0.1:9001",
            "127.1.2.3",
            "[::1]:9001",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "evil.localhost.example:9001",
            "10.0.0.1:9001",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert!(is_own_origin(
            "http://127.0.0.1:9001",
            Some("127.0.0.1:9001")
        ));
        assert!(is_own_origin(
            "https://localhost:9001",
            Some("localhost:9001")
        ));
        assert!(!is_own_origin(
            "http://evil.example",
            Some("127.0.0.1:9001")
        ));
        assert!(!is_own_origin("http://127.0.0.1:9001", None));
    }
}
