//! The opening handshake (RFC 6455 §4.2): parse the client's Upgrade request with
//! httparse and build the server's answer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use super::body::{self, BodyError, Framing};
use super::error::HandshakeError;

/// The request head (request line and headers) may be at most this long.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// At most this many header fields.
pub const MAX_HEADERS: usize = 64;
/// RFC 6455 §1.3.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the server keeps of an accepted Upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request target, e.g. `/broadcast/lobby?x=1`.
    pub path: String,
    /// The `Origin` header, if any (browsers always send one).
    pub origin: Option<String>,
    /// The `Host` header (exactly one, RFC 6455 §4.1).
    pub host: String,
    /// The request head as received (request line and headers), kept only
    /// while the frame inspector is on (`Limits::tap`).
    pub head: Option<Box<[u8]>>,
    /// The computed `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// Every `Sec-WebSocket-Extensions` header value, in order (RFC 6455
    /// §9.1: the header may be repeated; RFC 7692 offers are read from them).
    pub extensions: Vec<String>,
    /// The subprotocols offered in `Sec-WebSocket-Protocol` (every header,
    /// comma-separated), in the client's order of preference (RFC 6455
    /// §4.1, §11.3.4).
    pub protocols: Vec<String>,
}

/// A parsed request head, valid or not as a WebSocket upgrade.
#[derive(Debug)]
pub enum Parsed {
    /// A valid upgrade request.
    Upgrade(Request),
    /// A plain HTTP request (no `Upgrade: websocket`).
    Plain(PlainRequest),
}

/// A plain HTTP request head: what the server answers from (a page, a JSON
/// endpoint, a room publish or subscription, 426, or 403 to a page that must
/// not read it), and how its body is framed (RFC 9112 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    pub method: String,
    pub path: String,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The first `Host` header, if any.
    pub host: Option<String>,
    /// Every header field, in order (values as text, lossily).
    pub headers: Vec<(String, String)>,
    /// HTTP/1.1 without `Connection: close`: another request may follow
    /// the answer on the same connection.
    pub keep_alive: bool,
    /// The body's framing, or why it cannot be read (checked against the
    /// size limit only when the body is read).
    pub framing: Result<Framing, BodyError>,
    /// `Expect: 100-continue`: the client waits for `100 Continue`.
    pub expect_continue: bool,
}

impl PlainRequest {
    /// The first value of a header (ASCII case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `base64(sha1(key + GUID))` (RFC 6455 §4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

fn has_token(values: &[&[u8]], token: &str) -> bool {
    values.iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((parsed, n)))`: the head is the
/// first `n` bytes; whatever follows is the client's first frames.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Parsed, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_REQUEST_HEAD {
                Err(HandshakeError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    if n > MAX_REQUEST_HEAD {
        return Err(HandshakeError::TooLarge);
    }
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("/");
    let all = |name: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };

    let text = |v: &[u8]| String::from_utf8_lossy(v.trim_ascii()).into_owned();
    let origin = all("origin").first().map(|o| text(o));
    if !has_token(&all("upgrade"), "websocket") {
        let fields: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
        return Ok(Some((
            Parsed::Plain(PlainRequest {
                method: method.to_owned(),
                path: path.to_owned(),
                origin,
                host: all("host").first().map(|h| text(h)),
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), text(h.value)))
                    .collect(),
                keep_alive: req.version == Some(1) && !has_token(&all("connection"), "close"),
                framing: body::framing(&fields, u64::MAX, false),
                expect_continue: body::expects_continue(&fields),
            }),
            n,
        )));
    }
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if req.version != Some(1) {
        return Err(HandshakeError::HttpVersion);
    }
    let host = match all("host").as_slice() {
        [h] => text(h),
        _ => return Err(HandshakeError::MissingHost),
    };
    if !has_token(&all("connection"), "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let versions = all("sec-websocket-version");
    if versions.len() != 1 || versions[0].trim_ascii() != b"13" {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let keys = all("sec-websocket-key");
    let key = match keys.as_slice() {
        [k] => k.trim_ascii(),
        _ => return Err(HandshakeError::BadKey),
    };
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let extensions = all("sec-websocket-extensions")
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let protocols = all("sec-websocket-protocol")
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|p| p.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    Ok(Some((
        Parsed::Upgrade(Request {
            path: path.to_owned(),
            origin,
            host,
            head: None,
            accept: accept_key(key),
            extensions,
            protocols,
        }),
        n,
    )))
}

/// The subprotocol to answer (RFC 6455 §4.2.2): the first one the client
/// offered that the server supports (`supported` holds names, or `*` for
/// "whatever the client offers first"). `None`: the 101 names none.
pub fn select_protocol<'a>(offered: &'a [String], supported: &[String]) -> Option<&'a str> {
    offered
        .iter()
        .find(|p| supported.iter().any(|s| s == "*" || s == *p))
        .map(String::as_str)
}

/// The `101 Switching Protocols` answer, naming the extension agreed and the
/// subprotocol selected, if any.
pub fn accept_response(req: &Request, extensions: Option<&str>, protocol: Option<&str>) -> Vec<u8> {
    let ext = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    let proto = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         {ext}{proto}\
         Server: echocast\r\n\r\n",
        req.accept
    )
    .into_bytes()
}

/// A complete HTTP/1.1 response that closes the connection.
pub fn http_response(
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> Vec<u8> {
    response(status, reason, content_type, extra_headers, body, false)
}

/// A complete HTTP/1.1 response after which the connection stays open for
/// the next request ([`crate::proto::Connection::respond_keep_alive`]).
pub fn keep_alive_response(
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> Vec<u8> {
    response(status, reason, content_type, extra_headers, body, true)
}

fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let connection = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         {connection}\
         Server: echocast\r\n\
         {extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `response` with more header lines (each ending in CRLF) added at the end
/// of its head: CORS headers on the answers of the room endpoints.
pub fn with_headers(mut response: Vec<u8>, extra: &str) -> Vec<u8> {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.splice(end + 2..end + 2, extra.bytes());
    }
    response
}

/// The answer to a refused handshake.
pub fn error_response(err: HandshakeError) -> Vec<u8> {
    error_response_with(err, None)
}

/// A plain-text answer whose body is one line (`line` and a newline): how
/// echocast says what was wrong with a request it refuses.
pub fn line_response(status: u16, reason: &str, line: &str) -> Vec<u8> {
    let body = format!("{line}\n");
    http_response(
        status,
        reason,
        "text/plain; charset=utf-8",
        "",
        body.as_bytes(),
    )
}

/// [`error_response`] with one more line of body (e.g. how this server
/// routes paths, after the 426's "connect with a WebSocket client").
pub fn error_response_with(err: HandshakeError, detail: Option<&str>) -> Vec<u8> {
    let extra = match err {
        HandshakeError::NotWebSocket => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version: 13\r\n",
        HandshakeError::MethodNotAllowed => "Allow: GET\r\n",
        HandshakeError::Overloaded => "Retry-After: 1\r\n",
        _ => "",
    };
    let body = match detail {
        Some(d) => format!("{}\n{d}\n", err.message()),
        None => format!("{}\n", err.message()),
    };
    http_response(
        err.status(),
        err.reason_phrase(),
        "text/plain; charset=utf-8",
        extra,
        body.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_rfc_example() {
        let (parsed, n) = parse_request(GOOD.as_bytes()).unwrap().unwrap();
        assert_eq!(n, GOOD.len());
        match parsed {
            Parsed::Upgrade(r) => {
                assert_eq!(r.path, "/chat");
                assert_eq!(r.origin.as_deref(), Some("http://example.com"));
                assert_eq!(r.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_until_complete() {
        for cut in 0..GOOD.len() {
            assert!(parse_request(&GOOD.as_bytes()[..cut]).unwrap().is_none());
        }
    }

    fn variant(from: &str, to: &str) -> Result<Option<(Parsed, usize)>, HandshakeError> {
        let s = GOOD.replace(from, to);
        parse_request(s.as_bytes())
    }

    #[test]
    fn refusals() {
        use HandshakeError::*;
        assert_eq!(variant("GET", "POST").unwrap_err(), MethodNotAllowed);
        assert_eq!(variant("HTTP/1.1", "HTTP/1.0").unwrap_err(), HttpVersion);
        assert_eq!(
            variant("Host: server.example.com\r\n", "").unwrap_err(),
            MissingHost
        );
        assert_eq!(
            variant("Connection: Upgrade", "Connection: keep-alive").unwrap_err(),
            MissingConnectionUpgrade
        );
        assert_eq!(
            variant("Version: 13", "Version: 8").unwrap_err(),
            UnsupportedVersion
        );
        assert_eq!(
            variant("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==").unwrap_err(),
            BadKey
        );
        assert_eq!(
            variant("dGhlIHNhbXBsZSBub25jZQ==", "!!!").unwrap_err(),
            BadKey
        );
        assert_eq!(
            parse_request(b"\x16\x03\x01garbage\r\n\r\n").unwrap_err(),
            Malformed
        );
    }

    #[test]
    fn token_lists_and_case() {
        let (p, _) = variant("Connection: Upgrade", "connection: keep-alive, UPGRADE")
            .unwrap()
            .unwrap();
        assert!(matches!(p, Parsed::Upgrade(_)));
        let (p, _) = variant("Upgrade: websocket", "upgrade: WebSocket")
            .unwrap()
            .unwrap();
        assert!(matches!(p, Parsed::Upgrade(_)));
    }

    #[test]
    fn plain_request_is_reported() {
        let (p, _) = parse_request(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(p, Parsed::Plain(ref r) if r.path == "/index.html"));
    }

    #[test]
    fn too_large() {
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        while big.len() <= MAX_REQUEST_HEAD {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse_request(&big).unwrap_err(), HandshakeError::TooLarge);
    }
}
