//! Deterministic sans-IO conversations: no sockets, no clock, no sleeps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use echocast::handler;
use echocast::proto::{Connection, Event, Limits, MessageKind, TransportAction};

/// Drives a connection like the server does: echo every message, write
/// everything at once. Returns (messages seen, bytes written, last action).
struct Harness {
    conn: Connection,
    now: Instant,
    seen: Vec<(MessageKind, Vec<u8>)>,
    /// Pieces of streamed messages as (first, fin, length).
    pieces: Vec<(bool, bool, usize)>,
    partial: Vec<u8>,
    written: Vec<u8>,
    /// The peer reads only until it has this many bytes (a client that stops
    /// reading); `usize::MAX`: it reads everything.
    read_limit: usize,
    /// The core's echo fast path (`Connection::set_fast_echo`), set when
    /// the upgrade is accepted.
    fast: bool,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let now = Instant::now();
        Harness {
            conn: Connection::new(limits, now),
            now,
            seen: Vec::new(),
            pieces: Vec::new(),
            partial: Vec::new(),
            written: Vec::new(),
            read_limit: usize::MAX,
            fast: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.conn.receive(bytes, self.now);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Upgrade(_) => {
                    self.conn.accept(self.now);
                    self.conn.set_fast_echo(self.fast);
                }
                Event::HttpRequest(_) | Event::Body(_) | Event::Opened(_) | Event::Refused(_) => {
                    panic!("not an upgrade")
                }
                Event::Message { kind, data } => {
                    self.seen.push((kind, data.clone()));
                    handler::echo(&mut self.conn, kind, data);
                }
                Event::Fragment { data, first, fin } => {
                    assert_eq!(
                        first,
                        self.partial.is_empty() && self.pieces.last().is_none_or(|p| p.1)
                    );
                    self.pieces.push((first, fin, data.len()));
                    self.partial.extend_from_slice(&data);
                    if fin {
                        self.seen
                            .push((MessageKind::Binary, std::mem::take(&mut self.partial)));
                    }
                    handler::echo_fragment(&mut self.conn, data, first, fin);
                }
            }
        }
        // Write everything the peer takes, one front chunk at a time.
        read_output(&mut self.conn, &mut self.written, self.read_limit);
    }

    /// The server frames written after the 101 response.
    fn frames(&self) -> Vec<(bool, u8, Vec<u8>)> {
        let (frames, rest) = frames_after_101(&self.written);
        assert_eq!(rest, 0, "a partial frame was written");
        frames
    }

    fn close_code_sent(&self) -> Option<u16> {
        let frames = self.frames();
        let (_, op, payload) = frames.last().expect("a frame");
        assert_eq!(*op, 8, "last frame is a close: {frames:?}");
        close_code(payload)
    }
}

fn opened() -> Harness {
    let mut h = Harness::new(Limits::default());
    h.feed(upgrade_request("/").as_bytes());
    assert!(h.conn.is_open());
    h
}

fn conversation() -> Vec<u8> {
    let key = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut all = upgrade_request("/runCase?case=1&agent=x").into_bytes();
    all.extend(text("Hello"));
    // A fragmented text message with a ping between its fragments, split inside a
    // multi-byte character.
    let word = "κόσμε".as_bytes();
    all.extend(client_frame(false, 1, &word[..3], key));
    all.extend(client_frame(true, 9, b"ping!", key));
    all.extend(client_frame(false, 0, &word[3..7], key));
    all.extend(client_frame(true, 0, &word[7..], key));
    all.extend(client_frame(true, 2, &[0u8; 300], key)); // 16-bit length
    all.extend(client_frame(true, 10, b"unsolicited", key));
    all.extend(client_frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e'], key));
    all
}

#[test]
fn same_events_and_output_at_every_split() {
    let all = conversation();
    let mut whole = Harness::new(Limits::default());
    whole.feed(&all);
    let frames = whole.frames();
    let expect: Vec<(bool, u8, Vec<u8>)> = vec![
        (true, 1, b"Hello".to_vec()),
        (true, 10, b"ping!".to_vec()),
        (true, 1, "κόσμε".as_bytes().to_vec()),
        (true, 2, vec![0; 300]),
        (true, 8, vec![0x03, 0xe8]),
    ];
    assert_eq!(frames, expect);
    assert_eq!(whole.conn.poll_transport(), TransportAction::ShutdownWrite);

    for split in 0..=all.len() {
        let mut h = Harness::new(Limits::default());
        h.feed(&all[..split]);
        h.feed(&all[split..]);
        assert_eq!(h.written, whole.written, "split at {split}");
        assert_eq!(h.seen, whole.seen, "split at {split}");
    }
    let mut bytewise = Harness::new(Limits::default());
    for b in &all {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(bytewise.written, whole.written);
}

/// The core's echo fast path writes exactly what echoing each message's
/// event writes, whatever the reads' boundaries: small text and binary
/// frames, a ping and a fragmented message among them, a frame too large
/// for the fast path, and the close; and a text frame that is not UTF-8
/// still closes with 1007 (the ordinary path checks it).
#[test]
fn the_fast_echo_writes_what_the_events_would() {
    let key = [9, 8, 7, 6];
    let mut all = upgrade_request("/").into_bytes();
    for i in 0..40u32 {
        all.extend(client_frame(
            true,
            1 + (i % 2) as u8,
            format!("message {i}").as_bytes(),
            key,
        ));
        if i == 17 {
            all.extend(client_frame(true, 9, b"ping", key));
        }
        if i == 25 {
            all.extend(client_frame(false, 1, b"frag", key));
            all.extend(client_frame(true, 0, b"ment", key));
            all.extend(client_frame(true, 2, &[7u8; 700], key));
        }
    }
    all.extend(client_frame(true, 8, &[0x03, 0xe8], key));
    let run = |fast: bool, pieces: &[&[u8]]| {
        let mut h = Harness::new(Limits::default());
        h.fast = fast;
        for p in pieces {
            h.feed(p);
        }
        h
    };
    let slow = run(false, &[&all]);
    assert_eq!(run(true, &[&all]).written, slow.written);
    // Frames after the request's read take the fast path until the ping
    // (its pong waits for the events before it; the ordinary path goes on).
    let head = upgrade_request("/").len();
    let fast = run(true, &[&all[..head], &all[head..]]);
    assert_eq!(fast.written, slow.written);
    assert_eq!(slow.seen.len(), 42);
    assert_eq!(
        fast.seen.len(),
        42 - 18,
        "the first 18 messages are echoed by the core"
    );
    for split in (0..all.len()).step_by(7) {
        let h = run(true, &[&all[..split], &all[split..]]);
        assert_eq!(h.written, slow.written, "split at {split}");
    }
    let bytes: Vec<&[u8]> = all.chunks(1).collect();
    assert_eq!(run(true, &bytes).written, slow.written);

    // With the inspector's tap on: the same records (each message in and its
    // echo out, folded with their frames), in and out paired in turn where
    // the ordinary path lists a read's messages, then their echoes.
    let records = |fast: bool| {
        let limits = Limits::default();
        limits.tap.set_on(true);
        let mut h = Harness::new(limits);
        h.fast = fast;
        h.feed(&all[..head]);
        h.conn.tap().drain();
        h.feed(&all[head..]);
        let mut got: Vec<String> = h
            .conn
            .tap()
            .drain()
            .into_iter()
            .map(|r| format!("{:?}", r.what))
            .collect();
        got.sort();
        (h.written, got)
    };
    let (slow_written, slow_records) = records(false);
    let (fast_written, fast_records) = records(true);
    assert_eq!(fast_written, slow_written);
    assert_eq!(fast_records, slow_records);
    assert!(slow_records.len() >= 84, "{}", slow_records.len());

    let mut bad = upgrade_request("/").into_bytes();
    bad.extend(client_frame(true, 1, b"fine", key));
    bad.extend(client_frame(true, 1, &[0xff, 0xfe], key));
    let h = run(true, &[&bad]);
    assert_eq!(h.frames()[0], (true, 1, b"fine".to_vec()));
    assert_eq!(h.close_code_sent(), Some(1007));
}

#[test]
fn frames_in_the_same_read_as_the_request_are_kept() {
    let mut all = upgrade_request("/").into_bytes();
    all.extend(text("early"));
    let mut h = Harness::new(Limits::default());
    h.feed(&all);
    assert_eq!(h.frames(), vec![(true, 1, b"early".to_vec())]);
}

fn fails_with(bytes: &[u8], code: u16) -> Harness {
    let mut h = opened();
    h.feed(bytes);
    assert_eq!(h.close_code_sent(), Some(code), "for {bytes:02x?}");
    assert_eq!(h.conn.poll_transport(), TransportAction::ShutdownWrite);
    // Nothing is sent after our close frame, whatever comes next.
    let before = h.written.len();
    h.feed(&text("after close"));
    h.feed(&client_frame(true, 9, b"ping", [1, 2, 3, 4]));
    assert_eq!(h.written.len(), before);
    h
}

#[test]
// docs/limits.md: "Control frame payload"
fn protocol_errors_close_with_1002() {
    let k = [1, 2, 3, 4];
    let mut rsv = text("x");
    rsv[0] |= 0x40;
    fails_with(&rsv, 1002);
    for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        fails_with(&client_frame(true, op, b"", k), 1002);
    }
    // Unmasked client frame.
    fails_with(&[0x81, 0x02, b'h', b'i'], 1002);
    // Control frames: over 125 bytes, fragmented.
    fails_with(&client_frame(true, 9, &[0; 126], k), 1002);
    fails_with(&client_frame(false, 9, b"", k), 1002);
    // 64-bit length with the most significant bit set.
    fails_with(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], 1002);
    // Continuation without a message; new message inside a fragmented one.
    fails_with(&client_frame(true, 0, b"x", k), 1002);
    let mut two = client_frame(false, 1, b"a", k);
    two.extend(client_frame(true, 1, b"b", k));
    fails_with(&two, 1002);
}

#[test]
fn close_frames_are_validated() {
    let k = [5, 6, 7, 8];
    fails_with(&client_frame(true, 8, &[0x03], k), 1002);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        fails_with(&client_frame(true, 8, &code.to_be_bytes(), k), 1002);
    }
    fails_with(&client_frame(true, 8, &[0x03, 0xe8, 0xff, 0xfe], k), 1007);
    // A valid code is echoed; an empty close is answered with an empty close.
    for code in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let mut h = opened();
        h.feed(&client_frame(true, 8, &code.to_be_bytes(), k));
        assert_eq!(h.close_code_sent(), Some(code));
    }
    let mut h = opened();
    h.feed(&client_frame(true, 8, b"", k));
    assert_eq!(h.frames(), vec![(true, 8, vec![])]);
}

#[test]
fn invalid_utf8_fails_mid_frame() {
    // A text frame declaring 100 bytes: the invalid byte arrives in the first 10,
    // and the connection fails before the other 90 come.
    let mut payload = b"abc".to_vec();
    payload.extend_from_slice(&[0xed, 0xa0, 0x80]);
    payload.resize(100, b'z');
    let frame = client_frame(true, 1, &payload, [9, 9, 9, 9]);
    let h = fails_with(&frame[..6 + 10], 1007);
    assert!(h.seen.is_empty());
    // Text that ends inside a code point also fails.
    fails_with(
        &client_frame(true, 1, &[b'a', 0xe2, 0x82], [1, 1, 1, 1]),
        1007,
    );
}

#[test]
// docs/limits.md: "Message size (summed over fragments)"
fn message_cap_is_checked_on_the_header_and_across_fragments() {
    let limits = Limits {
        max_message_size: 1000,
        ..Limits::default()
    };
    let mut h = Harness::new(limits.clone());
    h.feed(upgrade_request("/").as_bytes());
    // Only the header of a frame declaring 2^62 bytes: 1009 at once.
    h.feed(&[0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(h.close_code_sent(), Some(1009));

    let mut h = Harness::new(limits.clone());
    h.feed(upgrade_request("/").as_bytes());
    let k = [3, 3, 3, 3];
    h.feed(&client_frame(false, 2, &[1; 600], k));
    h.feed(&client_frame(true, 0, &[1; 400], k)); // exactly 1000: fine
    assert_eq!(h.seen.len(), 1);
    h.feed(&client_frame(false, 2, &[1; 600], k));
    h.feed(&client_frame(true, 0, &[1; 401], k)[..8]); // header only
    assert_eq!(h.close_code_sent(), Some(1009));
}

#[test]
fn ping_gets_pong_and_pong_is_ignored() {
    let mut h = opened();
    h.feed(&client_frame(true, 10, b"nobody asked", [1, 2, 3, 4]));
    assert!(h.frames().is_empty());
    h.feed(&client_frame(true, 9, &[7; 125], [1, 2, 3, 4]));
    assert_eq!(h.frames(), vec![(true, 10, vec![7; 125])]);
}

#[test]
// docs/limits.md: "Unanswered pongs"
fn ping_flood_does_not_grow_the_queue() {
    let mut h = opened();
    // Fill the queue past the coalescing threshold with an echo nobody reads.
    h.conn
        .receive(&client_frame(true, 2, &vec![0; 100_000], [1; 4]), h.now);
    while let Some(Event::Message { kind, data }) = h.conn.poll_event() {
        handler::echo(&mut h.conn, kind, data);
    }
    let queued = h.conn.output_len();
    let ping = client_frame(true, 9, &[1; 125], [1, 2, 3, 4]);
    for _ in 0..10_000 {
        h.conn.receive(&ping, h.now);
    }
    assert!(
        h.conn.output_len() <= queued + 127 * 2,
        "{}",
        h.conn.output_len()
    );
    // Once the reader catches up, the latest ping is answered.
    h.pump();
    let frames = h.frames();
    assert_eq!(frames.last().unwrap().1, 10);
}

#[test]
// docs/limits.md: "Handshake time"
fn handshake_timeout_drops_a_slow_client() {
    let limits = Limits::default();
    let mut h = Harness::new(limits.clone());
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let deadline = h.conn.poll_timeout().expect("a handshake deadline");
    assert_eq!(deadline, h.now + limits.handshake_timeout);
    h.conn.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(h.conn.poll_transport(), TransportAction::None);
    h.conn.handle_timeout(deadline);
    assert_eq!(h.conn.poll_transport(), TransportAction::Close);
}

#[test]
// docs/limits.md: "Close handshake time"
fn close_timeout_after_our_close() {
    let mut h = opened();
    h.conn
        .close(echocast::proto::CloseCode::GOING_AWAY, "bye", h.now);
    h.pump();
    assert_eq!(h.close_code_sent(), Some(1001));
    let deadline = h.conn.poll_timeout().expect("close deadline");
    h.conn.handle_timeout(deadline);
    assert_eq!(h.conn.poll_transport(), TransportAction::Close);
}

/// A close frame counts as sent once its last byte is written (issue 18):
/// a peer that stops reading keeps it unsent, and a close timeout that ends
/// the connection leaves it reported as not delivered.
#[test]
fn a_close_is_sent_when_its_last_byte_is_written() {
    let mut h = opened();
    h.read_limit = h.written.len(); // the peer reads no more
    h.feed(&client_frame(true, 2, &[9u8; 1000], [1, 2, 3, 4]));
    h.conn
        .close(echocast::proto::CloseCode::POLICY_VIOLATION, "slow", h.now);
    h.pump();
    assert_eq!(h.conn.close_sent(), None, "decided, not written");
    assert_eq!(h.conn.close_unsent().map(|c| c.0), Some(1008));
    // All but the close frame's last byte.
    let n = h.conn.output_len() - 1;
    h.conn.consume_output(n);
    assert_eq!(h.conn.close_sent(), None);
    let deadline = h.conn.poll_timeout().expect("close deadline");
    h.conn.handle_timeout(deadline);
    assert_eq!(h.conn.poll_transport(), TransportAction::Close);
    assert!(h.conn.timed_out());
    assert_eq!(h.conn.close_unsent().map(|c| c.0), Some(1008));

    // The same, read to the end: sent.
    let mut h = opened();
    h.conn
        .close(echocast::proto::CloseCode::POLICY_VIOLATION, "slow", h.now);
    assert_eq!(h.conn.close_sent(), None);
    h.pump();
    assert_eq!(h.conn.close_sent().map(|c| c.0), Some(1008));
    assert_eq!(h.conn.close_unsent(), None);
    assert!(!h.conn.timed_out());
}

/// `accept` after an `Event::HttpRequest` has nothing to accept: it does
/// nothing, and the request can still be answered (issue 18).
#[test]
fn accept_after_a_plain_request_is_harmless() {
    let now = Instant::now();
    let mut conn = Connection::new(Limits::default(), now);
    conn.receive(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", now);
    assert!(matches!(conn.poll_event(), Some(Event::HttpRequest(_))));
    conn.accept(now);
    assert!(!conn.is_open() && !conn.was_opened());
    assert_eq!(conn.output_len(), 0, "no 101");
    assert!(conn.is_handshaking());
    conn.reject(echocast::proto::HandshakeError::NotWebSocket, now);
    assert!(String::from_utf8_lossy(conn.output_front()).starts_with("HTTP/1.1 426 "));
    assert_eq!(conn.http_answer().map(|a| a.0), Some(426));
}

#[test]
fn our_close_then_their_close_completes() {
    let mut h = opened();
    h.conn
        .close(echocast::proto::CloseCode::GOING_AWAY, "bye", h.now);
    h.pump();
    // Data after our close is read past, not echoed.
    h.feed(&text("late"));
    h.feed(&client_frame(true, 8, &1001u16.to_be_bytes(), [1, 2, 3, 4]));
    assert_eq!(h.frames().len(), 1);
    assert_eq!(h.conn.close_received().map(|c| c.0), Some(1001));
    assert_eq!(h.conn.poll_transport(), TransportAction::ShutdownWrite);
}

#[test]
fn refused_handshakes_answer_with_http() {
    for (req, status) in [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "426"),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "426",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n",
            "400",
        ),
        ("\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03\r\n\r\n", "400"),
    ] {
        let now = Instant::now();
        let mut conn = Connection::new(Limits::default(), now);
        conn.receive(req.as_bytes(), now);
        if let Some(Event::HttpRequest(_)) = conn.poll_event() {
            conn.reject(echocast::proto::HandshakeError::NotWebSocket, now);
        }
        let out = String::from_utf8_lossy(conn.output_front()).into_owned();
        assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
        let n = conn.output_len();
        conn.consume_output(n);
        assert_eq!(conn.poll_transport(), TransportAction::ShutdownWrite);
    }
}

#[test]
// docs/limits.md: "Keepalive"
// docs/limits.md: "Idle time"
fn keepalive_pings_when_quiet_and_idle_timeout_closes_with_1001() {
    let limits = Limits {
        ping_interval: Some(Duration::from_secs(10)),
        idle_timeout: Some(Duration::from_secs(25)),
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.feed(upgrade_request("/").as_bytes());
    let t0 = h.now;
    assert_eq!(h.conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    // Traffic pushes the ping back.
    h.now = t0 + Duration::from_secs(5);
    h.feed(&text("hi"));
    assert_eq!(h.conn.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    h.now = t0 + Duration::from_secs(15);
    h.conn.handle_timeout(h.now);
    h.pump();
    assert_eq!(
        h.frames().last().unwrap().1,
        9,
        "a ping after 10 s of quiet"
    );
    // Still quiet: another ping 10 s later, then the idle timeout 25 s after the
    // last bytes arrived.
    assert_eq!(h.conn.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    h.now = t0 + Duration::from_secs(25);
    h.conn.handle_timeout(h.now);
    h.pump();
    assert_eq!(h.frames().iter().filter(|f| f.1 == 9).count(), 2);
    h.now = t0 + Duration::from_secs(30);
    h.conn.handle_timeout(h.now);
    h.pump();
    assert_eq!(h.close_code_sent(), Some(1001));
    // A pong would have counted as activity.
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(25)),
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.feed(upgrade_request("/").as_bytes());
    h.now += Duration::from_secs(20);
    h.feed(&client_frame(true, 10, b"", [1, 2, 3, 4]));
    h.now += Duration::from_secs(20);
    h.conn.handle_timeout(h.now);
    h.pump();
    assert!(h.conn.is_open());
}

// ----- streaming (echo of large binary messages while they arrive) -----

fn streaming(limits: Limits) -> Harness {
    let mut h = Harness::new(limits);
    h.conn.set_streaming(true);
    h.feed(upgrade_request("/").as_bytes());
    h
}

/// Reassembles the server's data frames into messages, checking that
/// fragments follow the RFC: continuation only inside a fragmented message,
/// no new data frame inside one, control frames anywhere between frames.
fn reassemble(frames: &[(bool, u8, Vec<u8>)]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut open: Option<(u8, Vec<u8>)> = None;
    for (fin, op, payload) in frames {
        match op {
            0 => {
                let (_, buf) = open.as_mut().expect("continuation outside a message");
                buf.extend_from_slice(payload);
            }
            1 | 2 => {
                assert!(open.is_none(), "data frame inside a fragmented message");
                open = Some((*op, payload.clone()));
            }
            _ => {
                assert!(*fin, "fragmented control frame");
                continue;
            }
        }
        if *fin {
            out.push(open.take().unwrap());
        }
    }
    out
}

fn binary_payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
// docs/limits.md: "Streamed echo piece"
fn large_binary_message_is_echoed_in_pieces_while_it_arrives() {
    let mut h = streaming(Limits {
        stream_chunk: 1000,
        ..Limits::default()
    });
    let payload = binary_payload(10_000);
    let frame = client_frame(true, 2, &payload, [1, 2, 3, 4]);
    let mut written_before_end = 0;
    for piece in frame.chunks(700) {
        h.feed(piece);
        if h.seen.is_empty() {
            written_before_end = h.written.len();
        }
    }
    // Pieces were echoed before the message was complete.
    assert!(
        written_before_end > 5_000,
        "{written_before_end} bytes echoed early"
    );
    assert!(h.pieces.len() > 5, "{:?}", h.pieces);
    assert!(h.pieces[0].0 && !h.pieces[0].1);
    assert!(h.pieces.last().unwrap().1);
    assert_eq!(h.pieces.iter().filter(|p| p.0).count(), 1);
    assert_eq!(h.seen, vec![(MessageKind::Binary, payload.clone())]);
    let frames = h.frames();
    assert!(frames.len() > 5);
    assert_eq!((frames[0].0, frames[0].1), (false, 2));
    assert_eq!(reassemble(&frames), vec![(2, payload)]);
}

#[test]
fn streaming_leaves_small_and_text_messages_whole() {
    let mut h = streaming(Limits {
        stream_chunk: 1000,
        ..Limits::default()
    });
    // A binary message that arrives in one read: one event, one frame.
    let payload = binary_payload(5_000);
    h.feed(&client_frame(true, 2, &payload, [9, 9, 9, 9]));
    // A large text message arriving in pieces: validated whole, then echoed.
    let text_payload = "é".repeat(3_000);
    for piece in client_frame(true, 1, text_payload.as_bytes(), [5, 6, 7, 8]).chunks(333) {
        h.feed(piece);
    }
    assert!(h.pieces.is_empty(), "{:?}", h.pieces);
    assert_eq!(h.seen.len(), 2);
    let frames = h.frames();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], (true, 2, payload));
    assert_eq!(frames[1], (true, 1, text_payload.into_bytes()));
}

#[test]
fn streamed_message_keeps_the_size_cap_and_control_frames_go_between_pieces() {
    let limits = Limits {
        stream_chunk: 500,
        max_message_size: 4_000,
        ..Limits::default()
    };
    let mut h = streaming(limits);
    // Fragment 1 (fin = 0) arrives in pieces, then a ping, then fragment 2.
    let part = binary_payload(1_500);
    for piece in client_frame(false, 2, &part, [1, 1, 1, 1]).chunks(400) {
        h.feed(piece);
    }
    h.feed(&client_frame(true, 9, b"mid", [2, 2, 2, 2]));
    for piece in client_frame(true, 0, &part, [3, 3, 3, 3]).chunks(400) {
        h.feed(piece);
    }
    let frames = h.frames();
    let pong = frames.iter().position(|f| f.1 == 10).expect("a pong");
    assert!(pong > 0 && pong < frames.len() - 1, "pong between pieces");
    let mut whole = part.clone();
    whole.extend_from_slice(&part);
    assert_eq!(reassemble(&frames), vec![(2, whole)]);

    // 1,500 + 1,500 streamed so far counts: a third fragment of 1,500 is over
    // the 4,000-byte cap even though most of the message was handed out.
    for piece in client_frame(false, 2, &part, [1, 1, 1, 1]).chunks(400) {
        h.feed(piece);
    }
    h.feed(&client_frame(false, 0, &part, [1, 1, 1, 1]));
    h.feed(&client_frame(true, 0, &part, [1, 1, 1, 1]));
    assert_eq!(h.close_code_sent(), Some(1009));
    // What was written is still a valid frame sequence: pieces, then the close.
    reassemble(&h.frames());
}

#[test]
fn streaming_turned_off_mid_message_finishes_that_message_only() {
    let mut h = streaming(Limits {
        stream_chunk: 1000,
        ..Limits::default()
    });
    let payload = binary_payload(10_000);
    let frame = client_frame(true, 2, &payload, [1, 2, 3, 4]);
    let (head, tail) = frame.split_at(4_000);
    h.feed(head);
    assert_eq!(h.pieces.len(), 1, "streaming started");
    // Over budget, say: no new message may start streaming, but this one
    // continues (its start is already out).
    h.conn.set_streaming(false);
    for piece in tail.chunks(700) {
        h.feed(piece);
    }
    assert!(
        h.pieces.last().unwrap().1,
        "the streamed message was finished"
    );
    let streamed = h.pieces.len();
    for piece in frame.chunks(700) {
        h.feed(piece);
    }
    assert_eq!(h.pieces.len(), streamed, "the next message did not stream");
    assert_eq!(h.seen.len(), 2);
    assert!(h.seen.iter().all(|(_, p)| *p == payload));
    assert_eq!(reassemble(&h.frames()).len(), 2);
}

#[test]
fn a_stream_chunk_above_the_piece_size_still_streams_in_pieces() {
    // stream_chunk larger than a piece: pieces are still handed out when full
    // (and the receive loop always makes progress).
    let mut h = streaming(Limits {
        stream_chunk: 1 << 20,
        ..Limits::default()
    });
    let payload = binary_payload(200_000);
    for piece in client_frame(true, 2, &payload, [4, 3, 2, 1]).chunks(50_000) {
        h.feed(piece);
    }
    assert!(h.pieces.len() >= 6, "{:?}", h.pieces);
    assert!(h
        .pieces
        .iter()
        .all(|p| p.2 <= echocast::proto::connection::STREAM_PIECE_MAX));
    assert_eq!(h.seen, vec![(MessageKind::Binary, payload)]);
}

// ----- failing and memory (issue 12) -----

#[test]
fn a_failing_message_does_not_keep_its_close_behind_its_own_echo() {
    // A client sends a fragmented binary message over the cap and stops
    // reading early. The streamed echo piles up unread (by design); when the
    // cap is crossed, its unsent frames are dropped, so the close frame
    // follows at most the frame being written. The echo of a message that
    // was complete before keeps its place.
    let mut h = streaming(Limits {
        stream_chunk: 1000,
        max_message_size: 64_000,
        ..Limits::default()
    });
    h.feed(&text("before"));
    // The peer reads 100 bytes of the first piece, then nothing more.
    h.read_limit = h.written.len() + 100;
    let part = binary_payload(10_000);
    for (i, op) in [2u8, 0, 0, 0, 0, 0].into_iter().enumerate() {
        for piece in client_frame(false, op, &part, [i as u8; 4]).chunks(700) {
            h.feed(piece);
        }
    }
    let piece_frame = 4 + h.pieces[0].2;
    assert!(h.conn.output_len() > 50_000, "the echo piled up unread");
    // Over the cap: 1009.
    h.feed(&client_frame(false, 0, &part, [7; 4])[..20]);
    assert!(
        h.conn.output_len() <= piece_frame - 100 + 4 + 2 + 20,
        "{} bytes still ahead of the close",
        h.conn.output_len()
    );
    h.read_limit = usize::MAX;
    h.pump();
    let frames = h.frames();
    assert_eq!(frames[0], (true, 1, b"before".to_vec()));
    assert_eq!(
        (frames[1].0, frames[1].1),
        (false, 2),
        "the piece being written"
    );
    assert_eq!(
        frames.len(),
        3,
        "{:?}",
        frames.iter().map(|f| f.1).collect::<Vec<_>>()
    );
    assert_eq!(h.close_code_sent(), Some(1009));
}

#[test]
fn pieces_not_yet_taken_are_dropped_when_their_message_fails() {
    // Pieces handed out in the same read as the error are not echoed: the
    // close frame comes right after the frames already queued.
    let mut h = streaming(Limits {
        stream_chunk: 1000,
        max_message_size: 30_000,
        ..Limits::default()
    });
    let mut bytes = client_frame(false, 2, &binary_payload(20_000), [1; 4]);
    bytes.extend(client_frame(true, 0, &binary_payload(20_000), [2; 4]));
    h.feed(&bytes[..10_000]);
    let before = h.written.len();
    assert!(before > 9_000, "a first piece was echoed");
    h.conn.receive(&bytes[10_000..], h.now);
    h.pump();
    let frames = h.frames();
    let data: usize = frames.iter().filter(|f| f.1 != 8).map(|f| f.2.len()).sum();
    assert!(data <= 10_000, "{data} bytes of the failing message echoed");
    assert_eq!(h.close_code_sent(), Some(1009));
}

#[test]
// docs/limits.md: "The process's memory"
fn memory_counts_what_a_connection_holds_and_shed_frees_it() {
    use echocast::proto::CloseCode;
    // Mostly an incoming message: 1009.
    let mut h = opened();
    let idle = h.conn.memory();
    let frame = client_frame(true, 2, &binary_payload(200_000), [3; 4]);
    h.feed(&frame[..150_000]);
    let held = h.conn.memory();
    assert!(held >= idle + 150_000 - 14, "{idle} -> {held}");
    assert!(
        held < idle + 2 * 150_000,
        "capacity at most doubles: {held}"
    );
    assert_eq!(h.conn.shed(h.now), Some(CloseCode::MESSAGE_TOO_BIG));
    assert!(h.conn.memory() < 4096, "{} bytes left", h.conn.memory());
    h.conn.receive(&frame[150_000..], h.now);
    h.pump();
    assert_eq!(h.frames().len(), 1, "nothing but the close");
    let (_, _, body) = &h.frames()[0];
    assert_eq!(&body[2..], b"memory budget");
    assert_eq!(h.close_code_sent(), Some(1009));

    // Mostly output (a peer that does not read its echoes): 1008.
    let mut h = opened();
    h.read_limit = h.written.len();
    for i in 0..3u8 {
        h.feed(&client_frame(true, 2, &binary_payload(100_000), [i; 4]));
    }
    assert!(h.conn.memory() >= 300_000);
    assert_eq!(h.conn.shed(h.now), Some(CloseCode::POLICY_VIOLATION));
    assert!(h.conn.memory() < 4096, "{} bytes left", h.conn.memory());
    h.read_limit = usize::MAX;
    h.pump();
    assert_eq!(h.frames().len(), 1, "no echo had started: only the close");
    assert_eq!(h.close_code_sent(), Some(1008));

    // Once written, a connection holds only its small reusable buffers.
    let mut h = opened();
    for _ in 0..100 {
        h.feed(&client_frame(true, 2, &binary_payload(3_000), [5; 4]));
    }
    assert!(h.conn.memory() <= 64 * 1024 + 4096, "{}", h.conn.memory());
}

#[test]
fn a_connection_quiet_for_a_whole_period_gives_back_its_reusable_buffers() {
    let mut h = opened();
    let idle = h.conn.memory();
    for i in 0..20u8 {
        h.feed(&client_frame(true, 1, b"{\"seq\": 1}", [i; 4]));
    }
    // A ping arrives without its payload yet: a control frame in progress.
    h.feed(&client_frame(true, 9, b"abcd", [9; 4])[..6]);
    let busy = h.conn.memory();
    assert!(
        busy > idle + 256,
        "echoing keeps buffers for reuse: {idle} -> {busy}"
    );
    // Traffic since the last sweep: only noted, nothing freed.
    assert!(!h.conn.release_if_quiet());
    assert_eq!(h.conn.memory(), busy);
    // Quiet for a whole period: the reusable buffers go.
    assert!(h.conn.release_if_quiet());
    assert!(
        h.conn.memory() <= idle,
        "{} bytes held after the release, {idle} when idle",
        h.conn.memory()
    );
    // Nothing lost: the ping in progress is answered, echoes go on.
    h.feed(&client_frame(true, 9, b"abcd", [9; 4])[6..]);
    h.feed(&client_frame(true, 1, b"after", [7; 4]));
    let frames = h.frames();
    let n = frames.len();
    assert_eq!((frames[n - 2].1, &frames[n - 2].2[..]), (10, &b"abcd"[..]));
    assert_eq!((frames[n - 1].1, &frames[n - 1].2[..]), (1, &b"after"[..]));
    assert!(!h.conn.release_if_quiet());
}

#[test]
fn a_streamed_message_completed_before_a_protocol_error_is_echoed_whole() {
    // Found by the fuzz `connection` target: the last piece of a streamed
    // message and a protocol error arrive in one read. The message was
    // complete before the error, so its echo must be finished (its first
    // frame was already queued); dropping the queued frames as for an
    // unfinished message left an orphan continuation frame.
    let mut h = streaming(Limits {
        stream_chunk: 64,
        ..Limits::default()
    });
    h.read_limit = h.written.len(); // the peer reads nothing for now
    let first = binary_payload(200);
    h.feed(&client_frame(false, 2, &first, [1; 4]));
    assert_eq!(
        h.pieces.len(),
        1,
        "the first piece was handed out and echoed"
    );
    let mut read = client_frame(true, 0, b"the end", [2; 4]);
    read.extend_from_slice(&client_frame(true, 3, b"", [3; 4])); // reserved opcode
    h.feed(&read);
    h.read_limit = usize::MAX;
    h.pump();
    let frames = h.frames();
    let messages = reassemble(&frames[..frames.len() - 1]);
    let mut whole = first.clone();
    whole.extend_from_slice(b"the end");
    assert_eq!(messages, vec![(2, whole)]);
    assert_eq!(h.close_code_sent(), Some(1002));
}

/// Plain HTTP through the core (issue 20): two pipelined POSTs (one by
/// `Content-Length`, one chunked) then an upgrade, split at every byte: the
/// same bodies, one answer each in order on the kept connection, then the 101.
#[test]
fn pipelined_bodies_are_the_same_at_every_split() {
    use echocast::proto::handshake::keep_alive_response;
    let wire: &[u8] = b"POST /broadcast/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /broadcast/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nwor\r\n2\r\nld\r\n0\r\n\r\n\
GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    for split in 1..wire.len() {
        let now = Instant::now();
        let mut conn = Connection::new(Limits::default(), now);
        let mut bodies = Vec::new();
        let mut upgraded = false;
        for piece in wire.chunks(split) {
            conn.receive(piece, now);
            while let Some(ev) = conn.poll_event() {
                match ev {
                    Event::HttpRequest(req) => {
                        assert_eq!(req.method, "POST");
                        conn.read_body(now).expect("a declared body");
                    }
                    Event::Body(Ok(body)) => {
                        let n = bodies.len().to_string();
                        bodies.push(body);
                        let answer = keep_alive_response(200, "OK", "text/plain", "", n.as_bytes());
                        assert!(conn.respond_keep_alive(answer, now), "split {split}: kept");
                    }
                    Event::Upgrade(_) => {
                        conn.accept(now);
                        upgraded = true;
                    }
                    other => panic!("split {split}: {other:?}"),
                }
            }
        }
        assert_eq!(
            bodies,
            [b"hello".to_vec(), b"world".to_vec()],
            "split {split}"
        );
        assert!(upgraded && conn.is_open(), "split {split}");
        let mut out = Vec::new();
        read_output(&mut conn, &mut out, usize::MAX);
        let text = String::from_utf8_lossy(&out);
        let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 3, "split {split}: {text}");
        assert!(answers[0].starts_with("200 ") && answers[0].ends_with("\r\n\r\n0"));
        assert!(answers[1].starts_with("200 ") && answers[1].ends_with("\r\n\r\n1"));
        assert!(answers[2].starts_with("101 "), "split {split}");
        assert!(!text.contains("Connection: close"));
    }
}
