//! The HTTP/2 session (`proto::h2::Session`), server side, driven as the
//! loop drives it: the client's bytes are the fuzzer's, fed at arbitrary
//! split points with arbitrary time steps, while the harness plays the
//! streams' sessions: it reads each stream's bytes in pieces of arbitrary
//! size, answers (a 101 to a WebSocket, a 200 with a body to a request)
//! in pieces the stream may refuse, ends, resets or forgets streams, and
//! takes the output in arbitrary amounts. Invariants:
//! - no panic;
//! - the output is whole frames of our kinds, each within its size rules
//!   (SETTINGS a multiple of 6, WINDOW_UPDATE/RST_STREAM 4 bytes, PING 8,
//!   DATA and HEADERS on a stream other than 0), and nothing but GOAWAY
//!   frames' worth after a GOAWAY was sent by a connection error;
//! - no DATA on a stream after its END_STREAM;
//! - what a stream's session reads is an HTTP/1.1 request head first;
//! - the session's memory stays within a bound of the input.
//!
//! Input: byte 0 bit 0 prepends the client preface and an empty SETTINGS
//! (so runs reach the frames); then chunks of `[len, action, ...bytes]`.
#![no_main]
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use echocast::proto::h2::frame::{self, ErrorCode, Head};
use echocast::proto::h2::{Config, Event, Read, Session, WebSockets, PREFACE};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Checker {
    buf: Vec<u8>,
    ended: HashSet<u32>,
    goaway_error: bool,
}

impl Checker {
    fn take(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(h) = Head::parse(&self.buf[at..]) {
            let end = at + 9 + h.len;
            if end > self.buf.len() {
                break;
            }
            let p = &self.buf[at + 9..end];
            match h.kind {
                frame::SETTINGS => assert!(h.len % 6 == 0 && h.stream == 0),
                frame::WINDOW_UPDATE => assert!(h.len == 4 && p != [0, 0, 0, 0]),
                frame::RST_STREAM => {
                    assert!(h.len == 4 && h.stream != 0);
                    self.ended.insert(h.stream);
                }
                frame::PING => assert!(h.len == 8 && h.flags == frame::ACK),
                frame::GOAWAY => {
                    assert!(h.len >= 8 && h.stream == 0);
                    let code = u32::from_be_bytes(p[4..8].try_into().unwrap());
                    self.goaway_error |= code != 0;
                }
                frame::DATA => {
                    assert!(h.stream != 0 && h.len <= 16_384);
                    assert!(!self.ended.contains(&h.stream), "DATA after END_STREAM or RST_STREAM");
                    if h.has(frame::END_STREAM) {
                        self.ended.insert(h.stream);
                    }
                }
                frame::HEADERS | frame::CONTINUATION => assert!(h.stream != 0),
                k => panic!("a frame of kind {k} sent"),
            }
            at = end;
        }
        self.buf.drain(..at);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else { return };
    let mut now = Instant::now();
    let config = Config {
        websockets: match first >> 1 & 3 {
            0 => WebSockets::NotOffered,
            1 => WebSockets::Refused,
            _ => WebSockets::Offered,
        },
        max_streams: 8,
        handshake_timeout: Duration::from_secs(10),
        max_header_list: 4096,
    };
    let mut s = Session::new(config, now);
    let mut check = Checker::default();
    let mut input = 0usize;
    if first & 1 == 1 {
        let mut v = PREFACE.to_vec();
        frame::put_settings(&mut v, &[], false);
        s.receive(&v, now);
    }
    // Streams the harness plays: id -> (bytes read so far, answered).
    let mut streams: HashMap<u32, (Vec<u8>, bool, bool)> = HashMap::new();
    let mut buf = [0u8; 700];
    while rest.len() >= 2 {
        let len = usize::from(rest[0]) * 4;
        let action = rest[1];
        let n = len.min(rest.len() - 2);
        let bytes = &rest[2..2 + n];
        rest = &rest[2 + n..];
        input += n;
        now += Duration::from_millis(u64::from(action >> 5) * 700);
        s.handle_timeout(now);
        s.receive(bytes, now);
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Request { stream, websocket } => {
                    streams.insert(stream, (Vec::new(), websocket, false));
                }
                Event::Reset { stream, .. } => {
                    streams.remove(&stream);
                }
                Event::Readable(_) | Event::Writable(_) => {}
            }
        }
        let ids: Vec<u32> = streams.keys().copied().collect();
        for id in ids {
            let piece = 1 + usize::from(action & 7) * 97;
            let (got, websocket, answered) = streams.get_mut(&id).unwrap();
            loop {
                match s.read(id, &mut buf[..piece]) {
                    Read::Data(k) => got.extend_from_slice(&buf[..k]),
                    Read::Empty | Read::Eof => break,
                }
            }
            if got.len() >= 4 {
                assert!(got.starts_with(b"GET ") || got[..4].iter().all(|b| b.is_ascii_uppercase() || *b == b' ' || *b == b'-' || *b == b'_'),
                    "a stream's bytes do not start with a request line");
            }
            if got.len() > 64 * 1024 {
                got.drain(..32 * 1024);
            }
            match action >> 3 & 3 {
                0 if !*answered => {
                    let answer: &[u8] = if *websocket {
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                    };
                    let mut at = 0;
                    while at < answer.len() {
                        let k = s.write(id, &answer[at..(at + piece).min(answer.len())]);
                        if k == 0 {
                            break;
                        }
                        at += k;
                    }
                    *answered = at == answer.len();
                }
                0 if *websocket => {
                    let big = vec![0x82u8; 300 + piece];
                    s.write(id, &big);
                }
                1 => s.end(id),
                2 if action & 0x80 != 0 => {
                    s.reset(id, ErrorCode::Cancel, "fuzz");
                }
                2 if action & 0x40 != 0 => {
                    s.forget(id, ErrorCode::Cancel);
                    streams.remove(&id);
                }
                _ => {}
            }
        }
        // The transport takes some of the output.
        let take = match action & 3 {
            0 => 0,
            1 => 13,
            2 => 4096,
            _ => usize::MAX,
        };
        let out = s.output_front();
        let k = take.min(out.len());
        let chunk = out[..k].to_vec();
        check.take(&chunk);
        s.consume_output(k);
        assert!(
            s.memory() <= 8 * input + 8 * 70 * 1024 + 256 * 1024,
            "memory {} for {input} bytes of input",
            s.memory()
        );
    }
    let out = s.output_front().to_vec();
    check.take(&out);
    let _ = check.goaway_error;
});
