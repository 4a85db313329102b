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
//! `Dead` means drop the socket now.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::close::CloseCode;
use super::deflate::{self, Agreed, DeflateConfig, SharedCodec};
use super::error::{HandshakeError, ProtocolError};
use super::frame::{FrameHeader, MAX_HEADER_LEN};
use super::handshake::{self, Parsed, Request};
use super::message::{validate_utf8_prefix, MessageBuffer, MessageKind};
use super::opcode::OpCode;
use super::output::{Chunk, OutQueue};

pub mod misbehave;

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
    /// Frames received and sent by every connection sharing these limits
    /// (a server shares one `Rc<Limits>` among all its connections): the core
    /// counts where the frames are, the server reads the sums for `/stats`.
    pub counters: Counters,
}

/// Counts kept by the core for the whole server (plain cells: one thread).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Complete frames received, control frames included.
    pub frames_in: Cell<u64>,
    /// Frames queued to send, control frames included.
    pub frames_out: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
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
            counters: Counters::default(),
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
    Upgrade(Request),
    /// A plain HTTP request (no `Upgrade: websocket`): call
    /// [`Connection::respond`] or [`Connection::reject`].
    HttpRequest { method: String, path: String },
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

#[derive(Debug)]
enum Item {
    Event(Event),
    Pong(Vec<u8>),
    Close(Vec<u8>),
    /// The application answered the message before this (see the `close`
    /// and `drop` knobs).
    Answered,
}

/// The item queue behind a box that exists once something was queued (an idle
/// connection holds 8 bytes for it).
/// (Boxed on purpose: 8 bytes inline instead of a 32-byte `VecDeque`.)
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
struct Items(Option<Box<VecDeque<Item>>>);

impl Items {
    fn push_back(&mut self, item: Item) {
        self.0.get_or_insert_with(Box::default).push_back(item);
    }

    fn pop_front(&mut self) -> Option<Item> {
        self.0.as_mut()?.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    /// Frees the storage if empty.
    fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// Heap bytes held by queued items and the queue itself.
    fn memory(&self) -> usize {
        self.0.as_ref().map_or(0, |q| {
            let data: usize = q
                .iter()
                .map(|item| match item {
                    Item::Event(Event::Message { data, .. } | Event::Fragment { data, .. })
                    | Item::Pong(data)
                    | Item::Close(data) => data.capacity(),
                    Item::Event(_) | Item::Answered => 0,
                })
                .sum();
            data + q.capacity() * std::mem::size_of::<Item>()
        })
    }

    /// Drops the pieces of the message still arriving that the application
    /// has not taken yet (the items after the last complete message), so a
    /// failing message is not echoed further. Replies queued among them stay.
    fn drop_unfinished_pieces(&mut self) {
        let Some(q) = self.0.as_mut() else { return };
        let start = q
            .iter()
            .rposition(|item| {
                matches!(
                    item,
                    Item::Event(Event::Message { .. } | Event::Fragment { fin: true, .. })
                )
            })
            .map_or(0, |i| i + 1);
        let mut i = 0;
        q.retain(|item| {
            i += 1;
            i <= start || !matches!(item, Item::Event(Event::Fragment { .. }))
        });
    }

    /// Whether the last piece of a streamed message is waiting to be taken.
    fn has_final_piece(&self) -> bool {
        self.0.as_ref().is_some_and(|q| {
            q.iter()
                .any(|item| matches!(item, Item::Event(Event::Fragment { fin: true, .. })))
        })
    }

    /// Drops every data message and piece not yet taken (replies stay).
    fn drop_data(&mut self) {
        if let Some(q) = self.0.as_mut() {
            q.retain(|item| {
                !matches!(
                    item,
                    Item::Event(Event::Message { .. } | Event::Fragment { .. })
                )
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Decide,
    Open,
    Closing,
    Flushing,
    Dead,
}

#[derive(Debug)]
struct Frame {
    remaining: u64,
    key: [u8; 4],
    opcode: OpCode,
    fin: bool,
    /// Payload bytes received so far, modulo 4 (all the mask needs).
    offset: u8,
    /// Payload is read past (after our close frame, only a close matters).
    discard: bool,
}

/// What only the opening handshake needs; freed when the connection opens.
#[derive(Debug, Default)]
struct Handshake {
    /// Request bytes (while `Handshake`), then bytes that followed the request
    /// head (while `Decide`).
    pending: Vec<u8>,
    accept: Option<Request>,
    /// The status of the HTTP answer queued instead of an upgrade, and why
    /// the request was refused if it was (kept until the connection ends,
    /// for the server's counters).
    answer: Option<u16>,
    refused: Option<HandshakeError>,
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
}

/// Bytes of zlib state counted for an inflater (its struct and a 32 KiB
/// window) and a compressor (zlib's `(1 << (bits + 2)) + (1 << (memLevel + 9))`
/// for 15 bits and memLevel 8), for [`Connection::memory`].
const INFLATER_BYTES: usize = 7 * 1024 + 32 * 1024;
const COMPRESSOR_BYTES: usize = 256 * 1024 + 6 * 1024;

/// permessage-deflate on one connection.
struct Deflate {
    agreed: Agreed,
    threshold: usize,
    /// The loop-wide compressors (shared mode, and any message compressed
    /// without context).
    shared: Rc<SharedCodec>,
    /// Inflates the client's messages: exists while a compressed message is
    /// being received, and between messages only if the client keeps its
    /// context (no `client_no_context_takeover`).
    inflater: Option<Box<flate2::Decompress>>,
    /// Our own compressor, only with server context takeover (dedicated mode).
    compressor: Option<Box<flate2::Compress>>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("agreed", &self.agreed)
            .finish()
    }
}

impl Deflate {
    /// The deflate state of a connection receiving a compressed message
    /// (there is one: RSV1 is refused without it).
    fn of(ctl: &mut Option<Box<Control>>) -> &mut Deflate {
        ctl.as_mut()
            .and_then(|c| c.deflate.as_mut())
            .expect("compressed only with deflate")
    }

    /// The inflater for the message being received (from the loop-wide pool
    /// when this connection keeps none).
    fn inflater(&mut self) -> &mut flate2::Decompress {
        let shared = &self.shared;
        self.inflater.get_or_insert_with(|| shared.take_inflater())
    }

    fn memory(&self) -> usize {
        self.inflater.as_ref().map_or(0, |_| INFLATER_BYTES)
            + self.compressor.as_ref().map_or(0, |_| COMPRESSOR_BYTES)
    }

    /// Compresses a message we send (RSV1 set on its frame).
    fn compress(&mut self, data: &[u8]) -> Vec<u8> {
        let bits = self.agreed.server_max_window_bits;
        if self.agreed.server_no_context_takeover {
            return self.shared.compress(bits, data);
        }
        let c = self
            .compressor
            .get_or_insert_with(|| Box::new(deflate::new_compressor(bits)));
        deflate::compress_message(c, data, false)
    }
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

/// A server-side WebSocket connection. See the module documentation.
///
/// Memory: an open, idle connection holds no heap buffers; the struct itself is
/// a few hundred bytes (limits are shared, handshake and control state are
/// boxed and only exist while needed).
#[derive(Debug)]
pub struct Connection {
    state: State,
    limits: Rc<Limits>,
    /// Before `Open`: the handshake deadline; after it: the closing deadline.
    /// While `Open` (which has no deadline): when we last sent a keepalive ping
    /// (the open state's timers derive from it and `last_rx`).
    deadline: Option<Instant>,
    /// When bytes last arrived.
    last_rx: Instant,
    /// `Some` until the connection opens (or is refused).
    hs: Option<Box<Handshake>>,
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    frame: Option<Frame>,
    message: Option<MessageBuffer>,
    ctl: Option<Box<Control>>,
    /// Events for the application and the replies the core makes itself (pong,
    /// close), in the order their causes arrived: a reply is queued only when the
    /// application has taken every event before it, so output follows input order
    /// however the input was split.
    items: Items,
    out: OutQueue,
    /// Give the out-queue's storage back once the 101 is written.
    release_out: bool,
    /// Hand out large binary messages in pieces as they arrive.
    streaming: bool,
    /// Our close frame is decided but still behind events in `items`.
    close_pending: bool,
    /// The upgrade was accepted (the 101 was queued).
    opened: bool,
    /// Bytes arrived or output was queued since the last
    /// [`Connection::release_if_quiet`].
    recent: bool,
    shutdown_requested: bool,
    eof: bool,
    close_sent: Option<CloseCode>,
    close_received: Option<CloseCode>,
    error: Option<ProtocolError>,
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
            state: State::Handshake,
            deadline: Some(now + limits.handshake_timeout),
            last_rx: now,
            limits,
            hs: Some(Box::default()),
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message: None,
            ctl: None,
            items: Items::default(),
            out: OutQueue::default(),
            release_out: false,
            streaming: false,
            close_pending: false,
            opened: false,
            recent: false,
            shutdown_requested: false,
            eof: false,
            close_sent: None,
            close_received: None,
            error: None,
        }
    }

    // ----- inputs -----

    /// Feeds bytes read from the peer.
    pub fn receive(&mut self, data: &[u8], now: Instant) {
        if !data.is_empty() {
            self.last_rx = now;
            self.recent = true;
        }
        match self.state {
            State::Handshake => self.receive_request(data, now),
            State::Decide => {
                if let Some(hs) = self.hs.as_mut() {
                    hs.pending.extend_from_slice(data);
                }
            }
            State::Open | State::Closing if !self.eof => {
                self.receive_frames(data, now);
                self.hand_out_piece();
            }
            _ => {}
        }
    }

    /// Streaming: a binary message is handed out in pieces ([`Event::Fragment`])
    /// as it arrives, instead of whole once complete, so that an echo can go
    /// back while the rest is still coming and memory stays bounded by the
    /// backpressure budget rather than the message size. Text messages (which
    /// must be validated whole before any of it is answered) and messages that
    /// arrive within one `receive` are still delivered whole. Turning it off
    /// stops new messages from streaming; one already streaming goes on.
    /// A connection whose echoes are delayed or repeated does not stream.
    pub fn set_streaming(&mut self, on: bool) {
        self.streaming = on && !self.mis().is_some_and(|m| m.shapes_echoes());
    }

    /// The peer closed its write half (read returned 0) or the socket failed.
    ///
    /// Before a complete request there is nothing to answer: the connection ends.
    /// Later, what is already queued is still written (bounded by the close
    /// timeout), then the socket is closed; while open this is an abnormal closure
    /// (1006) and nothing more is read.
    pub fn receive_eof(&mut self, now: Instant) {
        self.eof = true;
        match self.state {
            State::Handshake => self.state = State::Dead,
            State::Open | State::Closing | State::Decide if self.has_unsent() => {
                self.enter_flushing(now)
            }
            State::Flushing => {}
            _ => self.state = State::Dead,
        }
    }

    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.mis().is_some() {
            self.knob_timers(now);
        }
        if self.state == State::Open {
            if self.idle_due().is_some_and(|d| now >= d) {
                self.close(CloseCode::GOING_AWAY, "idle timeout", now);
            } else if self.ping_due().is_some_and(|d| now >= d) {
                self.deadline = Some(now); // the last keepalive ping
                self.queue_frame(OpCode::Ping, Chunk::Owned(Vec::new()));
            }
            return;
        }
        if let Some(d) = self.deadline {
            if now >= d {
                self.deadline = None;
                self.state = State::Dead;
            }
        }
    }

    /// Accepts the Upgrade request reported by [`Event::Upgrade`], declining
    /// any extension offered.
    pub fn accept(&mut self, now: Instant) {
        self.accept_upgrade(now, None, None);
    }

    /// Accepts the Upgrade request, with permessage-deflate if the client
    /// offered it in a form `config` can honour (RFC 7692 §5). `shared` holds
    /// the loop-wide compressors.
    pub fn accept_deflate(
        &mut self,
        now: Instant,
        config: &DeflateConfig,
        shared: &Rc<SharedCodec>,
    ) {
        self.accept_upgrade(now, Some((config, shared)), None);
    }

    /// Accepts the Upgrade request: permessage-deflate as
    /// [`Connection::accept_deflate`] when `deflate` is given, and `protocol`
    /// (one of the client's offers, see `handshake::select_protocol`) named
    /// in the 101 as the subprotocol.
    pub fn accept_upgrade(
        &mut self,
        now: Instant,
        deflate: Option<(&DeflateConfig, &Rc<SharedCodec>)>,
        protocol: Option<&str>,
    ) {
        if self.state != State::Decide {
            return;
        }
        let Some(hs) = self.hs.take() else {
            return;
        };
        let Some(req) = hs.accept else {
            return;
        };
        let agreed = deflate.and_then(|(config, shared)| {
            let offers: Vec<&str> = req.extensions.iter().map(String::as_str).collect();
            let agreed = deflate::negotiate(&offers, config)?;
            self.ctl.get_or_insert_with(Box::default).deflate = Some(Deflate {
                agreed,
                threshold: config.threshold,
                shared: shared.clone(),
                inflater: None,
                compressor: None,
            });
            Some(agreed.response())
        });
        self.out.push(Chunk::Owned(handshake::accept_response(
            &req,
            agreed.as_deref(),
            protocol,
        )));
        self.release_out = true;
        self.opened = true;
        self.state = State::Open;
        self.deadline = None;
        // The handshake's event storage is not needed by an idle connection.
        self.items.release();
        self.start_knobs(now);
        self.receive_frames(&hs.pending, now);
        self.hand_out_piece();
    }

    /// Refuses the request with an HTTP error, then closes.
    pub fn reject(&mut self, err: HandshakeError, now: Instant) {
        self.reject_with(err, None, now);
    }

    /// [`Connection::reject`] with one more line of body after the error's
    /// own message.
    pub fn reject_with(&mut self, err: HandshakeError, detail: Option<&str>, now: Instant) {
        if matches!(self.state, State::Handshake | State::Decide) {
            self.respond(handshake::error_response_with(err, detail), now);
            if let Some(hs) = self.hs.as_mut() {
                hs.refused = Some(err);
            }
        }
    }

    /// The HTTP answer given instead of an upgrade, if any: its status and,
    /// for a refusal, why.
    pub fn http_answer(&self) -> Option<(u16, Option<HandshakeError>)> {
        let hs = self.hs.as_ref()?;
        Some((hs.answer?, hs.refused))
    }

    /// Answers a plain HTTP request with a complete response, then closes.
    pub fn respond(&mut self, response: Vec<u8>, now: Instant) {
        if matches!(self.state, State::Handshake | State::Decide) {
            // "HTTP/1.1 NNN ...": the status, for `http_answer`.
            let status = response
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
            self.out.push(Chunk::Owned(response));
            // The request's bytes are freed; the small record stays.
            let hs = self.hs.get_or_insert_with(Box::default);
            hs.pending = Vec::new();
            hs.accept = None;
            hs.answer = status;
            self.enter_flushing(now);
        }
    }

    /// Queues a message. Returns false (and queues nothing) unless the connection
    /// is open.
    ///
    /// With permessage-deflate, a message at least `--deflate-threshold`
    /// bytes long goes out compressed (RSV1 set), and an owned buffer is
    /// recycled.
    pub fn send(&mut self, kind: MessageKind, payload: impl Into<Chunk>) -> bool {
        if !self.can_send() {
            return false;
        }
        self.send_frame(kind, payload.into());
        true
    }

    /// Queues a message (compressed if agreed and long enough).
    fn send_frame(&mut self, kind: MessageKind, payload: Chunk) {
        let deflate = self.deflate_mut().filter(|d| payload.len() >= d.threshold);
        if let Some(d) = deflate {
            let compressed = d.compress(payload.as_slice());
            if let Chunk::Owned(buf) = payload {
                self.out.recycle(buf);
            }
            self.queue_frame_rsv(kind.opcode(), true, 4, Chunk::Owned(compressed));
            return;
        }
        self.queue_frame(kind.opcode(), payload);
    }

    /// How a broadcast message of `len` bytes is to reach this connection:
    /// plain, as a frame compressed without context (shared among members
    /// with the same window), or compressed with this connection's own
    /// context ([`Connection::send`]).
    /// A connection that asked for `fragment` gets its own frames.
    pub fn broadcast_form(&self, len: usize) -> BroadcastForm {
        if self.fragment_size().is_some() {
            return BroadcastForm::Own;
        }
        match self.ctl.as_ref().and_then(|c| c.deflate.as_ref()) {
            Some(d) if len >= d.threshold => {
                if d.agreed.server_no_context_takeover {
                    BroadcastForm::Compressed(d.agreed.server_max_window_bits)
                } else {
                    BroadcastForm::Own
                }
            }
            _ => BroadcastForm::Plain,
        }
    }

    /// The parameters of permessage-deflate, if agreed.
    pub fn deflate(&self) -> Option<Agreed> {
        self.ctl.as_ref()?.deflate.as_ref().map(|d| d.agreed)
    }

    fn deflate_mut(&mut self) -> Option<&mut Deflate> {
        self.ctl.as_mut()?.deflate.as_mut()
    }

    /// Queues one piece of a fragmented binary message: the first piece opens
    /// the message, the one with `fin` ends it (RFC 6455 §5.4: an intermediary
    /// may change fragmentation, so an echo may be split differently from what
    /// arrived). Control frames may go out between pieces. Returns false
    /// (queues nothing) unless the connection can send.
    pub fn send_fragment(&mut self, data: Vec<u8>, first: bool, fin: bool) -> bool {
        if !self.can_send() {
            return false;
        }
        let opcode = if first {
            self.out.begin_stream();
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        self.queue_frame_fin(opcode, fin, Chunk::Owned(data));
        if fin {
            self.out.end_stream();
        }
        true
    }

    /// Queues an already encoded server frame (encode once, share among many).
    pub fn send_encoded(&mut self, frame: Rc<[u8]>) -> bool {
        if !self.can_send() {
            return false;
        }
        self.recent = true;
        bump(&self.limits.counters.frames_out);
        self.out.push(Chunk::Shared(frame));
        true
    }

    /// Gives back a message's buffer once the application is done with it, so
    /// the next message is assembled in it (steady traffic then allocates
    /// nothing). Optional: a buffer not given back is simply freed.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.out.recycle(buf);
    }

    /// Starts the closing handshake with `code` (and a short reason).
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        match self.state {
            State::Open => {
                self.queue_close(Some(code), reason);
                self.state = State::Closing;
                self.deadline = Some(self.closing_deadline(now));
            }
            State::Handshake | State::Decide => self.state = State::Dead,
            _ => {}
        }
    }

    /// Closes a peer that does not keep up: frames not yet started are dropped
    /// (the one being written is finished, so the stream stays valid), then our
    /// close frame follows. The peer sees a prefix of what was sent, then the close.
    pub fn close_discarding(&mut self, code: CloseCode, reason: &str, now: Instant) {
        if self.state == State::Open {
            self.out.discard_unstarted();
            self.take_pending_pong();
            if let Some(m) = self.mis_mut() {
                m.clear_held();
            }
            self.close(code, reason, now);
        }
    }

    /// Frees what this connection holds because the server is over its memory
    /// budget and this connection holds the most, and closes it: with 1009
    /// `memory budget` if most of what it held was an incoming message, 1008
    /// `memory budget` if it was output. The message being received, the
    /// messages not yet taken and every unstarted output frame are dropped (the
    /// frame being written is finished, so the peer's stream stays valid), and
    /// the close frame follows at once. A connection that is not open is
    /// aborted instead (its socket is to be dropped now). Returns the code sent.
    pub fn shed(&mut self, now: Instant) -> Option<CloseCode> {
        if self.state != State::Open {
            self.abort();
            return None;
        }
        let incoming = self.message.as_ref().map_or(0, |m| m.capacity()) + self.items.memory();
        // Echoes held by `delay` are output not yet queued.
        let outgoing = self.out.memory() + self.mis().map_or(0, |m| m.held_bytes());
        let code = if incoming >= outgoing {
            CloseCode::MESSAGE_TOO_BIG
        } else {
            CloseCode::POLICY_VIOLATION
        };
        self.frame = None;
        self.message = None;
        self.items.drop_data();
        self.out.discard_unstarted();
        self.out.release_spares();
        self.take_pending_pong();
        if let Some(m) = self.mis_mut() {
            m.clear_held();
        }
        self.queue_close(Some(code), "memory budget");
        self.enter_flushing(now);
        Some(code)
    }

    /// Drops everything unsent and stops: the connection is to be closed at once
    /// (used for a consumer too slow to take its queue, after the close frame was
    /// given a chance, or at shutdown).
    pub fn abort(&mut self) {
        self.out.clear();
        self.state = State::Dead;
    }

    /// Gives back the storage a quiet connection keeps for reuse: the event
    /// queue's, the output queue's with its spare buffers (all of it if
    /// nothing is unsent, else the spares) and an empty control buffer.
    /// Busy connections reuse these to not allocate per message; one that
    /// went quiet has no use for them (10,000 idle connections that each
    /// sent one message would otherwise keep ~2 KiB each). The driver calls
    /// this periodically: a connection that received or queued anything
    /// since the previous call only has that noted, so only a connection
    /// quiet for a whole period loses its buffers. Returns whether anything
    /// was freed.
    pub fn release_if_quiet(&mut self) -> bool {
        if std::mem::take(&mut self.recent) {
            return false;
        }
        let before = self.memory();
        self.items.release();
        if self.out.is_empty() {
            self.out.release();
        } else {
            self.out.release_spares();
        }
        if let Some(c) = self.ctl.as_mut().filter(|c| c.payload.is_empty()) {
            c.payload = Vec::new();
            // Not while a frame is being received: a control frame's header
            // may have come without its payload yet.
            if c.pending_pong.is_none()
                && c.deflate.is_none()
                && c.knobs.is_none()
                && self.frame.is_none()
            {
                self.ctl = None;
            }
        }
        self.memory() != before
    }

    // ----- outputs -----

    /// Heap bytes this connection holds in buffers: the request being read,
    /// the message being assembled, control payloads, events not yet taken,
    /// and the output queue with its buffers kept for reuse (see
    /// [`OutQueue::memory`]). Not counted: the fixed-size struct itself (a
    /// few hundred bytes, the same for every connection). O(1) while the
    /// event queue is drained, which it is between reads.
    pub fn memory(&self) -> usize {
        self.hs.as_ref().map_or(0, |h| h.pending.capacity())
            + self.message.as_ref().map_or(0, |m| m.capacity())
            + self.ctl.as_ref().map_or(0, |c| {
                c.payload.capacity()
                    + c.pending_pong.as_ref().map_or(0, |p| p.capacity())
                    + c.deflate.as_ref().map_or(0, Deflate::memory)
                    + c.knobs.as_ref().map_or(0, |m| m.memory())
            })
            + self.items.memory()
            + self.out.memory()
    }

    /// The next event for the application.
    ///
    /// Poll until `None`: the pongs and the close frame that follow received
    /// messages are queued as they come due, after the application had its chance
    /// to answer the messages before them.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            match self.items.pop_front()? {
                Item::Event(e) => return Some(e),
                Item::Pong(payload) => {
                    if self.out.len() > PONG_COALESCE_BYTES {
                        self.ctl.get_or_insert_with(Box::default).pending_pong = Some(payload);
                    } else if self.can_send() {
                        self.queue_frame(OpCode::Pong, Chunk::Owned(payload));
                    }
                }
                Item::Close(body) => self.emit_close(body),
                Item::Answered => self.answered(),
            }
        }
    }

    /// Fills `slices` with unsent bytes, in order; returns the number filled.
    pub fn fill_output<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.out.fill(slices)
    }

    /// The first unsent bytes.
    pub fn output_front(&self) -> &[u8] {
        self.out.front()
    }

    /// Unsent bytes.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Marks `n` bytes as written to the transport.
    pub fn consume_output(&mut self, n: usize) {
        self.out.consume(n);
        if self.release_out && self.out.is_empty() {
            self.release_out = false;
            self.out.release();
        }
        if self.out.len() <= PONG_COALESCE_BYTES {
            if let Some(p) = self.take_pending_pong() {
                if self.state == State::Open {
                    self.queue_frame(OpCode::Pong, Chunk::Owned(p));
                }
            }
        }
        if self.mis().is_some() {
            self.refill_push();
        }
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let open = self.state == State::Open;
        let own = if open {
            match (self.idle_due(), self.ping_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            self.deadline
        };
        match self.mis().and_then(|m| m.next_due(open, self.last_rx)) {
            Some(k) => Some(own.map_or(k, |o| o.min(k))),
            None => own,
        }
    }

    // A zero interval means "off" (it could never be satisfied).
    fn idle_due(&self) -> Option<Instant> {
        let t = self.limits.idle_timeout.filter(|d| !d.is_zero())?;
        Some(self.last_rx + t)
    }

    fn ping_due(&self) -> Option<Instant> {
        // While open, `deadline` holds the time of the last keepalive ping.
        let quiet_since = self.deadline.map_or(self.last_rx, |p| p.max(self.last_rx));
        Some(quiet_since + self.limits.ping_interval.filter(|d| !d.is_zero())?)
    }

    /// What to do with the socket now (see [`TransportAction`]).
    pub fn poll_transport(&mut self) -> TransportAction {
        match self.state {
            State::Dead => TransportAction::Close,
            State::Flushing if self.has_unsent() || self.close_pending => TransportAction::None,
            State::Flushing if self.mis().is_some_and(|m| m.dropping == Some(true)) => {
                self.state = State::Dead;
                TransportAction::Reset
            }
            State::Flushing if self.eof => {
                self.state = State::Dead;
                TransportAction::Close
            }
            State::Flushing if !self.shutdown_requested => {
                self.shutdown_requested = true;
                TransportAction::ShutdownWrite
            }
            _ => TransportAction::None,
        }
    }

    /// Whether a message is being streamed: pieces of it went out and the rest
    /// is still arriving. A driver must keep reading such a connection even
    /// over its backpressure budget: a client may well send a whole message
    /// before it reads anything, and if we stopped reading it midway while our
    /// echo of the first pieces waits unread, neither side would move again.
    /// To keep that bounded, the driver turns streaming off while over budget
    /// ([`Connection::set_streaming`]), so at most one message (up to the size
    /// cap) streams past the budget.
    pub fn is_streaming_message(&self) -> bool {
        self.message.as_ref().is_some_and(|m| m.is_streaming())
    }

    /// Whether reading from the socket is still useful.
    pub fn wants_read(&self) -> bool {
        self.state != State::Dead && !self.eof
    }

    /// Whether the WebSocket is open for messages.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the upgrade was accepted (the 101 was queued), whatever the
    /// state now.
    pub fn was_opened(&self) -> bool {
        self.opened
    }

    /// Whether no byte has arrived yet (a driver may look at the first bytes
    /// to choose a transport before any reach the core).
    pub fn is_untouched(&self) -> bool {
        self.state == State::Handshake && self.hs.as_ref().is_some_and(|h| h.pending.is_empty())
    }

    /// Whether the opening handshake is still in progress (no 101 sent yet).
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Handshake | State::Decide)
    }

    /// The code of the close frame we sent, if any.
    pub fn close_sent(&self) -> Option<CloseCode> {
        self.close_sent
    }

    /// The code of the close frame we received (1005 for an empty body), if any.
    pub fn close_received(&self) -> Option<CloseCode> {
        self.close_received
    }

    /// The protocol error that failed the connection, if any.
    pub fn error(&self) -> Option<ProtocolError> {
        self.error
    }

    // ----- internals -----

    /// Streaming: hands out what is buffered of an incomplete binary message.
    /// Streaming: room left in the current piece, if the frame being received
    /// is part of a binary message that streams (or may start to).
    fn stream_room(&self) -> Option<usize> {
        let frame = self.frame.as_ref()?;
        let msg = self.message.as_ref()?;
        let eligible = self.state == State::Open
            && !frame.opcode.is_control()
            && !frame.discard
            && msg.kind() == MessageKind::Binary
            && !msg.is_compressed()
            && (self.streaming || msg.is_streaming());
        eligible.then(|| STREAM_PIECE_MAX.saturating_sub(msg.len()))
    }

    /// A message that started streaming goes on streaming; a new one starts
    /// only while streaming is on.
    fn hand_out_piece(&mut self) {
        if self.state != State::Open {
            return;
        }
        let Some(msg) = self.message.as_mut() else {
            return;
        };
        let first = !msg.is_streaming();
        if msg.kind() != MessageKind::Binary
            || msg.is_compressed()
            || (first && !self.streaming)
            || msg.len() < self.limits.stream_chunk.clamp(1, STREAM_PIECE_MAX)
        {
            return;
        }
        let data = msg.take_piece(self.out.take_spare());
        self.items.push_back(Item::Event(Event::Fragment {
            data,
            first,
            fin: false,
        }));
    }

    /// Output queued, or echoes held back by `delay` still to go out.
    fn has_unsent(&self) -> bool {
        !self.out.is_empty() || self.mis().is_some_and(|m| m.has_held())
    }

    fn take_pending_pong(&mut self) -> Option<Vec<u8>> {
        self.ctl.as_mut()?.pending_pong.take()
    }

    fn enter_flushing(&mut self, now: Instant) {
        self.state = State::Flushing;
        self.deadline = Some(self.closing_deadline(now));
    }

    /// The close timeout runs from now, or from when the last echo held by
    /// `delay` goes out.
    fn closing_deadline(&self, now: Instant) -> Instant {
        let start = self
            .mis()
            .and_then(|m| m.last_due())
            .map_or(now, |t| t.max(now));
        start + self.limits.close_timeout
    }

    fn queue_frame(&mut self, opcode: OpCode, payload: Chunk) {
        self.queue_frame_fin(opcode, true, payload);
    }

    fn queue_frame_fin(&mut self, opcode: OpCode, fin: bool, payload: Chunk) {
        self.queue_frame_rsv(opcode, fin, 0, payload);
    }

    fn queue_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Chunk) {
        if !opcode.is_control() && self.ctl.is_some() {
            if let Some(n) = self.fragment_size().filter(|&n| payload.len() > n) {
                return self.queue_fragmented(opcode, fin, rsv, &payload, n);
            }
        }
        let mut hdr = FrameHeader::server(opcode, payload.len());
        hdr.fin = fin;
        hdr.rsv = rsv;
        let (bytes, n) = hdr.encode();
        self.recent = true;
        bump(&self.limits.counters.frames_out);
        self.out.push_frame(Chunk::Inline(bytes, n as u8), payload);
    }

    /// The `fragment` knob: a data frame's payload goes out in frames of `n`
    /// bytes (the last one shorter), as one message: the first frame keeps
    /// the opcode and RSV1, the rest are continuations, FIN on the last one
    /// only if the frame asked for it.
    fn queue_fragmented(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: &Chunk, n: usize) {
        let data = payload.as_slice();
        let last = data.len().div_ceil(n) - 1;
        for (i, piece) in data.chunks(n).enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            let mut hdr = FrameHeader::server(op, piece.len());
            hdr.fin = fin && i == last;
            hdr.rsv = if i == 0 { rsv } else { 0 };
            let (bytes, len) = hdr.encode();
            bump(&self.limits.counters.frames_out);
            self.out
                .push_frame_copy(Chunk::Inline(bytes, len as u8), piece);
        }
        self.recent = true;
    }

    /// Prepares our close frame (`None`: an empty body). It is queued once the
    /// application has taken every event received before it, so the answers to
    /// messages that arrived ahead of the close (or of the error) go out first.
    fn queue_close(&mut self, code: Option<CloseCode>, reason: &str) {
        let mut body = Vec::new();
        if let Some(code) = code {
            body.extend_from_slice(&code.0.to_be_bytes());
            // A close body is a control payload: at most 125 bytes.
            let mut cut = reason.len().min(123);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            body.extend_from_slice(&reason.as_bytes()[..cut]);
        }
        self.take_pending_pong();
        self.close_sent = Some(code.unwrap_or(CloseCode(1005)));
        if self.items.is_empty() {
            self.emit_close(body);
        } else {
            self.close_pending = true;
            self.items.push_back(Item::Close(body));
        }
    }

    /// Messages may be queued while open, and after a close or an error until our
    /// close frame is queued.
    fn can_send(&self) -> bool {
        self.state == State::Open || self.close_pending
    }

    /// Fails the connection: the failing message goes no further (its pieces
    /// not yet taken are dropped, and so are the unsent frames of its streamed
    /// echo, but the frame being written), so our close frame follows at most
    /// one frame even when the peer does not read. Answers to messages that
    /// arrived complete before the failure keep their place ahead of it.
    fn fail(&mut self, err: ProtocolError, now: Instant) {
        self.error = Some(err);
        if self.close_sent.is_none() && self.state == State::Open {
            // A streamed message whose last piece is still among the events
            // was complete before the failure: its echo is finished, not
            // dropped (the application sends that last piece next).
            let stream_finished = self.items.has_final_piece();
            self.items.drop_unfinished_pieces();
            if !stream_finished {
                self.out.discard_stream();
            }
            self.queue_close(Some(err.close_code()), err.reason());
        }
        self.frame = None;
        self.message = None;
        self.enter_flushing(now);
    }

    fn receive_request(&mut self, data: &[u8], now: Instant) {
        let Some(hs) = self.hs.as_mut() else { return };
        hs.pending.extend_from_slice(data);
        // A head can only complete with a '\n'; do not re-parse otherwise.
        if !data.contains(&b'\n') && hs.pending.len() <= handshake::MAX_REQUEST_HEAD {
            return;
        }
        match handshake::parse_request(&hs.pending) {
            Ok(None) => {}
            Ok(Some((parsed, n))) => {
                hs.pending.drain(..n);
                self.state = State::Decide;
                match parsed {
                    Parsed::Upgrade(req) => {
                        hs.accept = Some(req.clone());
                        self.items.push_back(Item::Event(Event::Upgrade(req)));
                    }
                    Parsed::Plain { method, path } => self
                        .items
                        .push_back(Item::Event(Event::HttpRequest { method, path })),
                }
            }
            Err(e) => self.reject(e, now),
        }
    }

    fn receive_frames(&mut self, mut data: &[u8], now: Instant) {
        while matches!(self.state, State::Open | State::Closing) {
            if self.frame.is_none() {
                if data.is_empty() {
                    return;
                }
                let have = usize::from(self.header_len);
                let decoded = if have == 0 {
                    FrameHeader::decode(data)
                } else {
                    let take = (MAX_HEADER_LEN - have).min(data.len());
                    self.header[have..have + take].copy_from_slice(&data[..take]);
                    match FrameHeader::decode(&self.header[..have + take]) {
                        Ok(Some((h, n))) => {
                            self.header_len = 0;
                            Ok(Some((h, n - have)))
                        }
                        Ok(None) => {
                            self.header_len = (have + take) as u8;
                            return;
                        }
                        Err(e) => Err(e),
                    }
                };
                match decoded {
                    Ok(Some((hdr, used))) => {
                        data = &data[used..];
                        if let Err(e) = self.begin_frame(hdr) {
                            return self.fail(e, now);
                        }
                    }
                    Ok(None) => {
                        self.header[..data.len()].copy_from_slice(data);
                        // A partial header is shorter than MAX_HEADER_LEN.
                        self.header_len = data.len() as u8;
                        return;
                    }
                    Err(e) => return self.fail(e, now),
                }
            } else if !data.is_empty() {
                let frame = self.frame.as_mut().expect("frame in progress");
                let mut take = frame.remaining.min(data.len() as u64) as usize;
                // A streamed piece is at most STREAM_PIECE_MAX bytes, so its
                // buffer never grows past what the out-queue recycles.
                let room = self.stream_room();
                if let Some(room) = room {
                    take = take.min(room);
                }
                let (chunk, rest) = data.split_at(take);
                data = rest;
                if let Err(e) = self.frame_payload(chunk) {
                    return self.fail(e, now);
                }
                if room.is_some() && self.stream_room() == Some(0) {
                    self.hand_out_piece();
                }
            }
            match &self.frame {
                Some(f) if f.remaining == 0 => {
                    if let Err(e) = self.end_frame(now) {
                        return self.fail(e, now);
                    }
                }
                Some(_) if data.is_empty() => return,
                _ => {}
            }
        }
    }

    fn begin_frame(&mut self, hdr: FrameHeader) -> Result<(), ProtocolError> {
        let closing = self.state == State::Closing;
        let opcode = OpCode::from_u8(hdr.opcode).ok_or(ProtocolError::ReservedOpcode(hdr.opcode));
        let key = hdr.mask.ok_or(ProtocolError::UnmaskedFrame);
        let mut frame = Frame {
            opcode: opcode.unwrap_or(OpCode::Binary),
            fin: hdr.fin,
            key: key.unwrap_or([0; 4]),
            remaining: hdr.payload_len,
            offset: 0,
            discard: false,
        };
        if closing {
            // After our close only the peer's close matters; everything else is
            // read past without being buffered.
            frame.discard = frame.opcode != OpCode::Close || hdr.payload_len > 125;
            if !frame.discard {
                self.ctl.get_or_insert_with(Box::default).payload.clear();
            }
            self.frame = Some(frame);
            return Ok(());
        }
        // RSV1 means "compressed" once permessage-deflate is agreed; RSV2 and
        // RSV3 mean nothing here.
        let rsv1 = hdr.rsv & 4 != 0;
        if hdr.rsv & 3 != 0 || (rsv1 && self.deflate().is_none()) {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = opcode?;
        key?;
        if rsv1 && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::CompressedControlOrContinuation);
        }
        if opcode.is_control() {
            if !hdr.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if hdr.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            self.ctl.get_or_insert_with(Box::default).payload.clear();
        } else {
            let so_far = match (opcode, &self.message) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, Some(m)) => m.total_len(),
                (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
                (_, None) => 0,
            };
            // A compressed message is checked on its inflated size, as it
            // inflates (`frame_payload`).
            let compressed = rsv1 || self.message.as_ref().is_some_and(|m| m.is_compressed());
            if !compressed
                && so_far.saturating_add(hdr.payload_len) > self.limits.max_message_size as u64
            {
                return Err(ProtocolError::MessageTooBig);
            }
            if self.message.is_none() {
                let kind = if opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                let buf = self.out.take_spare();
                self.message = Some(if compressed {
                    MessageBuffer::new_compressed(kind, buf)
                } else {
                    MessageBuffer::new(kind, buf)
                });
            }
        }
        self.frame = Some(frame);
        Ok(())
    }

    fn frame_payload(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let frame = self.frame.as_mut().expect("frame in progress");
        let offset = usize::from(frame.offset);
        frame.offset = ((offset + chunk.len()) & 3) as u8;
        frame.remaining -= chunk.len() as u64;
        if frame.discard {
            return Ok(());
        }
        if frame.opcode.is_control() {
            let control = &mut self.ctl.as_mut().expect("control state").payload;
            let start = control.len();
            control.extend_from_slice(chunk);
            super::mask::apply_mask(&mut control[start..], frame.key, offset);
            Ok(())
        } else {
            let msg = self.message.as_mut().expect("message in progress");
            if !msg.is_compressed() {
                return msg.push(chunk, frame.key, offset);
            }
            let inflater = Deflate::of(&mut self.ctl).inflater();
            msg.inflate(
                chunk,
                frame.key,
                offset,
                inflater,
                self.limits.max_message_size,
            )
        }
    }

    fn end_frame(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let frame = self.frame.take().expect("frame in progress");
        bump(&self.limits.counters.frames_in);
        if frame.discard {
            return Ok(());
        }
        match frame.opcode {
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if frame.fin {
                    let mut msg = self.message.take().expect("message in progress");
                    if msg.is_compressed() {
                        self.inflate_tail(&mut msg)?;
                    }
                    let streaming = msg.is_streaming();
                    let (kind, data) = msg.finish()?;
                    let event = if streaming {
                        Event::Fragment {
                            data,
                            first: false,
                            fin: true,
                        }
                    } else {
                        Event::Message { kind, data }
                    };
                    self.items.push_back(Item::Event(event));
                    if self.mis().is_some_and(|m| m.counts_answers()) {
                        self.items.push_back(Item::Answered);
                    }
                }
            }
            OpCode::Ping => {
                let payload = self.take_control();
                self.items.push_back(Item::Pong(payload));
            }
            OpCode::Pong => {}
            OpCode::Close => self.receive_close(now)?,
        }
        Ok(())
    }

    /// Ends a compressed message: the `00 00 ff ff` the sender stripped
    /// (RFC 7692 §7.2.2) goes through the inflater; without client context
    /// takeover the inflater goes back to the loop-wide pool.
    fn inflate_tail(&mut self, msg: &mut MessageBuffer) -> Result<(), ProtocolError> {
        let max = self.limits.max_message_size;
        let d = Deflate::of(&mut self.ctl);
        msg.inflate_plain(&deflate::TAIL, d.inflater(), max)?;
        if d.agreed.client_no_context_takeover {
            if let Some(i) = d.inflater.take() {
                d.shared.give_inflater(i);
            }
        }
        Ok(())
    }

    fn take_control(&mut self) -> Vec<u8> {
        self.ctl
            .as_mut()
            .map(|c| std::mem::take(&mut c.payload))
            .unwrap_or_default()
    }

    fn receive_close(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let body = self.take_control();
        if self.state == State::Closing {
            // The answer to our close: the closing handshake is complete.
            self.close_received = close_code_of(&body)
                .ok()
                .flatten()
                .or(Some(CloseCode(1005)));
            self.enter_flushing(now);
            return Ok(());
        }
        let code = close_code_of(&body)?;
        self.close_received = Some(code.unwrap_or(CloseCode(1005)));
        self.take_pending_pong();
        // The code is echoed; an empty close is answered with an empty close.
        self.queue_close(code, "");
        self.enter_flushing(now);
        Ok(())
    }
}

/// Validates a close body: empty (no code), or a receivable code and a UTF-8 reason.
fn close_code_of(body: &[u8]) -> Result<Option<CloseCode>, ProtocolError> {
    match body.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::CloseBodyTooShort),
        _ => {
            let code = CloseCode(u16::from_be_bytes([body[0], body[1]]));
            if !code.is_allowed_on_wire() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = &body[2..];
            match validate_utf8_prefix(reason) {
                Ok(n) if n == reason.len() => {}
                _ => return Err(ProtocolError::InvalidCloseReason),
            }
            Ok(Some(code))
        }
    }
}
