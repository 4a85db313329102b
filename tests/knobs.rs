//! The URL knobs (issue 11) through the sans-IO core: deterministic, no
//! sockets, no clock (time is advanced by hand and the core's own
//! `poll_timeout` says when something is due). tests/clients/knobs.py drives
//! the same knobs from a real client over a socket.

mod common;

use std::time::{Duration, Instant};

use common::*;
use echocast::handler;
use echocast::proto::connection::misbehave::{push_payload, PUSH_WINDOW};
use echocast::proto::knobs;
use echocast::proto::{Connection, Event, Limits, TransportAction};

/// Drives one connection as the server does: knobs from the request target,
/// every message echoed, output taken by a peer that reads at most
/// `read_limit` bytes (then stops reading until told to read more).
struct Peer {
    conn: Connection,
    now: Instant,
    written: Vec<u8>,
    read_limit: usize,
}

impl Peer {
    fn open(target: &str) -> Peer {
        Peer::open_reading(target, usize::MAX)
    }

    /// Opens with a peer that reads at most `read_limit` bytes for now.
    fn open_reading(target: &str, read_limit: usize) -> Peer {
        let now = Instant::now();
        let mut p = Peer {
            conn: Connection::new(Limits::default(), now),
            now,
            written: Vec::new(),
            read_limit,
        };
        p.feed(upgrade_request(target).as_bytes());
        p
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.conn.receive(bytes, self.now);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Upgrade(req) => {
                    self.conn
                        .set_knobs(knobs::parse(&req.path).expect("valid knobs"));
                    self.conn.accept(self.now);
                }
                Event::Message { kind, data } => {
                    handler::echo(&mut self.conn, kind, data);
                }
                Event::Fragment { data, first, fin } => {
                    handler::echo_fragment(&mut self.conn, data, first, fin);
                }
                Event::HttpRequest(_) | Event::Body(_) | Event::Opened(_) | Event::Refused(_) => {
                    panic!("not an upgrade")
                }
            }
        }
        self.read();
    }

    /// The peer reads what it is willing to.
    fn read(&mut self) {
        read_output(&mut self.conn, &mut self.written, self.read_limit);
    }

    /// Advances the clock by `d`, running every timer that comes due on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(due) = self.conn.poll_timeout().filter(|&t| t <= end) {
            self.now = due.max(self.now);
            self.conn.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
        self.conn.handle_timeout(self.now);
        self.pump();
    }

    /// Server frames after the 101: (fin, opcode, payload).
    fn frames(&self) -> Vec<(bool, u8, Vec<u8>)> {
        frames_after_101(&self.written).0
    }

    /// Whole data messages (fragments joined) and the close code, in order.
    fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut partial = Vec::new();
        for (fin, op, payload) in self.frames() {
            if op < 8 {
                partial.extend_from_slice(&payload);
                if fin {
                    out.push(std::mem::take(&mut partial));
                }
            }
        }
        out
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
// docs/limits.md: "`fragment=N`"
fn fragment_splits_every_message_we_send() {
    let mut p = Peer::open("/?fragment=10&greeting=hello%20there%20you");
    p.feed(&text(&"x".repeat(35)));
    p.feed(&client_frame(true, 2, &[7; 10], [1, 2, 3, 4]));
    let f = p.frames();
    let shape: Vec<(bool, u8, usize)> = f.iter().map(|(fin, op, d)| (*fin, *op, d.len())).collect();
    assert_eq!(
        shape,
        [
            // The greeting (15 bytes), then the 35-byte echo, then 10 bytes: one frame.
            (false, 1, 10),
            (true, 0, 5),
            (false, 1, 10),
            (false, 0, 10),
            (false, 0, 10),
            (true, 0, 5),
            (true, 2, 10),
        ]
    );
    assert_eq!(p.messages()[1], "x".repeat(35).as_bytes());
}

#[test]
fn fragment_lets_a_pong_in_between_and_keeps_the_stream_valid() {
    let mut p = Peer::open("/?fragment=1");
    let mut input = text("abc");
    input.extend(client_frame(true, 9, b"p", [9, 9, 9, 9]));
    p.feed(&input);
    let ops: Vec<(bool, u8)> = p.frames().iter().map(|(f, o, _)| (*f, *o)).collect();
    assert_eq!(ops, [(false, 1), (false, 0), (true, 0), (true, 10)]);
}

#[test]
// docs/limits.md: "`delay=DUR`"
fn delay_holds_each_echo_until_its_time_in_order() {
    let mut p = Peer::open("/?delay=250ms");
    p.feed(&text("one"));
    p.advance(ms(100));
    p.feed(&text("two"));
    assert!(p.messages().is_empty(), "nothing before the delay");
    // The core asks to be woken when "one" is due: 250 ms after it came.
    assert_eq!(p.conn.poll_timeout(), Some(p.now - ms(100) + ms(250)));
    assert!(p.conn.backlog() >= 6, "held echoes count as backlog");
    p.advance(ms(149));
    assert!(p.messages().is_empty());
    p.advance(ms(1));
    assert_eq!(p.messages(), [b"one".to_vec()]);
    p.advance(ms(99));
    assert_eq!(p.messages().len(), 1);
    p.advance(ms(1));
    assert_eq!(p.messages(), [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(p.conn.backlog(), 0);
}

/// Over the memory budget, a connection whose bytes are mostly echoes held
/// by `delay` is closed as one holding output (1008), not as one receiving a
/// message (1009): held echoes are backpressure (issue 21 #6).
#[test]
// docs/limits.md: "The process's memory"
fn held_echoes_are_output_when_shedding() {
    let mut p = Peer::open("/?delay=10s");
    for _ in 0..64 {
        p.feed(&client_frame(true, 2, &[7u8; 4096], [1, 2, 3, 4]));
    }
    assert!(p.conn.backlog() >= 64 * 4096);
    assert!(p.frames().is_empty(), "all held");
    assert_eq!(p.conn.shed(p.now).map(|c| c.0), Some(1008));
    p.read();
    let f = p.frames();
    assert_eq!((f[0].1, close_code(&f[0].2)), (8, Some(1008)));
    assert_eq!(&f[0].2[2..], b"memory budget");
}

#[test]
fn a_close_from_the_peer_waits_behind_held_echoes() {
    let mut p = Peer::open("/?delay=2s");
    let mut input = text("kept");
    input.extend(client_frame(true, 8, &[0x03, 0xe8], [5, 6, 7, 8]));
    p.feed(&input);
    assert_eq!(p.conn.poll_transport(), TransportAction::None);
    assert!(p.frames().is_empty());
    p.advance(Duration::from_secs(2));
    let f = p.frames();
    assert_eq!(f[0], (true, 1, b"kept".to_vec()));
    assert_eq!((f[1].1, close_code(&f[1].2)), (8, Some(1000)));
    assert_eq!(p.conn.poll_transport(), TransportAction::ShutdownWrite);
}

#[test]
// docs/limits.md: "`repeat=N`"
fn repeat_echoes_each_message_that_many_times_and_does_not_stream() {
    let mut p = Peer::open("/?repeat=3");
    p.feed(&text("a"));
    // Large enough to stream on a plain connection; here it comes back whole.
    p.feed(&client_frame(true, 2, &vec![1; 100_000], [1, 2, 3, 4]));
    let m = p.messages();
    assert_eq!(m.len(), 6);
    assert!(m[..3].iter().all(|x| x == b"a"));
    assert!(m[3..].iter().all(|x| x.len() == 100_000));
    assert_eq!(p.frames().len(), 6, "one frame per echo");
}

#[test]
fn delay_and_repeat_together() {
    let mut p = Peer::open("/?delay=1s&repeat=2");
    p.feed(&text("z"));
    p.advance(ms(999));
    assert!(p.messages().is_empty());
    p.advance(ms(1));
    assert_eq!(p.messages(), [b"z".to_vec(), b"z".to_vec()]);
}

#[test]
// docs/limits.md: "`ping=DUR`"
fn ping_every_interval_with_a_counter() {
    let mut p = Peer::open("/?ping=100ms");
    p.advance(ms(350));
    let pings: Vec<Vec<u8>> = p
        .frames()
        .into_iter()
        .filter(|f| f.1 == 9)
        .map(|f| f.2)
        .collect();
    assert_eq!(pings, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}

#[test]
// docs/limits.md: "`close=CODE`"
fn close_after_n_answered_messages_with_code_and_reason() {
    let mut p = Peer::open("/?close=4000&reason=bye%20now&after=2");
    p.feed(&text("1"));
    assert!(p.conn.is_open());
    // Two messages in one read: both answered before the close.
    let mut two = text("2");
    two.extend(text("3"));
    p.feed(&two);
    let f = p.frames();
    let ops: Vec<u8> = f.iter().map(|x| x.1).collect();
    assert_eq!(ops, [1, 1, 1, 8]);
    assert_eq!(close_code(&f[3].2), Some(4000));
    assert_eq!(&f[3].2[2..], b"bye now");
}

#[test]
// docs/limits.md: "`greeting=TEXT`"
fn close_with_after_zero_follows_the_greeting() {
    let mut p = Peer::open("/?close=1001&greeting=hi");
    let f = p.frames();
    assert_eq!(f[0], (true, 1, b"hi".to_vec()));
    assert_eq!((f[1].1, close_code(&f[1].2)), (8, Some(1001)));
    assert_eq!(f.len(), 2);
    p.feed(&client_frame(true, 8, &[0x03, 0xe9], [1, 1, 1, 1]));
    assert_eq!(p.conn.poll_transport(), TransportAction::ShutdownWrite);
}

#[test]
fn close_waits_for_a_delayed_answer() {
    let mut p = Peer::open("/?close=3000&after=1&delay=500ms");
    p.feed(&text("m"));
    assert!(p.frames().is_empty());
    p.advance(ms(500));
    let f = p.frames();
    assert_eq!(f[0], (true, 1, b"m".to_vec()));
    assert_eq!(close_code(&f[1].2), Some(3000));
}

#[test]
/// A message that began before `close` fired and completes after its turn
/// came (held behind a delayed echo) is not answered: nothing follows our
/// close frame (found by the `connection` fuzz target in CI: a frame whose
/// header came before the close and whose payload after it).
fn a_message_completing_behind_a_held_close_is_not_answered() {
    let mut p = Peer::open("/?close=3000&after=1&delay=500ms");
    let mut bytes = text("m");
    bytes.extend(client_frame(false, 2, b"ab", [1, 2, 3, 4]));
    let last = client_frame(true, 0, b"cd", [5, 6, 7, 8]);
    bytes.extend_from_slice(&last[..7]);
    p.feed(&bytes);
    // The binary message completes while our close waits behind "m".
    p.feed(&last[7..]);
    p.advance(ms(500));
    let f = p.frames();
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0], (true, 1, b"m".to_vec()));
    assert_eq!(close_code(&f[1].2), Some(3000));
}

#[test]
// docs/limits.md: "`drop=N`"
fn drop_ends_the_connection_without_a_close_frame_after_the_answer() {
    let mut p = Peer::open("/?drop=1");
    p.feed(&text("last"));
    let f = p.frames();
    assert_eq!(f, [(true, 1, b"last".to_vec())]);
    // FIN (shutdown of the write half), no close frame.
    assert_eq!(p.conn.poll_transport(), TransportAction::ShutdownWrite);
    assert_eq!(p.conn.close_sent(), None);
}

#[test]
// docs/limits.md: "`drop=N`"
fn drop_with_reset_asks_for_a_reset_once_written() {
    let mut p = Peer::open("/?drop=1&reset=1");
    p.read_limit = 0;
    p.feed(&text("x"));
    // The answer is not written yet: no reset before it.
    assert_eq!(p.conn.poll_transport(), TransportAction::None);
    p.read_limit = usize::MAX;
    p.read();
    assert_eq!(p.frames(), [(true, 1, b"x".to_vec())]);
    assert_eq!(p.conn.poll_transport(), TransportAction::Reset);
}

#[test]
fn drop_zero_drops_right_after_the_handshake() {
    let mut p = Peer::open("/?drop=0");
    assert!(p.frames().is_empty());
    assert_eq!(p.conn.poll_transport(), TransportAction::ShutdownWrite);
}

#[test]
// docs/limits.md: "`push=COUNT`"
fn push_is_paced_by_the_reader_then_echo_goes_on() {
    let mut p = Peer::open_reading("/?push=200&size=10KiB&type=binary", 0);
    // Not all 2 MB at once: the queue stays near the window.
    let queued = p.conn.output_len();
    assert!(
        queued < PUSH_WINDOW + 11 * 1024,
        "{queued} bytes queued for a reader that reads nothing"
    );
    // The reader takes everything, a bit at a time.
    for step in 1..=1000 {
        p.read_limit = step * 4096;
        p.read();
    }
    p.read_limit = usize::MAX;
    p.read();
    let m = p.messages();
    assert_eq!(m.len(), 200);
    for (i, msg) in m.iter().enumerate() {
        assert_eq!(*msg, push_payload(i as u64 + 1, 10 * 1024, Vec::new()));
    }
    assert!(p.frames().iter().all(|f| f.1 == 2));
    p.feed(&text("after"));
    assert_eq!(p.messages().last().unwrap(), b"after");
}

#[test]
// docs/limits.md: "`size=SIZE`"
// docs/limits.md: "`type=`"
fn push_payloads_can_be_checked_byte_by_byte() {
    assert_eq!(push_payload(7, 10, Vec::new()), b"7 cdefghij");
    assert_eq!(push_payload(12345, 3, Vec::new()), b"123");
    assert_eq!(push_payload(1, 0, Vec::new()), b"");
}

#[test]
fn close_after_a_push_waits_for_the_push_to_end() {
    // A short push is queued at once; the close follows it.
    let p = Peer::open("/?push=3&size=5&close=4001");
    let ops: Vec<u8> = p.frames().iter().map(|x| x.1).collect();
    assert_eq!(ops, [1, 1, 1, 8]);
    // A long one ends as the reader drains it, where no clock is known: the
    // core asks for one at once, then closes.
    let mut p = Peer::open_reading("/?push=20&size=10KiB&close=4001", 0);
    assert!(p.conn.is_open());
    p.read_limit = usize::MAX;
    p.read();
    assert!(p.conn.poll_timeout().is_some_and(|t| t <= p.now));
    p.advance(Duration::ZERO);
    let f = p.frames();
    assert_eq!(f.len(), 21);
    assert_eq!((f[20].1, close_code(&f[20].2)), (8, Some(4001)));
}

#[test]
fn no_knobs_keeps_nothing_and_unknown_parameters_are_ignored() {
    let mut p = Peer::open("/runCase?case=3&agent=x");
    assert!(p.conn.knobs().is_none());
    assert_eq!(p.conn.memory(), 0);
    p.feed(&text("plain"));
    assert_eq!(p.frames(), [(true, 1, b"plain".to_vec())]);
}

/// The frames form valid messages: no data frame inside a fragmented one.
fn assert_well_formed(frames: &[(bool, u8, Vec<u8>)]) {
    let mut inside = false;
    for (i, (fin, op, _)) in frames.iter().enumerate() {
        if *op < 8 {
            assert_eq!(*op == 0, inside, "frame {i}: {op} (inside: {inside})");
            inside = !fin;
        }
    }
}

#[test]
fn a_push_waits_while_a_streamed_echo_is_open() {
    let mut p = Peer::open_reading("/?push=400&size=1KiB&type=binary", 0);
    p.conn.set_streaming(true);
    // A 100,000-byte message arrives in pieces while the push goes on (the
    // reader takes some after each): its echo streams, and the push may not
    // cut into it.
    let msg = client_frame(true, 2, &vec![5; 100_000], [1, 2, 3, 4]);
    for (i, piece) in msg.chunks(20_000).enumerate() {
        p.read_limit = (i + 1) * 70_000;
        p.feed(piece);
    }
    p.read_limit = usize::MAX;
    p.read();
    let f = p.frames();
    assert_well_formed(&f);
    assert!(f.iter().any(|x| x.1 == 2 && !x.0), "the echo streamed");
    let m = p.messages();
    assert_eq!(m.len(), 401);
    assert_eq!(m.iter().filter(|x| x.len() == 100_000).count(), 1);
}

#[test]
fn knobs_that_shape_echoes_turn_streaming_off_whenever_it_was_asked() {
    let now = Instant::now();
    let mut conn = Connection::new(Limits::default(), now);
    conn.set_streaming(true);
    conn.receive(upgrade_request("/?delay=10ms").as_bytes(), now);
    let Some(Event::Upgrade(req)) = conn.poll_event() else {
        panic!("an upgrade")
    };
    conn.set_knobs(knobs::parse(&req.path).unwrap());
    conn.accept(now);
    conn.receive(&client_frame(false, 2, &[1; 40_000], [1, 2, 3, 4]), now);
    assert_eq!(conn.poll_event(), None, "no piece handed out");
    conn.set_streaming(true);
    conn.receive(&client_frame(true, 0, &[1; 40_000], [1, 2, 3, 4]), now);
    assert!(matches!(conn.poll_event(), Some(Event::Message { .. })));
}
