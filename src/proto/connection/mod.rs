//! One server-side WebSocket connection as a deterministic state machine.
//!
//! Inputs: [`Connection::receive`] (bytes read from the peer),
//! [`Connection::receive_eof`], [`Connection::handle_timeout`] (the current time),
//! and the application's decisions ([`Connection::accept`], [`Connection::reject`],
//! [`Connection::send`], [`Connection::close`]).
//! Outputs: [`Connection::poll_event`], the outbound bytes
//! ([`Connection::fill_output`] / [`Connection::consume_output`]),
//! [`Connection::poll_timeout`] and [`Connection::poll_transport`].
//!
//! ```text
//! Handshake ─request─► Decide ─accept─► Open ─our close─► Closing ─peer close─┐
//!     │                  │ reject/respond  │ peer close / protocol error        ▼
//!     └─bad request──────┴─────────────────┴───────────────────────────────► Flushing ─► Dead
//! ```
//! `Flushing` writes what is queued, then asks the driver to shut down the write
//! half and read until EOF (so the peer reads our last bytes instead of a reset);
//! `Dead` means drop the socket now. Each state carries its own timer
//! ([`State`]); our close frame has its own small state ([`closing::OurClose`]).
//!
//! This file holds [`Connection`], its [`State`] and the public types; each
//! concern has a file of its own, opening with a line saying what it owns:
//! `opening` (the opening handshake), `receive` (inbound frames), `assembly`
//! (messages and streaming), `events` (the event queue), `send` (output),
//! `closing` (the close handshake and failing), `timers`, `memory`,
//! `compression` (permessage-deflate glue) and `misbehave` (the URL knobs).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::close::CloseCode;
use super::error::ProtocolError;
use super::frame::MAX_HEADER_LEN;
use super::inspect::{FrameInfo, Tap, What};
use super::message::{MessageBuffer, MessageKind};
use super::opcode::OpCode;
use super::output::{Chunk, OutQueue};
use super::stamp::Stamp;

pub mod acting;
mod assembly;
mod client;
mod closing;
mod compression;
mod events;
mod memory;
pub mod misbehave;
mod opening;
mod plain;
mod receive;
mod send;
mod timers;

pub use client::{Refusal, RefusalKind};
use closing::OurClose;
use compression::Deflate;
use events::{Item, Items};
use opening::Handshake;
use receive::{Frame, Tally};

/// Limits and timeouts of the protocol core (plain data; see docs/limits.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message, summed over its fragments; over it the connection fails with 1009.
    pub max_message_size: usize,
    /// Time allowed from accept to a complete request head.
    pub handshake_timeout: Duration,
    /// Time allowed, after our close frame or a refused handshake, for the peer to
    /// answer and close before the socket is dropped.
    pub close_timeout: Duration,
    /// Keepalive: send a ping when nothing arrived for this long (and again every
    /// interval while it stays quiet). `None` or zero: off.
    pub ping_interval: Option<Duration>,
    /// Close with 1001 when nothing at all (not even a pong) arrived for this
    /// long. `None` or zero: off.
    pub idle_timeout: Option<Duration>,
    /// On a streaming connection ([`Connection::set_streaming`]), a binary
    /// message still incomplete at the end of a `receive` is handed out as an
    /// [`Event::Fragment`] once at least this many bytes are buffered (at most
    /// [`STREAM_PIECE_MAX`]: a piece is handed out when it is that large anyway).
    pub stream_chunk: usize,
    /// An event stream ([`Connection::start_events`]) quiet for this long
    /// gets a comment line, so proxies keep it. `None` or zero: off.
    pub sse_keepalive: Option<Duration>,
    /// Frames received and sent by every connection sharing these limits
    /// (a server shares one `Rc<Limits>` among all its connections): the core
    /// counts where the frames are, the server reads the sums for `/stats`.
    pub counters: Counters,
    /// The frame inspector's tap (off by default): where every connection
    /// sharing these limits records its frames (`proto::inspect`).
    pub tap: Tap,
    /// Keep every upgrade request's head (`Request::head`) even with the
    /// tap off: stubs match on its headers.
    pub keep_heads: bool,
}

/// Counts kept by the core for the whole server (plain cells: one thread).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Complete frames received, control frames included.
    pub frames_in: Cell<u64>,
    /// Frames queued to send, control frames included.
    pub frames_out: Cell<u64>,
    /// Messages (and their payload bytes) echoed by the core itself
    /// ([`Connection::set_fast_echo`]), each one in and one out: the
    /// driver adds them to its message counts.
    pub echoed_messages: Cell<u64>,
    pub echoed_bytes: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    bump_by(c, 1);
}

fn bump_by(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 64 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: None,
            idle_timeout: None,
            stream_chunk: 16 * 1024,
            sse_keepalive: Some(Duration::from_secs(15)),
            counters: Counters::default(),
            tap: Tap::default(),
            keep_heads: false,
        }
    }
}

/// While more than this many bytes are unsent, pings are answered only by the
/// most recent one (RFC 6455 §5.5.3 allows it), so a ping flood from a peer that
/// does not read cannot grow the queue.
pub const PONG_COALESCE_BYTES: usize = 64 * 1024;

/// The largest piece of a streamed message (see [`Event::Fragment`]): its
/// buffer stays small enough to be recycled, so streaming does not allocate
/// (or page-fault) per piece.
pub const STREAM_PIECE_MAX: usize = 32 * 1024;

/// What the connection reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A valid Upgrade request arrived: call [`Connection::accept`] or
    /// [`Connection::reject`].
    Upgrade(super::handshake::Request),
    /// A plain HTTP request (no `Upgrade: websocket`): call
    /// [`Connection::respond`] (or [`Connection::respond_keep_alive`]),
    /// [`Connection::reject`], [`Connection::read_body`] or
    /// [`Connection::start_events`].
    HttpRequest(super::handshake::PlainRequest),
    /// The body of the plain request, complete, after
    /// [`Connection::read_body`]; or why it could not be read (answer with
    /// the error's status).
    Body(Result<Vec<u8>, super::body::BodyError>),
    /// A complete data message.
    Message { kind: MessageKind, data: Vec<u8> },
    /// A piece of a binary message still arriving (streaming connections
    /// only, see [`Connection::set_streaming`]). The pieces of one message come
    /// in order, the first with `first`, the last with `fin` (possibly empty);
    /// together they are the message. [`Connection::send_fragment`] echoes one.
    Fragment {
        data: Vec<u8>,
        first: bool,
        fin: bool,
    },
    /// Client role ([`Connection::client`]): the server's 101 was valid;
    /// messages may be sent.
    Opened(super::client::Opened),
    /// Client role: the server did not open the connection (its answer, or
    /// why none counts); the connection ends.
    Refused(Refusal),
}

/// What the driver must do with the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportAction {
    /// Nothing special: keep reading and writing.
    None,
    /// Everything is written: shut down the write half, keep reading until EOF.
    ShutdownWrite,
    /// Drop the socket.
    Close,
    /// Drop the socket with a TCP reset (SO_LINGER 0): the `drop=N&reset=1`
    /// knob, once everything queued was written.
    Reset,
}

/// How a broadcast message goes to one member (see
/// [`Connection::broadcast_form`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastForm {
    /// The plain frame, shared with every plain member.
    Plain,
    /// Compressed without context with this window: one compressed frame is
    /// shared by every member with the same window.
    Compressed(u8),
    /// Compressed with this connection's own context: [`Connection::send`].
    Own,
}

/// Where the connection is, with the one timer each state has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the request head, until `deadline` (the handshake timeout).
    Handshake { deadline: Instant },
    /// Reading a plain request's body; `deadline` moves with each arrival.
    Body { deadline: Instant },
    /// An event stream (`text/event-stream`) is being answered; `last_out`:
    /// when something was last queued on it (for the keepalive comment).
    Stream { last_out: Instant },
    /// The request is complete; the application accepts, rejects or
    /// answers it (still under the handshake deadline).
    Decide { deadline: Instant },
    /// Messages flow. `last_ping`: when we last sent a keepalive ping.
    Open { last_ping: Option<Instant> },
    /// Our close frame is decided; the peer has until `deadline` to answer.
    Closing { deadline: Instant },
    /// Writing what is queued, then (once asked for, `shutdown_requested`)
    /// the write half is shut and the peer's EOF awaited, until `deadline`.
    Flushing {
        deadline: Instant,
        shutdown_requested: bool,
    },
    /// Drop the socket; `timed_out`: a deadline ended the connection.
    Dead { timed_out: bool },
}

impl State {
    fn is_open(self) -> bool {
        matches!(self, State::Open { .. })
    }

    fn is_dead(self) -> bool {
        matches!(self, State::Dead { .. })
    }

    /// Frames are parsed (open, or waiting for the answer to our close).
    fn reads_frames(self) -> bool {
        matches!(self, State::Open { .. } | State::Closing { .. })
    }

    fn is_handshaking(self) -> bool {
        matches!(
            self,
            State::Handshake { .. } | State::Decide { .. } | State::Body { .. }
        )
    }

    /// The instant this state ends by itself, if any.
    fn deadline(self) -> Option<Instant> {
        match self {
            State::Handshake { deadline }
            | State::Body { deadline }
            | State::Decide { deadline }
            | State::Closing { deadline }
            | State::Flushing { deadline, .. } => Some(deadline),
            State::Open { .. } | State::Stream { .. } | State::Dead { .. } => None,
        }
    }
}

/// A server-side WebSocket connection. See the module documentation.
///
/// Memory: an open, idle connection holds no heap buffers; the struct itself is
/// a few hundred bytes (limits are shared, handshake and control state are
/// boxed and only exist while needed).
#[derive(Debug)]
pub struct Connection {
    state: State,
    limits: Rc<Limits>,
    /// When bytes last arrived ([`Stamp`]: 8 bytes).
    last_rx: Stamp,
    /// `Some` until the connection opens (or is refused).
    hs: Option<Box<Handshake>>,
    /// What receiving holds between reads; `None` while quiet between
    /// messages (see [`Rx`]).
    rx: Option<Box<Rx>>,
    ctl: Option<Box<Control>>,
    /// Events for the application and the replies the core makes itself (pong,
    /// close), in the order their causes arrived: a reply is queued only when the
    /// application has taken every event before it, so output follows input order
    /// however the input was split.
    items: Items,
    out: OutQueue,
    /// Our close frame, from decided to written.
    close: OurClose,
    /// Give the out-queue's storage back once the 101 is written.
    release_out: bool,
    /// Hand out large binary messages in pieces as they arrive.
    streaming: bool,
    /// Echo a read's whole small data frames straight into the output,
    /// without an event each ([`Connection::set_fast_echo`]).
    fast_echo: bool,
    /// The upgrade was accepted (the 101 was queued).
    opened: bool,
    /// Bytes arrived or output was queued since the last
    /// [`Connection::release_if_quiet`].
    recent: bool,
    /// The peer's EOF (or a socket error) was reported.
    eof: bool,
    /// The id the frame inspector's records carry ([`Connection::set_id`]).
    id: u32,
}

/// What receiving holds between reads: a partial frame header, the frame
/// being received and the message being assembled. Boxed: created when the
/// first frame byte arrives, given back by [`Connection::release_if_quiet`]
/// once the connection is quiet between messages, so an idle connection
/// carries 8 bytes for it instead of 80.
#[derive(Debug, Default)]
struct Rx {
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    frame: Option<Frame>,
    message: Option<MessageBuffer>,
    /// The inspector's record of the frame being received (tap on only).
    tapped: Option<FrameInfo>,
    /// The inspector's count of the message being received (tap on only).
    tally: Option<Tally>,
}

/// State most connections never need, allocated on first use: control
/// frames, and permessage-deflate once negotiated.
#[derive(Debug, Default)]
struct Control {
    /// The payload of the control frame being received.
    payload: Vec<u8>,
    /// The pong owed while the queue is over `PONG_COALESCE_BYTES`.
    pending_pong: Option<Vec<u8>>,
    /// permessage-deflate, if agreed.
    deflate: Option<Deflate>,
    /// Misbehaviour the request asked for (`misbehave.rs`).
    knobs: Option<Box<misbehave::Misbehave>>,
    /// The code of the peer's close frame (1005 for an empty body).
    close_received: Option<CloseCode>,
    /// The protocol error that failed the connection.
    error: Option<ProtocolError>,
    /// A hang-up (the `drop` knob, or the inspector's): once everything is
    /// written the socket goes without a close frame, with a TCP reset if
    /// `true`.
    dropping: Option<bool>,
    /// The client role's masking keys (`client.rs`); `None` in the server role.
    keys: Option<Box<super::client::MaskKeys>>,
    /// The reason of the peer's close frame, when it gave one (a proxy
    /// passes it on).
    close_reason: Option<Box<str>>,
    /// The closes the core makes itself (the answer to the peer's close,
    /// a failure's) wait for [`Connection::release_close`]: a proxy's leg
    /// lets what the other side still sends go out first.
    hold_closes: bool,
    /// The next close the core emits is one of those.
    hold_next: bool,
    /// Such a close, decided and waiting (our close stays `Pending`, so
    /// messages may still be sent ahead of it).
    held_close: Option<Vec<u8>>,
}

impl Connection {
    /// A new connection, just accepted at `now`.
    pub fn new(limits: Limits, now: Instant) -> Connection {
        Connection::with_limits(Rc::new(limits), now)
    }

    /// A new connection whose limits are shared with others (a server holds one
    /// `Rc<Limits>` for all its connections).
    pub fn with_limits(limits: Rc<Limits>, now: Instant) -> Connection {
        Connection {
            state: State::Handshake {
                deadline: now + limits.handshake_timeout,
            },
            last_rx: now.into(),
            limits,
            hs: Some(Box::default()),
            rx: None,
            ctl: None,
            items: Items::default(),
            out: OutQueue::default(),
            close: OurClose::None,
            release_out: false,
            streaming: false,
            fast_echo: false,
            opened: false,
            recent: false,
            eof: false,
            id: 0,
        }
    }

    /// When bytes last arrived.
    fn last_rx(&self) -> Instant {
        self.last_rx.instant()
    }

    /// Feeds bytes read from the peer.
    pub fn receive(&mut self, data: &[u8], now: Instant) {
        if !data.is_empty() {
            self.last_rx = now.into();
            self.recent = true;
        }
        match self.state {
            State::Handshake { .. } if self.awaits_answer() => self.receive_answer(data, now),
            State::Handshake { .. } => self.receive_request(data, now),
            State::Decide { .. } => {
                if let Some(hs) = self.hs.as_mut() {
                    hs.pending.extend_from_slice(data);
                }
            }
            State::Body { .. } => self.receive_body(data, now),
            State::Open { .. } | State::Closing { .. } if !self.eof => {
                self.receive_frames(data, now);
                self.hand_out_piece();
            }
            _ => {}
        }
    }

    /// The peer closed its write half (read returned 0) or the socket failed.
    ///
    /// Before a complete request there is nothing to answer: the connection ends.
    /// Later, what is already queued is still written (bounded by the close
    /// timeout), then the socket is closed; while open this is an abnormal closure
    /// (1006) and nothing more is read.
    pub fn receive_eof(&mut self, now: Instant) {
        self.eof = true;
        if self.awaits_answer() {
            return self.answer_cut_short(false);
        }
        match self.state {
            State::Handshake { .. } | State::Body { .. } if !self.has_unsent() => self.die(),
            State::Open { .. }
            | State::Closing { .. }
            | State::Decide { .. }
            | State::Handshake { .. }
            | State::Body { .. }
                if self.has_unsent() =>
            {
                self.enter_flushing(now)
            }
            State::Flushing { .. } => {}
            _ => self.die(),
        }
    }

    /// What to do with the socket now (see [`TransportAction`]).
    pub fn poll_transport(&mut self) -> TransportAction {
        match self.state {
            State::Dead { .. } => TransportAction::Close,
            State::Flushing { .. } if self.has_unsent() || self.close.is_pending() => {
                TransportAction::None
            }
            State::Flushing { .. }
                if self.ctl.as_ref().is_some_and(|c| c.dropping == Some(true)) =>
            {
                self.die();
                TransportAction::Reset
            }
            State::Flushing { .. } if self.eof => {
                self.die();
                TransportAction::Close
            }
            State::Flushing {
                deadline,
                shutdown_requested: false,
            } => {
                self.state = State::Flushing {
                    deadline,
                    shutdown_requested: true,
                };
                TransportAction::ShutdownWrite
            }
            _ => TransportAction::None,
        }
    }

    /// Whether reading from the socket is still useful.
    pub fn wants_read(&self) -> bool {
        !self.state.is_dead() && !self.eof
    }

    /// Whether the WebSocket is open for messages.
    pub fn is_open(&self) -> bool {
        self.state.is_open()
    }

    /// Whether the upgrade was accepted (the 101 was queued), whatever the
    /// state now.
    pub fn was_opened(&self) -> bool {
        self.opened
    }

    /// Whether the opening handshake is still in progress (no 101 sent yet).
    pub fn is_handshaking(&self) -> bool {
        self.state.is_handshaking()
    }

    /// The protocol error that failed the connection, if any.
    pub fn error(&self) -> Option<ProtocolError> {
        self.ctl.as_ref()?.error
    }

    fn frame(&self) -> Option<&Frame> {
        self.rx.as_ref()?.frame.as_ref()
    }

    fn message(&self) -> Option<&MessageBuffer> {
        self.rx.as_ref()?.message.as_ref()
    }

    /// The receive state, created on first use.
    fn rx(&mut self) -> &mut Rx {
        self.rx.get_or_insert_with(Box::default)
    }

    /// Forgets the frame being received and the message being assembled
    /// (the inspector gets what arrived of the frame).
    fn drop_incoming(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.frame = None;
            rx.message = None;
            if let Some(f) = rx.tapped.take() {
                self.record(What::Frame(f));
            }
        }
    }

    /// Tags this connection's inspector records (the driver's connection id).
    pub fn set_id(&mut self, id: u32) {
        self.id = id;
    }

    /// The id given with [`Connection::set_id`] (0 if none).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The frame inspector's tap these connections share.
    pub fn tap(&self) -> &Tap {
        &self.limits.tap
    }

    /// Whether the frame inspector's tap is on.
    fn tapping(&self) -> bool {
        self.limits.tap.is_on()
    }

    /// Hands a record to the inspector's tap.
    fn record(&self, what: What) {
        self.limits.tap.push(self.id, what);
    }

    /// Ends the connection now: the socket is to be dropped.
    fn die(&mut self) {
        self.state = State::Dead { timed_out: false };
    }
}
