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

use crate::proto::Limits;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::handler::{self, Route};
use crate::proto::handshake::{http_response, Request};
use crate::proto::{CloseCode, Connection, Event, HandshakeError, MessageKind, TransportAction};

/// The page served on a plain `GET /` (see `--no-page`).
pub const PAGE: &str = include_str!("../page.html");

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Size of the one read buffer the whole loop shares.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per loop turn before others get their turn.
const READS_PER_TURN: usize = 16;
/// Slices per vectored write.
const MAX_IOV: usize = 64;

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
}

impl Client {
    fn room(&self) -> Option<usize> {
        self.room.map(|r| r.get() as usize - 1)
    }

    /// Whether a new message may start streaming its echo: echo connections
    /// only (a room needs whole messages: one frame, encoded once, for every
    /// member), and only while under the backpressure budget, so at most one
    /// message's echo piles up past it.
    fn may_stream(&self, streaming: bool, budget: usize) -> bool {
        streaming && self.room.is_none() && self.proto.output_len() <= budget
    }
}

struct Room {
    name: String,
    members: Vec<Token>,
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
    /// One copy of the limits, shared by every connection.
    limits: Rc<Limits>,
    /// The next connection id for the logs.
    next_id: u32,
    /// Heap entries (about) that no longer match their connection's deadline.
    stale_timers: usize,
    /// Where broadcast frames are encoded before they become one `Rc`.
    scratch: Vec<u8>,
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
}

impl Server {
    /// Binds `config.listen`.
    pub fn bind(config: Config) -> io::Result<Server> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        Server::from_std(listener, config)
    }

    /// Serves on an already bound listener.
    pub fn from_std(listener: std::net::TcpListener, config: Config) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            limits: Rc::new(config.limits.clone()),
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
            read_buf: vec![0; READ_BUF],
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            open: 0,
            admitted: 0,
            accept_paused_until: None,
            accept_failing: false,
            memory: 0,
            budget_episode: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A flag and a waker that stop [`Server::run`] from another thread.
    pub fn stopper(&self) -> (Arc<AtomicBool>, Arc<Waker>) {
        (self.stop.clone(), self.waker.clone())
    }

    /// Makes SIGINT and SIGTERM stop the server gracefully (as
    /// [`ServerHandle::stop`] does); a second signal makes [`Server::run`] return
    /// an `Interrupted` error at once. For the command line, not for embedding.
    pub fn handle_signals(&mut self) -> io::Result<()> {
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
    pub fn run(&mut self) -> io::Result<()> {
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
                let next = [next, stopping, self.accept_paused_until]
                    .into_iter()
                    .flatten()
                    .min();
                next.map(|t| t.saturating_duration_since(now))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
                            return Err(io::Error::new(
                                io::ErrorKind::Interrupted,
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
            for t in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.client_mut(t) {
                    c.dirty = false;
                    self.settle(t);
                }
            }
            self.run_timers(now);
            #[cfg(debug_assertions)]
            self.check_accounting();
        }
    }

    /// Debug builds (every test against the binary): at the end of each loop
    /// turn, every connection's holdings are accounted and the total is their
    /// sum, so a path that changes a connection's buffers without `account`
    /// cannot go unnoticed.
    #[cfg(debug_assertions)]
    fn check_accounting(&self) {
        let mut sum = 0;
        for c in self.slots.iter().filter_map(|s| s.client.as_ref()) {
            assert_eq!(c.held, c.proto.memory(), "{}: memory not accounted", c.id);
            sum += c.held;
        }
        assert_eq!(sum, self.memory, "memory total out of step");
    }

    fn client_mut(&mut self, t: Token) -> Option<&mut Client> {
        let (index, gen) = split(t);
        let slot = self.slots.get_mut(index)?;
        if slot.gen != gen {
            return None;
        }
        slot.client.as_mut()
    }

    fn accept(&mut self, now: Instant) {
        if self.stop.load(Ordering::Acquire) || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_failing = false;
                    self.add(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient_accept_error(&e) => {
                    debug!("accept: {e}");
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) or memory: the
                    // pending connection stays in the backlog and the listener
                    // would report it again at once. Pause instead of spinning.
                    if !self.accept_failing {
                        warn!(
                            "accept failed: {e}; pausing accept, retrying every {} ms \
                             ({} connections open)",
                            ACCEPT_PAUSE.as_millis(),
                            self.open
                        );
                        self.accept_failing = true;
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                gen: 0,
                client: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        let t = token(index, slot.gen);
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("{peer}: register failed: {e}");
            self.free.push(index);
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = Id(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let mut proto = Connection::with_limits(self.limits.clone(), now);
        let overloaded = self
            .config
            .max_connections
            .is_some_and(|max| self.admitted >= max);
        if overloaded {
            info!("{id} {peer}: 503, at --max-connections");
            proto.reject(HandshakeError::Overloaded, now);
        } else {
            self.admitted += 1;
        }
        slot.client = Some(Client {
            stream,
            id,
            admitted: !overloaded,
            proto,
            room: None,
            held: 0,
            read_paused: false,
            dirty: false,
            scheduled: None,
            read_pending: false,
        });
        self.open += 1;
        debug!("{id} {peer}: accepted");
        self.settle(t);
    }

    /// Reads until `WouldBlock` or the per-turn budget, handling events as they come.
    ///
    /// A read that fills less than the buffer has emptied the socket's receive
    /// queue, so unless the peer's FIN (or an error) was reported with this event
    /// and still has to be read, we stop there: data that arrives later raises a
    /// new edge. That saves the `EAGAIN` read per wakeup (tokio does the same with
    /// mio). `drain`: read until `WouldBlock` or EOF regardless.
    fn read(&mut self, t: Token, now: Instant, drain: bool) {
        let (index, gen) = split(t);
        for _ in 0..READS_PER_TURN {
            self.account(t);
            self.keep_memory_budget(now);
            // `read_buf` is a field beside `slots`: both can be borrowed at once.
            let Some(client) = self
                .slots
                .get_mut(index)
                .filter(|s| s.gen == gen)
                .and_then(|s| s.client.as_mut())
            else {
                return;
            };
            if !client.proto.wants_read() {
                return;
            }
            let budget = self.config.max_backpressure;
            let stream = client.may_stream(self.config.streaming, budget);
            client.proto.set_streaming(stream);
            // A message already streaming is read to its end even over the
            // budget (see `is_streaming_message`).
            if client.proto.output_len() > budget && !client.proto.is_streaming_message() {
                // Echo backpressure: stop reading until the queue drains; TCP then
                // pushes back on the client. `flush` resumes.
                client.read_paused = true;
                return;
            }
            match client.stream.read(&mut self.read_buf) {
                Ok(0) => return client.proto.receive_eof(now),
                Ok(n) => {
                    client.proto.receive(&self.read_buf[..n], now);
                    if n < self.read_buf.len() && !drain {
                        return self.handle_events(t, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: read: {e}", client.id);
                    return client.proto.receive_eof(now);
                }
            }
            self.handle_events(t, now);
        }
        if let Some(c) = self.client_mut(t) {
            c.read_pending = true;
            self.ready.push(t);
        }
    }

    fn handle_events(&mut self, t: Token, now: Instant) {
        loop {
            let Some(c) = self.client_mut(t) else { return };
            let Some(event) = c.proto.poll_event() else {
                return;
            };
            match event {
                Event::Upgrade(req) => self.open(t, req, now),
                Event::HttpRequest { method, path } => self.answer_http(t, &method, &path, now),
                Event::Message { kind, data } => match c.room() {
                    None => handler::echo(&mut c.proto, kind, data),
                    Some(room) => {
                        self.broadcast(room, kind, &data, now);
                        if let Some(c) = self.client_mut(t) {
                            c.proto.recycle(data);
                        }
                    }
                },
                // Only echo connections stream (see `open`).
                Event::Fragment { data, first, fin } => {
                    handler::echo_fragment(&mut c.proto, data, first, fin)
                }
            }
        }
    }

    fn open(&mut self, t: Token, req: Request, now: Instant) {
        if !self.config.allow_origins.is_empty() {
            let allowed = req.origin.as_deref().is_none_or(|o| {
                self.config
                    .allow_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
            });
            if !allowed {
                let Some(c) = self.client_mut(t) else { return };
                info!(
                    "{}: 403, origin {:?} not allowed",
                    c.id,
                    req.origin.unwrap_or_default()
                );
                c.proto.reject(HandshakeError::ForbiddenOrigin, now);
                return;
            }
        }
        let path = req.path;
        let (streaming, budget) = (self.config.streaming, self.config.max_backpressure);
        let room = match handler::route(self.config.mode, &path) {
            Route::Echo => None,
            Route::Room(name) => Some(self.join(name, t) as u32),
        };
        let Some(c) = self.client_mut(t) else { return };
        c.room = room.and_then(|r| std::num::NonZeroU32::new(r + 1));
        // Set before `accept`, which reads the frames that came with the request.
        let stream = c.may_stream(streaming, budget);
        c.proto.set_streaming(stream);
        c.proto.accept(now);
        // The peer address is not kept per connection: one syscall per open,
        // and only when the line is logged.
        if log::log_enabled!(log::Level::Info) {
            let peer = c
                .stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            info!("{} {peer}: open {path}", c.id);
        }
    }

    fn join(&mut self, name: String, t: Token) -> usize {
        let id = match self.room_ids.get(&name) {
            Some(&id) => id,
            None => {
                let room = Room {
                    name: name.clone(),
                    members: Vec::new(),
                };
                let id = match self.free_rooms.pop() {
                    Some(id) => {
                        self.rooms[id] = room;
                        id
                    }
                    None => {
                        self.rooms.push(room);
                        self.rooms.len() - 1
                    }
                };
                self.room_ids.insert(name, id);
                id
            }
        };
        self.rooms[id].members.push(t);
        id
    }

    fn leave(&mut self, id: usize, t: Token) {
        let room = &mut self.rooms[id];
        if let Some(pos) = room.members.iter().position(|&m| m == t) {
            room.members.swap_remove(pos);
        }
        if room.members.is_empty() {
            self.room_ids.remove(&room.name);
            room.name = String::new();
            self.free_rooms.push(id);
        }
    }

    /// Sends one message to every open member of a room, the sender included. The
    /// frame is encoded once and shared. A recipient still holding more than the
    /// budget of unsent bytes after a write attempt is closed with 1008.
    fn broadcast(&mut self, id: usize, kind: MessageKind, data: &[u8], now: Instant) {
        let frame = handler::encode_shared_with(kind, data, &mut self.scratch);
        let members = std::mem::take(&mut self.rooms[id].members);
        let budget = self.config.max_backpressure;
        for &m in &members {
            let Some(c) = self.client_mut(m) else {
                continue;
            };
            if c.proto.output_len() > budget {
                self.flush(m);
                let Some(c) = self.client_mut(m) else {
                    continue;
                };
                if c.proto.output_len() > budget {
                    info!(
                        "{}: slow consumer ({} bytes unsent), closing",
                        c.id,
                        c.proto.output_len()
                    );
                    c.proto
                        .close_discarding(CloseCode::POLICY_VIOLATION, "slow consumer", now);
                    self.account(m);
                    self.mark_dirty(m);
                    continue;
                }
            }
            let Some(c) = self.client_mut(m) else {
                continue;
            };
            if c.proto.send_encoded(frame.clone()) {
                self.account(m);
                self.mark_dirty(m);
            }
        }
        self.rooms[id].members = members;
    }

    fn mark_dirty(&mut self, t: Token) {
        if let Some(c) = self.client_mut(t) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
        }
    }

    fn answer_http(&mut self, t: Token, method: &str, path: &str, now: Instant) {
        let page = self.config.page;
        let Some(c) = self.client_mut(t) else { return };
        let bare = path.split('?').next().unwrap_or("");
        if page && bare == "/" && (method == "GET" || method == "HEAD") {
            info!("{}: {method} {path}: 200 (page)", c.id);
            let mut response = http_response(
                200,
                "OK",
                "text/html; charset=utf-8",
                "Cache-Control: no-store\r\n",
                PAGE.as_bytes(),
            );
            if method == "HEAD" {
                response.truncate(response.len() - PAGE.len());
            }
            c.proto.respond(response, now);
        } else {
            info!("{}: {method} {path}: 426 (not a WebSocket upgrade)", c.id);
            c.proto.reject(HandshakeError::NotWebSocket, now);
        }
    }

    /// Writes queued output until empty or `WouldBlock`; resumes reading a
    /// connection paused by backpressure once its queue is back under budget.
    fn flush(&mut self, t: Token) {
        let budget = self.config.max_backpressure;
        let Some(c) = self.client_mut(t) else { return };
        loop {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = c.proto.fill_output(&mut slices);
                if n == 0 {
                    break;
                }
                c.stream.write_vectored(&slices[..n])
            };
            match written {
                Ok(0) => {
                    c.proto.abort();
                    return;
                }
                Ok(n) => c.proto.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("{}: write: {e}", c.id);
                    c.proto.abort();
                    return;
                }
            }
        }
        if c.read_paused && c.proto.output_len() <= budget {
            c.read_paused = false;
            if !c.read_pending {
                c.read_pending = true;
                self.ready.push(t);
            }
        }
    }

    /// After any input: write what is queued, apply the transport action, re-arm
    /// the timer.
    fn settle(&mut self, t: Token) {
        self.flush(t);
        self.account(t);
        let Some(c) = self.client_mut(t) else { return };
        match c.proto.poll_transport() {
            TransportAction::None => {}
            TransportAction::ShutdownWrite => {
                let _ = c.stream.shutdown(Shutdown::Write);
            }
            TransportAction::Close => return self.remove(t),
        }
        let Some(c) = self.client_mut(t) else { return };
        // A deadline that moved later (traffic pushing an idle timer back) keeps
        // its heap entry: when that fires, the core says nothing is due and the
        // entry is re-armed. Only an earlier deadline adds an entry, so the heap
        // does not grow with every message.
        let mut stale = 0;
        match (c.proto.poll_timeout(), c.scheduled) {
            (Some(d), s) if s.is_none_or(|s| d < s) => {
                if s.is_some() {
                    stale += 1; // superseded by the earlier one
                }
                c.scheduled = Some(d);
                self.timers.push(Reverse((d, t)));
            }
            (None, Some(_)) => {
                // No deadline any more (e.g. the handshake finished): the
                // entry is stale.
                c.scheduled = None;
                stale += 1;
            }
            _ => {}
        }
        self.stale_timers += stale;
        self.compact_timers();
    }

    /// Brings `self.memory` up to date with what the connection holds now.
    /// Called wherever a connection's buffers may have changed: after each
    /// read and its events, after a broadcast queued a frame on it, and in
    /// `settle` (after writes, timers and everything else).
    fn account(&mut self, t: Token) {
        let Some(c) = self.client_mut(t) else { return };
        let now = c.proto.memory();
        let before = std::mem::replace(&mut c.held, now);
        self.memory = self.memory - before + now;
    }

    /// The server-wide memory budget (`--max-memory`), checked before every
    /// read: while one more full read could take the total over it, the
    /// connection holding the most is closed and its buffers freed
    /// ([`Connection::shed`]). Logged once per episode.
    fn keep_memory_budget(&mut self, now: Instant) {
        let max = self.config.max_memory;
        if self.memory + READ_BUF <= max {
            if self.memory <= max / 4 * 3 {
                if let Some(closed) = self.budget_episode.take() {
                    info!(
                        "memory budget: back to {} bytes held; {closed} connections were closed",
                        self.memory
                    );
                }
            }
            return;
        }
        while self.memory + READ_BUF > max {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((s.client.as_ref()?.held, token(i, s.gen))))
                .max_by_key(|&(held, _)| held);
            let Some((held, v)) = victim.filter(|&(held, _)| held > 0) else {
                return;
            };
            if self.budget_episode.is_none() {
                warn!(
                    "memory budget: {} bytes held, over --max-memory {max} with the next read; \
                     closing the connections holding the most",
                    self.memory
                );
            }
            *self.budget_episode.get_or_insert(0) += 1;
            let Some(c) = self.client_mut(v) else { return };
            match c.proto.shed(now) {
                Some(code) => info!("{}: holds {held} bytes, closing with {}", c.id, code.0),
                None => info!("{}: holds {held} bytes while closing, dropped", c.id),
            }
            self.settle(v);
            if self.client_mut(v).is_some_and(|c| c.held >= held) {
                // Nothing could be freed without cutting a frame: drop it.
                if let Some(c) = self.client_mut(v) {
                    c.proto.abort();
                }
                self.settle(v);
            }
        }
    }

    /// Drops stale heap entries once they are most of the heap, and gives the
    /// memory back: every connection pushes a handshake deadline, and 10,000
    /// connections that opened and went idle would otherwise keep 24 bytes
    /// each in the heap until their handshake timeout passes.
    fn compact_timers(&mut self) {
        if self.stale_timers < 1024 || self.stale_timers * 2 < self.timers.len() {
            return;
        }
        let slots = &self.slots;
        self.timers.retain(|Reverse((when, t))| {
            let (index, gen) = split(*t);
            slots
                .get(index)
                .filter(|s| s.gen == gen)
                .and_then(|s| s.client.as_ref())
                .is_some_and(|c| c.scheduled == Some(*when))
        });
        self.timers.shrink_to_fit();
        self.stale_timers = 0;
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((when, t))) = self.timers.peek().copied() {
            if when > now {
                return;
            }
            self.timers.pop();
            let Some(c) = self.client_mut(t).filter(|c| c.scheduled == Some(when)) else {
                // Superseded, or the connection is gone.
                self.stale_timers = self.stale_timers.saturating_sub(1);
                continue;
            };
            c.scheduled = None;
            c.proto.handle_timeout(now);
            self.settle(t);
        }
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
            self.leave(id, t);
        }
        let code = |c: Option<CloseCode>| c.map_or("-".to_string(), |c| c.0.to_string());
        if !c.proto.was_opened() {
            debug!("{}: closed before upgrade", c.id);
        } else {
            match c.proto.error() {
                Some(e) => info!(
                    "{}: closed, sent {} ({e}), received {}",
                    c.id,
                    code(c.proto.close_sent()),
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

    fn begin_shutdown(&mut self, now: Instant) -> io::Result<()> {
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
                c.proto
                    .close(CloseCode::GOING_AWAY, "server shutting down", now);
            }
            self.settle(t);
        }
        Ok(())
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::PermissionDenied
    )
}

/// A server running on a background thread.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (close 1001 to every connection) and waits for its thread.
    pub fn stop(mut self) -> io::Result<()> {
        self.signal_stop();
        match self.thread.take().expect("joined once").join() {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("server thread panicked")),
        }
    }

    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.signal_stop();
            let _ = t.join();
        }
    }
}

/// Binds `config.listen` and runs the server on a new thread.
pub fn spawn(config: Config) -> io::Result<ServerHandle> {
    let listener = std::net::TcpListener::bind(config.listen)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("echocast".into())
        .spawn(move || {
            let mut server = match Server::from_std(listener, config) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = tx.send(Ok(server.stopper()));
            server.run()
        })?;
    let (stop, waker) = rx
        .recv()
        .map_err(|_| io::Error::other("server thread ended early"))??;
    Ok(ServerHandle {
        addr,
        stop,
        waker,
        thread: Some(thread),
    })
}
#[cfg(test)]
mod tests {
    /// Idle memory per connection is this slot plus a timer entry: keep it
    /// small (issue 5's target is 256 bytes of RSS per idle connection; see
    /// docs/benchmarks.md for the measured figure). In debug builds mio's
    /// `TcpStream` carries an 8-byte selector id besides the descriptor.
    #[test]
    fn connection_slot_stays_small() {
        let slot = std::mem::size_of::<super::Slot>();
        let bound = if cfg!(debug_assertions) { 232 } else { 216 };
        assert!(slot <= bound, "a connection slot grew to {slot} bytes");
    }
}
