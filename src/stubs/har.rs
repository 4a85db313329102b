//! A browser's HAR file as recorded conversations (`record.rs` turns them
//! into stubs). Chrome and Edge save a WebSocket's messages in its entry:
//! `_resourceType: "websocket"`, `request.url`, the `response` (101 and
//! its headers, or the refusal), `_webSocketMessages` (`type` send or
//! receive, `time` in seconds since the epoch, `opcode` 1 or 2, `data`,
//! base64 for binary). The HAR's HTTP entries are not WebSockets and are
//! left out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::record::{Conversation, Data, Message, Opening};

/// Whether a JSON document is a HAR file (a top-level `log`).
pub fn is_har(v: &Value) -> bool {
    v.get("log").is_some_and(Value::is_object)
}

/// The WebSocket conversations of a HAR file, in the file's order.
pub fn conversations(har: &Value) -> Result<Vec<Conversation>, String> {
    let entries = har
        .pointer("/log/entries")
        .and_then(Value::as_array)
        .ok_or("not a HAR file: no log.entries array")?;
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if !is_websocket(e) {
            continue;
        }
        out.push(conversation(e).map_err(|why| format!("log.entries[{i}]: {why}"))?);
    }
    if out.is_empty() {
        return Err(format!(
            "the HAR file has no WebSocket entry among its {} entries (one with \
             \"_resourceType\": \"websocket\" and \"_webSocketMessages\", as Chrome's \
             DevTools save them with \"Save all as HAR with content\")",
            entries.len()
        ));
    }
    Ok(out)
}

fn is_websocket(e: &Value) -> bool {
    let url = e.pointer("/request/url").and_then(Value::as_str);
    e.get("_resourceType").and_then(Value::as_str) == Some("websocket")
        || e.get("_webSocketMessages").is_some()
        || url.is_some_and(|u| u.starts_with("ws://") || u.starts_with("wss://"))
}

fn conversation(e: &Value) -> Result<Conversation, String> {
    let url = e
        .pointer("/request/url")
        .and_then(Value::as_str)
        .ok_or("no request.url")?;
    let path = url_path(url);
    let status = e
        .pointer("/response/status")
        .and_then(Value::as_u64)
        .unwrap_or(101);
    let headers: Vec<(String, String)> = e
        .pointer("/response/headers")
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter_map(|h| {
                    let name = h.get("name")?.as_str()?;
                    let value = h.get("value")?.as_str()?;
                    Some((name.to_string(), value.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let opening = match status {
        // 0: the browser saw no answer it could show (a closed socket).
        101 | 0 => Opening::Accepted {
            subprotocol: headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
                .map(|(_, v)| v.clone()),
        },
        s if (400..=599).contains(&s) => Opening::Refused {
            status: s as u16,
            headers,
            body: e
                .pointer("/response/content/text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        s => return Err(format!("response status {s}: neither 101 nor a refusal")),
    };
    let raw = e
        .get("_webSocketMessages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let opened = e
        .get("startedDateTime")
        .and_then(Value::as_str)
        .and_then(rfc3339_seconds);
    let first = raw
        .first()
        .and_then(|m| m.get("time"))
        .and_then(Value::as_f64);
    let origin = opened.or(first).unwrap_or(0.0);
    let mut messages = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        let place = |why: &str| format!("_webSocketMessages[{i}]: {why}");
        let from_client = match m.get("type").and_then(Value::as_str) {
            Some("send") => true,
            Some("receive") => false,
            other => return Err(place(&format!("type {other:?}, not send or receive"))),
        };
        let time = m.get("time").and_then(Value::as_f64).unwrap_or(origin);
        let text = m.get("data").and_then(Value::as_str).unwrap_or_default();
        let data = match m.get("opcode").and_then(Value::as_u64) {
            Some(1) => Data::Text(text.to_string()),
            Some(2) => Data::Binary(
                STANDARD
                    .decode(text)
                    .map_err(|e| place(&format!("binary data that is not base64: {e}")))?,
            ),
            // Control frames (DevTools shows none; a HAR library may).
            _ => continue,
        };
        let at_ms = ((time - origin).max(0.0) * 1000.0).round() as u64;
        messages.push(Message {
            at_ms,
            from_client,
            data,
        });
    }
    // DevTools lists them as they came; keep the order of time, ties as listed.
    messages.sort_by_key(|m| m.at_ms);
    Ok(Conversation {
        path,
        opening,
        messages,
    })
}

/// The path of a `ws://`/`wss://` (or `http(s)://`) URL, without its query.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.is_empty() {
        "/".into()
    } else {
        path.into()
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-06T18:00:00.123Z`,
/// or with an offset).
fn rfc3339_seconds(s: &str) -> Option<f64> {
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, "Z"),
    };
    let mut c = clock.splitn(3, ':');
    let (h, mi): (i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let sec: f64 = c.next()?.parse().ok()?;
    let off = match offset {
        "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 - off) as f64 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_paths_and_messages_of_a_chrome_entry() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(
            rfc3339_seconds("2026-12-06T18:00:00.000Z"),
            Some(1_796_580_000.0)
        );
        assert_eq!(
            rfc3339_seconds("2026-12-06T19:00:00+01:00"),
            Some(1_796_580_000.0)
        );
        assert_eq!(url_path("wss://h:1/a/b?x=1#f"), "/a/b");
        assert_eq!(url_path("ws://h"), "/");
        let har = json!({"log": {"entries": [
            {"request": {"url": "https://h/app.js"}, "response": {"status": 200}},
            {"_resourceType": "websocket", "startedDateTime": "2026-12-06T18:00:00.000Z",
             "request": {"url": "ws://h/feed?token=1"},
             "response": {"status": 101, "headers": [{"name": "Sec-WebSocket-Protocol", "value": "v1"}]},
             "_webSocketMessages": [
                {"type": "receive", "time": 1_796_580_000.25_f64, "opcode": 1, "data": "hi"},
                {"type": "send", "time": 1_796_580_001.0_f64, "opcode": 2, "data": "AQI="}
             ]}
        ]}});
        assert!(is_har(&har));
        let c = conversations(&har).unwrap();
        assert_eq!(c.len(), 1, "the HTTP entry is left out");
        assert_eq!(c[0].path, "/feed");
        assert_eq!(
            c[0].opening,
            Opening::Accepted {
                subprotocol: Some("v1".into())
            }
        );
        assert_eq!(
            c[0].messages,
            [
                Message {
                    at_ms: 250,
                    from_client: false,
                    data: Data::Text("hi".into())
                },
                Message {
                    at_ms: 1000,
                    from_client: true,
                    data: Data::Binary(vec![1, 2])
                },
            ]
        );
        let none = json!({"log": {"entries": [{"request": {"url": "https://h/"}}]}});
        let e = conversations(&none).unwrap_err();
        assert!(
            e.contains("no WebSocket entry") && e.contains("_webSocketMessages"),
            "{e}"
        );
        let bad = json!({"log": {"entries": [{"_resourceType": "websocket", "request": {"url": "ws://h/"},
            "_webSocketMessages": [{"type": "send", "opcode": 2, "data": "%%"}]}]}});
        let e = conversations(&bad).unwrap_err();
        assert!(
            e.starts_with("log.entries[0]: _webSocketMessages[0]: binary"),
            "{e}"
        );
    }
}
