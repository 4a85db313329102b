//! The proxy's rules, sans-IO (docs/proxy.md): which paths go to which
//! upstream (`--proxy PATH=URL`), the request our upstream leg sends for a
//! client's upgrade (its headers passed on end to end, hop-by-hop ones
//! left out, `Host` rewritten, `X-Forwarded-For` added), and what the client
//! is answered with: the upstream's 101 (its subprotocol and end-to-end
//! headers), or its refusal (status, headers and body), or a `502`/`504`
//! saying why there was none. No sockets here: `server/proxying.rs` moves
//! the bytes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::proto::client::{ClientRequest, Opened};
use crate::proto::connection::{Refusal, RefusalKind};
use crate::proto::handshake::http_response;
use crate::proto::knobs;

/// One `--proxy PATH=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path matched (without the `*` of a prefix).
    pub path: String,
    /// `PATH` ended in `/*` (or was `/`): every path under it.
    pub prefix: bool,
    pub upstream: Upstream,
}

/// Where a route goes: `ws://` or `wss://` HOST[:PORT] PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The URL's path (without a trailing `*`).
    pub path: String,
    /// The URL ended in `*`: the rest of the client's path is appended.
    pub append: bool,
    /// The addresses `host` resolved to when the route was read (a name is
    /// resolved once, at start, so the loop never waits on a resolver).
    pub addrs: Vec<SocketAddr>,
}

impl Upstream {
    /// `Host` as the upstream expects it: the port only when not the
    /// scheme's default.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL, for logs and `/connections`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.host_header())
    }
}

/// Parses `PATH=URL` (`/live/*=ws://127.0.0.1:4000/live/*`,
/// `/=wss://staging.example.com/socket`), resolving the host once.
pub fn parse_route(s: &str) -> Result<Route, String> {
    let (path, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PATH=URL, e.g. /=ws://127.0.0.1:4000/"))?;
    if !path.starts_with('/') || path.contains('?') {
        return Err(format!("{path:?}: the path starts with / and has no query"));
    }
    let (path, prefix) = match path.strip_suffix('*') {
        Some(p) if p.ends_with('/') => (p.to_string(), true),
        Some(_) => return Err(format!("{path:?}: a prefix ends in /*")),
        None if path == "/" => ("/".to_string(), true),
        None => (path.to_string(), false),
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(format!("{url:?}: the upstream is a ws:// or wss:// URL"));
    };
    let (authority, upath) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "{url:?}: no host (or user info, which is not supported)"
        ));
    }
    let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("{url:?}: bad host or port"))?;
    let (upath, append) = match upath.strip_suffix('*') {
        Some(p) => (p.to_string(), true),
        None => (upath.to_string(), false),
    };
    let addrs = resolve(&host, port).map_err(|e| format!("{url:?}: {e}"))?;
    Ok(Route {
        path,
        prefix,
        upstream: Upstream {
            tls,
            host,
            port,
            path: upath,
            append,
            addrs,
        },
    })
}

/// Parses `--proxy-header 'NAME: VALUE'`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected 'NAME: VALUE'"))?;
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("{s:?}: a value is one line"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => default,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host} does not resolve ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addrs)
}

/// The routes, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<Route>);

impl Routes {
    pub fn new(mut routes: Vec<Route>) -> Routes {
        // An exact path before prefixes, a longer prefix before a shorter one.
        routes.sort_by_key(|r| (r.prefix, std::cmp::Reverse(r.path.len())));
        Routes(routes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a route goes to a `wss://` upstream.
    pub fn has_tls(&self) -> bool {
        self.0.iter().any(|r| r.upstream.tls)
    }

    /// The upstream and the path to ask it for, for a request target
    /// (`/live/feed?x=1`): the route's rest appended when the URL ends in
    /// `*`, the client's query passed on.
    pub fn find(&self, target: &str) -> Option<(&Upstream, String)> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let route = self.0.iter().find(|r| {
            if r.prefix {
                path.starts_with(&r.path) || format!("{path}/") == r.path
            } else {
                path == r.path
            }
        })?;
        let up = &route.upstream;
        let mut out = up.path.clone();
        if up.append {
            out.push_str(path.get(route.path.len()..).unwrap_or(""));
        }
        // echocast's own knobs shape the client's leg; the rest is the
        // upstream's.
        let kept: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|p| {
                let key = p.split_once('=').map_or(*p, |(k, _)| k);
                !p.is_empty() && !knobs::NAMES.contains(&knobs::unescape(key).as_str())
            })
            .collect();
        if !kept.is_empty() {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&kept.join("&"));
        }
        Some((up, out))
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and the handshake's own, which each
/// leg negotiates for itself: never passed from one leg to the other.
const NOT_PASSED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
];

/// The fields of `headers` a proxy passes on: not hop-by-hop, not the
/// handshake's, and not named in `Connection` (RFC 9110 §7.6.1).
pub fn end_to_end(headers: &[(String, String)]) -> Vec<(String, String)> {
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            !NOT_PASSED.contains(&n.as_str()) && !named.contains(&n)
        })
        .cloned()
        .collect()
}

/// The request our upstream leg sends for a client's upgrade: the client's
/// end-to-end headers, `X-Forwarded-For` with the client's address added
/// (to the list it brought), `--proxy-header` lines last.
pub fn upstream_request(
    up: &Upstream,
    path: String,
    client_headers: &[(String, String)],
    protocols: &[String],
    client_ip: Option<IpAddr>,
    extra: &[(String, String)],
) -> ClientRequest {
    let mut headers = end_to_end(client_headers);
    if let Some(ip) = client_ip {
        match headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        {
            Some((_, v)) => *v = format!("{v}, {ip}"),
            None => headers.push(("X-Forwarded-For".into(), ip.to_string())),
        }
    }
    headers.extend(extra.iter().cloned());
    ClientRequest {
        host: up.host_header(),
        path,
        headers,
        protocols: protocols.to_vec(),
        deflate: true,
    }
}

/// The extra lines of the client's 101: the upstream 101's end-to-end
/// headers (`Set-Cookie`, custom ones), `Name: value\r\n` each.
pub fn accept_headers(opened: &Opened) -> String {
    header_lines(&end_to_end(&opened.headers))
}

/// Header fields as the lines of a head (`Name: value\r\n` each); a field
/// that would break a line is left out.
fn header_lines(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .filter(|(n, v)| !n.contains(['\r', '\n']) && !v.contains(['\r', '\n']))
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect()
}

/// Why an upstream could not be used before it answered (the socket's
/// error): `None` when it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Connecting failed (refused, unreachable, reset): a `502`.
    Connect(String),
    /// TLS to the upstream failed (rustls's reason): a `502`.
    Tls(String),
}

/// The answer the client gets for an upstream that did not open: its own
/// refusal passed on (status, end-to-end headers, body), or a `502` naming
/// why (a connect or TLS error, no answer, an invalid one), or a `504` when
/// it did not answer in time. Returns the status and the bytes.
pub fn refusal_answer(r: &Refusal, failure: Option<&Failure>, url: &str) -> (u16, Vec<u8>) {
    let line = |status: u16, reason: &str, why: String| {
        let body = format!("{why}\n");
        (
            status,
            http_response(status, reason, "text/plain", "", body.as_bytes()),
        )
    };
    match (failure, r.kind) {
        (Some(Failure::Connect(e)), _) => line(
            502,
            "Bad Gateway",
            format!("upstream {url}: cannot connect: {e}"),
        ),
        (Some(Failure::Tls(e)), _) => line(502, "Bad Gateway", format!("upstream {url}: TLS: {e}")),
        (None, RefusalKind::TimedOut) => line(
            504,
            "Gateway Timeout",
            format!("upstream {url}: no answer in time"),
        ),
        (None, RefusalKind::Closed) => line(
            502,
            "Bad Gateway",
            format!("upstream {url}: the connection ended before an answer"),
        ),
        (None, RefusalKind::Invalid) => line(
            502,
            "Bad Gateway",
            format!("upstream {url}: invalid answer: {}", r.why),
        ),
        (None, RefusalKind::Answered) => {
            let status = if (200..=599).contains(&r.status) {
                r.status
            } else {
                502
            };
            // `http_response` writes the Content-Type (below) and the length.
            let mut passed = end_to_end(&r.headers);
            passed.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
            let headers = header_lines(&passed);
            let kind = r
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                .map_or("text/plain", |(_, v)| v.as_str());
            let reason = if r.why.is_empty() { "Refused" } else { &r.why };
            (
                status,
                http_response(status, reason, kind, &headers, &r.body),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new(vec![
            parse_route("/=ws://127.0.0.1:4000/socket").unwrap(),
            parse_route("/live/*=ws://127.0.0.1:4001/v2/live/*").unwrap(),
            parse_route("/live/admin=wss://[::1]/admin").unwrap(),
        ])
    }

    #[test]
    fn paths_go_to_the_most_specific_route_with_the_rest_and_the_query() {
        let r = routes();
        let (up, p) = r.find("/live/feed/1?token=abc").unwrap();
        assert_eq!((up.port, p.as_str()), (4001, "/v2/live/feed/1?token=abc"));
        let (up, p) = r.find("/live/admin").unwrap();
        assert_eq!(
            (up.tls, up.host.as_str(), up.port, p.as_str()),
            (true, "::1", 443, "/admin")
        );
        assert_eq!(up.host_header(), "[::1]");
        let (up, p) = r.find("/anything?x=1").unwrap();
        assert_eq!((up.port, p.as_str()), (4000, "/socket?x=1"));
        assert_eq!(r.find("/live").unwrap().1, "/v2/live/");
        // The knobs are echocast's: not passed on.
        assert_eq!(
            r.find("/x?fragment=3&token=t&delay=1s&close=1011&after=2")
                .unwrap()
                .1,
            "/socket?token=t"
        );
        let only = Routes::new(vec![parse_route("/chat=ws://localhost:9/c?v=1").unwrap()]);
        assert_eq!(only.find("/chat?y=2").unwrap().1, "/c?v=1&y=2");
        assert!(only.find("/chat/more").is_none());
        assert!(only.find("/other").is_none());
    }

    #[test]
    fn bad_routes_say_what_is_wrong() {
        for (s, why) in [
            ("ws://x", "PATH=URL"),
            ("live=ws://x", "starts with /"),
            ("/live*=ws://x", "prefix ends in /*"),
            ("/=http://x", "ws:// or wss://"),
            ("/=ws://:80/", "bad host"),
            ("/=ws://u:p@x/", "user info"),
            ("/=ws://x:99999/", "bad host or port"),
            ("/=ws://no-such-host.invalid/", "does not resolve"),
        ] {
            let err = parse_route(s).unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn end_to_end_headers_pass_and_hop_by_hop_ones_do_not() {
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let client = h(&[
            ("Host", "localhost:9001"),
            ("Connection", "Upgrade, X-Private"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "k"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("Authorization", "Bearer t"),
            ("Cookie", "a=1"),
            ("Origin", "http://app"),
            ("X-Private", "hop"),
            ("X-Forwarded-For", "10.0.0.1"),
        ]);
        let up = &routes().0[2].upstream.clone();
        let req = upstream_request(
            up,
            "/p".into(),
            &client,
            &["chat".into()],
            Some("127.0.0.1".parse().unwrap()),
            &h(&[("X-Env", "test")]),
        );
        let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Authorization",
                "Cookie",
                "Origin",
                "X-Forwarded-For",
                "X-Env"
            ]
        );
        assert_eq!(req.headers[3].1, "10.0.0.1, 127.0.0.1");
        assert_eq!(req.host, up.host_header());
        assert_eq!(req.protocols, ["chat"]);
    }

    #[test]
    fn a_refusal_reaches_the_client_as_it_was_and_no_answer_says_why() {
        let refusal = Refusal {
            kind: RefusalKind::Answered,
            status: 401,
            why: "Unauthorized".into(),
            headers: vec![
                ("WWW-Authenticate".into(), "Bearer".into()),
                ("Content-Type".into(), "application/json".into()),
                ("Content-Length".into(), "2".into()),
                ("Connection".into(), "close".into()),
            ],
            body: b"{}".to_vec(),
        };
        let (status, bytes) = refusal_answer(&refusal, None, "ws://up/");
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(status, 401);
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("WWW-Authenticate: Bearer\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Content-Length: 2\r\n") && text.ends_with("\r\n\r\n{}"));
        assert_eq!(text.matches("Content-Length").count(), 1);
        let none = Refusal {
            kind: RefusalKind::Closed,
            status: 0,
            why: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let refused = Failure::Connect("Connection refused (os error 111)".into());
        let (s, b) = refusal_answer(&none, Some(&refused), "ws://up/");
        assert_eq!(s, 502);
        assert!(String::from_utf8(b)
            .unwrap()
            .contains("cannot connect: Connection refused"));
        let late = Refusal {
            kind: RefusalKind::TimedOut,
            ..none
        };
        assert_eq!(refusal_answer(&late, None, "ws://up/").0, 504);
    }
}
