//! The inspector's actions as rules (issue 26): which connection and action
//! a `POST /connections/ID/ACTION` names, and what its query and body ask
//! for, checked before anything is done: a message (`send`), a ping, a
//! close, a hang-up (`drop`), or frames of the caller's making (`frames`).
//! The loop finds the connection and acts through the core
//! (`crate::proto::connection::acting`).

use serde::Deserialize;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::endpoints::Refusal;
use crate::proto::connection::acting::RawFrame;
use crate::proto::knobs::sendable_code;
use crate::proto::units::parse_hex;
use crate::proto::MessageKind;

/// Raw frames' payloads in one request, at most.
pub const MAX_RAW_BYTES: usize = 1 << 20;

/// The action names, as in the path.
pub const NAMES: &[&str] = &["send", "ping", "close", "drop", "frames"];

/// An action whose request body is being read (by the requester's key).
#[derive(Debug)]
pub struct Pending {
    pub id: u32,
    pub name: &'static str,
    pub query: String,
    pub kind: MessageKind,
}

/// What to do to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send {
        kind: MessageKind,
        data: Vec<u8>,
        frame_size: Option<usize>,
    },
    Ping(Vec<u8>),
    Close {
        code: Option<u16>,
        reason: String,
    },
    Drop {
        reset: bool,
    },
    Frames(Vec<RawFrame>),
}

fn bad(why: impl Into<String>) -> Refusal {
    (400, "Bad Request", why.into())
}

fn too_large(why: impl Into<String>) -> Refusal {
    (413, "Content Too Large", why.into())
}

/// `/connections/ID/ACTION`: `None` if the path is not of that shape, else
/// the id and the action's name, or why not (400 for a bad id, 404 for an
/// action that does not exist).
pub fn target(bare: &str) -> Option<Result<(u32, &'static str), Refusal>> {
    let rest = bare.strip_prefix("/connections/")?;
    let (id, name) = rest.split_once('/')?;
    Some((|| {
        let id = id
            .parse()
            .map_err(|_| bad(format!("bad connection id {id:?}")))?;
        let Some(name) = NAMES.iter().find(|n| **n == name) else {
            return Err((
                404,
                "Not Found",
                format!(
                    "no action {name:?} (POST /connections/ID/ one of: {})",
                    NAMES.join(", ")
                ),
            ));
        };
        Ok((id, *name))
    })())
}

/// The action `name` with its query and body (`kind`: text or binary, from
/// the body's `Content-Type`), or why not. `max_message` bounds a message
/// (`--max-message-size`).
pub fn parse(
    name: &str,
    query: &str,
    kind: MessageKind,
    body: Vec<u8>,
    max_message: usize,
) -> Result<Action, Refusal> {
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let only = |allowed: &[&str]| -> Result<(), Refusal> {
        match params.iter().find(|(k, _)| !allowed.contains(k)) {
            Some((k, _)) if allowed.is_empty() => {
                Err(bad(format!("unknown parameter {k:?} ({name} takes none)")))
            }
            Some((k, _)) => Err(bad(format!(
                "unknown parameter {k:?} ({name} takes {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    };
    let param = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    match name {
        "send" => {
            only(&["fragment"])?;
            let frame_size = param("fragment")
                .map(|v| {
                    v.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        bad(format!("bad fragment: {v:?} is not a size of at least 1"))
                    })
                })
                .transpose()?;
            if body.len() > max_message {
                return Err(too_large(format!(
                    "the message is {} bytes, over --max-message-size ({max_message})",
                    body.len()
                )));
            }
            if kind == MessageKind::Text && std::str::from_utf8(&body).is_err() {
                return Err(bad(
                    "the body is not valid UTF-8, and its Content-Type says text \
                     (send binary as application/octet-stream)",
                ));
            }
            Ok(Action::Send {
                kind,
                data: body,
                frame_size,
            })
        }
        "ping" => {
            only(&[])?;
            if body.len() > 125 {
                return Err(too_large(format!(
                    "a ping's payload is at most 125 bytes (got {})",
                    body.len()
                )));
            }
            Ok(Action::Ping(body))
        }
        "close" => {
            only(&[])?;
            close(&body)
        }
        "drop" => {
            only(&["reset"])?;
            let reset = match param("reset") {
                None | Some("0" | "false") => false,
                Some("1" | "true") => true,
                Some(v) => return Err(bad(format!("bad reset: {v:?} is not 1, 0, true or false"))),
            };
            Ok(Action::Drop { reset })
        }
        "frames" => {
            only(&[])?;
            frames(&body)
        }
        _ => Err((404, "Not Found", format!("no action {name:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseJson {
    code: Option<u16>,
    reason: Option<String>,
}

/// `{"code": 4001, "reason": "bye"}`, both optional (an empty body: an
/// empty close frame).
fn close(body: &[u8]) -> Result<Action, Refusal> {
    let json: CloseJson = if body.iter().all(u8::is_ascii_whitespace) {
        CloseJson {
            code: None,
            reason: None,
        }
    } else {
        serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "the body is not {{\"code\": N, \"reason\": \"...\"}} ({e})"
            ))
        })?
    };
    if let Some(code) = json.code.filter(|&c| !sendable_code(c)) {
        return Err(bad(format!(
            "bad code: {code} is not a close code we may send: 1000-1003, 1007-1011 or 3000-4999"
        )));
    }
    let reason = json.reason.unwrap_or_default();
    if reason.len() > 123 {
        return Err(bad(format!(
            "bad reason: {} bytes, at most 123 (a close frame's payload is 125)",
            reason.len()
        )));
    }
    if json.code.is_none() && !reason.is_empty() {
        return Err(bad("a reason needs a code"));
    }
    Ok(Action::Close {
        code: json.code,
        reason,
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OpcodeJson {
    Number(u8),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameJson {
    opcode: OpcodeJson,
    #[serde(default = "yes")]
    fin: bool,
    #[serde(default)]
    rsv1: bool,
    #[serde(default)]
    rsv2: bool,
    #[serde(default)]
    rsv3: bool,
    #[serde(default)]
    mask: Option<String>,
    payload: Option<String>,
    payload_hex: Option<String>,
    payload_base64: Option<String>,
}

fn yes() -> bool {
    true
}

/// A JSON array of frames, each sent exactly as described.
fn frames(body: &[u8]) -> Result<Action, Refusal> {
    let list: Vec<FrameJson> = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the body is not a JSON array of frames like \
             [{{\"opcode\": \"text\", \"payload\": \"hi\"}}] ({e})"
        ))
    })?;
    if list.is_empty() {
        return Err(bad("no frames in the array"));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut total = 0usize;
    for (i, f) in list.into_iter().enumerate() {
        let at = |why: String| bad(format!("frame {i}: {why}"));
        let opcode = match f.opcode {
            OpcodeJson::Number(n) if n <= 15 => n,
            OpcodeJson::Number(n) => return Err(at(format!("opcode {n} is not 0-15"))),
            OpcodeJson::Name(name) => match name.as_str() {
                "continuation" => 0,
                "text" => 1,
                "binary" => 2,
                "close" => 8,
                "ping" => 9,
                "pong" => 10,
                _ => {
                    return Err(at(format!(
                    "opcode {name:?} is not continuation, text, binary, close, ping, pong or 0-15"
                )))
                }
            },
        };
        let mask = match f.mask.as_deref() {
            None => None,
            Some(hex) => Some(
                parse_hex(hex)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .ok_or_else(|| at(format!("mask {hex:?} is not 8 hex digits")))?,
            ),
        };
        let payload = match (f.payload, f.payload_hex, f.payload_base64) {
            (None, None, None) => Vec::new(),
            (Some(text), None, None) => text.into_bytes(),
            (None, Some(hex), None) => parse_hex(&hex)
                .ok_or_else(|| at("payload_hex is not hex digits in pairs".into()))?,
            (None, None, Some(b64)) => STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| at(format!("payload_base64 is not base64 ({e})")))?,
            _ => {
                return Err(at(
                    "give one of payload, payload_hex and payload_base64".into()
                ))
            }
        };
        total += payload.len();
        if total > MAX_RAW_BYTES {
            return Err(too_large(format!(
                "the frames' payloads are over {MAX_RAW_BYTES} bytes in all"
            )));
        }
        let rsv = u8::from(f.rsv1) << 2 | u8::from(f.rsv2) << 1 | u8::from(f.rsv3);
        out.push(RawFrame {
            opcode,
            fin: f.fin,
            rsv,
            mask,
            payload,
        });
    }
    Ok(Action::Frames(out))
}

impl Action {
    /// What was done, for the `action` record and the log.
    pub fn describe(&self) -> String {
        match self {
            Action::Send {
                kind,
                data,
                frame_size,
            } => {
                let kind = if *kind == MessageKind::Text {
                    "text"
                } else {
                    "binary"
                };
                match frame_size {
                    Some(n) => format!(
                        "send {kind} message of {} bytes in frames of {n}",
                        data.len()
                    ),
                    None => format!("send {kind} message of {} bytes", data.len()),
                }
            }
            Action::Ping(p) => format!("ping with {} bytes", p.len()),
            Action::Close {
                code: Some(c),
                reason,
            } if reason.is_empty() => format!("close {c}"),
            Action::Close {
                code: Some(c),
                reason,
            } => format!("close {c} {reason:?}"),
            Action::Close { code: None, .. } => "close without a code".into(),
            Action::Drop { reset: false } => "drop".into(),
            Action::Drop { reset: true } => "drop with a reset".into(),
            Action::Frames(f) => format!(
                "{} raw frame{}",
                f.len(),
                if f.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(json: &str) -> Result<Vec<RawFrame>, Refusal> {
        match parse(
            "frames",
            "",
            MessageKind::Binary,
            json.as_bytes().to_vec(),
            1 << 20,
        )? {
            Action::Frames(f) => Ok(f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_name_a_connection_and_an_action() {
        assert_eq!(target("/connections/7/send"), Some(Ok((7, "send"))));
        assert_eq!(target("/connections/7"), None);
        assert_eq!(target("/frames"), None);
        assert_eq!(target("/connections/x/send").unwrap().unwrap_err().0, 400);
        assert_eq!(
            target("/connections/7/explode").unwrap().unwrap_err().0,
            404
        );
    }

    #[test]
    fn raw_frames_take_every_field_and_defaults() {
        let f = frames_of(
            r#"[{"opcode": "text", "payload": "hi"},
                {"opcode": 3, "fin": false, "rsv1": true, "rsv3": true, "mask": "01020304", "payload_hex": "ff00"},
                {"opcode": "ping", "fin": false, "payload_base64": "AQI="}]"#,
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                RawFrame {
                    opcode: 1,
                    fin: true,
                    rsv: 0,
                    mask: None,
                    payload: b"hi".to_vec()
                },
                RawFrame {
                    opcode: 3,
                    fin: false,
                    rsv: 5,
                    mask: Some([1, 2, 3, 4]),
                    payload: vec![0xff, 0]
                },
                RawFrame {
                    opcode: 9,
                    fin: false,
                    rsv: 0,
                    mask: None,
                    payload: vec![1, 2]
                },
            ]
        );
        // On the wire exactly: a masked frame's payload is masked.
        let mut wire = Vec::new();
        f[1].encode(&mut wire);
        assert_eq!(wire, [0x53, 0x82, 1, 2, 3, 4, 0xff ^ 1, 2]);
    }

    #[test]
    fn bad_actions_say_what_is_wrong() {
        for (json, needle) in [
            ("{", "JSON array"),
            ("[]", "no frames"),
            (r#"[{"opcode": 16}]"#, "0-15"),
            (r#"[{"opcode": "texty"}]"#, "texty"),
            (r#"[{"opcode": 1, "mask": "0102"}]"#, "8 hex digits"),
            (
                r#"[{"opcode": 1, "payload": "a", "payload_hex": "00"}]"#,
                "one of",
            ),
            (r#"[{"opcode": 1, "payload_hex": "0g"}]"#, "hex"),
            (r#"[{"opcode": 1, "colour": "red"}]"#, "colour"),
        ] {
            let (status, _, why) = frames_of(json).unwrap_err();
            assert_eq!(status, 400, "{json}");
            assert!(why.contains(needle), "{json}: {why}");
        }
        let big = format!(
            r#"[{{"opcode": 2, "payload": "{}"}}]"#,
            "x".repeat(MAX_RAW_BYTES + 1)
        );
        assert_eq!(frames_of(&big).unwrap_err().0, 413);
        let p = |name: &str, query: &str, body: &[u8]| {
            parse(name, query, MessageKind::Text, body.to_vec(), 10)
        };
        assert_eq!(p("send", "", b"0123456789a").unwrap_err().0, 413);
        assert_eq!(p("send", "", &[0xff]).unwrap_err().0, 400);
        assert_eq!(p("send", "fragment=0", b"x").unwrap_err().0, 400);
        assert_eq!(p("send", "colour=red", b"x").unwrap_err().0, 400);
        assert_eq!(p("ping", "", &[0; 126]).unwrap_err().0, 413);
        assert_eq!(p("close", "", br#"{"code": 1005}"#).unwrap_err().0, 400);
        assert_eq!(p("close", "", br#"{"reason": "x"}"#).unwrap_err().0, 400);
        assert_eq!(p("drop", "reset=maybe", b"").unwrap_err().0, 400);
        assert_eq!(
            p("close", "", br#"{"code": 4001, "reason": "bye"}"#),
            Ok(Action::Close {
                code: Some(4001),
                reason: "bye".into()
            })
        );
        assert_eq!(
            p("close", "", b""),
            Ok(Action::Close {
                code: None,
                reason: String::new()
            })
        );
        assert_eq!(p("drop", "reset=1", b""), Ok(Action::Drop { reset: true }));
        assert_eq!(
            p("send", "fragment=3", b"hello"),
            Ok(Action::Send {
                kind: MessageKind::Text,
                data: b"hello".to_vec(),
                frame_size: Some(3)
            })
        );
    }
}
