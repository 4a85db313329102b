//! The HTTP/2 session through the sans-IO core: a scripted client (frames
//! written here, HPACK by `loona-hpack`) against `proto::h2::Session`, no
//! sockets. Every conversation is fed split at every size from 1 byte up.

use std::time::{Duration, Instant};

use echocast::proto::h2::frame::{self, ErrorCode, Head};
use echocast::proto::h2::{Config, Event, Read, Session, WebSockets, PREFACE};
use loona_hpack::{Decoder, Encoder};

/// A frame the server sent.
#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = Head::parse(&bytes[at..]) {
        let end = at + 9 + h.len;
        assert!(end <= bytes.len(), "a partial frame in the output");
        out.push(Frame {
            kind: h.kind,
            flags: h.flags,
            stream: h.stream,
            payload: bytes[at + 9..end].to_vec(),
        });
        at = end;
    }
    assert_eq!(at, bytes.len());
    out
}

fn drain(s: &mut Session) -> Vec<Frame> {
    let bytes = s.output_front().to_vec();
    s.consume_output(bytes.len());
    let mut all = frames(&bytes);
    // `consume_output` may frame more DATA.
    if s.output_len() > 0 {
        all.extend(drain(s));
    }
    all
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut v = Vec::new();
    frame::put_settings(&mut v, pairs, false);
    v
}

fn headers(enc: &mut Encoder, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let block = enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    let mut v = Vec::new();
    frame::put_headers(&mut v, stream, &block, end_stream, 16_384);
    v
}

fn data(stream: u32, bytes: &[u8], end: bool) -> Vec<u8> {
    let mut v = Vec::new();
    frame::put_data(&mut v, stream, bytes, end);
    v
}

fn connect(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
    ]
}

fn session(ws: WebSockets) -> Session {
    let config = Config {
        websockets: ws,
        ..Config::default()
    };
    Session::new(config, Instant::now())
}

/// Feeds `bytes` in pieces of `step`.
fn feed(s: &mut Session, bytes: &[u8], step: usize) {
    for chunk in bytes.chunks(step) {
        s.receive(chunk, Instant::now());
    }
}

fn read_all(s: &mut Session, id: u32) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        match s.read(id, &mut buf) {
            Read::Data(n) => got.extend_from_slice(&buf[..n]),
            Read::Empty => return (got, false),
            Read::Eof => return (got, true),
        }
    }
}

fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == frame::GOAWAY)
        .map(|f| u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
}

#[test]
fn the_server_offers_websockets_in_its_settings() {
    for (mode, offered) in [
        (WebSockets::Offered, true),
        (WebSockets::Refused, true),
        (WebSockets::NotOffered, false),
    ] {
        let mut s = session(mode);
        let out = drain(&mut s);
        assert_eq!(out[0].kind, frame::SETTINGS);
        let has = out[0].payload.chunks(6).any(|p| p == [0, 8, 0, 0, 0, 1]);
        assert_eq!(has, offered, "{mode:?}");
        assert_eq!(out[1].kind, frame::WINDOW_UPDATE);
    }
}

#[test]
fn a_websocket_stream_at_every_split() {
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    client.extend(headers(&mut enc, 1, &connect("/echo?x=1"), false));
    client.extend(data(1, b"\x81\x82abcd\x09\x07", false));
    client.extend(data(1, b"", true));
    for step in 1..client.len() {
        let mut s = session(WebSockets::Offered);
        drain(&mut s);
        feed(&mut s, &client, step);
        let ev = events(&mut s);
        assert!(
            ev.contains(&Event::Request {
                stream: 1,
                websocket: true
            }),
            "{ev:?}"
        );
        let (bytes, eof) = read_all(&mut s, 1);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("GET /echo?x=1 HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\n")
        );
        assert!(bytes.ends_with(b"\r\n\r\n\x81\x82abcd\x09\x07"), "{text:?}");
        assert!(eof, "END_STREAM is the tunnel's EOF");
        let out = drain(&mut s);
        assert!(out
            .iter()
            .any(|f| f.kind == frame::SETTINGS && f.flags == frame::ACK));
        // The answer: a 101 becomes :status 200, the frame DATA.
        let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x02hi";
        assert_eq!(s.write(1, answer), answer.len());
        assert!(s.is_tunnel(1));
        let out = drain(&mut s);
        let h = out.iter().find(|f| f.kind == frame::HEADERS).unwrap();
        let fields = Decoder::new().decode(&h.payload).unwrap();
        assert_eq!(fields, vec![(b":status".to_vec(), b"200".to_vec())]);
        let d = out.iter().find(|f| f.kind == frame::DATA).unwrap();
        assert_eq!(d.payload, b"\x81\x02hi");
        s.end(1);
        let out = drain(&mut s);
        assert!(out
            .iter()
            .any(|f| f.kind == frame::DATA && f.flags & frame::END_STREAM != 0));
        s.forget(1, ErrorCode::Cancel);
        assert_eq!(s.streams(), 0);
    }
}

#[test]
fn a_get_and_a_post_with_a_body_of_unknown_length() {
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    let get = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/healthz"),
        (":authority", "h"),
    ];
    client.extend(headers(&mut enc, 1, &get, true));
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/rooms/a"),
        (":authority", "h"),
    ];
    client.extend(headers(&mut enc, 3, &post, false));
    client.extend(data(3, b"hello", false));
    client.extend(data(3, b" you", true));
    for step in [1, 2, 5, 13, 1000] {
        let mut s = session(WebSockets::Offered);
        feed(&mut s, &client, step);
        let (get_bytes, eof) = read_all(&mut s, 1);
        assert!(!eof, "a plain request's end is its framing, not an EOF");
        assert_eq!(get_bytes, b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n");
        let (post_bytes, _) = read_all(&mut s, 3);
        assert_eq!(
            String::from_utf8(post_bytes).unwrap(),
            "POST /rooms/a HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n4\r\n you\r\n0\r\n\r\n"
        );
        drain(&mut s);
        s.write(1, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        assert!(s.is_answered(1));
        s.forget(1, ErrorCode::Cancel);
        let out = drain(&mut s);
        let d: Vec<&Frame> = out.iter().filter(|f| f.kind == frame::DATA).collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].payload, b"ok\n");
        assert_eq!(d[0].flags, frame::END_STREAM);
        assert!(
            !out.iter().any(|f| f.kind == frame::RST_STREAM),
            "the request had ended"
        );
    }
}

// docs/limits.md: "HTTP/2 stream window"
#[test]
fn a_stream_nobody_reads_is_bounded_by_its_window_and_others_go_on() {
    let mut enc = Encoder::new();
    let mut s = session(WebSockets::Offered);
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    client.extend(headers(&mut enc, 1, &connect("/a"), false));
    client.extend(headers(&mut enc, 3, &connect("/b"), false));
    s.receive(&client, Instant::now());
    drain(&mut s);
    events(&mut s);
    // Stream 1 is never read: 65,535 bytes fit its window, one more does not.
    let chunk = vec![0u8; 16_383];
    for _ in 0..4 {
        s.receive(&data(1, &chunk, false), Instant::now());
    }
    s.receive(&data(1, &[0; 3], false), Instant::now());
    // Stream 3 still flows, and gets its window back once read.
    s.receive(&data(3, &chunk, false), Instant::now());
    let (b, _) = read_all(&mut s, 3);
    assert!(b.ends_with(&chunk));
    let out = drain(&mut s);
    assert!(out
        .iter()
        .any(|f| f.kind == frame::WINDOW_UPDATE && f.stream == 3));
    assert!(!out
        .iter()
        .any(|f| f.kind == frame::WINDOW_UPDATE && f.stream == 1));
    assert!(!out.iter().any(|f| f.kind == frame::RST_STREAM));
    s.receive(&data(1, &[0; 1], false), Instant::now());
    let out = drain(&mut s);
    let rst = out
        .iter()
        .find(|f| f.kind == frame::RST_STREAM)
        .expect("reset");
    assert_eq!(rst.stream, 1);
    assert_eq!(
        rst.payload,
        ErrorCode::FlowControlError.code().to_be_bytes()
    );
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, Event::Reset { stream: 1, .. })));
    assert_eq!(s.streams(), 1);
}

// docs/limits.md: "HTTP/2 send windows"
#[test]
fn the_answer_waits_for_the_peers_window() {
    let mut enc = Encoder::new();
    let mut s = session(WebSockets::Offered);
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1000)]));
    client.extend(headers(&mut enc, 1, &connect("/a"), false));
    s.receive(&client, Instant::now());
    drain(&mut s);
    events(&mut s);
    let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
    answer.extend(vec![7u8; 100_000]);
    let taken = s.write(1, &answer);
    assert!(taken < answer.len(), "the stream's queue is bounded");
    let sent: usize = drain(&mut s)
        .iter()
        .filter(|f| f.kind == frame::DATA)
        .map(|f| f.payload.len())
        .sum();
    assert_eq!(sent, 1000, "no more than the stream window");
    let mut wu = Vec::new();
    frame::put_window_update(&mut wu, 1, 50_000);
    s.receive(&wu, Instant::now());
    let sent: usize = drain(&mut s)
        .iter()
        .filter(|f| f.kind == frame::DATA)
        .map(|f| f.payload.len())
        .sum();
    // The connection window (65,535) now bounds it.
    assert_eq!(sent, 50_000);
    assert!(events(&mut s).contains(&Event::Writable(1)));
}

#[test]
fn connection_errors_send_goaway_with_their_code() {
    let mut enc = Encoder::new();
    let ok = |extra: Vec<u8>| {
        let mut v = PREFACE.to_vec();
        v.extend(settings(&[]));
        v.extend(extra);
        v
    };
    let mut big = Vec::new();
    frame::put_head(&mut big, 16_385, frame::DATA, 0, 1);
    big.extend(vec![0; 16_385]);
    let mut wu0 = Vec::new();
    frame::put_window_update(&mut wu0, 0, 0);
    let mut wu_over = Vec::new();
    frame::put_window_update(&mut wu_over, 0, 0x7fff_ffff);
    let mut ping = Vec::new();
    frame::put_head(&mut ping, 7, frame::PING, 0, 0);
    ping.extend([0; 7]);
    let mut cont = headers(&mut enc, 1, &connect("/a"), false);
    cont[4] = 0; // no END_HEADERS
    cont.extend(settings(&[]));
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "bad preface",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ErrorCode::ProtocolError,
        ),
        (
            "not SETTINGS first",
            {
                let mut v = PREFACE.to_vec();
                v.extend(data(1, b"x", false));
                v
            },
            ErrorCode::ProtocolError,
        ),
        // docs/limits.md: "HTTP/2 frame size"
        ("frame too large", ok(big), ErrorCode::FrameSizeError),
        (
            "DATA on 0",
            ok(data(0, b"x", false)),
            ErrorCode::ProtocolError,
        ),
        (
            "DATA idle",
            ok(data(5, b"x", false)),
            ErrorCode::ProtocolError,
        ),
        (
            "even stream",
            ok(headers(&mut Encoder::new(), 2, &connect("/a"), false)),
            ErrorCode::ProtocolError,
        ),
        ("window 0", ok(wu0), ErrorCode::ProtocolError),
        ("window over", ok(wu_over), ErrorCode::FlowControlError),
        ("ping size", ok(ping), ErrorCode::FrameSizeError),
        ("interleaved", ok(cont), ErrorCode::ProtocolError),
        (
            "push",
            ok({
                let mut v = Vec::new();
                frame::put_head(&mut v, 4, frame::PUSH_PROMISE, frame::END_HEADERS, 1);
                v.extend([0, 0, 0, 2]);
                v
            }),
            ErrorCode::ProtocolError,
        ),
        (
            "max frame",
            ok(settings(&[(frame::SETTINGS_MAX_FRAME_SIZE, 100)])),
            ErrorCode::ProtocolError,
        ),
        (
            "push setting",
            ok(settings(&[(frame::SETTINGS_ENABLE_PUSH, 2)])),
            ErrorCode::ProtocolError,
        ),
        // docs/limits.md: "HTTP/2 header block"
        (
            "header block",
            ok({
                let mut v = Vec::new();
                frame::put_head(&mut v, 16_384, frame::HEADERS, 0, 1);
                v.extend(vec![0x40; 16_384]);
                for _ in 0..4 {
                    frame::put_head(&mut v, 16_384, frame::CONTINUATION, 0, 1);
                    v.extend(vec![0x40; 16_384]);
                }
                v
            }),
            ErrorCode::EnhanceYourCalm,
        ),
        (
            "hpack",
            ok({
                let mut v = Vec::new();
                frame::put_headers(
                    &mut v,
                    1,
                    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    true,
                    16_384,
                );
                v
            }),
            ErrorCode::CompressionError,
        ),
    ];
    for (name, bytes, code) in cases {
        let mut s = session(WebSockets::Offered);
        s.receive(&bytes, Instant::now());
        let out = drain(&mut s);
        assert_eq!(goaway_code(&out), Some(code.code()), "{name}");
        assert!(s.error().is_some() && s.is_done(), "{name}");
    }
}

#[test]
fn stream_errors_reset_one_stream() {
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    // Malformed: an uppercase name.
    client.extend(headers(
        &mut enc,
        1,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            ("X-A", "1"),
        ],
        true,
    ));
    // Content-length that DATA does not match.
    client.extend(headers(
        &mut enc,
        3,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            ("content-length", "2"),
        ],
        false,
    ));
    client.extend(data(3, b"abc", true));
    // HEADERS again on a stream the client ended: STREAM_CLOSED.
    client.extend(headers(
        &mut enc,
        7,
        &[(":method", "GET"), (":scheme", "http"), (":path", "/again")],
        true,
    ));
    client.extend(headers(&mut enc, 7, &[("x-trailer", "1")], true));
    // A good one after them still works.
    client.extend(headers(
        &mut enc,
        9,
        &[(":method", "GET"), (":scheme", "http"), (":path", "/ok")],
        true,
    ));
    let mut s = session(WebSockets::Offered);
    s.receive(&client, Instant::now());
    let out = drain(&mut s);
    let rst: Vec<(u32, Vec<u8>)> = out
        .iter()
        .filter(|f| f.kind == frame::RST_STREAM)
        .map(|f| (f.stream, f.payload.clone()))
        .collect();
    let pe = ErrorCode::ProtocolError.code().to_be_bytes().to_vec();
    let sc = ErrorCode::StreamClosed.code().to_be_bytes().to_vec();
    assert_eq!(rst, vec![(1, pe.clone()), (3, pe), (7, sc)]);
    assert!(goaway_code(&out).is_none());
    let ev = events(&mut s);
    assert!(ev.contains(&Event::Request {
        stream: 9,
        websocket: false
    }));
}

// docs/limits.md: "HTTP/2 concurrent streams"
#[test]
fn failures_on_request_and_the_stream_limit() {
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    client.extend(headers(&mut enc, 1, &connect("/a"), false));
    // Refused: 501 on the stream.
    let mut s = session(WebSockets::Refused);
    s.receive(&client, Instant::now());
    let out = drain(&mut s);
    let h = out.iter().find(|f| f.kind == frame::HEADERS).unwrap();
    let fields = Decoder::new().decode(&h.payload).unwrap();
    assert_eq!(fields[0], (b":status".to_vec(), b"501".to_vec()));
    assert!(events(&mut s).is_empty());
    // Not offered: the CONNECT is malformed.
    let mut s = session(WebSockets::NotOffered);
    s.receive(&client, Instant::now());
    let out = drain(&mut s);
    assert!(out
        .iter()
        .any(|f| f.kind == frame::RST_STREAM && f.stream == 1));
    // The limit: the stream over it is refused, the others stand.
    let mut s = Session::new(
        Config {
            max_streams: 2,
            ..Config::default()
        },
        Instant::now(),
    );
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    let mut enc = Encoder::new();
    for id in [1, 3, 5] {
        client.extend(headers(&mut enc, id, &connect("/a"), false));
    }
    s.receive(&client, Instant::now());
    let out = drain(&mut s);
    let rst: Vec<(u32, Vec<u8>)> = out
        .iter()
        .filter(|f| f.kind == frame::RST_STREAM)
        .map(|f| (f.stream, f.payload.clone()))
        .collect();
    assert_eq!(
        rst,
        vec![(5, ErrorCode::RefusedStream.code().to_be_bytes().to_vec())]
    );
    assert_eq!(s.streams(), 2);
}

// docs/limits.md: "HTTP/2 preface time"
#[test]
fn a_peer_reset_and_the_preface_deadline() {
    let mut enc = Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    client.extend(headers(&mut enc, 1, &connect("/a"), false));
    let mut rst = Vec::new();
    frame::put_rst_stream(&mut rst, 1, ErrorCode::Cancel);
    client.extend(rst);
    let mut s = session(WebSockets::Offered);
    s.receive(&client, Instant::now());
    let ev = events(&mut s);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Reset {
            stream: 1,
            code: ErrorCode::Cancel,
            by_peer: true,
            ..
        }
    )));
    assert_eq!(s.streams(), 0);

    let start = Instant::now();
    let mut s = Session::new(
        Config {
            handshake_timeout: Duration::from_secs(1),
            ..Config::default()
        },
        start,
    );
    assert_eq!(s.poll_timeout(), Some(start + Duration::from_secs(1)));
    s.handle_timeout(start + Duration::from_secs(2));
    let out = drain(&mut s);
    assert_eq!(goaway_code(&out), Some(ErrorCode::SettingsTimeout.code()));
}

// docs/limits.md: "HTTP/2 idle connection"
#[test]
fn a_connection_without_streams_goes_after_the_handshake_time() {
    let start = Instant::now();
    let config = Config {
        handshake_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut s = Session::new(config, start);
    let mut client = PREFACE.to_vec();
    client.extend(settings(&[]));
    client.extend(headers(&mut Encoder::new(), 1, &connect("/a"), false));
    s.receive(&client, start);
    drain(&mut s);
    s.note_time(start);
    assert_eq!(s.poll_timeout(), None, "a stream is open");
    s.forget(1, ErrorCode::Cancel);
    s.note_time(start + Duration::from_secs(5));
    assert_eq!(s.poll_timeout(), Some(start + Duration::from_secs(6)));
    s.handle_timeout(start + Duration::from_secs(6));
    let out = drain(&mut s);
    assert_eq!(goaway_code(&out), Some(ErrorCode::NoError.code()));
    assert!(s.is_done());
}

// docs/limits.md: "HTTP/2 rapid reset"
#[test]
fn streams_reset_before_their_answer_are_bounded() {
    let burst = |s: &mut Session, enc: &mut Encoder, first: u32, n: u32, at: Instant| {
        let mut v = Vec::new();
        for i in 0..n {
            let id = first + 2 * i;
            v.extend(headers(enc, id, &connect("/a"), false));
            let mut rst = Vec::new();
            frame::put_rst_stream(&mut rst, id, ErrorCode::Cancel);
            v.extend(rst);
        }
        s.receive(&v, at);
        drain(s)
    };
    let start = Instant::now();
    let mut enc = Encoder::new();
    let mut s = session(WebSockets::Offered);
    let mut open = PREFACE.to_vec();
    open.extend(settings(&[]));
    s.receive(&open, start);
    drain(&mut s);
    // 150 in one second, then 150 in the next: under the bound each time.
    assert_eq!(goaway_code(&burst(&mut s, &mut enc, 1, 150, start)), None);
    let later = start + Duration::from_millis(1500);
    assert_eq!(goaway_code(&burst(&mut s, &mut enc, 301, 150, later)), None);
    // 250 at once: GOAWAY ENHANCE_YOUR_CALM.
    let out = burst(&mut s, &mut enc, 601, 250, later);
    assert_eq!(goaway_code(&out), Some(ErrorCode::EnhanceYourCalm.code()));
    assert!(s.error().is_some_and(|e| e.contains("rapid reset")));
}
