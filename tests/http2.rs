//! HTTP/2 over real sockets against the in-process server (a debug build:
//! its memory accounting is checked every loop turn): h2c by prior
//! knowledge, WebSocket streams beside a GET on one connection, a room with
//! an HTTP/1.1 member, a stream the client resets, the `drop` knob, a
//! proxied path reached over HTTP/2, and a connection error. The blocking
//! client here writes frames with `proto::h2::frame` and HPACK with
//! `loona-hpack`; tests/clients/http2.py is the independent client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use echocast::proto::h2::frame::{self, ErrorCode, Head};
use echocast::proto::h2::PREFACE;
use echocast::Config;
use loona_hpack::{Decoder, Encoder};

struct H2 {
    s: TcpStream,
    buf: Vec<u8>,
    enc: Encoder<'static>,
    dec: Decoder<'static>,
    next: u32,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl H2 {
    fn connect(addr: SocketAddr) -> H2 {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut h = H2 {
            s,
            buf: Vec::new(),
            enc: Encoder::new(),
            dec: Decoder::new(),
            next: 1,
        };
        let mut out = PREFACE.to_vec();
        frame::put_settings(&mut out, &[], false);
        h.s.write_all(&out).unwrap();
        // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL), acked.
        let f = h.frame();
        assert_eq!(f.kind, frame::SETTINGS);
        assert!(f.payload.chunks(6).any(|p| p == [0, 8, 0, 0, 0, 1]));
        let mut ack = Vec::new();
        frame::put_settings(&mut ack, &[], true);
        h.s.write_all(&ack).unwrap();
        h
    }

    fn frame(&mut self) -> Frame {
        loop {
            if let Some(head) = Head::parse(&self.buf) {
                if self.buf.len() >= 9 + head.len {
                    let payload = self.buf[9..9 + head.len].to_vec();
                    self.buf.drain(..9 + head.len);
                    return Frame {
                        kind: head.kind,
                        flags: head.flags,
                        stream: head.stream,
                        payload,
                    };
                }
            }
            let mut b = [0u8; 65536];
            let n = self.s.read(&mut b).expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// The next frame on `stream` (connection frames and window updates
    /// are skipped).
    fn frame_on(&mut self, stream: u32) -> Frame {
        loop {
            let f = self.frame();
            if f.stream == stream && f.kind != frame::WINDOW_UPDATE {
                return f;
            }
        }
    }

    fn open(&mut self, fields: &[(&str, &str)], end_stream: bool) -> u32 {
        let id = self.next;
        self.next += 2;
        let block = self
            .enc
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let mut out = Vec::new();
        frame::put_headers(&mut out, id, &block, end_stream, 16_384);
        self.s.write_all(&out).unwrap();
        id
    }

    fn websocket(&mut self, path: &str) -> u32 {
        let id = self.open(
            &[
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "localhost"),
                ("sec-websocket-version", "13"),
            ],
            false,
        );
        assert_eq!(self.status(id), "200");
        id
    }

    fn status(&mut self, id: u32) -> String {
        let f = self.frame_on(id);
        assert_eq!(f.kind, frame::HEADERS, "{f:?}");
        let fields = self.dec.decode(&f.payload).unwrap();
        String::from_utf8(fields[0].1.clone()).unwrap()
    }

    fn send(&mut self, id: u32, bytes: &[u8], end: bool) {
        let mut out = Vec::new();
        frame::put_data(&mut out, id, bytes, end);
        self.s.write_all(&out).unwrap();
    }

    /// The payload of the next DATA frames on `id` until a whole WebSocket
    /// frame is there: (opcode, payload).
    fn ws_frame(&mut self, id: u32) -> (u8, Vec<u8>) {
        let mut got = Vec::new();
        loop {
            let (frames, _) = parse_frames(&got);
            if let Some((_, op, p)) = frames.into_iter().next() {
                return (op, p);
            }
            let f = self.frame_on(id);
            assert_eq!(f.kind, frame::DATA, "{f:?}");
            got.extend_from_slice(&f.payload);
        }
    }
}

#[test]
fn websockets_and_a_get_share_one_connection() {
    let server = echocast::spawn(Config::local()).unwrap();
    let mut h = H2::connect(server.local_addr());
    let a = h.websocket("/a");
    let b = h.websocket("/b?greeting=hi");
    assert_eq!(h.ws_frame(b), (1, b"hi".to_vec()));
    let get = h.open(
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/healthz"),
        ],
        true,
    );
    assert_eq!(h.status(get), "200");
    for (id, msg) in [(a, "to a"), (b, "to b")] {
        h.send(id, &text(msg), false);
        assert_eq!(h.ws_frame(id), (1, msg.as_bytes().to_vec()));
    }
    // The WebSocket close, then END_STREAM both ways.
    h.send(
        a,
        &client_frame(true, 8, &1000u16.to_be_bytes(), [1, 2, 3, 4]),
        true,
    );
    let (op, payload) = h.ws_frame(a);
    assert_eq!((op, close_code(&payload)), (8, Some(1000)));
    let end = h.frame_on(a);
    assert!(
        end.kind == frame::DATA && end.flags & frame::END_STREAM != 0,
        "{end:?}"
    );
    // b still echoes.
    h.send(b, &text("still"), false);
    assert_eq!(h.ws_frame(b), (1, b"still".to_vec()));
}

#[test]
fn a_room_with_members_on_both_protocols() {
    let server = echocast::spawn(Config::local()).unwrap();
    let mut h = H2::connect(server.local_addr());
    let id = h.websocket("/broadcast/mixed");
    let mut w = Client::connect(server.local_addr(), "/broadcast/mixed");
    std::thread::sleep(Duration::from_millis(50));
    w.send_text("from 1.1");
    assert_eq!(h.ws_frame(id), (1, b"from 1.1".to_vec()));
    assert_eq!(w.expect_text(), "from 1.1");
    h.send(id, &text("from 2"), false);
    assert_eq!(w.expect_text(), "from 2");
    assert_eq!(h.ws_frame(id), (1, b"from 2".to_vec()));
}

#[test]
fn resets_and_the_drop_knob_end_one_stream() {
    let server = echocast::spawn(Config::local()).unwrap();
    let mut h = H2::connect(server.local_addr());
    let a = h.websocket("/a");
    let mut rst = Vec::new();
    frame::put_rst_stream(&mut rst, a, ErrorCode::Cancel);
    h.s.write_all(&rst).unwrap();
    let d = h.websocket("/d?drop=1");
    h.send(d, &text("one"), false);
    assert_eq!(h.ws_frame(d), (1, b"one".to_vec()));
    let f = h.frame_on(d);
    assert_eq!(f.kind, frame::RST_STREAM);
    assert_eq!(f.payload, ErrorCode::Cancel.code().to_be_bytes());
    let bad = h.open(
        &[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/x?delay=banana"),
            (":authority", "localhost"),
            ("sec-websocket-version", "13"),
        ],
        false,
    );
    assert_eq!(h.status(bad), "400");
    let ok = h.websocket("/after");
    h.send(ok, &text("fine"), false);
    assert_eq!(h.ws_frame(ok), (1, b"fine".to_vec()));
}

#[test]
fn a_proxied_path_reached_over_http2() {
    let upstream = echocast::spawn(Config::local()).unwrap();
    let mut config = Config::local();
    let route = format!("/up=ws://{}/", upstream.local_addr());
    config.proxy =
        echocast::proxy::Routes::new(vec![echocast::proxy::parse_route(&route).unwrap()]);
    let proxy = echocast::spawn(config).unwrap();
    let mut h = H2::connect(proxy.local_addr());
    let id = h.websocket("/up");
    h.send(id, &text("through"), false);
    assert_eq!(h.ws_frame(id), (1, b"through".to_vec()));
}

#[test]
fn a_connection_error_is_goaway_with_its_code() {
    let server = echocast::spawn(Config::local()).unwrap();
    let mut h = H2::connect(server.local_addr());
    h.send(0, b"x", false); // DATA on stream 0
    let f = loop {
        let f = h.frame();
        if f.kind == frame::GOAWAY {
            break f;
        }
    };
    assert_eq!(
        f.payload[4..8],
        ErrorCode::ProtocolError.code().to_be_bytes()
    );
    let mut b = [0u8; 16];
    assert_eq!(
        h.s.read(&mut b).unwrap(),
        0,
        "the socket is closed after GOAWAY"
    );
}
