//! The mio driver: one thread, one `Poll`. It moves bytes between sockets and the
//! sans-IO [`Connection`](crate::proto::Connection)s, runs their timers, and hands complete messages to the
//! handler and the rooms. It makes no protocol decision of its own.
//!
//! Contract with the core, per connection and per readiness event:
//! 1. read until `WouldBlock` (or a per-turn budget, after which the connection
//!    is put on the ready list and served again next turn), feeding every read
//!    to [`Connection::receive`](crate::proto::Connection::receive) and draining [`Connection::poll_event`](crate::proto::Connection::poll_event) after it;
//! 2. write the queued output with vectored writes until it is empty or
//!    `WouldBlock` (then WRITABLE brings us back);
//! 3. obey [`Connection::poll_transport`](crate::proto::Connection::poll_transport) (shut down the write half, or drop);
//! 4. re-arm the timer with [`Connection::poll_timeout`](crate::proto::Connection::poll_timeout).
//!
//! `Server` holds the components and this file holds the loop that
//! coordinates them (`run`: events, the ready list, timers, the sweep, the
//! inspector's tap, the dirty list, the memory budget), removal and
//! shutdown. Each component owns its state behind a small API and knows
//! nothing of the others: `conns.rs` (the connection table), `timers.rs`,
//! `admission.rs` (`--max-connections`, running out of descriptors),
//! `budget.rs` (`--max-memory`), `stats.rs`, `transport.rs` (TLS),
//! `handle.rs` (stopping, embedding), and outside the driver `crate::rooms`
//! (sans-IO rooms) and `crate::inspector`. The loop's other files are the
//! paths through it: `io.rs` (accept, read, write, settle), `http.rs` (what
//! a request becomes), `rooms.rs` (rooms over WebSocket and HTTP: delivery,
//! publish, subscribe) and `inspecting.rs` (the inspector fed and asked).

mod admission;
mod budget;
mod clustering;
mod conns;
mod handle;
mod http;
mod http2;
mod inspecting;
mod io;
mod metrics;
mod proxying;
mod recording;
mod room_http;
mod rooms;
mod stats;
mod streams;
mod stubbing;
mod timers;
mod transport;

pub use crate::config::DEFAULT_INSPECT_FRAMES;
pub use handle::{spawn, ServerHandle};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{Config, InspectMode};
use crate::inspector::Inspector;
use crate::proto::deflate::SharedCodec;
use crate::proto::Limits;
use crate::rooms::{Rooms, Run, Settings, HISTORY_BYTES};

/// The page served on a plain `GET /` (see `--no-page`).
pub const PAGE: &str = include_str!("../page.html");

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// Size of the one read buffer the whole loop shares.
const READ_BUF: usize = 256 * 1024;

/// The loop's buffers, shared by every connection in turn.
struct Buffers {
    read: Vec<u8>,
    /// Room messages gathered to be delivered as one (rooms.rs: a read's
    /// messages to its room, or a batch from the cluster); empty between
    /// them.
    run: Run<Token>,
}

/// The event loop. Build it with [`Server::bind`] (or [`Server::from_std`]) and
/// call [`Server::run`]; or use [`spawn`] to run it on a background thread.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    config: Config,
    /// One copy of the limits, shared by every connection.
    limits: Rc<Limits>,
    /// The loop-wide permessage-deflate compressors and inflater pool.
    deflate_codec: Rc<SharedCodec>,
    bufs: Buffers,
    control: handle::Control,
    conns: conns::Connections,
    timers: timers::Timers,
    admission: admission::Admission,
    budget: budget::Budget,
    stats: stats::Stats,
    rooms: Rooms<Token>,
    /// `POST`s to rooms whose body is being read (rooms.rs), and the
    /// cluster's link to Redis (`--cluster`).
    publishing: room_http::Publishing,
    /// The frame inspector (`None` with `--inspect off`, or `local` off
    /// loopback).
    inspector: Option<Inspector>,
    /// Stub sessions on echo paths (`--stubs`).
    stubbing: stubbing::Stubbing,
    /// Proxied pairs (`--proxy`).
    proxying: proxying::Proxying,
    /// HTTP/2 connections' streams.
    http2: http2::Http2,
    /// Their conversations, with `--record`.
    recording: Option<recording::Recording>,
}

impl Server {
    /// Binds `config.listen`.
    pub fn bind(config: Config) -> std::io::Result<Server> {
        let listener = if config.reuse_port {
            // SO_REUSEPORT before bind: several processes on one port.
            use socket2::{Domain, Socket, Type};
            let socket = Socket::new(Domain::for_address(config.listen), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&config.listen.into())?;
            socket.listen(1024)?;
            socket.into()
        } else {
            std::net::TcpListener::bind(config.listen)?
        };
        Server::from_std(listener, config)
    }

    /// Serves on an already bound listener.
    pub fn from_std(listener: std::net::TcpListener, config: Config) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let control = handle::Control::new(poll.registry(), WAKER)?;
        let inspecting = match config.inspect {
            InspectMode::On => true,
            InspectMode::Off => false,
            InspectMode::Local => listener.local_addr()?.ip().is_loopback(),
        };
        let stubbing = stubbing::Stubbing::new(
            config.stubs.clone(),
            config.limits.max_message_size,
            config.stubs_speed,
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut limits = config.limits.clone();
        // Stubs match on the upgrade request's headers; the proxy passes
        // them on.
        limits.keep_heads = config.stubs.is_some() || inspecting || !config.proxy.is_empty();
        limits.tap.set_on(inspecting);
        limits.tap.set_preview(config.inspect_preview);
        let inspector = inspecting.then(|| {
            let local = config.inspect == InspectMode::Local;
            // The ring's content may take a quarter of the memory budget.
            let max_bytes = config.max_memory / 4;
            Inspector::new(
                config.inspect_frames,
                max_bytes,
                config.inspect_secrets,
                local,
            )
        });
        if config.proxy.has_tls() && config.proxy_tls.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a wss:// --proxy route needs Config::proxy_tls (echocast::tls::proxy_client_config)",
            ));
        }
        let mut config = config;
        if let Some(tls) = config.tls.as_mut() {
            crate::tls::offer_http2(tls, config.http2.is_some());
        }
        let now = Instant::now();
        let cluster = match config.cluster.clone() {
            Some(url) if url.tls && config.cluster_tls.is_none() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "rediss:// needs Config::cluster_tls (echocast::tls::client_config)",
                ))
            }
            Some(_) if config.cluster_timeout >= config.limits.handshake_timeout => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "cluster_timeout must be shorter than limits.handshake_timeout",
                ))
            }
            Some(url) => Some(clustering::Clustering::new(
                url,
                config.room_history,
                config.cluster_tls.clone(),
                config.cluster_timeout,
            )),
            None => None,
        };
        Ok(Server {
            rooms: Rooms::new(Settings {
                history: config.room_history,
                history_bytes: HISTORY_BYTES,
                linger: config.room_linger,
            }),
            admission: admission::Admission::new(config.max_connections),
            budget: budget::Budget::new(config.max_memory, READ_BUF),
            inspector,
            stubbing,
            recording: config.record.clone().map(recording::Recording::new),
            http2: http2::Http2::default(),
            proxying: proxying::Proxying::new(
                config.proxy.clone(),
                config.proxy_headers.clone(),
                config.proxy_tls.clone(),
            ),
            publishing: room_http::Publishing {
                reading: HashMap::new(),
                keys: crate::rooms::keys::Keys::new(
                    crate::cluster::KEY_WINDOW,
                    crate::cluster::KEY_COUNT,
                ),
                cluster,
            },
            limits: Rc::new(limits),
            poll,
            listener,
            config,
            conns: conns::Connections::default(),
            timers: timers::Timers::new(now),
            deflate_codec: Rc::default(),
            bufs: Buffers {
                read: vec![0; READ_BUF],
                run: Run::default(),
            },
            control,
            stats: stats::Stats::new(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A flag and a waker that stop [`Server::run`] from another thread.
    pub fn stopper(&self) -> (Arc<AtomicBool>, Arc<Waker>) {
        self.control.stopper()
    }

    /// Makes SIGINT and SIGTERM stop the server gracefully (as
    /// [`ServerHandle::stop`] does); a second signal makes [`Server::run`] return
    /// an `Interrupted` error at once. For the command line, not for embedding.
    pub fn handle_signals(&mut self) -> std::io::Result<()> {
        self.control.handle_signals(self.poll.registry(), SIGNALS)
    }

    /// Runs until stopped. On stop, every open connection is sent close 1001 and
    /// given the close timeout to answer before the loop returns.
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut stopping: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if self.admission.resume_due(now) {
                self.accept(now);
            }
            if stopping.is_none() && self.control.stop_requested() {
                stopping = Some(now + self.config.limits.close_timeout);
                self.begin_shutdown(now)?;
            }
            if let Some(deadline) = stopping {
                if self.conns.len() == 0 || now >= deadline {
                    info!("stopped ({} connections dropped)", self.conns.len());
                    return Ok(());
                }
            }
            let timeout = if self.conns.has_ready() {
                Some(Duration::ZERO)
            } else {
                let busy = self.conns.len() > 0 || self.rooms.count() > 0;
                let sweep = busy.then_some(self.timers.next_sweep());
                let pause = self.admission.paused_until();
                let cluster = self.publishing.cluster.as_ref().and_then(|c| c.deadline());
                [self.timers.next(), stopping, pause, sweep, cluster]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|t| t.saturating_duration_since(now))
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
                    clustering::COMMANDS | clustering::SUBSCRIBER => {
                        if let Some(cl) = self.publishing.cluster.as_mut() {
                            let registry = self.poll.registry();
                            cl.ready(registry, event.token(), &mut self.bufs.read, now);
                        }
                        self.cluster_turn(now);
                    }
                    SIGNALS => {
                        let count = self.control.pending_signals();
                        if count > 0 && stopping.is_some() || count > 1 {
                            warn!("second signal: exiting at once");
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::Interrupted,
                                "second signal",
                            ));
                        }
                        if count > 0 {
                            info!("signal received: shutting down (again to exit at once)");
                            self.control.request_stop();
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
            for t in self.conns.take_ready() {
                if self.conns.unpend(t) {
                    self.read(t, now, true);
                    self.settle(t);
                }
            }
            self.run_timers(now);
            self.sweep(now);
            self.cluster_turn(now);
            // Records of this turn go to the ring and to live inspectors
            // (whose output is then written with the other dirty connections).
            self.drain_tap(now);
            debug_assert!(
                self.bufs.run.is_empty(),
                "a run is delivered where it is gathered"
            );
            // Writing one connection can make another dirty (an HTTP/2
            // stream's output goes into its connection's session): again
            // until none is, a few rounds at most.
            for _ in 0..4 {
                let dirty = self.conns.take_dirty();
                if dirty.is_empty() {
                    break;
                }
                for t in dirty {
                    if self.conns.clean(t) {
                        self.settle(t);
                    }
                }
            }
            // Output that grew without a read (a `push`, held echoes going
            // out) is weighed too.
            self.keep_memory_budget(now);
            #[cfg(debug_assertions)]
            self.check_accounting();
        }
    }

    /// The connections whose deadline came: the core handles it, then the
    /// connection is settled (and its next deadline armed).
    fn run_timers(&mut self, now: Instant) {
        while let Some((when, t)) = self.timers.pop_due(now) {
            let Some(c) = self.conns.get_mut(t).filter(|c| c.scheduled == Some(when)) else {
                // Superseded, or the connection is gone.
                self.timers.stale_popped();
                continue;
            };
            c.scheduled = None;
            match c.io.h2_mut() {
                Some(h2) => h2.handle_timeout(now),
                None => c.proto.handle_timeout(now),
            }
            let due = self.stubbing.timer(t, now);
            if !due.is_empty() {
                self.apply_stub(t, due, None, now);
            }
            self.settle(t);
        }
    }

    /// Puts the connection's next deadline on the timer heap.
    fn arm_timer(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let own = match c.io.h2() {
            Some(h2) => h2.poll_timeout(),
            None => c.proto.poll_timeout(),
        };
        let deadline = match (own, self.stubbing.next_due(t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.timers.arm(t, &mut c.scheduled, deadline) {
            let conns = &self.conns;
            self.timers
                .compact(|t, when| conns.get(t).is_some_and(|c| c.scheduled == Some(when)));
        }
    }

    /// Once a second: lingering rooms expire, and every connection that
    /// neither received nor queued anything since the previous sweep frees
    /// the buffers it keeps for reuse (a walk over the table: some tens of
    /// microseconds a second at 10,000 connections, nothing per message).
    fn sweep(&mut self, now: Instant) {
        if !self.timers.sweep_due(now) {
            return;
        }
        self.rooms.expire(now);
        self.publishing.keys.expire(now);
        if let Some(cl) = self.publishing.cluster.as_mut() {
            let rooms = &self.rooms;
            cl.core.unwatch_unless(|name| rooms.find(name).is_some());
        }
        self.stubbing.reload_if_changed();
        for (_, c) in self.conns.iter_mut() {
            if c.proto.release_if_quiet() {
                let held = c.memory();
                self.budget.account(&mut c.held, held);
            }
        }
    }

    /// Brings the budget up to date with what the connection holds now.
    /// Called wherever a connection's buffers may have changed: after each
    /// read and its events, after a broadcast queued a frame on it, and in
    /// `settle` (after writes, timers and everything else).
    fn account(&mut self, t: Token) {
        if let Some(c) = self.conns.get_mut(t) {
            let held = c.memory();
            self.budget.account(&mut c.held, held);
        }
    }

    /// What the budget holds beside the connections: the inspector's ring,
    /// room history, and (`--cluster`) messages waiting for Redis.
    fn fixed_memory(&self) -> usize {
        let ring = self.inspector.as_ref().map_or(0, |i| i.memory());
        let held = self
            .publishing
            .cluster
            .as_ref()
            .map_or(0, |c| c.core.held_bytes());
        ring + self.rooms.history_bytes() + held + self.publishing.keys.bytes()
    }

    /// The memory budget (`--max-memory`), checked before every read and at
    /// the end of every loop turn. The inspector's ring takes its share
    /// first; room history is counted and is the first thing given up (the
    /// oldest, across rooms); then, while one more full read could take the
    /// total over, the connection holding the most is closed and its buffers
    /// freed ([`Connection::shed`](crate::proto::Connection::shed)).
    fn keep_memory_budget(&mut self, now: Instant) {
        let ring = self.inspector.as_ref().map_or(0, |i| i.memory());
        let over = self.budget.history_over(ring, self.rooms.history_bytes());
        if over > 0 {
            let freed = self.rooms.shed(over);
            info!("memory budget: dropped {freed} bytes of room history (oldest first)");
        }
        let mut fixed = self.fixed_memory();
        if let Some(process) = self.config.process {
            fixed += self.budget.unaccounted(fixed, now, process.purge);
        }
        if self.budget.fits(fixed) {
            self.budget.calm(fixed);
            return;
        }
        while !self.budget.fits(fixed) {
            let holders = self.conns.iter().map(|(t, c)| (c.held, t));
            let Some((held, v)) = self.budget.victim(fixed, holders) else {
                return;
            };
            let Some(c) = self.conns.get_mut(v) else {
                return;
            };
            let stream = c.proto.is_event_stream();
            match c.proto.shed(now) {
                None if stream => info!(
                    "{}: event stream holds {held} bytes, ended with event: error (memory budget)",
                    c.id()
                ),
                Some(code) => info!("{}: holds {held} bytes, closing with {}", c.id(), code.0),
                None => info!("{}: holds {held} bytes while closing, dropped", c.id()),
            }
            self.settle(v);
            if self.conns.get(v).is_some_and(|c| c.held >= held) {
                // Nothing could be freed without cutting a frame: drop it.
                if let Some(c) = self.conns.get_mut(v) {
                    c.proto.abort();
                }
                self.settle(v);
            }
        }
    }

    /// Debug builds (every test against the binary): at the end of each loop
    /// turn, every connection's holdings are accounted and the total is their
    /// sum, so a path that changes a connection's buffers without `account`
    /// cannot go unnoticed.
    #[cfg(debug_assertions)]
    fn check_accounting(&self) {
        let mut sum = 0;
        for (_, c) in self.conns.iter() {
            assert_eq!(c.held, c.memory(), "{}: memory not accounted", c.id());
            sum += c.held;
        }
        assert_eq!(sum, self.budget.total(), "memory total out of step");
    }

    /// Takes a connection out of every component that knows it.
    fn remove(&mut self, t: Token) {
        let Some(mut c) = self.conns.remove(t) else {
            return;
        };
        if let Some(rec) = self.recording.as_mut() {
            rec.ended(t);
        }
        // The other leg of a proxied pair hears of it at once.
        if let Some(peer) = self
            .proxying
            .removed(&mut self.conns, t, &mut c, Instant::now())
        {
            self.settle(peer);
        }
        // No `deregister`: closing the socket (dropping `c`) removes it from
        // epoll/kqueue, and its token's generation is already retired.
        self.timers.forget(c.scheduled);
        self.budget.release(c.held);
        if c.admitted {
            self.admission.release();
        }
        if let Some(room) = c.room() {
            let cluster_room = self
                .publishing
                .cluster
                .is_some()
                .then(|| self.rooms.name(room).to_owned());
            self.rooms.leave(room, t, Instant::now());
            // Forgotten at once (no linger): the cluster stops following it
            // too, so a member coming back restores it from Redis.
            if let (Some(cl), Some(name)) = (self.publishing.cluster.as_mut(), cluster_room) {
                if self.rooms.find(&name).is_none() {
                    cl.core.unwatch(&name);
                }
            }
        }
        if !self.publishing.reading.is_empty() {
            self.publishing.reading.remove(&t);
        }
        self.stubbing.remove(t);
        if let Some(ins) = self.inspector.as_mut().filter(|i| !i.pending.is_empty()) {
            ins.pending.remove(&t.0);
        }
        self.inspect_closed(t, &c);
        if c.io.h2().is_some() {
            return self.h2_connection_removed(t, &c);
        }
        if let Some(link) = c.io.link() {
            self.http2.removed(&mut self.conns, link);
        }
        self.stats.count_ended(&c.proto);
        c.log_closed();
    }
}
