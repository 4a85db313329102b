//! The client role of the sans-IO connection (a proxy's upstream leg): the
//! server's answer and frames are the fuzzer's bytes, fed at arbitrary split
//! points with arbitrary time steps, while the client sends messages of its
//! own. Invariants:
//! - no panic;
//! - what the client writes is its request head, then (only after an
//!   `Opened` event) valid client frames: every one masked, RSV1 only with
//!   deflate agreed, known opcodes, control frames final and <= 125 bytes;
//! - nothing is written after our close frame;
//! - at most one of `Opened` / `Refused`, and a `Refused` ends the
//!   connection (the driver is told `Close`);
//! - a refusal's body is bounded (`MAX_REFUSAL_BODY`).
//!
//! Input: byte 0 chooses deflate (bit 0) and whether the answer is a valid
//! 101 for our key (bit 1: the harness writes a correct head itself, so the
//! run reaches frames); then chunks of `[len, time step, ...bytes]`.
#![no_main]
use std::rc::Rc;
use std::time::{Duration, Instant};

use echocast::proto::client::{ClientRequest, MaskKeys, MAX_REFUSAL_BODY};
use echocast::proto::deflate::{DeflateConfig, SharedCodec};
use echocast::proto::handshake::accept_key;
use echocast::proto::{Connection, Event, FrameHeader, Limits, MessageKind, TransportAction};
use libfuzzer_sys::fuzz_target;

fn drain(c: &mut Connection, out: &mut Vec<u8>) {
    loop {
        let front = c.output_front().to_vec();
        if front.is_empty() {
            return;
        }
        out.extend_from_slice(&front);
        c.consume_output(front.len());
    }
}

/// Checks the client's frames in `wire` from `pos`; returns where the
/// unparsed rest starts and whether a close frame was seen.
fn check_frames(wire: &[u8], mut pos: usize, deflate: bool, closed: &mut bool) -> usize {
    while let Ok(Some((h, n))) = FrameHeader::decode(&wire[pos..]) {
        let end = pos + n + h.payload_len as usize;
        if end > wire.len() {
            break;
        }
        assert!(!*closed, "a frame after our close");
        assert!(h.mask.is_some(), "an unmasked client frame");
        assert!(
            matches!(h.opcode, 0 | 1 | 2 | 8 | 9 | 10),
            "opcode {}",
            h.opcode
        );
        assert!(h.rsv == 0 || (deflate && h.rsv == 4), "rsv {}", h.rsv);
        if h.opcode >= 8 {
            assert!(h.fin && h.payload_len <= 125, "bad control frame");
        }
        if h.opcode == 8 {
            *closed = true;
        }
        pos = end;
    }
    pos
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, mut rest)) = data.split_first() else {
        return;
    };
    let mut now = Instant::now();
    let config = DeflateConfig::default();
    let shared = Rc::new(SharedCodec::default());
    let deflate = ctl & 1 != 0;
    let req = ClientRequest {
        host: "x".into(),
        path: "/".into(),
        headers: Vec::new(),
        protocols: vec!["p".into()],
        deflate: false,
    };
    let mut c = Connection::client(
        Rc::new(Limits::default()),
        now,
        req,
        deflate.then_some((&config, &shared)),
        MaskKeys::seeded(u64::from(ctl)),
    );
    let mut wire = Vec::new();
    drain(&mut c, &mut wire);
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let text = String::from_utf8_lossy(&wire[..head_end]).into_owned();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .to_string();
    if ctl & 2 != 0 {
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            accept_key(key.as_bytes())
        );
        if deflate && ctl & 4 != 0 {
            answer.push_str(
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            );
        }
        answer.push_str("\r\n");
        c.receive(answer.as_bytes(), now);
    }
    let mut pos = head_end;
    let (mut opened, mut refused, mut closed) = (false, false, false);
    let mut sent = 0u32;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]);
        now += Duration::from_millis(u64::from(rest[1]) * 40);
        rest = &rest[2..];
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        c.receive(chunk, now);
        c.handle_timeout(now);
        while let Some(e) = c.poll_event() {
            match e {
                Event::Opened(_) => {
                    assert!(!opened && !refused, "opened twice, or after a refusal");
                    opened = true;
                }
                Event::Refused(r) => {
                    assert!(!opened && !refused, "refused twice, or after opening");
                    assert!(r.body.len() <= MAX_REFUSAL_BODY);
                    refused = true;
                }
                Event::Message { kind, data } => {
                    c.send(kind, data);
                }
                Event::Fragment { .. }
                | Event::Upgrade(_)
                | Event::HttpRequest(_)
                | Event::Body(_) => {
                    panic!("not a client's event")
                }
            }
        }
        if opened && sent < 4 {
            sent += 1;
            let kind = if chunk.len() % 2 == 0 {
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            c.send(kind, b"ping me back".repeat(chunk.len() % 7));
        }
        drain(&mut c, &mut wire);
        if !opened {
            assert_eq!(wire.len(), head_end, "frames before the 101");
        }
        pos = check_frames(&wire, pos, deflate, &mut closed);
        if refused {
            assert_eq!(c.poll_transport(), TransportAction::Close);
            return;
        }
        if c.poll_transport() == TransportAction::Close {
            return;
        }
    }
});
