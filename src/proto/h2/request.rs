//! A stream's request: the decoded header list checked against RFC 9113
//! §8.2–§8.3 and RFC 8441 §4, then written as the HTTP/1.1 request head the
//! server's one request parser reads. That is how every route, knob, stub
//! and room serves HTTP/2 unchanged: a stream is a transport whose bytes are
//! HTTP/1.1, translated at this boundary and nowhere else. Translation is
//! only safe because the checks here refuse what HTTP/1.1 would read
//! differently (a CR or LF in a value, a second `Content-Length`, a
//! connection-specific field): a malformed request is a stream error, never
//! bytes for the parser.

/// The key the synthesized upgrade carries: RFC 8441 §5 drops
/// `Sec-WebSocket-Key` and `Sec-WebSocket-Accept`, so any valid key does
/// (the answer's accept is removed again in `response.rs`).
pub const TUNNEL_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Fields that are about one HTTP/1.1 connection: malformed in HTTP/2
/// (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
];

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Any method but CONNECT.
    Plain,
    /// Extended CONNECT with `:protocol websocket` (RFC 8441 §4).
    WebSocket,
    /// Extended CONNECT for another protocol.
    OtherProtocol(String),
    /// CONNECT without `:protocol`: a tunnel to `:authority` (§8.5), which a
    /// test server does not open.
    Connect,
}

/// A checked request.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    pub method: String,
    pub path: String,
    pub authority: Option<String>,
    /// Regular fields, names in lowercase as they arrived.
    pub fields: Vec<(String, Vec<u8>)>,
    /// `content-length`, if declared: DATA must add up to it (§8.1.1).
    pub content_length: Option<u64>,
}

impl Request {
    /// Checks a decoded header list. `Err` says which rule it broke: the
    /// request is malformed and the stream is reset with PROTOCOL_ERROR.
    pub fn parse(list: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Request, String> {
        let mut method = None;
        let mut scheme = None;
        let mut path = None;
        let mut authority = None;
        let mut protocol = None;
        let mut fields = Vec::new();
        let mut content_length = None;
        for (name, value) in list {
            let name = String::from_utf8(name).map_err(|_| "a field name is not ASCII")?;
            if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
                return Err(format!(
                    "{name}: a value holds NUL, CR or LF (RFC 9113 §8.2.1)"
                ));
            }
            let blank = |b: Option<&u8>| b.is_some_and(|&b| b == b' ' || b == b'\t');
            if blank(value.first()) || blank(value.last()) {
                return Err(format!(
                    "{name}: leading or trailing whitespace (RFC 9113 §8.2.1)"
                ));
            }
            if let Some(pseudo) = name.strip_prefix(':') {
                if !fields.is_empty() {
                    return Err(format!("{name} after a regular field (RFC 9113 §8.3)"));
                }
                let slot = match pseudo {
                    "method" => &mut method,
                    "scheme" => &mut scheme,
                    "path" => &mut path,
                    "authority" => &mut authority,
                    "protocol" => &mut protocol,
                    _ => return Err(format!("unknown pseudo-header {name} (RFC 9113 §8.3)")),
                };
                let value = String::from_utf8(value).map_err(|_| format!("{name}: not UTF-8"))?;
                if slot.replace(value).is_some() {
                    return Err(format!("{name} twice (RFC 9113 §8.3)"));
                }
                continue;
            }
            if name.is_empty() || !name.bytes().all(is_lower_token) {
                return Err(format!(
                    "field name {name:?} is not a lowercase token (RFC 9113 §8.2.1)"
                ));
            }
            if CONNECTION_SPECIFIC.contains(&name.as_str()) {
                return Err(format!("{name} is connection-specific (RFC 9113 §8.2.2)"));
            }
            if name == "te" && value != b"trailers" {
                return Err("te other than \"trailers\" (RFC 9113 §8.2.2)".into());
            }
            if name == "content-length" {
                let n = std::str::from_utf8(&value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("content-length is not a number")?;
                if content_length.replace(n).is_some_and(|m| m != n) {
                    return Err("two content-length values".into());
                }
            }
            fields.push((name, value));
        }
        let method = method.ok_or(":method is missing (RFC 9113 §8.3.1)")?;
        let kind = match (method.as_str(), protocol) {
            ("CONNECT", None) => {
                if scheme.is_some() || path.is_some() || authority.is_none() {
                    return Err("CONNECT takes :authority only (RFC 9113 §8.5)".into());
                }
                Kind::Connect
            }
            ("CONNECT", Some(p)) => {
                if scheme.is_none() || path.is_none() || authority.is_none() {
                    return Err(
                        "extended CONNECT needs :scheme, :path and :authority (RFC 8441 §4)".into(),
                    );
                }
                if p == "websocket" {
                    Kind::WebSocket
                } else {
                    Kind::OtherProtocol(p)
                }
            }
            (_, Some(_)) => return Err(":protocol on a method other than CONNECT".into()),
            (_, None) => {
                if scheme.is_none() {
                    return Err(":scheme is missing (RFC 9113 §8.3.1)".into());
                }
                Kind::Plain
            }
        };
        let path = match (path, &kind) {
            (None, Kind::Connect) => String::new(),
            (None, _) => return Err(":path is missing (RFC 9113 §8.3.1)".into()),
            (Some(p), _) if p.starts_with('/') || (p == "*" && method == "OPTIONS") => p,
            (Some(p), _) => {
                return Err(format!(":path {p:?} is not origin-form (RFC 9113 §8.3.1)"))
            }
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(":path holds a space or a control character".into());
        }
        if !method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
        {
            return Err(format!(":method {method:?} is not a token"));
        }
        Ok(Request {
            kind,
            method,
            path,
            authority,
            fields,
            content_length,
        })
    }

    /// The HTTP/1.1 request head the server's parser reads for this
    /// request. `chunked`: a body of unknown length follows, sent as
    /// chunks; a WebSocket's request is an upgrade.
    pub fn http1_head(&self, chunked: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let websocket = self.kind == Kind::WebSocket;
        let method = if websocket { "GET" } else { &self.method };
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let has_host = self.fields.iter().any(|(n, _)| n == "host");
        if let Some(a) = self.authority.as_ref().filter(|_| !has_host) {
            line(&mut out, "host", a.as_bytes());
        }
        if websocket {
            out.extend_from_slice(b"upgrade: websocket\r\nconnection: Upgrade\r\n");
            line(&mut out, "sec-websocket-key", TUNNEL_KEY.as_bytes());
        }
        for (name, value) in &self.fields {
            let skip = websocket && matches!(name.as_str(), "sec-websocket-key" | "content-length");
            if !skip {
                line(&mut out, name, value);
            }
        }
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A token character (RFC 9110 §5.6.2) other than an uppercase letter.
fn is_lower_token(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(fields: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn extended_connect_becomes_an_upgrade() {
        let req = Request::parse(list(&[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/room/a?delay=5"),
            (":authority", "localhost:9001"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat"),
        ]))
        .unwrap();
        assert_eq!(req.kind, Kind::WebSocket);
        let head = String::from_utf8(req.http1_head(false)).unwrap();
        assert!(head.starts_with("GET /room/a?delay=5 HTTP/1.1\r\nhost: localhost:9001\r\n"));
        assert!(head.contains("upgrade: websocket\r\nconnection: Upgrade\r\n"));
        assert!(head.contains("sec-websocket-protocol: chat\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn malformed_requests_say_why() {
        let bad: &[&[(&str, &str)]] = &[
            &[(":method", "GET"), (":path", "/")],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("Host", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("x", "a\r\nb: c"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                ("x", "1"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":path", "/"),
            ],
            &[(":method", "GET"), (":scheme", "http"), (":path", "x")],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            &[
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":path", "/"),
            ],
            &[(":method", "GET"), (":scheme", "http"), (":path", "/a b")],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/"),
                ("content-length", "1"),
                ("content-length", "2"),
            ],
        ];
        for fields in bad {
            assert!(Request::parse(list(fields)).is_err(), "{fields:?}");
        }
    }

    #[test]
    fn a_body_of_unknown_length_is_chunked() {
        let req = Request::parse(list(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/rooms/a"),
            (":authority", "h"),
        ]))
        .unwrap();
        let head = String::from_utf8(req.http1_head(true)).unwrap();
        assert_eq!(
            head,
            "POST /rooms/a HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
