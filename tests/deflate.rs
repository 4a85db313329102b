//! permessage-deflate (RFC 7692) through the sans-IO core: negotiation as the
//! 101 shows it, RSV1 rules, inflating (bombs, garbage, UTF-8) and what we
//! send. Real clients are in `tests/deflate_clients.sh`.

mod common;

use std::rc::Rc;
use std::time::Instant;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use common::*;
use echocast::handler;
use echocast::proto::deflate::{DeflateConfig, DeflateMode, SharedCodec, TAIL};
use echocast::proto::{Connection, Event, FrameHeader, Limits};

struct Peer {
    conn: Connection,
    now: Instant,
    written: Vec<u8>,
    head: String,
}

fn request(offer: Option<&str>) -> String {
    let req = upgrade_request("/");
    match offer {
        Some(o) => req.replace(
            "Host: localhost\r\n",
            &format!("Host: localhost\r\nSec-WebSocket-Extensions: {o}\r\n"),
        ),
        None => req,
    }
}

/// A connection after the handshake, echoing every message.
fn open(offer: Option<&str>, config: DeflateConfig, limits: Limits) -> Peer {
    let now = Instant::now();
    let mut p = Peer {
        conn: Connection::new(limits, now),
        now,
        written: Vec::new(),
        head: String::new(),
    };
    p.conn.receive(request(offer).as_bytes(), now);
    let codec = Rc::new(SharedCodec::default());
    while let Some(ev) = p.conn.poll_event() {
        if let Event::Upgrade(_) = ev {
            p.conn.accept_deflate(now, &config, &codec);
        }
    }
    p.pump();
    let end = p.written.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    p.head = String::from_utf8(p.written.drain(..end).collect()).unwrap();
    assert!(p.head.starts_with("HTTP/1.1 101 "), "{}", p.head);
    p
}

impl Peer {
    fn feed(&mut self, bytes: &[u8]) {
        self.conn.receive(bytes, self.now);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Message { kind, data } => {
                    handler::echo(&mut self.conn, kind, data);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        read_output(&mut self.conn, &mut self.written, usize::MAX);
    }

    /// Server frames: (rsv, opcode, payload).
    fn frames(&self) -> Vec<(u8, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut b = &self.written[..];
        while let Ok(Some((h, n))) = FrameHeader::decode(b) {
            let end = n + h.payload_len as usize;
            out.push((h.rsv, h.opcode, b[n..end].to_vec()));
            b = &b[end..];
        }
        out
    }

    fn close_code(&self) -> Option<u16> {
        let frames = self.frames();
        let (_, op, payload) = frames.last().expect("a frame");
        assert_eq!(*op, 8, "{frames:?}");
        close_code(payload)
    }
}

/// What a client sends: raw deflate with a sync flush, the tail stripped.
fn client_compress(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame with the given RSV bits.
fn frame_rsv(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = client_frame(fin, opcode, payload, [0x37, 0xfa, 0x21, 0x3d]);
    f[0] |= rsv << 4;
    f
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    inflate_with(&mut Decompress::new(false), payload)
}

/// Inflates one message's payload (the tail appended) with `d`.
fn inflate_with(d: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(4096);
    loop {
        let before = d.total_in();
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        input.drain(..(d.total_in() - before) as usize);
        if input.is_empty() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

fn shared() -> DeflateConfig {
    DeflateConfig::default()
}

#[test]
fn the_101_names_exactly_what_was_agreed() {
    let p = open(
        Some("permessage-deflate; client_max_window_bits"),
        shared(),
        Limits::default(),
    );
    assert!(
        p.head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover; client_max_window_bits=15\r\n"
        ),
        "{}",
        p.head
    );
    // A declined offer: the handshake still succeeds, without the header.
    let p = open(
        Some("permessage-deflate; server_max_window_bits=8"),
        shared(),
        Limits::default(),
    );
    assert!(!p.head.contains("Extensions"), "{}", p.head);
    let off = DeflateConfig {
        mode: DeflateMode::Off,
        ..shared()
    };
    let p = open(Some("permessage-deflate"), off, Limits::default());
    assert!(!p.head.contains("Extensions"), "{}", p.head);
}

#[test]
fn compressed_messages_are_inflated_and_echoed_compressed() {
    let mut p = open(Some("permessage-deflate"), shared(), Limits::default());
    let mut c = Compress::new(Compression::default(), false);
    // Text in three fragments: RSV1 on the first only (RFC 7692 §6.1).
    let text = "κόσμε ".repeat(500);
    let z = client_compress(&mut c, text.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, d) = rest.split_at(rest.len() / 2);
    p.feed(&frame_rsv(false, 4, 1, a));
    p.feed(&frame_rsv(false, 0, 0, b));
    p.feed(&frame_rsv(true, 0, 0, d));
    // Binary, whole, then an uncompressed one (RSV1 is per message).
    let bin: Vec<u8> = (0..70_000u32).map(|i| (i % 7) as u8).collect();
    p.feed(&frame_rsv(true, 4, 2, &client_compress(&mut c, &bin)));
    p.feed(&frame_rsv(true, 0, 2, b"plain"));
    let frames = p.frames();
    assert_eq!(frames.len(), 3);
    assert_eq!((frames[0].0, frames[0].1), (4, 1), "compressed text");
    assert!(inflate(&frames[0].2) == text.as_bytes());
    assert!(frames[0].2.len() < text.len() / 10);
    assert_eq!((frames[1].0, frames[1].1), (4, 2));
    assert!(inflate(&frames[1].2) == bin);
    // The threshold is 0: even 5 bytes go out compressed.
    assert_eq!((frames[2].0, frames[2].1), (4, 2));
    assert_eq!(inflate(&frames[2].2), b"plain");
}

#[test]
fn a_threshold_leaves_small_messages_uncompressed() {
    let config = DeflateConfig {
        threshold: 100,
        ..shared()
    };
    let mut p = open(Some("permessage-deflate"), config, Limits::default());
    p.feed(&frame_rsv(true, 0, 1, b"short"));
    p.feed(&frame_rsv(true, 0, 1, "long ".repeat(40).as_bytes()));
    let frames = p.frames();
    assert_eq!(frames[0], (0, 1, b"short".to_vec()));
    assert_eq!(frames[1].0, 4);
}

#[test]
fn rsv1_is_only_allowed_on_the_first_frame_of_a_message_with_deflate() {
    // RFC 7692 §6: not on control frames, not on continuation frames; and
    // RFC 6455 §5.2: not at all without the extension.
    let cases: [(Option<&str>, Vec<Vec<u8>>); 3] = [
        (
            Some("permessage-deflate"),
            vec![frame_rsv(true, 4, 9, b"ping")],
        ),
        (
            Some("permessage-deflate"),
            vec![frame_rsv(false, 0, 2, b"a"), frame_rsv(true, 4, 0, b"b")],
        ),
        (None, vec![frame_rsv(true, 4, 2, &[0x00])]),
    ];
    for (offer, frames) in cases {
        let mut p = open(offer, shared(), Limits::default());
        for f in frames {
            p.feed(&f);
        }
        assert_eq!(p.close_code(), Some(1002));
    }
}

#[test]
// docs/limits.md: "Inflated message (permessage-deflate)"
fn data_that_does_not_inflate_fails_with_1007() {
    let mut p = open(Some("permessage-deflate"), shared(), Limits::default());
    p.feed(&frame_rsv(true, 4, 2, &[0xff; 40]));
    assert_eq!(p.close_code(), Some(1007));
}

#[test]
fn invalid_utf8_is_caught_on_the_inflated_bytes() {
    let mut p = open(Some("permessage-deflate"), shared(), Limits::default());
    let mut c = Compress::new(Compression::default(), false);
    let mut bad = b"valid so far ".repeat(100);
    bad.extend_from_slice(&[0xc0, 0xaf]);
    p.feed(&frame_rsv(true, 4, 1, &client_compress(&mut c, &bad)));
    assert_eq!(p.close_code(), Some(1007));
}

#[test]
// docs/limits.md: "Inflated message (permessage-deflate)"
fn an_inflate_bomb_fails_with_1009_holding_at_most_the_cap_and_one_step() {
    let limits = Limits {
        max_message_size: 1 << 20,
        ..Limits::default()
    };
    for fragments in [1, 64] {
        let mut p = open(Some("permessage-deflate"), shared(), limits.clone());
        let mut c = Compress::new(Compression::best(), false);
        // 16 MiB of zeros, 16 KiB compressed.
        let z = client_compress(&mut c, &vec![0u8; 16 << 20]);
        assert!(z.len() < 64 * 1024, "{}", z.len());
        let step = z.len().div_ceil(fragments);
        let mut peak = 0;
        for (i, part) in z.chunks(step).enumerate() {
            let (rsv, op) = if i == 0 { (4, 2) } else { (0, 0) };
            let f = frame_rsv(false, rsv, op, part);
            for piece in f.chunks(4096) {
                p.conn.receive(piece, p.now);
                peak = peak.max(p.conn.memory());
            }
            if !p.conn.is_open() {
                break;
            }
        }
        p.pump();
        assert_eq!(p.close_code(), Some(1009), "{fragments} fragments");
        assert!(
            peak <= (1 << 20) + 64 * 1024 + 64 * 1024,
            "held {peak} bytes inflating a bomb"
        );
    }
}

#[test]
// docs/limits.md: "zlib state per connection"
fn an_idle_connection_keeps_no_zlib_state_in_shared_mode() {
    let mut p = open(
        Some("permessage-deflate; client_max_window_bits"),
        shared(),
        Limits::default(),
    );
    let mut c = Compress::new(Compression::default(), false);
    p.feed(&frame_rsv(
        true,
        4,
        1,
        &client_compress(&mut c, b"{\"hello\": 1}"),
    ));
    assert_eq!(inflate(&p.frames()[0].2), b"{\"hello\": 1}");
    // The inflater went back to the loop-wide pool; what is left is the small
    // reusable buffers of any connection that echoed a message.
    assert!(p.conn.memory() < 2048, "{} bytes held", p.conn.memory());

    // Dedicated mode keeps the client's context (and ours) between messages.
    let dedicated = DeflateConfig {
        mode: DeflateMode::Dedicated,
        ..shared()
    };
    let mut p = open(Some("permessage-deflate"), dedicated, Limits::default());
    let mut c = Compress::new(Compression::default(), false);
    for i in 0..3 {
        let m = format!("{{\"hello\": {i}}}");
        p.feed(&frame_rsv(
            true,
            4,
            1,
            &client_compress(&mut c, m.as_bytes()),
        ));
    }
    assert!(p.conn.memory() > 32 * 1024, "{}", p.conn.memory());
    // Our frames are one deflate stream: inflate them in sequence.
    let mut d = Decompress::new(false);
    for (i, (rsv, _, payload)) in p.frames().into_iter().enumerate() {
        assert_eq!(rsv, 4);
        let out = inflate_with(&mut d, &payload);
        assert_eq!(out, format!("{{\"hello\": {i}}}").as_bytes());
    }
}

/// The inspector's message records (issue 26): a compressed text message in
/// three frames is recorded once, inflated, with its wire size; its echo is
/// recorded before compression, with the compressed size beside it.
#[test]
fn a_compressed_message_is_recorded_as_the_client_meant_it() {
    use echocast::proto::inspect::{Dir, What};
    let limits = Limits::default();
    limits.tap.set_on(true);
    limits.tap.set_preview(100);
    let mut p = open(Some("permessage-deflate"), shared(), limits);
    let mut c = Compress::new(Compression::default(), false);
    let text = "κόσμε ".repeat(500);
    let z = client_compress(&mut c, text.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, d) = rest.split_at(rest.len() / 2);
    p.feed(&frame_rsv(false, 4, 1, a));
    p.feed(&frame_rsv(false, 0, 0, b));
    p.feed(&frame_rsv(true, 0, 0, d));
    let out_wire = p.frames()[0].2.len() as u64;
    let messages: Vec<_> = p
        .conn
        .tap()
        .drain()
        .into_iter()
        .filter_map(|r| match r.what {
            What::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    let (i, o) = (&messages[0], &messages[1]);
    assert_eq!((i.dir, i.text, i.compressed), (Dir::In, true, true));
    assert_eq!(
        (i.len, i.wire_len, i.frames),
        (text.len() as u64, z.len() as u64, 3)
    );
    assert_eq!(&i.content[..], &text.as_bytes()[..100]);
    assert!(i.truncated());
    assert_eq!(
        (o.dir, o.text, o.compressed, o.frames),
        (Dir::Out, true, true, 1)
    );
    assert_eq!((o.len, o.wire_len), (text.len() as u64, out_wire));
    assert_eq!(o.content, i.content);
}
