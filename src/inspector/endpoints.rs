//! The inspector's endpoints as rules: who may use them (its own page and
//! tools without `Origin`; in `local` mode only a loopback `Host`), what
//! `/frames` and `/.inspect` accept in their query, and the shape of a
//! connection in `/connections` (the loop fills it from its table).

use serde::Serialize;

use super::{Filter, Inspector, Only};
use crate::proto::handshake::line_response;
use crate::proto::inspect::Dir;
use crate::proto::knobs;

/// An endpoint's answer when it is not 200: status, reason and one line.
pub type Refusal = (u16, &'static str, String);

/// `/connections`, `/connections/ID`, `/frames`, `/messages`: the inspector's plain
/// endpoints (`/.inspect` is an upgrade).
pub fn is_endpoint(bare: &str) -> bool {
    bare == "/connections"
        || bare.starts_with("/connections/")
        || bare == "/frames"
        || bare == "/messages"
}

/// What the inspector's endpoints answer with `--inspect off` (or `local`
/// off loopback): 404, as for a path that does not exist.
pub fn off() -> Vec<u8> {
    line_response(
        404,
        "Not Found",
        "not found (the frame inspector is off: --inspect)",
    )
}

fn bad(what: String) -> Refusal {
    (400, "Bad Request", what)
}

impl Inspector {
    /// Whether a request may use the inspector's endpoints: its `Origin`
    /// absent or the server's own, and in `local` mode a loopback `Host`.
    pub(crate) fn allowed(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), Refusal> {
        if let Some(o) = origin {
            if !is_own_origin(o, host) {
                return Err((
                    403,
                    "Forbidden",
                    format!("the inspector answers only its own page and tools without Origin (got Origin {o})"),
                ));
            }
        }
        if self.local_only && !host.is_some_and(is_loopback_host) {
            return Err((
                403,
                "Forbidden",
                "the inspector answers only requests whose Host names a loopback address".into(),
            ));
        }
        Ok(())
    }

    /// `/frames?conn=ID&limit=N` and `/messages?conn=ID&dir=in|out&limit=N`:
    /// the JSON array, or why not.
    pub(crate) fn records_answer(&self, bare: &str, query: &str) -> Result<String, Refusal> {
        let messages = bare == "/messages";
        let (mut conn, mut dir, mut limit) = (None, None, 100usize);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("conn", v)) => {
                    conn = Some(
                        v.parse::<u32>()
                            .map_err(|_| bad(format!("bad conn: {v:?} is not a connection id")))?,
                    )
                }
                Some(("limit", v)) => {
                    limit = v.parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        bad(format!("bad limit: {v:?} is not a count of at least 1"))
                    })?
                }
                Some(("dir", v)) if messages => {
                    dir = Some(match v {
                        "in" => Dir::In,
                        "out" => Dir::Out,
                        _ => return Err(bad(format!("bad dir: {v:?} is not in or out"))),
                    })
                }
                _ if messages => {
                    return Err(bad(format!(
                        "unknown parameter {pair:?} (use conn=ID, dir=in|out and limit=N)"
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "unknown parameter {pair:?} (use conn=ID and limit=N)"
                    )))
                }
            }
        }
        Ok(if messages {
            self.messages_json(conn, dir, limit)
        } else {
            self.frames_json(conn, limit)
        })
    }
}

/// `/connections/ID`: the id, or why not.
pub fn connection_id(bare: &str) -> Result<u32, Refusal> {
    let id_text = bare.strip_prefix("/connections/").unwrap_or(bare);
    id_text
        .parse()
        .map_err(|_| bad(format!("bad connection id {id_text:?}")))
}

/// The filter of a live subscriber from `/.inspect`'s query, and which of
/// its records it wants (`only=messages`, `only=frames`).
pub fn live_filter(query: &str) -> Result<(Filter, Only), String> {
    let (mut filter, mut only) = (Filter::All, Only::Everything);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair {
            "only=messages" => only = Only::Messages,
            "only=frames" => only = Only::Frames,
            _ => filter = live_filter_pair(pair)?,
        }
    }
    Ok((filter, only))
}

/// One `conn=ID` or `path=PREFIX` of a live filter.
fn live_filter_pair(pair: &str) -> Result<Filter, String> {
    match pair.split_once('=') {
        Some(("conn", v)) => v
            .parse()
            .map(Filter::Conn)
            .map_err(|_| format!("bad conn: {v:?} is not a connection id")),
        Some(("path", v)) if v.starts_with('/') => Ok(Filter::Path(v.to_string())),
        Some(("path", v)) => Err(format!("bad path: {v:?} does not start with /")),
        _ => Err(format!(
            "unknown parameter {pair:?} (use conn=ID or path=PREFIX, and only=messages \
             or only=frames)"
        )),
    }
}

/// A connection in `/connections` (and `/connections/ID`, with `request`).
#[derive(Serialize)]
pub struct ConnectionJson {
    pub id: u32,
    pub peer: Option<String>,
    pub path: Option<String>,
    pub room: Option<String>,
    pub transport: &'static str,
    pub state: &'static str,
    pub extensions: Option<String>,
    pub subprotocol: Option<String>,
    pub knobs: Option<String>,
    pub opened_at: Option<String>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Raw frames were sent to it: what it does next may be our doing.
    pub tainted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// On a proxied client leg: the id of its upstream leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<u32>,
    /// On a proxy's upstream leg: the id of the client leg it serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<u32>,
    /// On a proxy's upstream leg: the URL it connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// On a stream of an HTTP/2 connection: its stream id, and the id of
    /// the connection carrying it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u32>,
}

impl Inspector {
    /// Fills in what the inspector kept of connection `id` (path, knobs,
    /// subprotocol, when it opened, its counts, and with `with_request` the
    /// request head, credentials redacted unless `--inspect-secrets`).
    pub(crate) fn describe(&self, id: u32, json: &mut ConnectionJson, with_request: bool) {
        let info = self.infos.get(&id);
        json.path = info.map(|i| i.path.to_string());
        json.subprotocol = info.and_then(|i| i.subprotocol.as_deref().map(str::to_string));
        json.knobs = info.and_then(|i| knobs_of(&i.path));
        json.opened_at = info.map(|i| super::rfc3339_micros(i.opened_us));
        json.messages_in = info.map_or(0, |i| i.messages_in);
        json.messages_out = info.map_or(0, |i| i.messages_out);
        json.bytes_in = info.map_or(0, |i| i.bytes_in);
        json.bytes_out = info.map_or(0, |i| i.bytes_out);
        json.tainted = info.is_some_and(|i| i.tainted);
        json.request = with_request.then(|| {
            info.and_then(|i| i.head.as_deref())
                .map_or(serde_json::Value::Null, |h| {
                    super::request_json(h, self.secrets)
                })
        });
    }
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

    #[test]
    fn access_rules_and_queries() {
        let local = Inspector::new(10, 1 << 20, false, true);
        let host = Some("127.0.0.1:9001");
        assert!(local.allowed(None, host).is_ok());
        assert!(local.allowed(Some("http://127.0.0.1:9001"), host).is_ok());
        assert_eq!(
            local
                .allowed(Some("http://evil.example"), host)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(local.allowed(None, Some("example.com")).unwrap_err().0, 403);
        let on = Inspector::new(10, 1 << 20, false, false);
        assert!(on.allowed(None, Some("example.com")).is_ok());
        assert_eq!(on.records_answer("/frames", "").unwrap(), "[]");
        assert_eq!(on.records_answer("/frames", "limit=0").unwrap_err().0, 400);
        assert_eq!(on.records_answer("/frames", "conn=x").unwrap_err().0, 400);
        assert_eq!(on.records_answer("/frames", "bogus=1").unwrap_err().0, 400);
        assert_eq!(on.records_answer("/frames", "dir=in").unwrap_err().0, 400);
        assert_eq!(
            on.records_answer("/messages", "dir=in&conn=3").unwrap(),
            "[]"
        );
        assert_eq!(on.records_answer("/messages", "dir=up").unwrap_err().0, 400);
        assert_eq!(connection_id("/connections/17"), Ok(17));
        assert_eq!(connection_id("/connections/x").unwrap_err().0, 400);
        assert_eq!(live_filter(""), Ok((Filter::All, Only::Everything)));
        assert_eq!(
            live_filter("conn=3"),
            Ok((Filter::Conn(3), Only::Everything))
        );
        assert_eq!(
            live_filter("path=/b&only=messages"),
            Ok((Filter::Path("/b".into()), Only::Messages))
        );
        assert_eq!(
            live_filter("only=frames&conn=4"),
            Ok((Filter::Conn(4), Only::Frames))
        );
        assert!(live_filter("only=both").is_err());
        assert!(live_filter("path=b").is_err());
        assert!(live_filter("x=1").is_err());
        assert_eq!(
            knobs_of("/echo?fragment=3&x=1&delay=5"),
            Some("fragment=3&delay=5".into())
        );
        assert_eq!(knobs_of("/echo"), None);
    }
}
