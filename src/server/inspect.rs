//! The frame inspector's driver side (docs/inspector.md): the bounded ring of
//! records — the core's (drained from `Limits::tap` once per loop turn and
//! stamped with the turn's time) and the driver's own (open, http, closed,
//! broadcast) —, what is kept per connection while the inspector is on, the
//! live subscribers of `/.inspect`, the `echocast::frames` log, and the JSON
//! of `/connections`, `/connections/ID` and `/frames`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::proto::inspect::{Dir, FrameInfo, Record, What};

/// Records of the whole server kept for `/frames` (`--inspect-frames`).
pub const DEFAULT_RING: usize = 10_000;
/// A live inspector with more than this unsent loses records (and is told
/// how many once it catches up) instead of slowing anyone down.
pub(super) const SUBSCRIBER_BACKLOG: usize = 256 * 1024;

/// What is kept per connection while the inspector is on.
pub(super) struct ConnInfo {
    pub(super) path: Box<str>,
    pub(super) subprotocol: Option<Box<str>>,
    /// The upgrade request head as received.
    pub(super) head: Option<Box<[u8]>>,
    pub(super) opened_us: u64,
    pub(super) messages_in: u64,
    pub(super) bytes_in: u64,
    pub(super) messages_out: u64,
    pub(super) bytes_out: u64,
}

/// Connection ids are small distinct integers: a multiply spreads them,
/// with none of SipHash's cost on a lookup per record.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHash;

pub(super) struct IdHasher(u64);

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A ring entry's content.
pub(super) enum Body {
    Frame(FrameInfo),
    /// A broadcast, recorded once per message: its frame and the room.
    Broadcast {
        frame: FrameInfo,
        room: Box<str>,
        members: usize,
    },
    Open {
        peer: Option<SocketAddr>,
        path: Box<str>,
    },
    Http {
        status: u16,
        why: Box<str>,
    },
    Error {
        close_code: u16,
        rule: &'static str,
    },
    Closed {
        sent: Option<u16>,
        received: Option<u16>,
        not_delivered: Option<u16>,
    },
    Knob(Box<str>),
}

pub(super) struct Entry {
    seq: u64,
    at_us: u64,
    pub(super) conn: u32,
    pub(super) body: Body,
}

/// A live subscriber's filter (`/.inspect?conn=ID` or `?path=PREFIX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Filter {
    All,
    Conn(u32),
    Path(String),
}

/// One live subscriber (a WebSocket connection on `/.inspect`).
pub(super) struct Subscriber {
    pub(super) token: mio::Token,
    pub(super) conn: u32,
    pub(super) filter: Filter,
    /// Records not sent because it read too slowly, to report.
    pub(super) dropped: u64,
}

pub(super) struct Inspector {
    ring: VecDeque<Entry>,
    cap: usize,
    next_seq: u64,
    /// Heap bytes of the ring (counted against `--max-memory`).
    bytes: usize,
    /// Records that left the ring (the oldest, once it was full).
    pub(super) evicted: u64,
    /// Per open connection (by id).
    pub(super) infos: HashMap<u32, Box<ConnInfo>, IdHash>,
    pub(super) subscribers: Vec<Subscriber>,
    pub(super) secrets: bool,
    clock: (Instant, SystemTime),
    /// The last `micros` answer: every record of a loop turn has the same.
    last_micros: std::cell::Cell<Option<(Instant, u64)>>,
}

impl Inspector {
    pub(super) fn new(cap: usize, secrets: bool) -> Inspector {
        Inspector {
            ring: VecDeque::new(),
            cap: cap.max(1),
            next_seq: 1,
            bytes: 0,
            evicted: 0,
            infos: HashMap::default(),
            subscribers: Vec::new(),
            secrets,
            clock: (Instant::now(), SystemTime::now()),
            last_micros: std::cell::Cell::new(None),
        }
    }

    /// Microseconds since the Unix epoch at `now` (the loop's clock).
    pub(super) fn micros(&self, now: Instant) -> u64 {
        if let Some((_, us)) = self.last_micros.get().filter(|(at, _)| *at == now) {
            return us;
        }
        let t = self.clock.1 + now.saturating_duration_since(self.clock.0);
        let us = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last_micros.set(Some((now, us)));
        us
    }

    pub(super) fn memory(&self) -> usize {
        self.bytes + self.ring.capacity() * std::mem::size_of::<Entry>()
    }

    pub(super) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Adds a record: counts it into its connection, keeps it in the ring
    /// (dropping the oldest past the bound), logs it.
    pub(super) fn push(&mut self, conn: u32, body: Body, now: Instant) {
        if let Body::Frame(f) = &body {
            if let Some(info) = self.infos.get_mut(&conn) {
                let data = f.opcode < 3;
                let (messages, bytes) = match f.dir {
                    Dir::In => (&mut info.messages_in, &mut info.bytes_in),
                    Dir::Out => (&mut info.messages_out, &mut info.bytes_out),
                };
                if data {
                    *bytes += f.len;
                    *messages += u64::from(f.fin);
                }
            }
        }
        let entry = Entry {
            seq: self.next_seq,
            at_us: self.micros(now),
            conn,
            body,
        };
        self.next_seq += 1;
        if log::log_enabled!(target: "echocast::frames", log::Level::Debug) {
            log::debug!(target: "echocast::frames", "{}", self.json(&entry));
        }
        self.bytes += entry_bytes(&entry);
        if self.ring.len() == self.cap {
            if let Some(old) = self.ring.pop_front() {
                self.bytes -= entry_bytes(&old);
                self.evicted += 1;
            }
        }
        self.ring.push_back(entry);
    }

    /// The newest entry.
    pub(super) fn last(&self) -> Option<&Entry> {
        self.ring.back()
    }

    /// Turns the core's records into entries (see [`Inspector::push`]).
    pub(super) fn body_of(record: Record) -> Body {
        match record.what {
            What::Frame(f) => Body::Frame(f),
            What::Error { close_code, rule } => Body::Error { close_code, rule },
            What::Knob(k) => Body::Knob(k.into()),
        }
    }

    /// `/frames?conn=ID&limit=N`: the newest `limit` records (of `conn`),
    /// oldest first, as a JSON array.
    pub(super) fn frames_json(&self, conn: Option<u32>, limit: usize) -> String {
        let mut picked: Vec<&Entry> = self
            .ring
            .iter()
            .rev()
            .filter(|e| conn.is_none_or(|c| e.conn == c))
            .take(limit)
            .collect();
        picked.reverse();
        let items: Vec<serde_json::Value> = picked.into_iter().map(|e| self.value(e)).collect();
        serde_json::to_string(&items).unwrap_or_else(|_| "[]".into())
    }

    /// One entry as JSON text (the log line and a live message).
    pub(super) fn json(&self, e: &Entry) -> String {
        serde_json::to_string(&self.value(e)).unwrap_or_default()
    }

    fn value(&self, e: &Entry) -> serde_json::Value {
        let at = rfc3339_micros(e.at_us);
        let v = match &e.body {
            Body::Frame(f) => serde_json::to_value(FrameJson::new(e, at, f, None)),
            Body::Broadcast {
                frame,
                room,
                members,
            } => serde_json::to_value(FrameJson::new(e, at, frame, Some((room, *members)))),
            other => serde_json::to_value(EventJson::new(e, at, other)),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    /// Whether a live subscriber wants this entry.
    pub(super) fn matches(&self, filter: &Filter, e: &Entry) -> bool {
        match filter {
            Filter::All => true,
            Filter::Conn(c) => e.conn == *c,
            Filter::Path(prefix) => match &e.body {
                Body::Broadcast { room, .. } => room.starts_with(prefix.as_str()),
                Body::Open { path, .. } => path.starts_with(prefix.as_str()),
                _ => self
                    .infos
                    .get(&e.conn)
                    .is_some_and(|i| i.path.starts_with(prefix.as_str())),
            },
        }
    }
}

fn entry_bytes(e: &Entry) -> usize {
    match &e.body {
        Body::Frame(_) => 0,
        Body::Broadcast { room, .. } => room.len(),
        Body::Open { path, .. } => path.len(),
        Body::Http { why, .. } => why.len(),
        Body::Knob(k) => k.len(),
        Body::Error { .. } | Body::Closed { .. } => 0,
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Opcode {
    Name(&'static str),
    Reserved(u8),
}

fn opcode(op: u8) -> Opcode {
    match op {
        0 => Opcode::Name("continuation"),
        1 => Opcode::Name("text"),
        2 => Opcode::Name("binary"),
        8 => Opcode::Name("close"),
        9 => Opcode::Name("ping"),
        10 => Opcode::Name("pong"),
        n => Opcode::Reserved(n),
    }
}

#[derive(Serialize)]
struct FrameJson<'a> {
    conn: u32,
    seq: u64,
    at: String,
    dir: &'static str,
    opcode: Opcode,
    fin: bool,
    rsv1: bool,
    rsv2: bool,
    rsv3: bool,
    masked: bool,
    len: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<usize>,
}

impl<'a> FrameJson<'a> {
    fn new(e: &Entry, at: String, f: &FrameInfo, room: Option<(&'a str, usize)>) -> FrameJson<'a> {
        let shown = f.preview.as_slice();
        let hex = || Some(shown.iter().map(|b| format!("{b:02x}")).collect());
        let (preview, preview_hex) = match std::str::from_utf8(shown) {
            // A close body starts with its code: shown in hex, the code and
            // reason have fields of their own.
            _ if f.opcode == 8 => (None, hex()),
            Ok(s) => (Some(s.to_string()), None),
            // A preview cut inside a character is still text.
            Err(err) if err.error_len().is_none() => (
                Some(String::from_utf8_lossy(&shown[..err.valid_up_to()]).into_owned()),
                None,
            ),
            Err(_) => (None, hex()),
        };
        let close = f.close();
        FrameJson {
            conn: e.conn,
            seq: e.seq,
            at,
            dir: match f.dir {
                Dir::In => "in",
                Dir::Out => "out",
            },
            opcode: opcode(f.opcode),
            fin: f.fin,
            rsv1: f.rsv & 4 != 0,
            rsv2: f.rsv & 2 != 0,
            rsv3: f.rsv & 1 != 0,
            masked: f.masked,
            len: f.len,
            preview,
            preview_hex,
            close_code: close.as_ref().map(|c| c.0),
            close_reason: close.map(|c| c.1),
            room: room.map(|r| r.0),
            members: room.map(|r| r.1),
        }
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    conn: u32,
    seq: u64,
    at: String,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    knob: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<Option<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    received: Option<Option<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_delivered: Option<u16>,
}

impl<'a> EventJson<'a> {
    fn new(e: &Entry, at: String, body: &'a Body) -> EventJson<'a> {
        let mut j = EventJson {
            conn: e.conn,
            seq: e.seq,
            at,
            event: "",
            peer: None,
            path: None,
            status: None,
            why: None,
            close_code: None,
            rule: None,
            knob: None,
            sent: None,
            received: None,
            not_delivered: None,
        };
        match body {
            Body::Open { peer, path } => {
                j.event = "open";
                j.peer = peer.map(|p| p.to_string());
                j.path = Some(path);
            }
            Body::Http { status, why } => {
                j.event = "http";
                j.status = Some(*status);
                j.why = Some(why);
            }
            Body::Error { close_code, rule } => {
                j.event = "error";
                j.close_code = Some(*close_code);
                j.rule = Some(rule);
            }
            Body::Closed {
                sent,
                received,
                not_delivered,
            } => {
                j.event = "closed";
                j.sent = Some(*sent);
                j.received = Some(*received);
                j.not_delivered = *not_delivered;
            }
            Body::Knob(k) => {
                j.event = "knob";
                j.knob = Some(k);
            }
            Body::Frame(_) | Body::Broadcast { .. } => {}
        }
        j
    }
}

/// `2026-11-28T17:45:03.123456Z`.
pub(super) fn rfc3339_micros(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        us % 1_000_000
    )
}

/// The request head as `[[name, value], …]` in order and case as received;
/// credentials redacted unless `secrets`.
pub(super) fn request_json(head: &[u8], secrets: bool) -> serde_json::Value {
    let mut headers = [httparse::EMPTY_HEADER; crate::proto::handshake::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return serde_json::Value::Null;
    }
    let list: Vec<[String; 2]> = req
        .headers
        .iter()
        .map(|h| {
            let secret = ["authorization", "proxy-authorization", "cookie"]
                .iter()
                .any(|s| h.name.eq_ignore_ascii_case(s));
            let value = if secret && !secrets {
                format!("<redacted, {} bytes>", h.value.len())
            } else {
                String::from_utf8_lossy(h.value).into_owned()
            };
            [h.name.to_string(), value]
        })
        .collect();
    serde_json::json!({
        "method": req.method.unwrap_or(""),
        "target": req.path.unwrap_or(""),
        "headers": list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_microseconds() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-28T17:45:03.123456Z
        assert_eq!(
            rfc3339_micros(1_795_887_903_123_456),
            "2026-11-28T17:45:03.123456Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
    }

    #[test]
    fn credentials_are_redacted_unless_asked() {
        let head = b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc\r\nX-Custom: Keep Case\r\n\r\n";
        let v = request_json(head, false);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/x?y=1");
        assert_eq!(v["headers"][1][1], "<redacted, 10 bytes>");
        assert_eq!(v["headers"][2][0], "X-Custom");
        assert_eq!(v["headers"][2][1], "Keep Case");
        assert_eq!(request_json(head, true)["headers"][1][1], "Bearer abc");
    }
}
