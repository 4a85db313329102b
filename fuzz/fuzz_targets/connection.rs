//! The whole sans-IO connection, from the first byte of the handshake to the last
//! byte of the close, fed arbitrary bytes at arbitrary split points with
//! arbitrary time steps. Invariants:
//! - no panic;
//! - every byte written after the 101 parses as valid server frames (unmasked,
//!   RSV 0, known opcode, control frames final and <= 125 bytes, text is UTF-8,
//!   close bodies carry a sendable code), and fragments are well formed: a
//!   continuation only inside a fragmented message, no new data frame inside
//!   one (half of the runs stream binary echoes, which fragments them);
//! - nothing is written after our close frame;
//! - memory is bounded: unsent output never exceeds what the input can explain;
//! - with permessage-deflate (a control bit offers it, another picks the
//!   dedicated mode): RSV1 only on the first frame of a data message, and
//!   every compressed message we send inflates (in sequence, with our context
//!   when we keep it), text to UTF-8.
//!
//! A bit of the second control byte makes the inspector act at random
//! points (`proto::connection::acting`): a message (text or binary, in
//! frames of a random size), a ping, a close with or without a code, a
//! hang-up; the invariants above still hold. Raw frames (another random
//! pick) are invalid on purpose: from the first one on, the output is only
//! counted, not checked.
//!
//! A third control bit puts URL knobs in the request target (the body up to
//! its first newline is the query): refused with 400 when invalid, as the
//! server does, else set on the connection (push capped so a run stays
//! short). The invariants above hold with any knobs: fragmented, delayed,
//! repeated, pushed and pinging output is still a valid frame stream.
#![no_main]
use std::time::{Duration, Instant};

use std::rc::Rc;

use echocast::proto::connection::acting::RawFrame;
use echocast::proto::connection::misbehave::PUSH_WINDOW;
use echocast::proto::deflate::{DeflateConfig, DeflateMode, SharedCodec, TAIL};
use echocast::proto::handshake::http_response;
use echocast::proto::knobs::{self, Knobs};
use echocast::proto::{Connection, Event, FrameHeader, Limits, MessageKind, OpCode};
use flate2::{Decompress, FlushDecompress};
use libfuzzer_sys::fuzz_target;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
const DEFLATE_OFFER: &[u8] =
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

struct Checker {
    buf: Vec<u8>,
    seen_head: bool,
    /// The answer was an HTTP error: one response and nothing else.
    http_answer: bool,
    closed: bool,
    /// Inside a fragmented data message (a data frame without FIN was sent).
    fragmented: bool,
    /// permessage-deflate was agreed (the 101 says so): inflates what we
    /// send; `reset` when we keep no context between messages.
    inflater: Option<(Decompress, bool)>,
    /// The data message being received from us: its payload so far, text or
    /// binary, compressed (RSV1 on its first frame).
    message: Vec<u8>,
    text: bool,
    compressed: bool,
    /// Bytes taken from the output so far.
    written: usize,
    /// Raw frames were sent: the output is no longer ours to check.
    tainted: bool,
}

impl Checker {
    /// A whole data message (its fragments joined): a compressed one
    /// inflates (in sequence, with our context when we keep it), text is
    /// UTF-8 (fragments may split a character; the message may not).
    fn end_message(&mut self) {
        let mut payload = std::mem::take(&mut self.message);
        if self.compressed {
            let (d, reset) = self.inflater.as_mut().unwrap();
            if *reset {
                d.reset(false);
            }
            payload.extend_from_slice(&TAIL);
            let mut out = Vec::with_capacity(1 << 16);
            d.decompress_vec(&payload, &mut out, FlushDecompress::Sync)
                .expect("our compressed message inflates");
            payload = out;
        }
        if self.text {
            assert!(std::str::from_utf8(&payload).is_ok(), "text is UTF-8");
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.written += bytes.len();
        assert!(
            !self.closed || bytes.is_empty(),
            "output after our close frame"
        );
        self.buf.extend_from_slice(bytes);
        if self.http_answer {
            return;
        }
        if !self.seen_head {
            match self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(p) => {
                    assert!(self.buf.starts_with(b"HTTP/1.1 "));
                    if !self.buf.starts_with(b"HTTP/1.1 101 ") {
                        self.http_answer = true;
                        return;
                    }
                    let head = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                    if let Some(line) = head
                        .lines()
                        .find(|l| l.starts_with("Sec-WebSocket-Extensions:"))
                    {
                        let reset = line.contains("server_no_context_takeover");
                        self.inflater = Some((Decompress::new(false), reset));
                    }
                    self.buf.drain(..p + 4);
                    self.seen_head = true;
                }
                None => return,
            }
        }
        if self.tainted {
            self.buf.clear();
            return;
        }
        while let Ok(Some((h, n))) = FrameHeader::decode(&self.buf) {
            let end = n + h.payload_len as usize;
            if self.buf.len() < end {
                break;
            }
            assert!(!self.closed, "frame after our close frame");
            assert!(h.mask.is_none() && (h.rsv == 0 || h.rsv == 4));
            let op = OpCode::from_u8(h.opcode).expect("known opcode");
            if h.rsv == 4 {
                assert!(self.inflater.is_some(), "RSV1 without deflate agreed");
                assert!(
                    matches!(op, OpCode::Text | OpCode::Binary),
                    "RSV1 on a frame other than the first of a data message"
                );
            }
            let payload = self.buf[n..end].to_vec();
            if op.is_control() {
                assert!(h.fin, "fragmented control frame");
                assert!(payload.len() <= 125);
            } else {
                assert_eq!(
                    op == OpCode::Continuation,
                    self.fragmented,
                    "continuation outside, or data frame inside, a fragmented message"
                );
                self.fragmented = !h.fin;
                if op != OpCode::Continuation {
                    self.message.clear();
                    self.text = op == OpCode::Text;
                    self.compressed = h.rsv == 4;
                }
                self.message.extend_from_slice(&payload);
                if h.fin {
                    self.end_message();
                }
            }
            if op == OpCode::Close {
                assert!(payload.len() != 1);
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    assert!(echocast::proto::CloseCode(code).is_allowed_on_wire());
                    assert!(std::str::from_utf8(&payload[2..]).is_ok());
                }
                self.closed = true;
            }
            self.buf.drain(..end);
        }
    }
}

thread_local! {
    static CODEC: Rc<SharedCodec> = Rc::default();
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (ctl, body) = data.split_at(2);
    let mut input = Vec::new();
    let mut body = body;
    if ctl[0] & 1 == 1 {
        let mut request = REQUEST.to_vec();
        if ctl[0] & 16 == 16 {
            // The query: the body up to its first newline, as bytes a request
            // target may hold.
            let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            let query: Vec<u8> = body[..end]
                .iter()
                .copied()
                .filter(|b| b.is_ascii_graphic())
                .collect();
            body = &body[(end + 1).min(body.len())..];
            request.splice(5..5, b"?".iter().chain(&query).copied());
        }
        if ctl[0] & 4 == 4 {
            let at = request.len() - 2;
            request.splice(at..at, DEFLATE_OFFER.iter().copied());
        }
        input.extend_from_slice(&request);
    }
    let deflate = DeflateConfig {
        mode: if ctl[0] & 8 == 8 {
            DeflateMode::Dedicated
        } else {
            DeflateMode::Shared
        },
        ..DeflateConfig::default()
    };
    // One codec for every run, as one server has for every connection (its
    // compressors and inflaters are made for sharing; creating them per run
    // would cost most of the time).
    let codec = CODEC.with(Rc::clone);
    input.extend_from_slice(body);
    let limits = Limits {
        max_message_size: 4096,
        stream_chunk: 64,
        ping_interval: Some(Duration::from_secs(3)),
        idle_timeout: Some(Duration::from_secs(15)),
        ..Limits::default()
    };
    let mut now = Instant::now();
    // The frame inspector's tap, on in half of the runs (a control bit):
    // every record is drained each step, well formed, and few per input.
    limits.tap.set_on(ctl[1] & 1 == 1);
    let mut conn = Connection::new(limits, now);
    let limits_tap = ctl[1] & 1 == 1;
    let mut records = 0usize;
    let mut checker = Checker {
        buf: Vec::new(),
        seen_head: false,
        http_answer: false,
        closed: false,
        fragmented: false,
        inflater: None,
        message: Vec::new(),
        text: false,
        compressed: false,
        written: 0,
        tainted: false,
    };
    let acting = ctl[1] & 2 == 2;
    // Bytes the actions queued (the output bound allows for them).
    let mut acted = 0usize;
    conn.set_streaming(ctl[0] & 2 == 2);
    // A small PRNG seeded from the control bytes picks split points, how much
    // output the "socket" takes each time, and time steps.
    let mut state = u32::from(ctl[0]) << 8 | u32::from(ctl[1]) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut pos = 0;
    let mut fed = 0usize;
    let mut shape = Knobs::default();
    while pos < input.len() {
        let take = (next() as usize % 300 + 1).min(input.len() - pos);
        conn.receive(&input[pos..pos + take], now);
        fed += take;
        pos += take;
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Upgrade(req) => match knobs::parse(&req.path) {
                    Err(e) => {
                        let body = format!("{e}\n");
                        let head =
                            http_response(400, "Bad Request", "text/plain", "", body.as_bytes());
                        conn.respond(head, now);
                    }
                    Ok(mut k) => {
                        if let Some(p) = k.push.as_mut() {
                            p.count = p.count.min(50);
                            p.size = p.size.min(4096);
                        }
                        shape = k.clone();
                        conn.set_knobs(k);
                        conn.accept_deflate(now, &deflate, &codec);
                        // The core's echo fast path in half of the runs
                        // (it turns itself off with knobs, deflate or the
                        // tap): its echoes must pass the same checks.
                        conn.set_fast_echo(ctl[0] & 32 == 32);
                    }
                },
                // Rooms over HTTP: a POST's body is read (the body parser),
                // answered and the connection kept; an event stream gets
                // a few events; anything else is refused.
                Event::HttpRequest(req) => {
                    if req.method == "POST" {
                        if let Err(e) = conn.read_body(now) {
                            let (status, reason) = e.status();
                            conn.respond(http_response(status, reason, "text/plain", "", b""), now);
                        }
                    } else if req.method == "GET" && req.path.starts_with("/events") {
                        let drop = knobs::parse(&req.path)
                            .ok()
                            .and_then(|k| k.drop)
                            .map(|d| d.0);
                        conn.start_events(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_vec(),
                            drop,
                            now,
                        );
                        for i in 0..3u8 {
                            conn.send_event(vec![b'e', i, b'\n', b'\n'].into(), true, now);
                        }
                    } else {
                        conn.reject(echocast::proto::HandshakeError::NotWebSocket, now)
                    }
                }
                Event::Body(Ok(body)) => {
                    let answer = echocast::proto::handshake::keep_alive_response(
                        200,
                        "OK",
                        "text/plain",
                        "",
                        &body[..body.len().min(64)],
                    );
                    conn.respond_keep_alive(answer, now);
                }
                Event::Body(Err(e)) => {
                    let (status, reason) = e.status();
                    conn.respond(http_response(status, reason, "text/plain", "", b""), now);
                }
                Event::Opened(_) | Event::Refused(_) => panic!("a client's event on a server"),
                Event::Message { kind, data } => {
                    conn.echo(kind, data);
                }
                Event::Fragment { data, first, fin } => {
                    conn.send_fragment(data, first, fin);
                }
            }
        }
        // Fragments of one byte triple it; repeat multiplies; a push adds
        // at most the window and a message.
        let frag = if shape.fragment.is_some() { 3 } else { 2 };
        let repeat = usize::from(shape.repeat.unwrap_or(1));
        let push = shape.push.map_or(0, |p| PUSH_WINDOW + 3 * p.size);
        let greeting = 3 * shape.greeting.as_ref().map_or(0, |g| g.len());
        // With deflate, a message echoed later (held by `delay`) is held
        // inflated: each input message (at least 6 bytes on the wire) may
        // stand for up to the size cap.
        let inflated = if conn.deflate().is_some() && shape.delay.is_some() {
            4096 * (fed / 6 + 1)
        } else {
            0
        };
        let bound = (frag * (fed + inflated) + 1024) * repeat + push + greeting + acted;
        assert!(
            conn.backlog() <= bound,
            "output unbounded: backlog {} bound {bound} fed {fed} {shape:?}",
            conn.backlog()
        );
        // The inspector acts now and then.
        if acting && next() % 4 == 0 {
            let n = next();
            let len = (n >> 8) as usize % 300;
            let done = match n % 6 {
                0 | 1 => {
                    let kind = if n & 8 == 0 {
                        MessageKind::Text
                    } else {
                        MessageKind::Binary
                    };
                    let split = (n & 16 != 0).then_some((n >> 20) as usize % 40 + 1);
                    conn.send_message(kind, b"inspector ".repeat(len / 10), split)
                }
                2 => conn.send_ping(vec![b'p'; len % 126]),
                3 => {
                    let code = (n & 8 != 0).then_some(echocast::proto::CloseCode(4001));
                    conn.close_now(code, if code.is_some() { "bye" } else { "" }, now)
                }
                4 => conn.hang_up(n & 8 != 0, now).map(|()| 0),
                _ => {
                    let raw = RawFrame {
                        opcode: ((n >> 4) & 15) as u8,
                        fin: n & 8 != 0,
                        rsv: ((n >> 12) & 7) as u8,
                        mask: (n & 1 != 0).then_some([1, 2, 3, 4]),
                        payload: vec![0xff; len],
                    };
                    let r = conn.send_raw(&[raw]);
                    if r.is_ok() {
                        checker.tainted = true;
                    }
                    r
                }
            };
            acted += done.unwrap_or(0);
        }
        // The peer reads a random amount (sometimes nothing).
        let mut budget = next() as usize % 5000;
        while budget > 0 && conn.output_len() > 0 {
            let front = conn.output_front();
            let n = front.len().min(budget);
            let bytes = front[..n].to_vec();
            checker.push(&bytes);
            conn.consume_output(n);
            budget -= n;
        }
        if next() % 8 == 0 {
            now += Duration::from_millis(u64::from(next() % 20_000));
            conn.handle_timeout(now);
        }
        let _ = conn.poll_transport();
        let _ = conn.poll_timeout();
        for r in conn.tap().drain() {
            assert!(limits_tap, "a record with the tap off: {r:?}");
            records += 1;
            if let echocast::proto::inspect::What::Frame(f) = &r.what {
                assert!(f.preview.len() <= 64 && f.preview.len() as u64 <= f.len);
                let _ = f.close();
            }
        }
    }
    let mut out_bytes = checker.written;
    while conn.output_len() > 0 {
        let bytes = conn.output_front().to_vec();
        out_bytes += bytes.len();
        checker.push(&bytes);
        conn.consume_output(bytes.len());
    }
    for r in conn.tap().drain() {
        assert!(limits_tap, "a record with the tap off");
        records += 1;
        let _ = r;
    }
    // A frame is at least 2 bytes on the wire, either way; a connection
    // records at most one error and two knob events besides.
    assert!(
        records <= fed / 2 + out_bytes / 2 + 3,
        "{records} records for {fed} bytes in and {out_bytes} out"
    );
    if checker.http_answer {
        // Whole responses, one after another (a kept connection answers each
        // request; `100 Continue` has no body), until an event stream or a
        // 101 takes the rest of the connection.
        let mut rest: &[u8] = &checker.buf;
        while !rest.is_empty() {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a complete head");
            let head = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = &rest[end + 4..];
            assert!(head.starts_with("HTTP/1.1 "), "{head}");
            if head.starts_with("HTTP/1.1 101 ") || head.contains("text/event-stream") {
                break;
            }
            if head.starts_with("HTTP/1.1 100 ") {
                continue;
            }
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length")
                .parse()
                .unwrap();
            assert!(rest.len() >= len, "a whole body");
            rest = &rest[len..];
        }
    }
});
