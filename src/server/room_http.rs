//! Rooms over HTTP, the parts that are rules rather than I/O: which `POST`
//! bodies are text, which `GET` asks for an event stream, `Last-Event-ID`
//! (header or `?lastEventId=`), the CORS headers of a room endpoint (and the
//! refusal of an origin `--allow-origin` does not list), and the heads of a
//! preflight's and an event stream's answers. rooms.rs carries them out.

use serde::Serialize;

use crate::proto::handshake::PlainRequest;
use crate::proto::{sse, MessageKind};

/// The reconnection delay subscribers are told (`retry:`), in milliseconds.
pub const RETRY_MS: u64 = 1000;

/// The last event of a subscriber too slow to keep up.
pub(super) const SLOW_EVENT: &[u8] = b"event: error\ndata: slow consumer\n\n";

/// How room messages from outside a room's WebSocket members get out:
/// `POST`s whose body is being read, and (`--cluster`) the link to Redis
/// through which every message of a room goes.
pub(super) struct Publishing {
    pub(super) reading: std::collections::HashMap<mio::Token, PendingPublish>,
    /// `Idempotency-Key`s published without `--cluster` (Redis keeps them
    /// with it).
    pub(super) keys: crate::rooms::keys::Keys,
    pub(super) cluster: Option<super::clustering::Clustering>,
}

/// A `POST` whose body is being read: where it goes and how.
pub(super) struct PendingPublish {
    pub(super) room: String,
    pub(super) kind: MessageKind,
    pub(super) cors: String,
    /// Its `Idempotency-Key`.
    pub(super) key: Option<Vec<u8>>,
}

/// The longest `Idempotency-Key`.
pub const KEY_MAX: usize = 128;

/// A `POST`'s `Idempotency-Key`: 1 to 128 visible ASCII characters.
pub(super) fn idempotency_key(req: &PlainRequest) -> Result<Option<Vec<u8>>, String> {
    let Some(k) = req.header("idempotency-key") else {
        return Ok(None);
    };
    if k.is_empty() || k.len() > KEY_MAX || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key must be 1 to {KEY_MAX} visible ASCII characters (no spaces)"
        ));
    }
    Ok(Some(k.as_bytes().to_vec()))
}

/// What a `POST`'s `Content-Type` makes its body: text for `text/*`,
/// `application/json`, or any type naming a charset; binary otherwise.
pub(super) fn body_kind(content_type: Option<&str>) -> MessageKind {
    if is_text(content_type) {
        MessageKind::Text
    } else {
        MessageKind::Binary
    }
}

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

/// Whether the request is a CORS preflight.
pub(super) fn is_preflight(req: &PlainRequest) -> bool {
    req.method == "OPTIONS" && req.header("access-control-request-method").is_some()
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

/// The id a subscriber resumes after: `Last-Event-ID`, else
/// `?lastEventId=`; a value that is not a number is refused with why.
pub(super) fn last_event_id(req: &PlainRequest) -> Result<Option<u64>, String> {
    let last = req
        .header("last-event-id")
        .filter(|v| !v.trim().is_empty())
        .or_else(|| query_param(&req.path, "lastEventId"));
    match last.map(|v| v.trim().parse::<u64>()) {
        None => Ok(None),
        Some(Ok(n)) => Ok(Some(n)),
        Some(Err(_)) => Err(format!(
            "Last-Event-ID must be a message id of this room (a decimal number), not {:?}",
            last.unwrap_or_default()
        )),
    }
}

/// Whether `--allow-origin` (`allowed`; empty: any) lets `origin` in: exact,
/// ASCII case-insensitive. The one rule for upgrades and room endpoints.
pub(super) fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

/// The CORS headers of a room endpoint's answer to `origin`, or `Err` for
/// an origin `allowed` does not list (as for a WebSocket upgrade; empty:
/// any). No `Origin`: none needed.
pub(super) fn cors(origin: Option<&str>, allowed: &[String]) -> Result<String, ()> {
    let Some(o) = origin else {
        return Ok(String::new());
    };
    if !origin_allowed(o, allowed) {
        return Err(());
    }
    // The origin is a header value httparse accepted: no CR or LF.
    Ok(format!(
        "Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"
    ))
}

/// The answer to a preflight.
pub(super) fn preflight(cors: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 204 No Content\r\n\
         {cors}\
         Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
         Access-Control-Allow-Headers: Content-Type, Last-Event-ID, Idempotency-Key\r\n\
         Access-Control-Max-Age: 600\r\n\
         Server: echocast\r\n\r\n"
    )
    .into_bytes()
}

/// The head of an event stream, its `retry:` and the greeting.
pub(super) fn stream_head(cors: &str, greeting: Option<&str>) -> Vec<u8> {
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
    if let Some(g) = greeting {
        sse::event(&mut head, None, None, g);
    }
    head
}

/// The `event: gap` for ids `from..=to` a subscriber can no longer have.
pub(super) fn gap_event((from, to): (u64, u64)) -> Vec<u8> {
    #[derive(Serialize)]
    struct Gap {
        from: u64,
        to: u64,
    }
    let mut out = Vec::new();
    let data = serde_json::to_string(&Gap { from, to }).unwrap_or_default();
    sse::event(&mut out, None, Some("gap"), &data);
    out
}

/// The body of a publish's 200; `duplicate`: its `Idempotency-Key` was
/// published before, as `id`, and this one was not published again.
pub(super) fn published_json(room: &str, id: u64, members: usize, duplicate: bool) -> String {
    #[derive(Serialize)]
    struct Published<'a> {
        room: &'a str,
        id: u64,
        members: usize,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    }
    let p = Published {
        room,
        id,
        members,
        duplicate,
    };
    serde_json::to_string(&p).unwrap_or_default() + "\n"
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
    fn cors_and_gaps() {
        assert_eq!(cors(None, &["http://a".into()]), Ok(String::new()));
        assert_eq!(
            cors(Some("http://A"), &["http://a".into()]),
            Ok("Access-Control-Allow-Origin: http://A\r\nVary: Origin\r\n".into())
        );
        assert_eq!(cors(Some("http://b"), &["http://a".into()]), Err(()));
        assert!(cors(Some("http://b"), &[]).is_ok());
        assert_eq!(
            gap_event((2, 5)),
            b"event: gap\ndata: {\"from\":2,\"to\":5}\n\n"
        );
        assert_eq!(
            published_json("/broadcast/x", 3, 2, false),
            "{\"room\":\"/broadcast/x\",\"id\":3,\"members\":2}\n"
        );
        assert_eq!(
            published_json("/broadcast/x", 3, 0, true),
            "{\"room\":\"/broadcast/x\",\"id\":3,\"members\":0,\"duplicate\":true}\n"
        );
    }
}
