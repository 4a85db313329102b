//! The JSON of the inspector's records: a frame (`/frames`, the live
//! messages, the `echocast::frames` log), the driver's events, times in
//! RFC 3339 with microseconds, and a request head with its credentials
//! redacted.

use serde::Serialize;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{Body, Entry, Part};
use crate::proto::inspect::{Dir, FrameInfo, MessageInfo};

/// What an entry's records are (as `values` gives them, without building
/// them): a watcher that wants none of them costs no JSON.
pub(super) fn parts(e: &Entry) -> &'static [Part] {
    match &e.body {
        Body::Frame(_) | Body::Broadcast(_) => &[Part::Frame],
        Body::Message { info, .. } if info.folded => &[Part::Frame, Part::Message],
        Body::Message { .. } => &[Part::Message],
        _ => &[Part::Event],
    }
}

/// An entry's records as JSON values, oldest first, each with what it is
/// (a frame, a message or an event record): one record, or two for a message whose frame is folded
/// into it (in: the frame, then the message; out: the message, then the
/// frame), numbered `seq` and `seq + 1`, as if recorded apart.
pub(super) fn values(e: &Entry) -> Vec<(serde_json::Value, Part)> {
    let at = rfc3339_micros(e.at_us);
    let value = |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or_default();
    match &e.body {
        Body::Frame(f) => vec![(
            value(serde_json::to_value(FrameJson::new(e, e.seq, at, f, None))),
            Part::Frame,
        )],
        Body::Broadcast(b) => {
            let (frame, room) = (&b.frame, Some((&*b.room, b.members)));
            vec![(
                value(serde_json::to_value(FrameJson::new(
                    e, e.seq, at, frame, room,
                ))),
                Part::Frame,
            )]
        }
        Body::Message { info, room } => {
            let room = room.as_deref().map(|(r, n)| (&**r, *n));
            let Some(frame) = info.frame() else {
                let m = MessageJson::new(e, e.seq, at, info, room);
                return vec![(value(serde_json::to_value(m)), Part::Message)];
            };
            let (frame_seq, message_seq) = match info.dir {
                Dir::In => (e.seq, e.seq + 1),
                Dir::Out => (e.seq + 1, e.seq),
            };
            let f = (
                value(serde_json::to_value(FrameJson::new(
                    e,
                    frame_seq,
                    at.clone(),
                    &frame,
                    None,
                ))),
                Part::Frame,
            );
            let m = (
                value(serde_json::to_value(MessageJson::new(
                    e,
                    message_seq,
                    at,
                    info,
                    room,
                ))),
                Part::Message,
            );
            match info.dir {
                Dir::In => vec![f, m],
                Dir::Out => vec![m, f],
            }
        }
        other => vec![(
            value(serde_json::to_value(EventJson::new(e, at, other))),
            Part::Event,
        )],
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
    /// Sent as the inspector's caller described it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    raw: bool,
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
    fn new(
        e: &Entry,
        seq: u64,
        at: String,
        f: &FrameInfo,
        room: Option<(&'a str, usize)>,
    ) -> FrameJson<'a> {
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
            seq,
            at,
            dir: dir(f.dir),
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
            raw: f.raw,
            room: room.map(|r| r.0),
            members: room.map(|r| r.1),
        }
    }
}

fn dir(d: Dir) -> &'static str {
    match d {
        Dir::In => "in",
        Dir::Out => "out",
    }
}

/// A complete message: its size, how it went on the wire, and its first
/// bytes (text as a string, binary as base64).
#[derive(Serialize)]
struct MessageJson<'a> {
    conn: u32,
    seq: u64,
    at: String,
    event: &'static str,
    dir: &'static str,
    kind: &'static str,
    len: u64,
    wire_len: u64,
    frames: u32,
    compressed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<usize>,
}

impl<'a> MessageJson<'a> {
    fn new(
        e: &Entry,
        seq: u64,
        at: String,
        m: &MessageInfo,
        room: Option<(&'a str, usize)>,
    ) -> MessageJson<'a> {
        let c = &m.content;
        let (text, base64) = if m.text {
            // Cut inside a character: the whole characters before it.
            let valid = match std::str::from_utf8(c) {
                Ok(_) => c.len(),
                Err(err) => err.valid_up_to(),
            };
            (
                Some(String::from_utf8_lossy(&c[..valid]).into_owned()),
                None,
            )
        } else {
            (None, Some(STANDARD.encode(c.as_slice())))
        };
        MessageJson {
            conn: e.conn,
            seq,
            at,
            event: "message",
            dir: dir(m.dir),
            kind: if m.text { "text" } else { "binary" },
            len: m.len,
            wire_len: m.wire_len,
            frames: m.frames,
            compressed: m.compressed,
            text,
            base64,
            truncated: m.truncated(),
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
    action: Option<&'a str>,
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
            action: None,
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
            Body::Action(a) => {
                j.event = "action";
                j.action = Some(a);
            }
            Body::Knob(k) => {
                j.event = "knob";
                j.knob = Some(k);
            }
            Body::Frame(_) | Body::Broadcast(_) | Body::Message { .. } => {}
        }
        j
    }
}

/// `2026-11-28T17:45:03.123456Z`.
pub(crate) fn rfc3339_micros(us: u64) -> String {
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
pub(crate) fn request_json(head: &[u8], secrets: bool) -> serde_json::Value {
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
