//! A stream's answer: the HTTP/1.1 bytes the server's connection core wrote
//! for the request (see `request.rs`), read back as a status, fields and
//! body, for HEADERS and DATA frames. A `101` to a WebSocket's extended
//! CONNECT is `:status 200` and a tunnel (RFC 8441 §5); a body's HTTP/1.1
//! framing (`Content-Length`, chunks, the end of the connection) becomes
//! the stream's END_STREAM.

use crate::proto::body::{BodyReader, Framing};

/// A response head this long without its end is refused (the core writes
/// heads of some hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

/// Fields of an HTTP/1.1 answer that do not pass to HTTP/2 (RFC 9113 §8.2.2).
const DROPPED: [&str; 6] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "sec-websocket-accept",
];

#[derive(Debug)]
enum State {
    /// Reading a head (another may follow an interim `1xx`).
    Head(Vec<u8>),
    /// A body with HTTP/1.1 framing.
    Body(Box<BodyReader>),
    /// Everything until the core ends the stream: a tunnel, or a body
    /// delimited by the end of the connection (an event stream).
    Raw,
    Done,
}

/// A header list: names (lowercase) and values.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What one call made of the bytes.
#[derive(Debug, Default)]
pub struct Translated {
    /// A head to send as HEADERS: `:status` and the fields.
    pub heads: Vec<(u16, Fields)>,
    /// Body bytes for DATA frames.
    pub data: Vec<u8>,
    /// The answer is complete: END_STREAM.
    pub done: bool,
}

/// Reads one stream's answer.
#[derive(Debug)]
pub struct Answer {
    state: State,
    tunnel: bool,
    head_request: bool,
}

impl Answer {
    /// `tunnel`: the request was a WebSocket's extended CONNECT;
    /// `head_request`: a `HEAD`, whose answer has no body.
    pub fn new(tunnel: bool, head_request: bool) -> Answer {
        Answer {
            state: State::Head(Vec::new()),
            tunnel,
            head_request,
        }
    }

    /// Whether the answer is a tunnel now (the `101` was read).
    pub fn is_open_tunnel(&self) -> bool {
        self.tunnel && matches!(self.state, State::Raw)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether no head was read yet.
    pub fn is_unanswered(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    /// Whether the body runs until the core ends the stream (so its end
    /// is END_STREAM, not a reset).
    pub fn ends_with_stream(&self) -> bool {
        matches!(self.state, State::Raw)
    }

    /// Takes the core's bytes. Everything is consumed (bytes after a
    /// complete answer are dropped). `Err`: the bytes are not an answer.
    pub fn push(&mut self, mut input: &[u8], out: &mut Translated) -> Result<(), String> {
        while !input.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Raw => {
                    out.data.extend_from_slice(input);
                    return Ok(());
                }
                State::Body(reader) => {
                    let n = reader
                        .push(input, &mut out.data)
                        .map_err(|e| e.message().to_string())?;
                    input = &input[n..];
                    if reader.is_done() {
                        self.state = State::Done;
                        out.done = true;
                    }
                }
                State::Head(buf) => {
                    let before = buf.len();
                    buf.extend_from_slice(input);
                    let mut fields = [httparse::EMPTY_HEADER; 64];
                    let mut res = httparse::Response::new(&mut fields);
                    let end = match res.parse(buf) {
                        Ok(httparse::Status::Complete(end)) => end,
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(()),
                        Ok(httparse::Status::Partial) => {
                            return Err("an answer head over 64 KiB".into())
                        }
                        Err(e) => return Err(format!("an answer the gateway cannot read: {e}")),
                    };
                    let status = res.code.unwrap_or(500);
                    let mut list = Vec::with_capacity(res.headers.len());
                    let mut framing = Framing::None;
                    let mut has_length = false;
                    for f in res.headers.iter() {
                        let name = f.name.to_ascii_lowercase();
                        if name == "transfer-encoding" {
                            framing = Framing::Chunked;
                        } else if name == "content-length" {
                            let n = std::str::from_utf8(f.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok());
                            if framing == Framing::None {
                                framing = Framing::Length(n.ok_or("a bad content-length")?);
                            }
                            has_length = true;
                        }
                        let tunnel_length =
                            self.tunnel && status == 101 && name == "content-length";
                        if !DROPPED.contains(&name.as_str()) && !tunnel_length {
                            list.push((name.into_bytes(), f.value.to_vec()));
                        }
                    }
                    input = &input[end - before..];
                    match status {
                        101 if self.tunnel => {
                            out.heads.push((200, list));
                            self.state = State::Raw;
                        }
                        101 => return Err("a 101 to a request that did not ask to upgrade".into()),
                        100..=199 => {
                            out.heads.push((status, list));
                            self.state = State::Head(Vec::new());
                        }
                        _ => {
                            out.heads.push((status, list));
                            let empty = self.head_request || status == 204 || status == 304;
                            self.state = match framing {
                                _ if empty => State::Done,
                                Framing::None if has_length => State::Done,
                                Framing::None => State::Raw,
                                f => State::Body(Box::new(BodyReader::new(f, u64::MAX))),
                            };
                            if let State::Body(r) = &self.state {
                                if r.is_done() {
                                    self.state = State::Done;
                                }
                            }
                            out.done = self.is_done();
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(a: &mut Answer, bytes: &[u8], step: usize) -> Translated {
        let mut out = Translated::default();
        for chunk in bytes.chunks(step) {
            a.push(chunk, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn an_upgrade_is_a_200_and_a_tunnel() {
        for step in 1..40 {
            let mut a = Answer::new(true, false);
            let out = feed(
                &mut a,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: x\r\nSec-WebSocket-Protocol: chat\r\n\r\n\x81\x02hi",
                step,
            );
            assert_eq!(out.heads.len(), 1);
            assert_eq!(out.heads[0].0, 200);
            assert_eq!(
                out.heads[0].1,
                vec![(b"sec-websocket-protocol".to_vec(), b"chat".to_vec())]
            );
            assert_eq!(out.data, b"\x81\x02hi");
            assert!(!out.done && a.is_open_tunnel());
        }
    }

    #[test]
    fn bodies_end_the_stream_by_their_framing() {
        let mut a = Answer::new(false, false);
        let out = feed(
            &mut a,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nokXtrailing",
            7,
        );
        assert_eq!(
            out.heads[0].1,
            vec![(b"content-length".to_vec(), b"3".to_vec())]
        );
        assert_eq!(out.data, b"okX");
        assert!(out.done);

        let mut a = Answer::new(false, false);
        let out = feed(
            &mut a,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            3,
        );
        assert_eq!(
            out.heads.iter().map(|h| h.0).collect::<Vec<_>>(),
            [100, 201]
        );
        assert_eq!(out.data, b"abc");
        assert!(out.done);

        let mut a = Answer::new(false, false);
        let out = feed(
            &mut a,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n",
            5,
        );
        assert_eq!(out.data, b"data: 1\n\n");
        assert!(!out.done && a.ends_with_stream());

        let mut a = Answer::new(false, true);
        let out = feed(&mut a, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 64);
        assert!(out.done && out.data.is_empty());
    }

    #[test]
    fn a_refused_upgrade_keeps_its_status_and_body() {
        let mut a = Answer::new(true, false);
        let out = feed(
            &mut a,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbad\n",
            64,
        );
        assert_eq!(out.heads[0].0, 400);
        assert_eq!(out.data, b"bad\n");
        assert!(out.done && !a.is_open_tunnel());
    }
}
