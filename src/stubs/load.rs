//! Loading stubs: the file's JSON checked into `Stubs` (every regex
//! compiled, every placeholder known, every duration, close code and header
//! valid), with the place of what is wrong: serde_json's line and column
//! for syntax and unknown fields, the stub's own place for the rest.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::template::{JsonTemplate, Template};
use super::{Body, On, Otherwise, PathPattern, Reply, Sender, Stub, Stubs, Then, Upgrade, Verdict};
use crate::proto::knobs::sendable_code;
use crate::proto::units::{parse_duration, parse_hex, DURATION_FORMS};

impl Stubs {
    /// Parses and checks a stubs file; an error says where
    /// (`LINE:COLUMN: what is wrong`).
    pub fn parse(text: &str, max_message: usize) -> Result<Stubs, String> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // serde_json appends " at line L column C": put the place first.
            match msg.rsplit_once(" at line ") {
                Some((what, place)) => {
                    let (line, col) = place.split_once(" column ").unwrap_or((place, "0"));
                    format!("{line}:{col}: {what}")
                }
                None => msg,
            }
        })?;
        let values: Value = serde_json::from_str(text).unwrap_or_default();
        let mut stubs = Vec::with_capacity(raw.stubs.len());
        for (i, mut s) in raw.stubs.into_iter().enumerate() {
            let name = s.name.take().unwrap_or_else(|| format!("stubs[{i}]"));
            let mut stub = s
                .check(name.clone(), max_message)
                .map_err(|e| format!("{}: stub {name:?}: {e}", raw_place(text, i)))?;
            stub.raw = values["stubs"][i].clone();
            stubs.push(Arc::new(stub));
        }
        let otherwise = match raw.otherwise {
            None => Otherwise::Echo,
            Some(RawOtherwise::Word(w)) if w == "echo" => Otherwise::Echo,
            Some(RawOtherwise::Word(w)) if w == "ignore" => Otherwise::Ignore,
            Some(RawOtherwise::Word(w)) => {
                return Err(format!(
                    "otherwise: {w:?} is not \"echo\", \"ignore\" or {{\"close\": …}}"
                ))
            }
            Some(RawOtherwise::Close { close }) => {
                let (code, reason) = close.check()?;
                Otherwise::Close(code, reason)
            }
        };
        let mut upgrades = Vec::with_capacity(raw.upgrades.len());
        for (i, u) in raw.upgrades.into_iter().enumerate() {
            let mut u = u.check().map_err(|e| format!("upgrades[{i}]: {e}"))?;
            u.raw = values["upgrades"][i].clone();
            upgrades.push(Arc::new(u));
        }
        let mut parsed = Stubs {
            stubs,
            upgrades,
            otherwise,
        };
        parsed.by_priority();
        Ok(parsed)
    }

    /// Stubs sent over HTTP: one stub object, or `{"stubs": [...]}`. An
    /// error says where (`LINE:COLUMN`) and what.
    pub fn parse_api(body: &[u8], max_message: usize) -> Result<Stubs, String> {
        let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the body is not JSON: {e}"))?;
        if super::har::is_har(&value) {
            let file = from_har(&value, None)?;
            return Stubs::parse(&file, max_message).map_err(|e| format!("from the HAR: {e}"));
        }
        let whole = if value.get("stubs").is_some() || value.get("upgrades").is_some() {
            if value.get("otherwise").is_some() {
                return Err("otherwise is the file's, not for stubs added over HTTP".into());
            }
            text.to_string()
        } else {
            format!("{{\"stubs\": [{text}]}}")
        };
        Stubs::parse(&whole, max_message)
    }
}

/// Reads and checks a stubs file: `FILE:LINE:COLUMN: what` when wrong. A
/// browser's HAR file (a top-level `log`) is read as the stubs its
/// WebSocket conversations make (`stubs_from_har`).
pub fn read(path: &std::path::Path, max_message: usize) -> Result<Stubs, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let har = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(super::har::is_har);
    let text = match har {
        Some(har) => {
            from_har(&har, Some("ignore")).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => text,
    };
    Stubs::parse(&text, max_message).map_err(|e| format!("{}:{e}", path.display()))
}

/// The stubs file (pretty JSON) a HAR file's WebSocket conversations make:
/// what `--stubs FILE.har` loads and `echocast stubs-from-har` prints.
pub fn stubs_from_har(text: &str) -> Result<String, String> {
    let har: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !super::har::is_har(&har) {
        return Err("not a HAR file: no top-level \"log\"".into());
    }
    from_har(&har, Some("ignore"))
}

fn from_har(har: &Value, otherwise: Option<&str>) -> Result<String, String> {
    let conversations = super::har::conversations(har)?;
    let file = super::record::stubs_file(&conversations, otherwise);
    Ok(serde_json::to_string_pretty(&file).unwrap_or_default() + "\n")
}

/// `LINE:COLUMN` of the `i`-th stub object in the file: found again by
/// parsing the file as far as that element (serde_json keeps no positions
/// in values).
fn raw_place(text: &str, i: usize) -> String {
    // Find `"stubs"` then the i-th top-level `{` of its array.
    let Some(start) = text.find("\"stubs\"") else {
        return "1:1".into();
    };
    let bytes = text.as_bytes();
    let (mut depth, mut seen, mut in_str, mut esc) = (0i32, 0usize, false, false);
    for (at, &b) in bytes.iter().enumerate().skip(start + 7) {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                if depth == 1 && b == b'{' {
                    if seen == i {
                        let line = text[..at].matches('\n').count() + 1;
                        let col = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
                        return format!("{line}:{col}");
                    }
                    seen += 1;
                }
                depth += 1;
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    "1:1".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    stubs: Vec<RawStub>,
    #[serde(default)]
    upgrades: Vec<RawUpgrade>,
    otherwise: Option<RawOtherwise>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpgrade {
    path: Option<String>,
    #[serde(default)]
    request: RawConditions,
    accept: Option<RawAccept>,
    refuse: Option<RawRefuse>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    query: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccept {
    subprotocol: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefuse {
    status: u16,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

/// Response header lines, each name a token and each value free of line
/// breaks.
fn header_lines(h: &std::collections::BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    for (n, v) in h {
        let token = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("header name {n:?} is not a token"));
        }
        if v.contains(['\r', '\n']) {
            return Err(format!("header {n}: the value has a line break"));
        }
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    Ok(out)
}

impl RawUpgrade {
    fn check(self) -> Result<Upgrade, String> {
        let path = path_pattern(self.path.as_deref())?;
        let verdict = match (self.accept, self.refuse) {
            (Some(a), None) => Verdict::Accept {
                subprotocol: a.subprotocol,
                headers: header_lines(&a.headers).map_err(|e| format!("accept.{e}"))?,
            },
            (None, Some(r)) => {
                if !(400..=599).contains(&r.status) {
                    return Err(format!("refuse.status {} is not 400-599", r.status));
                }
                Verdict::Refuse {
                    status: r.status,
                    headers: header_lines(&r.headers).map_err(|e| format!("refuse.{e}"))?,
                    body: r.body,
                }
            }
            _ => return Err("one of accept and refuse".into()),
        };
        Ok(Upgrade {
            raw: Value::Null,
            path,
            headers: self
                .request
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            query: self.request.query.into_iter().collect(),
            verdict,
        })
    }
}

fn path_pattern(p: Option<&str>) -> Result<PathPattern, String> {
    Ok(match p {
        None => PathPattern::Any,
        Some(p) if !p.starts_with('/') => return Err(format!("path {p:?} does not start with /")),
        Some(p) => match p.strip_suffix("/*") {
            Some(prefix) => PathPattern::Prefix(format!("{prefix}/")),
            None => PathPattern::Exact(p.to_string()),
        },
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawOtherwise {
    Word(String),
    Close { close: RawClose },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClose {
    code: u16,
    #[serde(default)]
    reason: String,
}

impl RawClose {
    fn check(self) -> Result<(u16, String), String> {
        if !sendable_code(self.code) {
            return Err(format!(
                "close code {} is not one we may send: 1000-1003, 1007-1011 or 3000-4999",
                self.code
            ));
        }
        if self.reason.len() > 123 {
            return Err(format!(
                "close reason of {} bytes: at most 123",
                self.reason.len()
            ));
        }
        Ok((self.code, self.reason))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStub {
    name: Option<String>,
    #[serde(default)]
    priority: i64,
    path: Option<String>,
    on: Value,
    state: Option<String>,
    #[serde(default)]
    reply: Vec<RawReply>,
    then: Option<RawThen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    text: Option<String>,
    json: Option<Value>,
    binary_hex: Option<String>,
    binary_base64: Option<String>,
    after: Option<String>,
    every: Option<String>,
    count: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThen {
    state: Option<String>,
    close: Option<RawClose>,
    drop: Option<Value>,
}

/// `250ms`, `2s`, `1m` (the command line's and the knobs' parser), up to
/// an hour.
fn duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).ok_or_else(|| format!("{text:?} is not {DURATION_FORMS}"))?;
    if d > Duration::from_secs(3600) {
        return Err(format!("{text:?} is over an hour"));
    }
    Ok(d)
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    parse_hex(text).ok_or_else(|| format!("{text:?} is not hex digits in pairs"))
}

impl RawStub {
    fn check(self, name: String, max_message: usize) -> Result<Stub, String> {
        let path = path_pattern(self.path.as_deref())?;
        let mut on_value = self.on.clone();
        let from = match on_value.as_object_mut().and_then(|o| o.remove("from")) {
            None => Sender::Client,
            Some(Value::String(s)) if s == "client" => Sender::Client,
            Some(Value::String(s)) if s == "upstream" => Sender::Upstream,
            Some(other) => {
                return Err(format!(
                    "on.from: {other} is not \"client\" or \"upstream\""
                ))
            }
        };
        let on = match &on_value {
            Value::String(s) if s == "open" => On::Open,
            Value::Object(o) if o.len() == 1 => {
                let (k, v) = o.iter().next().expect("one key");
                match (k.as_str(), v) {
                    ("text", Value::String(t)) => On::Text(t.clone()),
                    ("regex", Value::String(r)) => On::Regex(
                        Regex::new(r).map_err(|e| {
                            // The regex crate's message draws a caret over
                            // several lines: one line here.
                            let e = e.to_string();
                            format!("on.regex: {}", e.split_whitespace().collect::<Vec<_>>().join(" "))
                        })?,
                    ),
                    ("json", v) => On::Json(v.clone()),
                    ("binary_hex", Value::String(h)) => On::Binary(hex(h).map_err(|e| format!("on.binary_hex: {e}"))?),
                    ("any", Value::Bool(true)) => On::Any,
                    _ => return Err(format!("on: {{{k:?}: …}} is not text, regex, json, binary_hex or any")),
                }
            }
            other => {
                return Err(format!(
                    "on: {other} is not \"open\", {{\"text\"}}, {{\"regex\"}}, {{\"json\"}}, {{\"binary_hex\"}} or {{\"any\": true}}"
                ))
            }
        };
        let mut reply = Vec::with_capacity(self.reply.len());
        for (i, r) in self.reply.into_iter().enumerate() {
            let at = |e: String| format!("reply[{i}]: {e}");
            let body = match (r.text, r.json, r.binary_hex, r.binary_base64) {
                (Some(t), None, None, None) => Body::Text(Template::parse(&t).map_err(at)?),
                (None, Some(j), None, None) => Body::Json(JsonTemplate::parse(&j).map_err(at)?),
                (None, None, Some(h), None) => Body::Binary(hex(&h).map_err(at)?),
                (None, None, None, Some(b)) => Body::Binary(
                    STANDARD
                        .decode(b.as_bytes())
                        .map_err(|e| at(format!("binary_base64: {e}")))?,
                ),
                _ => {
                    return Err(at(
                        "give one of text, json, binary_hex and binary_base64".into()
                    ))
                }
            };
            let size = match &body {
                Body::Text(_) | Body::Json(_) => 0,
                Body::Binary(b) => b.len(),
            };
            if size > max_message {
                return Err(at(format!(
                    "{size} bytes, over --max-message-size ({max_message})"
                )));
            }
            let after = r
                .after
                .as_deref()
                .map(duration)
                .transpose()
                .map_err(|e| at(format!("after: {e}")))?;
            let every = r
                .every
                .as_deref()
                .map(duration)
                .transpose()
                .map_err(|e| at(format!("every: {e}")))?;
            if every == Some(Duration::ZERO) {
                return Err(at("every: a stream needs an interval above 0".into()));
            }
            let count = match (every, r.count) {
                (Some(_), Some(n)) if n >= 1 => n,
                (Some(_), _) => {
                    return Err(at("a stream (every) needs a count of at least 1".into()))
                }
                (None, Some(_)) => return Err(at("count goes with every".into())),
                (None, None) => 1,
            };
            reply.push(Reply {
                body,
                after: after.unwrap_or_default(),
                every,
                count,
            });
        }
        let then = match self.then {
            None => None,
            Some(RawThen {
                state: Some(s),
                close: None,
                drop: None,
            }) => Some(Then::State(s)),
            Some(RawThen {
                state: None,
                close: Some(c),
                drop: None,
            }) => {
                let (code, reason) = c.check().map_err(|e| format!("then.close: {e}"))?;
                Some(Then::Close(code, reason))
            }
            Some(RawThen {
                state: None,
                close: None,
                drop: Some(d),
            }) => Some(Then::Drop(match d {
                Value::Bool(true) => false,
                Value::String(s) if s == "reset" => true,
                other => return Err(format!("then.drop: {other} is not true or \"reset\"")),
            })),
            Some(_) => return Err("then: one of state, close and drop".into()),
        };
        Ok(Stub {
            id: 0,
            from_file: false,
            raw: Value::Null,
            priority: self.priority,
            name,
            path,
            on,
            from,
            state: self.state,
            reply,
            then,
        })
    }
}
