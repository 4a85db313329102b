//! HTTP/1.1 request bodies (RFC 9112 §6–§7), sans-IO: the framing a request
//! head declares, `Expect: 100-continue`, and a push parser that takes bytes
//! as they arrive and hands out the body, bounded by a cap, never reserving
//! memory from a declared length. The connection reads bodies with it
//! (`connection/plain.rs`).

use httparse::Status;

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    None,
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a body cannot be read, as the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// 400: a malformed `Content-Length` (or several that differ), both
    /// `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3 item 3 lets a
    /// server reject it, which closes the request-smuggling door), or a
    /// malformed chunk.
    Malformed,
    /// 411: a body is required and its length is not declared.
    LengthRequired,
    /// 413: over the cap, by declaration or as the chunks arrive.
    TooLarge,
    /// 501: a transfer coding other than `chunked` (RFC 9112 §6.1).
    UnsupportedCoding,
}

impl BodyError {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            BodyError::Malformed => (400, "Bad Request"),
            BodyError::LengthRequired => (411, "Length Required"),
            BodyError::TooLarge => (413, "Content Too Large"),
            BodyError::UnsupportedCoding => (501, "Not Implemented"),
        }
    }

    /// The one line an answer's body says.
    pub fn message(self) -> &'static str {
        match self {
            BodyError::Malformed => {
                "malformed body framing (Content-Length, or a chunk; both Content-Length and \
                 Transfer-Encoding are refused)"
            }
            BodyError::LengthRequired => {
                "a body needs Content-Length or Transfer-Encoding: chunked"
            }
            BodyError::TooLarge => "the body is over --max-message-size",
            BodyError::UnsupportedCoding => "only Transfer-Encoding: chunked is supported",
        }
    }
}

/// The framing of a request's body from its headers (name, value), checked
/// against `max` body bytes. `required`: a body must be declared (a POST
/// without either header gets 411).
pub fn framing(headers: &[(&str, &[u8])], max: u64, required: bool) -> Result<Framing, BodyError> {
    let values = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    let te = values("transfer-encoding");
    let cl = values("content-length");
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(BodyError::Malformed);
        }
        // The codings, in order: only `chunked`, once, last.
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|c| String::from_utf8_lossy(c.trim_ascii()).to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        return match codings.as_slice() {
            [only] if only == "chunked" => Ok(Framing::Chunked),
            _ => Err(BodyError::UnsupportedCoding),
        };
    }
    let mut length = None;
    for v in cl {
        // A list of equal values is allowed (RFC 9112 §6.3 item 5).
        for part in v.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
                return Err(BodyError::Malformed);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(BodyError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(BodyError::Malformed);
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) if n > max => Err(BodyError::TooLarge),
        Some(n) => Ok(Framing::Length(n)),
        None if required => Err(BodyError::LengthRequired),
        None => Ok(Framing::None),
    }
}

/// Whether the client waits for `100 Continue` before sending its body
/// (RFC 9110 §10.1.1: `Expect: 100-continue`, case-insensitive).
pub fn expects_continue(headers: &[(&str, &[u8])]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("expect") && v.trim_ascii().eq_ignore_ascii_case(b"100-continue")
    })
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where a body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `remaining` bytes of a `Content-Length` body.
    Length {
        remaining: u64,
    },
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk's data.
    ChunkData {
        remaining: u64,
    },
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
    Done,
}

/// Reads one request body from bytes as they arrive.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
    max: u64,
    total: u64,
    /// A chunk-size or trailer line split across reads (bounded).
    line: Vec<u8>,
}

/// A chunk-size line (with extensions) or a trailer line may be this long.
const MAX_LINE: usize = 4096;

impl BodyReader {
    pub fn new(framing: Framing, max: u64) -> BodyReader {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::ChunkSize,
        };
        BodyReader {
            state,
            max,
            total: 0,
            line: Vec::new(),
        }
    }

    /// Heap bytes held (a partial chunk-size or trailer line).
    pub fn memory(&self) -> usize {
        self.line.capacity()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes bytes: appends body bytes to `out`, returns how many of `input`
    /// were used (the rest, once done, is the next request).
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<usize, BodyError> {
        let start = input.len();
        while !input.is_empty() {
            match self.state {
                State::Done => break,
                State::Length { remaining } | State::ChunkData { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    self.total += n as u64;
                    if self.total > self.max {
                        return Err(BodyError::TooLarge);
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = remaining - n as u64;
                    self.state = match (self.state, left) {
                        (State::Length { .. }, 0) => State::Done,
                        (State::Length { .. }, l) => State::Length { remaining: l },
                        (_, 0) => State::ChunkEnd,
                        (_, l) => State::ChunkData { remaining: l },
                    };
                }
                State::ChunkEnd => {
                    // Exactly CRLF after a chunk's data: anything else is
                    // refused at its first byte.
                    let have = self.line.len();
                    let n = (2 - have).min(input.len());
                    if input[..n] != b"\r\n"[have..have + n] {
                        return Err(BodyError::Malformed);
                    }
                    input = &input[n..];
                    if have + n == 2 {
                        self.line.clear();
                        self.state = State::ChunkSize;
                    } else {
                        self.line.extend_from_slice(b"\r");
                    }
                }
                State::ChunkSize | State::Trailers => {
                    let Some(eol) = input.iter().position(|&b| b == b'\n') else {
                        if self.line.len() + input.len() > MAX_LINE {
                            return Err(BodyError::Malformed);
                        }
                        self.line.extend_from_slice(input);
                        input = &[];
                        break;
                    };
                    self.line.extend_from_slice(&input[..=eol]);
                    input = &input[eol + 1..];
                    if self.line.len() > MAX_LINE {
                        return Err(BodyError::Malformed);
                    }
                    let line = std::mem::take(&mut self.line);
                    self.state = self.end_of_line(&line)?;
                }
            }
        }
        Ok(start - input.len())
    }

    /// A complete line (with its `\n`) in a chunked body.
    fn end_of_line(&mut self, line: &[u8]) -> Result<State, BodyError> {
        match self.state {
            State::Trailers if line == b"\r\n" => Ok(State::Done),
            State::Trailers => Ok(State::Trailers), // trailer fields are ignored
            _ => match httparse::parse_chunk_size(line) {
                Ok(Status::Complete((_, 0))) => Ok(State::Trailers),
                Ok(Status::Complete((_, size))) => {
                    if self.total.saturating_add(size) > self.max {
                        Err(BodyError::TooLarge)
                    } else {
                        Ok(State::ChunkData { remaining: size })
                    }
                }
                Ok(Status::Partial) | Err(_) => Err(BodyError::Malformed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
        pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing(&h(&[("Content-Length", "5")]), 10, true),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(&h(&[("content-length", "5, 5")]), 10, true),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(&h(&[("Transfer-Encoding", "chunked")]), 10, true),
            Ok(Framing::Chunked)
        );
        assert_eq!(framing(&h(&[]), 10, true), Err(BodyError::LengthRequired));
        assert_eq!(framing(&h(&[]), 10, false), Ok(Framing::None));
        assert_eq!(
            framing(&h(&[("Content-Length", "11")]), 10, true),
            Err(BodyError::TooLarge)
        );
        for bad in ["-1", "5 5", "0x10", "", "5, 6", "99999999999999999999"] {
            assert_eq!(
                framing(&h(&[("Content-Length", bad)]), 10, true),
                Err(BodyError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            framing(
                &h(&[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]),
                10,
                true
            ),
            Err(BodyError::Malformed)
        );
        assert_eq!(
            framing(&h(&[("Transfer-Encoding", "gzip, chunked")]), 10, true),
            Err(BodyError::UnsupportedCoding)
        );
        assert!(expects_continue(&h(&[("Expect", "100-Continue")])));
        assert!(!expects_continue(&h(&[("Expect", "200-ok")])));
    }

    /// The same body whatever the split points.
    fn read_split(framing: Framing, wire: &[u8], max: u64) -> Result<(Vec<u8>, usize), BodyError> {
        let mut all = None;
        for split in 1..=wire.len().max(1) {
            let mut r = BodyReader::new(framing, max);
            let mut out = Vec::new();
            let mut used = 0;
            for piece in wire.chunks(split) {
                if r.is_done() {
                    break;
                }
                used += r.push(piece, &mut out)?;
            }
            assert!(r.is_done(), "split {split}: not done");
            let got = (out, used);
            if let Some(prev) = &all {
                assert_eq!(prev, &got, "split {split}");
            }
            all = Some(got);
        }
        Ok(all.unwrap())
    }

    #[test]
    fn bodies_are_the_same_at_every_split() {
        let (body, used) = read_split(Framing::Length(5), b"hello GET /next", 100).unwrap();
        assert_eq!((body.as_slice(), used), (&b"hello"[..], 5));
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let (body, used) = read_split(Framing::Chunked, wire, 100).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(&wire[used..], b"NEXT");
    }

    #[test]
    fn bad_and_oversized_bodies_are_refused_without_reading_them_all() {
        assert_eq!(
            read_split(Framing::Chunked, b"zz\r\n", 100),
            Err(BodyError::Malformed)
        );
        assert_eq!(
            read_split(Framing::Chunked, b"5\r\nhelloXX", 100),
            Err(BodyError::Malformed)
        );
        // A declared chunk over the cap is refused at its size line.
        let mut r = BodyReader::new(Framing::Chunked, 100);
        assert_eq!(
            r.push(b"ffffffff\r\n", &mut Vec::new()),
            Err(BodyError::TooLarge)
        );
        // Chunks adding up over the cap.
        let mut r = BodyReader::new(Framing::Chunked, 8);
        assert_eq!(
            r.push(b"5\r\nhello\r\n5\r\n", &mut Vec::new()),
            Err(BodyError::TooLarge)
        );
        // An endless size line.
        let mut r = BodyReader::new(Framing::Chunked, 8);
        assert_eq!(
            r.push(&[b'1'; 5000], &mut Vec::new()),
            Err(BodyError::Malformed)
        );
    }
}
