//! Misbehaviour on request (issue 11): what a connection does with the knobs
//! of its upgrade request (`proto::knobs` parses them). All of it is sans-IO:
//! `delay` and `ping` are timers reported by `poll_timeout`, `push` is refilled
//! as the output drains (`consume_output`), `close` and `drop` fire once the
//! application has answered enough messages (an `Item::Answered` marker follows
//! each message the application is handed), and `fragment` applies where
//! every frame is queued. A connection without knobs pays one `None` check on
//! these paths: the state lives behind the control box.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use super::{Chunk, CloseCode, Connection, MessageKind, OpCode, State, What};
use crate::proto::knobs::Knobs;

/// `push` queues its next message while fewer than this many bytes are
/// unsent: as fast as the client reads, never the whole series at once.
pub const PUSH_WINDOW: usize = 64 * 1024;

/// What one connection was asked to do, and how far it got.
#[derive(Debug)]
pub(super) struct Misbehave {
    pub(super) knobs: Knobs,
    /// Messages received and answered (what `close`'s `after` and `drop` count).
    answered: u64,
    /// Echoes held back by `delay` (each with when it goes out), and the
    /// close frame that follows them if one was decided meanwhile.
    held: VecDeque<(Instant, Held)>,
    /// Heap bytes of `held`, as counted by `memory`.
    held_bytes: usize,
    /// When the next `ping` is due, and how many were sent (the payload).
    next_ping: Option<Instant>,
    pings: u64,
    /// Pushed messages queued so far.
    pushed: u64,
    /// `close` or `drop` fired (they fire once).
    fired: bool,
    /// `close`'s `after` and `drop` count messages relayed to the peer
    /// ([`Connection::relay`]: a proxy's upstream messages), not the
    /// peer's own.
    relaying: bool,
    /// A check of `close`/`drop` waits for a clock (the push just ended
    /// where no time is known): `poll_timeout` asks for one at once.
    check_due: bool,
}

#[derive(Debug)]
enum Held {
    Message(MessageKind, Chunk),
    Close(Vec<u8>),
}

impl Misbehave {
    fn new(knobs: Knobs) -> Misbehave {
        Misbehave {
            knobs,
            answered: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            next_ping: None,
            pings: 0,
            pushed: 0,
            fired: false,
            relaying: false,
            check_due: false,
        }
    }

    /// Heap bytes: this state and the held echoes.
    pub(super) fn memory(&self) -> usize {
        std::mem::size_of::<Misbehave>()
            + self.held_bytes
            + self.held.capacity() * std::mem::size_of::<(Instant, Held)>()
    }

    /// Payload bytes of the echoes `delay` holds back.
    pub(super) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    fn pushing(&self) -> bool {
        self.knobs.push.is_some_and(|p| self.pushed < p.count)
    }

    /// Whether `close` or `drop` still waits for answered messages.
    pub(super) fn counts_answers(&self) -> bool {
        !self.fired && (self.knobs.close.is_some() || self.knobs.drop.is_some())
    }

    /// Whether echoes are shaped here (`delay`, `repeat`): such a connection
    /// does not stream (each message is echoed whole).
    pub(super) fn shapes_echoes(&self) -> bool {
        self.knobs.delay.is_some() || self.knobs.repeat.is_some_and(|n| n > 1)
    }

    pub(super) fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// When the last held item goes out (the close deadline starts then).
    pub(super) fn last_due(&self) -> Option<Instant> {
        self.held.back().map(|(t, _)| *t)
    }

    /// The earliest instant something is due: a held item, a ping (while
    /// open), a pending check.
    pub(super) fn next_due(&self, open: bool, past: Instant) -> Option<Instant> {
        let held = self.held.front().map(|(t, _)| *t);
        let ping = self.next_ping.filter(|_| open);
        let check = self.check_due.then_some(past);
        [held, ping, check].into_iter().flatten().min()
    }

    /// Holds our close frame behind the held echoes: it goes out with the
    /// last of them.
    pub(super) fn hold_close(&mut self, body: Vec<u8>) {
        let due = self.last_due().unwrap_or_else(|| unreachable!("held"));
        self.held.push_back((due, Held::Close(body)));
    }

    /// Drops held echoes (the connection is shed or closed for being slow).
    pub(super) fn clear_held(&mut self) {
        self.held.clear();
        self.held_bytes = 0;
    }
}

/// The payload of pushed message `n` (1-based) of `size` bytes: its number in
/// decimal and a space, then the letters `a`–`z` by position (byte `j` is
/// `b'a' + j % 26`), cut at `size`. A client can check every byte and the order.
pub fn push_payload(n: u64, size: usize, mut buf: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    buf.clear();
    buf.reserve(size);
    let _ = write!(buf, "{n} "); // writing to a Vec cannot fail
    buf.truncate(size);
    let head = buf.len();
    buf.extend((head..size).map(|j| b'a' + (j % 26) as u8));
    buf
}

impl Connection {
    /// Sets what this connection's request asked for (see `proto::knobs`).
    /// Call after [`crate::proto::Event::Upgrade`] and before accepting: the
    /// greeting, the push, the ping timer and a `close`/`drop` with nothing to
    /// wait for start when the upgrade is accepted. No knobs: nothing is kept.
    pub fn set_knobs(&mut self, knobs: Knobs) {
        if !matches!(self.state, State::Decide { .. }) || knobs == Knobs::default() {
            return;
        }
        let m = Misbehave::new(knobs);
        if m.shapes_echoes() {
            self.streaming = false;
        }
        self.ctl.get_or_insert_with(Box::default).knobs = Some(Box::new(m));
    }

    /// The knobs this connection runs with, if any.
    pub fn knobs(&self) -> Option<&Knobs> {
        self.mis().map(|m| &m.knobs)
    }

    pub(super) fn mis(&self) -> Option<&Misbehave> {
        self.ctl.as_ref()?.knobs.as_deref()
    }

    pub(super) fn mis_mut(&mut self) -> Option<&mut Misbehave> {
        self.ctl.as_mut()?.knobs.as_deref_mut()
    }

    /// Echoes a message: as [`Connection::send`], shaped by `delay` (held
    /// until the message's arrival plus the delay, in order) and `repeat`
    /// (queued that many times, the payload shared). Returns false (and
    /// queues nothing) unless the connection can send.
    pub fn echo(&mut self, kind: MessageKind, data: Vec<u8>) -> bool {
        // The messages handed out came in the last `receive`.
        let arrived = self.last_rx();
        self.shaped(kind, data, arrived)
    }

    /// [`Connection::echo`] of a message that arrived at `arrived`.
    fn shaped(&mut self, kind: MessageKind, data: Vec<u8>, arrived: Instant) -> bool {
        let Some((delay, repeat)) = self
            .mis()
            .filter(|m| m.shapes_echoes())
            .map(|m| (m.knobs.delay, m.knobs.repeat.unwrap_or(1)))
        else {
            return self.send(kind, data);
        };
        if !self.can_send() {
            return false;
        }
        let payload = if repeat > 1 {
            Chunk::Shared(Rc::from(data))
        } else {
            Chunk::Owned(data)
        };
        // N - 1 clones (cheap when shared), the last copy moved.
        let copies = std::iter::repeat_n(payload, usize::from(repeat));
        match delay {
            None => copies.for_each(|p| {
                self.send(kind, p);
            }),
            Some(d) => {
                let due = arrived + d;
                self.recent = true;
                let m = self.mis_mut().expect("shapes echoes");
                for p in copies {
                    m.held_bytes += p.len();
                    m.held.push_back((due, Held::Message(kind, p)));
                }
            }
        }
        true
    }

    /// A message from elsewhere for this peer (a proxy's upstream's): sent
    /// as [`Connection::echo`] sends an echo, shaped by `delay` (held until
    /// `now` plus the delay, in order) and `repeat`, and counted by `close`'s
    /// `after` and by `drop` in place of the peer's own messages (call
    /// [`Connection::count_relayed`] first). Returns false unless the
    /// connection can send.
    pub fn relay(&mut self, kind: MessageKind, data: Vec<u8>, now: Instant) -> bool {
        let sent = self.shaped(kind, data, now);
        if sent {
            if let Some(m) = self.mis_mut().filter(|m| m.relaying) {
                m.answered += 1;
                self.check_fire(now);
            }
        }
        sent
    }

    /// Whether messages relayed to this peer must arrive whole: `delay` and
    /// `repeat` shape each one, and `close`/`drop` count them.
    pub fn shapes_relayed(&self) -> bool {
        self.mis()
            .is_some_and(|m| m.shapes_echoes() || m.counts_answers())
    }

    /// Makes `close`'s `after` and `drop` count the messages relayed to the
    /// peer ([`Connection::relay`]) instead of the peer's own.
    pub fn count_relayed(&mut self) {
        if let Some(m) = self.mis_mut() {
            m.relaying = true;
        }
    }

    /// At the upgrade: the greeting, the push's first messages, the ping
    /// timer, and `close`/`drop` if they wait for nothing.
    pub(super) fn start_knobs(&mut self, now: Instant) {
        let Some(m) = self.mis_mut() else { return };
        m.next_ping = m.knobs.ping.map(|d| now + d);
        if let Some(greeting) = m.knobs.greeting.take() {
            self.send(MessageKind::Text, greeting.into_bytes());
        }
        self.refill_push();
        self.check_fire(now);
    }

    /// The application took the message before this marker and answered it.
    pub(super) fn answered(&mut self) {
        let Some(m) = self.mis_mut().filter(|m| !m.relaying) else {
            return;
        };
        m.answered += 1;
        // The message arrived in the last `receive`: its time is the clock.
        let now = self.last_rx();
        self.check_fire(now);
    }

    /// Fires `drop` or `close` once enough messages were answered and the
    /// push is over.
    pub(super) fn check_fire(&mut self, now: Instant) {
        let open = self.state.is_open();
        let Some(m) = self.mis_mut() else { return };
        m.check_due = false;
        // Once a close is under way (the peer's, or an error) there is
        // nothing left to misbehave on.
        if m.fired || m.pushing() || !open {
            return;
        }
        if let Some((n, reset)) = m.knobs.drop.filter(|(n, _)| m.answered >= *n) {
            m.fired = true;
            if self.tapping() {
                let how = if reset { " with a reset" } else { "" };
                self.record(What::Knob(format!("drop={n} fired{how}")));
            }
            // No close frame: the peer sees the connection end (1006).
            self.ctl.get_or_insert_with(Box::default).dropping = Some(reset);
            self.enter_flushing(now);
            return;
        }
        if let Some((code, reason)) = m
            .knobs
            .close
            .clone()
            .filter(|_| m.answered >= m.knobs.after)
        {
            m.fired = true;
            let after = m.knobs.after;
            if self.tapping() {
                self.record(What::Knob(format!(
                    "close={code} fired after {after} messages"
                )));
            }
            self.close(CloseCode(code), &reason, now);
        }
    }

    /// Queues pushed messages while the output is under [`PUSH_WINDOW`]
    /// (not inside a streamed echo: its fragments must stay together).
    pub(super) fn refill_push(&mut self) {
        loop {
            if !self.can_send() || self.out.len() >= PUSH_WINDOW || self.out.in_stream() {
                return;
            }
            let Some(m) = self.mis_mut() else { return };
            let Some(p) = m.knobs.push.filter(|p| m.pushed < p.count) else {
                return;
            };
            m.pushed += 1;
            let n = m.pushed;
            if n == p.count && m.counts_answers() {
                // The push is over: `close`/`drop` may fire (with a clock).
                m.check_due = true;
            }
            let kind = if p.binary {
                MessageKind::Binary
            } else {
                MessageKind::Text
            };
            let buf = push_payload(n, p.size, self.out.take_spare());
            self.send(kind, buf);
        }
    }

    /// Knob timers: held echoes that are due go out, then (while open) the
    /// knob's ping, and a pending `close`/`drop` check.
    pub(super) fn knob_timers(&mut self, now: Instant) {
        let Some(check) = self.mis().map(|m| m.check_due) else {
            return;
        };
        while !self.state.is_dead() {
            let Some(m) = self.mis_mut() else { return };
            if m.held.front().is_none_or(|(due, _)| *due > now) {
                break;
            }
            let (_, item) = m.held.pop_front().expect("front exists");
            match item {
                Held::Message(kind, payload) => {
                    m.held_bytes -= payload.len();
                    // Always sendable: a close decided meanwhile is held
                    // behind it.
                    self.send_frame(kind, payload);
                }
                Held::Close(body) => self.queue_close_frame(body),
            }
        }
        if self.state.is_open() {
            if let Some(m) = self.mis_mut() {
                if let (Some(due), Some(every)) = (m.next_ping, m.knobs.ping) {
                    if now >= due {
                        m.pings += 1;
                        m.next_ping = Some(now + every);
                        let payload = m.pings.to_string().into_bytes();
                        self.queue_frame(OpCode::Ping, Chunk::Owned(payload));
                    }
                }
            }
        }
        if check {
            self.check_fire(now);
        }
    }

    /// The payload size of our data frames if `fragment` asked for one.
    pub(super) fn fragment_size(&self) -> Option<usize> {
        self.mis()?.knobs.fragment
    }

    /// Unsent bytes including echoes held back by `delay`: what echo
    /// backpressure weighs (see [`Connection::output_len`] for the bytes
    /// ready to write).
    pub fn backlog(&self) -> usize {
        self.out.len() + self.mis().map_or(0, |m| m.held_bytes())
    }
}
