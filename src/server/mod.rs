//! The mio driver: one thread, one `Poll`. It moves bytes between sockets and the
//! sans-IO [`Connection`]s, runs their timers, and hands complete messages to the
//! handler. It makes no protocol decision of its own.
//!
//! Contract with the core, per connection and per readiness event:
//! 1. read until `WouldBlock` (or a per-turn budget, after which the connection
//!    is put on the ready list and served again next turn), feeding every read
//!    to [`Connection::receive`] and draining [`Connection::poll_event`] after it;
//! 2. write the queued output with vectored writes until it is empty or
//!    `WouldBlock` (then WRITABLE brings us back);
//! 3. obey [`Connection::poll_transport`] (shut down the write half, or drop);
//! 4. re-arm the timer with [`Connection::poll_timeout`].
//!
//! This file holds the loop (`Server::run`), the connection table (slots,
//! tokens with generations) and removal and shutdown; each concern around it
//! has its file: `accept.rs` (new connections, `--max-connections`, running out
//! of descriptors), `io.rs` (read, write, `settle`: the contract above),
//! `upgrade.rs` (what an opening request becomes), `rooms.rs` (broadcast
//! fan-out), `timers.rs` (the deadline heap), `memory.rs` (`--max-memory`) and
//! `handle.rs` (`spawn` and `ServerHandle`, for embedding). They are all
//! `impl Server` blocks over the state declared here.

mod accept;
mod handle;
mod inspect;
mod inspecting;
mod io;
mod memory;
mod rooms;
mod sse;
mod stats;
mod timers;
mod transport;
mod upgrade;

use rooms::Room;

pub use handle::{spawn, ServerHandle};
pub use inspect::DEFAULT_RING as DEFAULT_INSPECT_FRAMES;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::proto::deflate::SharedCodec;
use crate::proto::{CloseCode, Connection, Limits};

/// The page served on a plain `GET /` (see `--no-page`).
pub const PAGE: &str = include_str!("../page.html");

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// Size of the one read buffer the whole loop shares.
const READ_BUF: usize = 64 * 1024;

/// A token carries a slot index and the slot's generation, so an event left over
/// for a closed connection never reaches a newer one in the same slot.
fn token(index: usize, gen: u32) -> Token {
    Token((gen as usize) << 32 | index)
}

fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

/// A connection's id in the logs (`#17`); the peer address is logged once, at
/// accept, so the per-connection state does not carry it.
#[derive(Clone, Copy)]
struct Id(u32);

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

struct Client {
    stream: TcpStream,
    /// The TLS record layer, once the first byte said TLS (transport.rs):
    /// with TLS on, a connection whose core has seen no byte and that has no
    /// TLS layer yet is still to be decided.
    tls: Option<Box<transport::Tls>>,
    id: Id,
    proto: Connection,
    /// The room (index + 1, so the option takes 4 bytes), set when the upgrade
    /// is accepted; see [`Client::room`].
    room: Option<std::num::NonZeroU32>,
    /// What [`Connection::memory`] said when this connection was last
    /// accounted: its share of `Server::memory`.
    held: usize,
    /// Counted against `--max-connections` (not refused with 503).
    admitted: bool,
    /// Not read because its unsent output is over the budget (echo backpressure).
    read_paused: bool,
    /// Has output queued by another connection's message, to write this turn.
    dirty: bool,
    /// The deadline last pushed on the timer heap.
    scheduled: Option<Instant>,
    /// Stopped reading before `WouldBlock`: must be read again without a new event.
    read_pending: bool,
    /// A live frame inspector (`/.inspect`): sent records, its messages ignored.
    inspecting: bool,
}

impl Client {
    /// What this connection holds, as counted against `--max-memory`: the
    /// core's buffers and, with TLS, rustls's (a bound, `TLS_BYTES`).
    fn memory(&self) -> usize {
        self.proto.memory() + self.tls.as_ref().map_or(0, |_| transport::TLS_BYTES)
    }

    /// `http` or `https`, for the logs.
    fn http_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `ws` or `wss`, for the logs.
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    fn room(&self) -> Option<usize> {
        self.room.map(|r| r.get() as usize - 1)
    }

    /// Whether a new message may start streaming its echo: echo connections
    /// only (a room needs whole messages: one frame, encoded once, for every
    /// member), and only while under the backpressure budget, so at most one
    /// message's echo piles up past it.
    fn may_stream(&self, streaming: bool, budget: usize) -> bool {
        streaming && self.room.is_none() && self.proto.backlog() <= budget
    }
}

struct Slot {
    gen: u32,
    client: Option<Client>,
}

/// The event loop. Build it with [`Server::bind`] (or [`Server::from_std`]) and
/// call [`Server::run`]; or use [`spawn`] to run it on a background thread.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    config: Config,
    slots: Vec<Slot>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, Token)>>,
    ready: Vec<Token>,
    dirty: Vec<Token>,
    rooms: Vec<Room>,
    room_ids: std::collections::HashMap<String, usize>,
    free_rooms: Vec<usize>,
    read_buf: Vec<u8>,
    /// Where TLS connections' plaintext is decrypted into (empty without TLS).
    plain_buf: Vec<u8>,
    /// One copy of the limits, shared by every connection.
    limits: Rc<Limits>,
    /// The next connection id for the logs.
    next_id: u32,
    /// Heap entries (about) that no longer match their connection's deadline.
    stale_timers: usize,
    /// Where broadcast frames are encoded before they become one `Rc`.
    scratch: Vec<u8>,
    /// The loop-wide permessage-deflate compressors and inflater pool.
    deflate_codec: Rc<SharedCodec>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// Sockets held, and of those the ones admitted (not refused with 503).
    open: usize,
    admitted: usize,
    /// Accepting is paused until then (out of file descriptors).
    accept_paused_until: Option<Instant>,
    /// Logged the current run of accept failures already.
    accept_failing: bool,
    /// Bytes held by all connections (the sum of their `held`), against
    /// `config.max_memory`.
    memory: usize,
    /// Over the memory budget: connections closed in this episode so far.
    budget_episode: Option<usize>,
    /// When quiet connections next give back their reusable buffers
    /// (`timers.rs`).
    next_sweep: Instant,
    /// Counters for `/stats` and `/metrics` (stats.rs).
    stats: stats::Stats,
    /// The frame inspector (`None` with `--inspect off`, or `local` off
    /// loopback): inspect.rs and endpoints.rs.
    inspector: Option<inspect::Inspector>,
    /// The other half of the tap's double buffer (inspecting.rs).
    tap_buf: Vec<crate::proto::inspect::Record>,
    /// `POST`s to rooms whose body is being read (sse.rs).
    pending_publish: std::collections::HashMap<Token, sse::PendingPublish>,
    /// Messages retained by rooms so far (orders history across rooms).
    publish_seq: u64,
    /// Payload bytes all rooms' histories hold, against `--max-memory`.
    history_bytes: usize,
}

impl Server {
    /// Binds `config.listen`.
    pub fn bind(config: Config) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        Server::from_std(listener, config)
    }

    /// Serves on an already bound listener.
    pub fn from_std(listener: std::net::TcpListener, config: Config) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let plain_buf = vec![0; if config.tls.is_some() { READ_BUF } else { 0 }];
        let inspecting = match config.inspect {
            crate::config::InspectMode::On => true,
            crate::config::InspectMode::Off => false,
            crate::config::InspectMode::Local => listener.local_addr()?.ip().is_loopback(),
        };
        let limits = config.limits.clone();
        limits.tap.set_on(inspecting);
        let inspector = inspecting
            .then(|| inspect::Inspector::new(config.inspect_frames, config.inspect_secrets));
        Ok(Server {
            inspector,
            tap_buf: Vec::new(),
            pending_publish: std::collections::HashMap::new(),
            publish_seq: 0,
            history_bytes: 0,
            limits: Rc::new(limits),
            poll,
            listener,
            config,
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            rooms: Vec::new(),
            room_ids: std::collections::HashMap::new(),
            free_rooms: Vec::new(),
            next_id: 0,
            stale_timers: 0,
            scratch: Vec::new(),
            deflate_codec: Rc::default(),
            read_buf: vec![0; READ_BUF],
            plain_buf,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            open: 0,
            admitted: 0,
            accept_paused_until: None,
            accept_failing: false,
            memory: 0,
            budget_episode: None,
            next_sweep: Instant::now() + timers::QUIET_SWEEP,
            stats: stats::Stats::new(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A flag and a waker that stop [`Server::run`] from another thread.
    pub fn stopper(&self) -> (Arc<AtomicBool>, Arc<Waker>) {
        (self.stop.clone(), self.waker.clone())
    }

    /// Makes SIGINT and SIGTERM stop the server gracefully (as
    /// [`ServerHandle::stop`] does); a second signal makes [`Server::run`] return
    /// an `Interrupted` error at once. For the command line, not for embedding.
    pub fn handle_signals(&mut self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs until stopped. On stop, every open connection is sent close 1001 and
    /// given the close timeout to answer before the loop returns.
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut stopping: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            if stopping.is_none() && self.stop.load(Ordering::Acquire) {
                stopping = Some(now + self.config.limits.close_timeout);
                self.begin_shutdown(now)?;
            }
            if let Some(deadline) = stopping {
                if self.open == 0 || now >= deadline {
                    info!("stopped ({} connections dropped)", self.open);
                    return Ok(());
                }
            }
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                let next = self.timers.peek().map(|Reverse((t, _))| *t);
                let sweep = (self.open > 0 || self.has_rooms()).then_some(self.next_sweep);
                let next = [next, stopping, self.accept_paused_until, sweep]
                    .into_iter()
                    .flatten()
                    .min();
                next.map(|t| t.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    SIGNALS => {
                        let count = match self.signals.as_mut() {
                            Some(s) => s.pending().count(),
                            None => 0,
                        };
                        if count > 0 && stopping.is_some() || count > 1 {
                            warn!("second signal: exiting at once");
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::Interrupted,
                                "second signal",
                            ));
                        }
                        if count > 0 {
                            info!("signal received: shutting down (again to exit at once)");
                            self.stop.store(true, Ordering::Release);
                        }
                    }
                    t => {
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            self.read(t, now, closed);
                        }
                        if event.is_writable() {
                            self.flush(t);
                        }
                        self.settle(t);
                    }
                }
            }
            for t in std::mem::take(&mut self.ready) {
                if let Some(c) = self.client_mut(t) {
                    if c.read_pending {
                        c.read_pending = false;
                        self.read(t, now, true);
                        self.settle(t);
                    }
                }
            }
            self.run_timers(now);
            self.sweep_quiet(now);
            // Records of this turn go to the ring and to live inspectors
            // (whose output is then written with the other dirty connections).
            self.drain_tap(now);
            for t in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.client_mut(t) {
                    c.dirty = false;
                    self.settle(t);
                }
            }
            // Output that grew without a read (a `push`, held echoes going
            // out) is weighed too.
            self.keep_memory_budget(now);
            #[cfg(debug_assertions)]
            self.check_accounting();
        }
    }

    fn client_mut(&mut self, t: Token) -> Option<&mut Client> {
        let (index, gen) = split(t);
        let slot = self.slots.get_mut(index)?;
        if slot.gen != gen {
            return None;
        }
        slot.client.as_mut()
    }

    fn remove(&mut self, t: Token) {
        let (index, gen) = split(t);
        let slot = &mut self.slots[index];
        if slot.gen != gen {
            return;
        }
        let Some(c) = slot.client.take() else {
            return;
        };
        slot.gen = slot.gen.wrapping_add(1);
        if c.scheduled.is_some() {
            self.stale_timers += 1;
        }
        self.free.push(index);
        self.open -= 1;
        self.memory -= c.held;
        if c.admitted {
            self.admitted -= 1;
        }
        // No `deregister`: closing the socket (dropping `c`) removes it from
        // epoll/kqueue, and its token's generation is already retired.
        if let Some(id) = c.room() {
            self.leave(id, t, Instant::now());
        }
        if !self.pending_publish.is_empty() {
            self.pending_publish.remove(&t);
        }
        self.inspect_closed(&c);
        let code = |c: Option<CloseCode>| c.map_or("-".to_string(), |c| c.0.to_string());
        if !c.proto.was_opened() {
            match c.proto.http_answer() {
                Some((status, refused)) => {
                    stats::count(&mut self.stats.http, status);
                    if let Some(e) = refused {
                        stats::count(&mut self.stats.handshake_failures, e.label());
                    }
                }
                // Waiting for another request on a kept connection.
                None if c.proto.served_keep_alive() => {}
                // Timed out, or gone, before a complete request.
                None => stats::count(&mut self.stats.handshake_failures, "incomplete"),
            }
            debug!("{}: closed before upgrade", c.id);
        } else {
            if let Some(sent) = c.proto.close_sent() {
                stats::count(&mut self.stats.closes_sent, sent.0);
            }
            if let Some(received) = c.proto.close_received() {
                stats::count(&mut self.stats.closes_received, received.0);
            }
            if let Some(unsent) = c.proto.close_unsent() {
                stats::count(&mut self.stats.closes_not_delivered, unsent.0);
                if c.proto.timed_out() {
                    info!(
                        "{}: close {} not delivered (peer did not read within --close-timeout)",
                        c.id, unsent.0
                    );
                } else {
                    info!(
                        "{}: close {} not delivered (the connection ended first)",
                        c.id, unsent.0
                    );
                }
            }
            match c.proto.error() {
                Some(e) => info!(
                    "{}: closed, sent {} ({e}; {}), received {}",
                    c.id,
                    code(c.proto.close_sent().or(c.proto.close_unsent())),
                    e.rule(),
                    code(c.proto.close_received())
                ),
                None => info!(
                    "{}: closed, sent {}, received {}",
                    c.id,
                    code(c.proto.close_sent()),
                    code(c.proto.close_received())
                ),
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) -> std::io::Result<()> {
        info!("stopping: closing {} connections with 1001", self.open);
        self.poll.registry().deregister(&mut self.listener)?;
        let tokens: Vec<Token> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.client.is_some())
            .map(|(i, s)| token(i, s.gen))
            .collect();
        for t in tokens {
            if let Some(c) = self.client_mut(t) {
                if c.proto.is_event_stream() {
                    // Ends like `drop=N`: EventSource would come back.
                    c.proto.end_events(b"", false, now);
                } else {
                    c.proto
                        .close(CloseCode::GOING_AWAY, "server shutting down", now);
                }
            }
            self.settle(t);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Idle memory per connection is this slot plus a timer entry: keep it
    /// small (issue 18: at most 200 bytes of RSS per idle connection; see
    /// docs/benchmarks.md for the measured figure). In debug builds mio's
    /// `TcpStream` carries an 8-byte selector id besides the descriptor.
    /// The TLS layer costs a plain connection one pointer (`Client::tls`).
    #[test]
    fn connection_slot_stays_small() {
        let slot = std::mem::size_of::<super::Slot>();
        let bound = if cfg!(debug_assertions) { 176 } else { 160 };
        assert!(slot <= bound, "a connection slot grew to {slot} bytes");
    }
}
