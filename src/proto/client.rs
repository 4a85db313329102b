//! The client role's opening handshake (RFC 6455 §4.1): the request we send,
//! the server's answer parsed with httparse and checked, and the masking keys
//! of the frames a client sends (§5.3). The state machine that uses them is
//! `connection/client.rs`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::deflate::{self, Agreed};
use super::handshake::accept_key;

/// The server's answer head may be at most this long.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// At most this many header fields in the answer.
pub const MAX_RESPONSE_HEADERS: usize = 64;
/// The body of a refusal (a 401, a 404 …) is kept up to this many bytes;
/// the rest is not read.
pub const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// What we ask the server for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Host` header's value (`name` or `name:port`).
    pub host: String,
    /// The request target (`/socket?x=1`).
    pub path: String,
    /// More header fields, sent as given after ours (`Authorization`,
    /// `Cookie`, `Origin` …). The caller leaves out the handshake's own.
    pub headers: Vec<(String, String)>,
    /// The subprotocols offered, in order of preference (§4.1 item 10).
    pub protocols: Vec<String>,
    /// Offer permessage-deflate ([`deflate::CLIENT_OFFER`]).
    pub deflate: bool,
}

/// The server's answer head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Every header field, in order (values as text, lossily).
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first value of a header (ASCII case-insensitive name).
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }

    /// Every value of a header, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many body bytes follow the head, if the head says
    /// (`Content-Length`); `None`: chunked or until the connection ends.
    pub fn content_length(&self) -> Option<usize> {
        if self.header("transfer-encoding").is_some() {
            return None;
        }
        self.header("content-length")?.trim().parse().ok()
    }

    /// Whether the body is chunked (RFC 9112 §6.1).
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| has_token(v, "chunked"))
    }
}

/// What a valid 101 agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The subprotocol the server chose (one we offered), if any.
    pub protocol: Option<String>,
    /// permessage-deflate, if the server accepted our offer.
    pub deflate: Option<Agreed>,
    /// The 101's header fields, in order.
    pub headers: Vec<(String, String)>,
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (§4.1 item 7).
pub fn new_key(keys: &mut MaskKeys) -> String {
    let mut raw = [0u8; 16];
    for c in raw.chunks_mut(4) {
        c.copy_from_slice(&keys.next_key());
    }
    STANDARD.encode(raw)
}

/// The request head, ending in the blank line.
pub fn request(req: &ClientRequest, key: &str) -> Vec<u8> {
    let mut out = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        if req.path.is_empty() { "/" } else { &req.path },
        req.host
    );
    if !req.protocols.is_empty() {
        out.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            req.protocols.join(", ")
        ));
    }
    if req.deflate {
        out.push_str(&format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            deflate::CLIENT_OFFER
        ));
    }
    for (name, value) in &req.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Parses the answer head at the start of `buf`: `Ok(None)` incomplete,
/// `Ok(Some((head, n)))` the head is the first `n` bytes (frames or the
/// body follow), `Err` not an HTTP/1.1 answer (or one over the limits).
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(format!("answer head over {MAX_RESPONSE_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("answer with over {MAX_RESPONSE_HEADERS} headers"))
        }
        Err(e) => return Err(format!("not an HTTP answer ({e})")),
    };
    if n > MAX_RESPONSE_HEAD {
        return Err(format!("answer head over {MAX_RESPONSE_HEAD} bytes"));
    }
    let head = Response {
        status: resp.code.unwrap_or(0),
        reason: resp.reason.unwrap_or("").to_string(),
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    Ok(Some((head, n)))
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a 101 as §4.1 (the client's requirements on the server's
/// handshake) says a client must: each failure is named for the logs and
/// the `502` the proxy answers with.
pub fn check_upgrade(head: &Response, key: &str, req: &ClientRequest) -> Result<Opened, String> {
    if head.status != 101 {
        return Err(format!("status {} is not 101", head.status));
    }
    // §4.1: "If the response lacks an |Upgrade| header field or the
    // |Upgrade| header field contains a value that is not an ASCII
    // case-insensitive match for the value "websocket", the client MUST
    // _Fail the WebSocket Connection_."
    if !head
        .header("upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err("101 without Upgrade: websocket".into());
    }
    // "... lacks a |Connection| header field or [it] doesn't contain a
    // token that is an ASCII case-insensitive match for the value "Upgrade"".
    if !head.all("connection").any(|v| has_token(v, "upgrade")) {
        return Err("101 without Connection: Upgrade".into());
    }
    // "... the |Sec-WebSocket-Accept| contains a value other than the
    // base64-encoded SHA-1 of the concatenation of the |Sec-WebSocket-Key|
    // (as a string, not base64-decoded) with the string
    // "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"".
    let expected = accept_key(key.as_bytes());
    if head.header("sec-websocket-accept").map(str::trim) != Some(expected.as_str()) {
        return Err("101 with a wrong Sec-WebSocket-Accept".into());
    }
    // "... [an extension] not present in the client's handshake ... MUST
    // _Fail the WebSocket Connection_."
    let extensions: Vec<&str> = head.all("sec-websocket-extensions").collect();
    let deflate = match (extensions.is_empty(), req.deflate) {
        (true, _) => None,
        (false, false) => return Err("101 names an extension that was not offered".into()),
        (false, true) => deflate::check_answer(&extensions)?,
    };
    // "... a subprotocol not present in the client's handshake ... MUST
    // _Fail the WebSocket Connection_."
    let protocols: Vec<&str> = head.all("sec-websocket-protocol").collect();
    let protocol = match protocols.as_slice() {
        [] => None,
        [one] if req.protocols.iter().any(|p| p == one.trim()) => Some(one.trim().to_string()),
        _ => return Err("101 names a subprotocol that was not offered".into()),
    };
    Ok(Opened {
        protocol,
        deflate,
        headers: head.headers.clone(),
    })
}

/// The masking keys of the frames a client sends (§5.3: "unpredictable";
/// "derived from a strong source of entropy"), and the handshake's key.
///
/// [`MaskKeys::random`] keys SipHash with std's per-process random keys
/// (`RandomState`, from the operating system) and hashes a counter: one
/// 64-bit output gives two masking keys, and without the secret keys the
/// next output cannot be told from the ones seen on the wire. The core
/// reads no entropy itself; [`MaskKeys::seeded`] makes a test or a fuzz
/// run repeatable.
#[derive(Debug, Clone)]
pub struct MaskKeys {
    source: Source,
    counter: u64,
    spare: Option<[u8; 4]>,
}

#[derive(Debug, Clone)]
enum Source {
    Random(RandomState),
    Seeded(u64),
}

impl MaskKeys {
    /// Unpredictable keys (see the type's documentation).
    pub fn random() -> MaskKeys {
        MaskKeys {
            source: Source::Random(RandomState::new()),
            counter: 0,
            spare: None,
        }
    }

    /// The same keys for the same seed.
    pub fn seeded(seed: u64) -> MaskKeys {
        MaskKeys {
            source: Source::Seeded(seed),
            counter: 0,
            spare: None,
        }
    }

    /// The next masking key.
    pub fn next_key(&mut self) -> [u8; 4] {
        if let Some(k) = self.spare.take() {
            return k;
        }
        self.counter += 1;
        let word = match &self.source {
            Source::Random(state) => state.hash_one(self.counter),
            Source::Seeded(seed) => {
                let mut h = DefaultHasher::new();
                (seed, self.counter).hash(&mut h);
                h.finish()
            }
        };
        let b = word.to_le_bytes();
        self.spare = Some([b[4], b[5], b[6], b[7]]);
        [b[0], b[1], b[2], b[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ClientRequest {
        ClientRequest {
            host: "example.com:8080".into(),
            path: "/chat?room=1".into(),
            headers: vec![("Authorization".into(), "Bearer x".into())],
            protocols: vec!["graphql-transport-ws".into(), "v2".into()],
            deflate: true,
        }
    }

    fn answer(key: &str, extra: &str) -> Response {
        let text = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
            accept_key(key.as_bytes())
        );
        parse_response(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn the_request_is_an_upgrade_with_our_key_and_offers() {
        let text = String::from_utf8(request(&req(), "dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert!(text.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: graphql-transport-ws, v2\r\n"));
        assert!(text.contains("Sec-WebSocket-Extensions: permessage-deflate"));
        assert!(text.ends_with("Authorization: Bearer x\r\n\r\n"));
        // The server's parser takes it as a valid upgrade.
        let (parsed, n) = super::super::handshake::parse_request(text.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(n, text.len());
        assert!(matches!(
            parsed,
            super::super::handshake::Parsed::Upgrade(_)
        ));
    }

    #[test]
    fn a_valid_101_opens_with_what_it_chose() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let opened = check_upgrade(
            &answer(
                key,
                "Sec-WebSocket-Protocol: v2\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            ),
            key,
            &req(),
        )
        .unwrap();
        assert_eq!(opened.protocol.as_deref(), Some("v2"));
        let d = opened.deflate.unwrap();
        // Our side: we compress each message alone; the server said it does too.
        assert!(d.server_no_context_takeover && d.client_no_context_takeover);
    }

    #[test]
    fn each_rule_of_4_1_fails_the_101() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut plain = req();
        plain.deflate = false;
        let cases = [
            (answer("another key", ""), &req(), "Sec-WebSocket-Accept"),
            (
                answer(key, "Sec-WebSocket-Protocol: v3\r\n"),
                &req(),
                "subprotocol",
            ),
            (
                answer(key, "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                &plain,
                "not offered",
            ),
            (
                answer(
                    key,
                    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n",
                ),
                &req(),
                "client_max_window_bits",
            ),
            (
                answer(key, "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
                &req(),
                "not offered",
            ),
        ];
        for (head, r, why) in cases {
            let err = check_upgrade(&head, key, r).unwrap_err();
            assert!(err.contains(why), "{err} should name {why}");
        }
        let mut no_upgrade = answer(key, "");
        no_upgrade
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("upgrade"));
        assert!(check_upgrade(&no_upgrade, key, &req())
            .unwrap_err()
            .contains("Upgrade"));
    }

    // docs/limits.md: "Upstream answer head (`--proxy`)"
    #[test]
    fn an_answer_head_is_parsed_incrementally_and_bounded() {
        let text = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 5\r\n\r\nnope!";
        for cut in 0..text.len() - 5 {
            assert_eq!(parse_response(&text[..cut]), Ok(None), "cut {cut}");
        }
        let (head, n) = parse_response(text).unwrap().unwrap();
        assert_eq!(
            (head.status, head.reason.as_str(), n),
            (401, "Unauthorized", text.len() - 5)
        );
        assert_eq!(head.header("www-authenticate"), Some("Bearer"));
        assert_eq!(head.content_length(), Some(5));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let long = vec![b'a'; MAX_RESPONSE_HEAD + 1];
        assert!(parse_response(&long).is_err());
    }

    #[test]
    fn keys_are_repeatable_when_seeded_and_differ_when_random() {
        let (mut a, mut b) = (MaskKeys::seeded(7), MaskKeys::seeded(7));
        let seq: Vec<_> = (0..8).map(|_| a.next_key()).collect();
        assert_eq!(seq, (0..8).map(|_| b.next_key()).collect::<Vec<_>>());
        let mut distinct = seq.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 8);
        let (mut r1, mut r2) = (MaskKeys::random(), MaskKeys::random());
        let one: Vec<_> = (0..4).map(|_| r1.next_key()).collect();
        let two: Vec<_> = (0..4).map(|_| r2.next_key()).collect();
        assert_ne!(one, two);
        let key = new_key(&mut MaskKeys::seeded(1));
        assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
    }
}
