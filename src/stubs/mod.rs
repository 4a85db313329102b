//! Stubs (issue 27): scripted answers to a client's own protocol, from a
//! JSON file (`--stubs FILE`). Sans-IO like the rooms: the rules here are
//! plain data checked at load (every regex compiled, every placeholder
//! known, every duration and close code valid: a bad file names its line
//! and column); `session.rs` is one connection's engine (messages in,
//! replies, closes and timers out, no sockets); the driver feeds it.
//!
//! The file:
//!
//! ```json
//! {"stubs": [{"name": "hello", "path": "/feed", "on": "open",
//!             "reply": [{"json": {"type": "hello", "conn": "{{conn}}"}}]}],
//!  "otherwise": "echo"}
//! ```

pub mod har;
mod load;
pub mod record;
pub mod session;
pub mod template;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

pub use load::{read, stubs_from_har};
use template::{JsonTemplate, Template};

/// Every stub, the opening handshake's rules, and what to do with a
/// message no stub matched.
#[derive(Debug, Default)]
pub struct Stubs {
    pub stubs: Vec<Arc<Stub>>,
    pub upgrades: Vec<Arc<Upgrade>>,
    pub otherwise: Otherwise,
}

/// A rule for the opening handshake: conditions on the request, then
/// accept (with a subprotocol, extra headers) or refuse.
#[derive(Debug)]
pub struct Upgrade {
    /// The rule as written (what `GET /stubs` shows).
    pub raw: Value,
    pub path: PathPattern,
    /// Header names lowercased; values equal.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept {
        subprotocol: Option<String>,
        /// `Name: value\r\n` lines.
        headers: String,
    },
    Refuse {
        status: u16,
        headers: String,
        body: String,
    },
}

impl Upgrade {
    /// Whether a request on `path` with these headers (names any case)
    /// and query pairs meets the rule's conditions.
    pub fn matches(
        &self,
        path: &str,
        headers: &[(String, String)],
        query: &[(String, String)],
    ) -> bool {
        self.path.matches(path)
            && self.headers.iter().all(|(n, v)| {
                headers
                    .iter()
                    .any(|(hn, hv)| hn.eq_ignore_ascii_case(n) && hv == v)
            })
            && self
                .query
                .iter()
                .all(|(k, v)| query.iter().any(|(qk, qv)| qk == k && qv == v))
    }
}

/// The header lines of a request head as received (`None`: not kept).
pub fn head_headers(head: Option<&[u8]>) -> Vec<(String, String)> {
    let Some(head) = head else {
        return Vec::new();
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    if req.parse(head).is_err() {
        return Vec::new();
    }
    req.headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The reason phrase of a status a refusal may use.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ if status < 500 => "Client Error",
        _ => "Server Error",
    }
}

/// One rule: where, when, what to answer, and what then.
#[derive(Debug)]
pub struct Stub {
    /// Given when the stub is added (`GET /stubs`); 0 until then.
    pub id: u64,
    /// From the file (`true`) or added over HTTP.
    pub from_file: bool,
    /// The stub as written (what `GET /stubs` shows).
    pub raw: Value,
    /// Lower first; ties keep their order (HTTP newest first, then the
    /// file's). Default 0.
    pub priority: i64,
    pub name: String,
    pub path: PathPattern,
    pub on: On,
    /// Whose messages it matches: the client's (the default), or on a
    /// proxied path the upstream's (`"on": {"from": "upstream", …}`).
    pub from: Sender,
    /// Matches only while the connection is in this state.
    pub state: Option<String>,
    pub reply: Vec<Reply>,
    pub then: Option<Then>,
}

/// Who sent the message a stub matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sender {
    /// The client (every path).
    #[default]
    Client,
    /// The upstream of a proxied path (docs/proxy.md): a matching stub's
    /// replies go to the client in place of the upstream's message.
    Upstream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Every path that is not a room.
    Any,
    Exact(String),
    /// A prefix (the pattern ended in `/*`).
    Prefix(String),
}

impl PathPattern {
    /// Whether the request path `path` (query removed) is this pattern's.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Any => true,
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
pub enum On {
    Open,
    Text(String),
    Regex(Regex),
    /// The message parses as JSON and contains this pattern.
    Json(Value),
    Binary(Vec<u8>),
    Any,
}

#[derive(Debug)]
pub struct Reply {
    pub body: Body,
    /// From the match to the (first) message.
    pub after: Duration,
    /// A stream: `count` messages, one every `every` (the first `every`
    /// after `after`).
    pub every: Option<Duration>,
    pub count: u64,
}

#[derive(Debug)]
pub enum Body {
    Text(Template),
    Json(JsonTemplate),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    State(String),
    Close(u16, String),
    /// Without a close frame; a TCP reset if `true`.
    Drop(bool),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Otherwise {
    #[default]
    Echo,
    Ignore,
    Close(u16, String),
}

impl Stubs {
    /// `priority`, lower first, overrides the order the stubs came in (a
    /// stable sort: ties keep it).
    pub fn by_priority(&mut self) {
        self.stubs.sort_by_key(|s| s.priority);
    }

    /// Whether any stub applies to `path` (query removed).
    pub fn covers(&self, path: &str) -> bool {
        self.stubs.iter().any(|s| s.path.matches(path))
    }

    /// Every delay (`after`, `every`) divided by `speed` (`--stubs-speed`:
    /// 1 as written or recorded, 2 twice as fast, 0 none). Applied as the
    /// stubs are loaded, before anything shares them.
    pub fn at_speed(mut self, speed: f64) -> Stubs {
        if speed == 1.0 {
            return self;
        }
        let scale = |d: Duration| {
            if speed > 0.0 {
                d.div_f64(speed)
            } else {
                Duration::ZERO
            }
        };
        for stub in &mut self.stubs {
            if let Some(stub) = Arc::get_mut(stub) {
                for r in &mut stub.reply {
                    r.after = scale(r.after);
                    r.every = r.every.map(scale);
                }
            }
        }
        self
    }
}
