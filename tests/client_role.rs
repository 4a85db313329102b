//! The client role of the sans-IO core, driven against the server role in
//! memory (the quinn-proto style: two endpoints, no sockets, no clock):
//! the handshake both ways, masking, deflate negotiated from each side,
//! refusals read with their bodies, and the client-only rules of RFC 6455.

use std::rc::Rc;
use std::time::{Duration, Instant};

use echocast::proto::client::{ClientRequest, MaskKeys};
use echocast::proto::connection::{Refusal, RefusalKind};
use echocast::proto::deflate::{DeflateConfig, SharedCodec};
use echocast::proto::{
    CloseCode, Connection, Event, FrameHeader, Limits, MessageKind, ProtocolError, TransportAction,
};

fn request(protocols: &[&str]) -> ClientRequest {
    ClientRequest {
        host: "upstream.test:4000".into(),
        path: "/live?x=1".into(),
        headers: vec![("Cookie".into(), "session=abc".into())],
        protocols: protocols.iter().map(|p| p.to_string()).collect(),
        deflate: false,
    }
}

/// Takes every byte a connection has to send.
fn drain(c: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let front = c.output_front().to_vec();
        if front.is_empty() {
            return out;
        }
        out.extend_from_slice(&front);
        c.consume_output(front.len());
    }
}

/// A client and a server connection wired to each other.
struct Pair {
    client: Connection,
    server: Connection,
    now: Instant,
    /// What each side's application saw.
    client_events: Vec<Event>,
    server_events: Vec<Event>,
    /// The bytes the client wrote (to look at the frames).
    client_wire: Vec<u8>,
    /// The server echoes messages.
    echo: bool,
    /// Bytes cross in reads of this size (every split must work).
    step: usize,
    /// The server's deflate settings, when it is to accept deflate.
    shared: Option<(DeflateConfig, Rc<SharedCodec>)>,
}

impl Pair {
    fn new(protocols: &[&str], deflate: bool, step: usize) -> Pair {
        let now = Instant::now();
        let limits = Rc::new(Limits::default());
        let config = DeflateConfig::default();
        let shared = Rc::new(SharedCodec::default());
        let client = Connection::client(
            limits.clone(),
            now,
            request(protocols),
            deflate.then_some((&config, &shared)),
            MaskKeys::seeded(3),
        );
        let mut p = Pair {
            client,
            server: Connection::with_limits(limits, now),
            now,
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_wire: Vec::new(),
            echo: true,
            step,
            shared: None,
        };
        if deflate {
            p.shared = Some((config, shared));
        }
        p
    }

    fn pump(&mut self) {
        for _ in 0..64 {
            let up = drain(&mut self.client);
            self.client_wire.extend_from_slice(&up);
            for piece in up.chunks(self.step) {
                self.server.receive(piece, self.now);
            }
            while let Some(e) = self.server.poll_event() {
                match &e {
                    Event::Upgrade(req) => {
                        let proto = req.protocols.last().cloned();
                        let deflate = self.shared.as_ref().map(|(c, s)| (c, s));
                        self.server
                            .accept_upgrade(self.now, deflate, proto.as_deref());
                    }
                    Event::Message { kind, data } if self.echo => {
                        self.server.send(*kind, data.clone());
                    }
                    _ => {}
                }
                self.server_events.push(e);
            }
            let down = drain(&mut self.server);
            for piece in down.chunks(self.step) {
                self.client.receive(piece, self.now);
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            if self.client.output_len() == 0 && self.server.output_len() == 0 {
                return;
            }
        }
        panic!("the conversation did not settle");
    }

    fn messages(events: &[Event]) -> Vec<(MessageKind, Vec<u8>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message { kind, data } => Some((*kind, data.clone())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_client_opens_sends_masked_frames_and_reads_the_echo_at_every_split() {
    for step in [1, 2, 3, 7, 64, 4096] {
        let mut p = Pair::new(&["chat", "v2"], false, step);
        p.pump();
        let opened = match p.client_events.first() {
            Some(Event::Opened(o)) => o.clone(),
            other => panic!("step {step}: {other:?}"),
        };
        assert_eq!(
            opened.protocol.as_deref(),
            Some("v2"),
            "the server chose v2"
        );
        let Some(Event::Upgrade(req)) = p.server_events.first() else {
            panic!("no upgrade")
        };
        assert_eq!(req.path, "/live?x=1");
        assert_eq!(req.host, "upstream.test:4000");
        assert!(p.client.is_open() && p.server.is_open());
        let start = p.client_wire.len();
        assert!(p.client.send(MessageKind::Text, b"hello".to_vec()));
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        assert!(p.client.send(MessageKind::Binary, big.clone()));
        p.pump();
        let want = vec![
            (MessageKind::Text, b"hello".to_vec()),
            (MessageKind::Binary, big),
        ];
        assert_eq!(Pair::messages(&p.server_events), want, "step {step}");
        assert_eq!(Pair::messages(&p.client_events), want, "step {step}");
        // §5.3: every client frame is masked, with keys that change.
        let (h1, n1) = FrameHeader::decode(&p.client_wire[start..])
            .unwrap()
            .unwrap();
        let k1 = h1.mask.expect("masked");
        let second = start + n1 + h1.payload_len as usize;
        let (h2, _) = FrameHeader::decode(&p.client_wire[second..])
            .unwrap()
            .unwrap();
        assert_ne!(Some(k1), h2.mask);
        assert_ne!(
            &p.client_wire[start + n1..second],
            b"hello",
            "payload masked"
        );
    }
}

#[test]
fn deflate_is_negotiated_from_the_client_side_and_used_both_ways() {
    let mut p = Pair::new(&[], true, 512);
    p.pump();
    let Some(Event::Opened(o)) = p.client_events.first() else {
        panic!("not opened: {:?}", p.client_events)
    };
    let agreed = o.deflate.expect("the server took our offer");
    assert!(
        agreed.client_no_context_takeover,
        "the server compresses alone"
    );
    assert!(p.server.deflate().is_some());
    let text = "compress me ".repeat(2000);
    let start = p.client_wire.len();
    assert!(p.client.send(MessageKind::Text, text.clone().into_bytes()));
    p.pump();
    let (h, _) = FrameHeader::decode(&p.client_wire[start..])
        .unwrap()
        .unwrap();
    assert_eq!(h.rsv & 4, 4, "RSV1: compressed");
    assert!((h.payload_len as usize) < text.len() / 10);
    assert_eq!(
        Pair::messages(&p.client_events),
        vec![(MessageKind::Text, text.into_bytes())]
    );
}

#[test]
fn closes_pass_both_ways_with_code_and_reason() {
    let mut p = Pair::new(&[], false, 4096);
    p.pump();
    p.client.close(CloseCode(4001), "bye now", p.now);
    p.pump();
    assert_eq!(p.server.close_received(), Some(CloseCode(4001)));
    assert_eq!(p.server.close_reason(), Some("bye now"));
    assert_eq!(p.client.close_received(), Some(CloseCode(4001)));
    // The server closes TCP first (§7.1.1): its write half is shut, and the
    // client's when it has nothing left.
    assert_eq!(p.server.poll_transport(), TransportAction::ShutdownWrite);
    assert_eq!(p.client.poll_transport(), TransportAction::ShutdownWrite);

    let mut p = Pair::new(&[], false, 4096);
    p.pump();
    p.server.close(CloseCode(1011), "upstream broke", p.now);
    p.pump();
    assert_eq!(p.client.close_received(), Some(CloseCode(1011)));
    assert_eq!(p.client.close_reason(), Some("upstream broke"));
}

fn client_alone() -> (Connection, Instant) {
    let now = Instant::now();
    let limits = Rc::new(Limits {
        handshake_timeout: Duration::from_secs(5),
        ..Limits::default()
    });
    let mut c = Connection::client(limits, now, request(&["chat"]), None, MaskKeys::seeded(9));
    let req = drain(&mut c);
    assert!(req.starts_with(b"GET /live?x=1 HTTP/1.1\r\n"));
    (c, now)
}

fn refusal(c: &mut Connection) -> Refusal {
    let mut found = None;
    while let Some(e) = c.poll_event() {
        if let Event::Refused(r) = e {
            found = Some(r);
        }
    }
    assert_eq!(c.poll_transport(), TransportAction::Close);
    found.expect("refused")
}

// docs/limits.md: "Upstream refusal body (`--proxy`)"
#[test]
fn a_refusal_is_read_with_its_headers_and_body() {
    let answer = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\nContent-Length: 12\r\n\r\nlog in first";
    for step in [1, 5, answer.len()] {
        let (mut c, now) = client_alone();
        for piece in answer.chunks(step) {
            c.receive(piece, now);
        }
        let r = refusal(&mut c);
        assert_eq!((r.kind, r.status), (RefusalKind::Answered, 401));
        assert_eq!(r.body, b"log in first");
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| n == "WWW-Authenticate" && v == "Bearer realm=\"x\""));
    }
    // Chunked, and a body that runs to the end of the connection.
    let (mut c, now) = client_alone();
    c.receive(
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n",
        now,
    );
    assert_eq!(refusal(&mut c).body, b"no!");
    let (mut c, now) = client_alone();
    c.receive(b"HTTP/1.1 404 Not Found\r\n\r\nnothing here", now);
    assert!(c.poll_event().is_none(), "the body is not over yet");
    c.receive_eof(now);
    let r = refusal(&mut c);
    assert_eq!((r.status, r.body.as_slice()), (404, &b"nothing here"[..]));
    // A body past the cap is cut there.
    let (mut c, now) = client_alone();
    c.receive(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n", now);
    c.receive(&vec![b'x'; 100_000], now);
    assert_eq!(refusal(&mut c).body.len(), 64 * 1024);
}

#[test]
fn no_answer_a_bad_answer_and_a_bad_101_are_told_apart() {
    let (mut c, now) = client_alone();
    c.receive(b"HTTP/1.1 101 Switching", now);
    c.receive_eof(now);
    assert_eq!(refusal(&mut c).kind, RefusalKind::Closed);

    let (mut c, now) = client_alone();
    c.handle_timeout(now + Duration::from_secs(6));
    assert_eq!(refusal(&mut c).kind, RefusalKind::TimedOut);
    assert!(c.timed_out());

    let (mut c, now) = client_alone();
    c.receive(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", now);
    assert_eq!(refusal(&mut c).kind, RefusalKind::Invalid);

    let (mut c, now) = client_alone();
    c.receive(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n", now);
    let r = refusal(&mut c);
    assert_eq!((r.kind, r.status), (RefusalKind::Invalid, 101));
    assert!(r.why.contains("Sec-WebSocket-Accept"), "{}", r.why);
}

#[test]
fn a_masked_frame_from_the_server_fails_the_client_with_1002() {
    let mut p = Pair::new(&[], false, 4096);
    p.pump();
    // A masked text frame "hi" from the server.
    p.client
        .receive(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2], p.now);
    while p.client.poll_event().is_some() {}
    assert_eq!(p.client.error(), Some(ProtocolError::MaskedFrame));
    let out = drain(&mut p.client);
    let (h, n) = FrameHeader::decode(&out).unwrap().unwrap();
    assert_eq!(h.opcode, 8, "a close frame");
    let mut body = out[n..n + 2].to_vec();
    echocast::proto::mask::apply_mask(&mut body, h.mask.unwrap(), 0);
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1002);
}

#[test]
fn a_held_close_lets_messages_go_first_and_goes_when_released_or_at_half_the_close_timeout() {
    for release in [true, false] {
        let mut p = Pair::new(&[], false, 4096);
        p.echo = false;
        p.pump();
        // Both legs of a proxy hold: the client (which initiates here: its
        // own close is not held) still takes messages while closing.
        p.server.hold_closes();
        p.client.hold_closes();
        p.client.close(CloseCode(4002), "going", p.now);
        p.pump();
        assert_eq!(p.server.close_received(), Some(CloseCode(4002)));
        assert_eq!(
            p.client.close_received(),
            None,
            "the server's answer is held"
        );
        // What the other side of a proxy still sends goes out first.
        assert!(p.server.send(MessageKind::Text, b"late news".to_vec()));
        p.pump();
        assert_eq!(
            Pair::messages(&p.client_events),
            vec![(MessageKind::Text, b"late news".to_vec())]
        );
        if release {
            p.server.release_close();
        } else {
            let due = p.server.poll_timeout().expect("a deadline");
            assert!(
                due <= p.now + Duration::from_millis(2500),
                "half the 5 s close timeout"
            );
            p.now = due;
            p.server.handle_timeout(due);
        }
        p.pump();
        assert_eq!(
            p.client.close_received(),
            Some(CloseCode(4002)),
            "release {release}"
        );
    }
}
