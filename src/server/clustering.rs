//! The driver's side of `--cluster`: the two connections to Redis in the
//! loop's own `Poll` (never a blocking client), reconnecting with backoff
//! (100 ms doubling to 5 s; at once after Redis stopped answering, whose
//! timeout already spaced the attempts), dropping both when the core's
//! liveness check says Redis is not answering, the `POST`s waiting for
//! their id (each answered by its deadline, `--cluster-timeout`), the members
//! whose replay waits for their room to be caught up, and the delay from
//! an append to its delivery here. What is said to Redis and what its
//! replies mean is `crate::cluster` (sans-IO); the loop (rooms.rs) acts on
//! its events.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::cluster::{Cluster, Link, Url, Withdrawn};
use crate::rooms::RoomId;

pub(super) const COMMANDS: Token = Token(usize::MAX - 4);
pub(super) const SUBSCRIBER: Token = Token(usize::MAX - 5);

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A member whose replay waits for its room to be caught up.
pub(super) enum Waiting {
    /// An event-stream subscriber: resume after this id, or the last N.
    Events(Option<u64>, Option<usize>),
    /// A WebSocket member's `?history=N`.
    History(usize),
}

/// A `POST` waiting for its message's id.
pub(super) struct Post {
    pub token: Token,
    pub room: String,
    pub cors: String,
}

/// Why the link is down, as `/healthz` and `/stats` say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Down {
    /// Not connected yet, refused or closed.
    Connecting,
    /// Redis stopped answering (a reply overdue by `--cluster-timeout`).
    NotAnswering,
}

impl Down {
    /// As `/healthz` and `/stats` say it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Down::Connecting => "connecting",
            Down::NotAnswering => "not answering",
        }
    }

    /// What Redis is, as a log line or an answer says it.
    pub(super) fn what(self) -> &'static str {
        match self {
            Down::Connecting => "unreachable",
            Down::NotAnswering => "not answering",
        }
    }
}

/// The append being timed: its ticket and room, its id once Redis
/// answered, and when it was sent.
struct Probe {
    ticket: u64,
    room: String,
    id: Option<u64>,
    at: Instant,
}

struct Socket {
    stream: TcpStream,
    connected: bool,
    /// `rediss://`: the record layer between the socket and the core.
    tls: Option<rustls::ClientConnection>,
}

pub(super) struct Clustering {
    pub core: Cluster,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Plaintext out of TLS records.
    plain: Vec<u8>,
    links: [Option<Socket>; 2],
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Whether the last transition logged was "up".
    logged_up: Option<bool>,
    /// Why the link went down last.
    pub down: Down,
    pub posts: HashMap<u64, Post>,
    /// The `POST`s' deadlines, by ticket (in order: one timeout for all).
    post_deadlines: VecDeque<(Instant, u64)>,
    pub waiting: HashMap<String, Vec<(Token, RoomId, Waiting)>>,
    /// One of our appends being timed to its delivery here (one at a
    /// time: a sample, not every message).
    probe: Option<Probe>,
    /// The last and the largest delay from an append to its delivery here.
    pub delay_last: Duration,
    pub delay_max: Duration,
}

impl Clustering {
    pub(super) fn new(
        url: Url,
        history: usize,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Clustering {
        Clustering {
            core: Cluster::new(url, history, instance_id(), timeout),
            tls,
            plain: Vec::new(),
            links: [None, None],
            retry_at: Some(Instant::now()),
            backoff: FIRST_BACKOFF,
            logged_up: None,
            down: Down::Connecting,
            posts: HashMap::new(),
            post_deadlines: VecDeque::new(),
            waiting: HashMap::new(),
            probe: None,
            delay_last: Duration::ZERO,
            delay_max: Duration::ZERO,
        }
    }

    /// When the loop must wake up: to reconnect, to check that Redis
    /// answers, to answer a `POST` that waited long enough.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let post = self.post_deadlines.front().map(|d| d.0);
        [self.retry_at, self.core.next_tick(), post]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reconnects when it is time; drops both links when Redis stopped
    /// answering (and reconnects at once).
    pub(super) fn tick(&mut self, registry: &Registry, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if let Err(e) = self.connect(registry) {
                self.down(registry, &e, Down::Connecting, now);
            }
        }
        if let Err(why) = self.core.tick(now) {
            self.down(registry, &why, Down::NotAnswering, now);
        }
    }

    /// A `POST` waits for `ticket`'s id until `--cluster-timeout` from now.
    pub(super) fn wait_for(&mut self, ticket: u64, post: Post, now: Instant) {
        self.posts.insert(ticket, post);
        self.post_deadlines
            .push_back((now + self.core.timeout(), ticket));
    }

    /// The `POST`s whose deadline passed, still unanswered, taken, with
    /// their answer: 503 if the message was never sent to Redis (withdrawn:
    /// it never will be), 504 if it was (it may have been appended: a retry
    /// with the same `Idempotency-Key` is not appended twice).
    pub(super) fn overdue_posts(
        &mut self,
        now: Instant,
    ) -> Vec<(Post, (u16, &'static str), String)> {
        let ms = self.core.timeout().as_millis();
        let mut due = Vec::new();
        while let Some(&(at, ticket)) = self.post_deadlines.front() {
            if at > now {
                break;
            }
            self.post_deadlines.pop_front();
            let Some(post) = self.posts.remove(&ticket) else {
                continue;
            };
            due.push(match self.core.withdraw(ticket) {
                Withdrawn::Unsent => (
                    post,
                    (503, "Service Unavailable"),
                    format!(
                        "the cluster's Redis did not take the message within {ms} ms; \
                         nothing was published, try again"
                    ),
                ),
                Withdrawn::InFlight | Withdrawn::Answered => (
                    post,
                    (504, "Gateway Timeout"),
                    format!(
                        "the cluster's Redis did not answer within {ms} ms: not known whether \
                         it was appended; retry with the same Idempotency-Key"
                    ),
                ),
            });
        }
        due
    }

    fn connect(&mut self, registry: &Registry) -> Result<(), String> {
        self.core.connecting();
        let url = self.core.url();
        // `localhost` without the resolver (the static binary has no NSS);
        // a name is resolved here, on the loop (a reconnect, not a message).
        let host = if url.host == "localhost" {
            "127.0.0.1"
        } else {
            url.host.as_str()
        };
        let addr: SocketAddr = (host, url.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("{}: no address", url.host))?;
        let tls = match (&self.tls, url.tls) {
            (Some(config), true) => {
                let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                    .map_err(|e| format!("{}: {e}", url.host))?;
                Some((config.clone(), name))
            }
            _ => None,
        };
        for (i, token) in [COMMANDS, SUBSCRIBER].into_iter().enumerate() {
            let tls = match &tls {
                Some((config, name)) => Some(
                    rustls::ClientConnection::new(config.clone(), name.clone())
                        .map_err(|e| format!("TLS: {e}"))?,
                ),
                None => None,
            };
            let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
            registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            self.links[i] = Some(Socket {
                stream,
                connected: false,
                tls,
            });
        }
        Ok(())
    }

    /// A connection failed (or Redis stopped answering): both are dropped,
    /// and retried after the backoff (at once after `NotAnswering`: the
    /// timeout already spaced the attempts, and Redis may be back now).
    fn down(&mut self, registry: &Registry, why: &str, down: Down, now: Instant) {
        for s in self.links.iter_mut().filter_map(Option::take) {
            let mut stream = s.stream;
            let _ = registry.deregister(&mut stream);
            if down == Down::NotAnswering {
                // A reset, not a FIN: what Redis has not acknowledged is
                // discarded at once instead of retransmitted for minutes
                // across a partition, where it could reach Redis after the
                // appends resent on the next connection (and after Redis
                // forgot their tickets). What Redis already holds (a stopped
                // process's buffer) it reads before any reconnect's hello.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
        }
        self.core.disconnected();
        if self.logged_up != Some(false) {
            let url = self.core.url();
            let retry = match down {
                Down::Connecting => format!(
                    "retrying every {} ms up to {} s",
                    FIRST_BACKOFF.as_millis(),
                    MAX_BACKOFF.as_secs()
                ),
                Down::NotAnswering => format!(
                    "reconnecting, each attempt given {} ms to answer",
                    self.core.timeout().as_millis()
                ),
            };
            warn!(
                "cluster: redis://{}:{} {} ({why}); {retry}, POSTs answered 503, \
                 members' messages held",
                url.host,
                url.port,
                down.what()
            );
            self.logged_up = Some(false);
        }
        self.down = down;
        if down == Down::NotAnswering {
            self.retry_at = Some(now);
        } else {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The core said both links are up.
    pub(super) fn came_up(&mut self) {
        self.backoff = FIRST_BACKOFF;
        if self.logged_up != Some(true) {
            let url = self.core.url();
            info!(
                "cluster: connected to redis://{}:{}/{}",
                url.host, url.port, url.db
            );
            self.logged_up = Some(true);
        }
    }

    /// An event on one of the two sockets: completes the connect, reads
    /// what came (into the core), writes what waits.
    pub(super) fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        buf: &mut [u8],
        now: Instant,
    ) {
        let (i, link) = if token == COMMANDS {
            (0, Link::Commands)
        } else {
            (1, Link::Subscriber)
        };
        if let Err(e) = self.service(i, link, buf) {
            self.down(registry, &e, Down::Connecting, now);
            return;
        }
        self.flush(registry, now);
    }

    fn service(&mut self, i: usize, link: Link, buf: &mut [u8]) -> Result<(), String> {
        let Some(s) = self.links[i].as_mut() else {
            return Ok(());
        };
        if !s.connected {
            if let Some(e) = s.stream.take_error().map_err(|e| e.to_string())? {
                return Err(e.to_string());
            }
            match s.stream.peer_addr() {
                Ok(_) => s.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
            self.core.connected(link);
        }
        let Some(s) = self.links[i].as_mut() else {
            return Ok(());
        };
        loop {
            match s.stream.read(buf) {
                Ok(0) => return Err("Redis closed the connection".into()),
                Ok(n) => match s.tls.as_mut() {
                    None => self.core.receive(link, &buf[..n])?,
                    Some(tls) => {
                        let mut cipher = &buf[..n];
                        while !cipher.is_empty() {
                            tls.read_tls(&mut cipher).map_err(|e| format!("TLS: {e}"))?;
                            tls.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
                            self.plain.clear();
                            match tls.reader().read_to_end(&mut self.plain) {
                                Ok(_) => return Err("Redis ended the TLS session".into()),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(e) => return Err(format!("TLS: {e}")),
                            }
                            self.core.receive(link, &self.plain)?;
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Writes what the core has for each connected link.
    pub(super) fn flush(&mut self, registry: &Registry, now: Instant) {
        for (i, link) in [(0, Link::Commands), (1, Link::Subscriber)] {
            while let Some(s) = self.links[i].as_mut().filter(|s| s.connected) {
                if let Some(tls) = s.tls.as_mut() {
                    // Plaintext into rustls (buffered until the handshake is
                    // done), then its records out.
                    let out = self.core.output(link);
                    let n = out.len();
                    if n > 0 {
                        if let Err(e) = tls.writer().write_all(out) {
                            return self.down(
                                registry,
                                &format!("TLS: {e}"),
                                Down::Connecting,
                                now,
                            );
                        }
                        self.core.consume(link, n);
                    }
                    if !tls.wants_write() {
                        break;
                    }
                    match tls.write_tls(&mut s.stream) {
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return self.down(registry, &e.to_string(), Down::Connecting, now)
                        }
                    }
                }
                let out = self.core.output(link);
                if out.is_empty() {
                    break;
                }
                match s.stream.write(out) {
                    Ok(0) => return self.down(registry, "write returned 0", Down::Connecting, now),
                    Ok(n) => self.core.consume(link, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.down(registry, &e.to_string(), Down::Connecting, now),
                }
            }
        }
    }

    /// A local append's ticket: timed to its delivery if no other is (or
    /// the one timed is lost: never delivered here within 10 s).
    pub(super) fn sent(&mut self, ticket: u64, room: &str, now: Instant) {
        let free = self
            .probe
            .as_ref()
            .is_none_or(|p| now.saturating_duration_since(p.at) > Duration::from_secs(10));
        // Only a room watched here gets its messages back.
        if free && self.core.is_live(room) {
            self.probe = Some(Probe {
                ticket,
                room: room.to_owned(),
                id: None,
                at: now,
            });
        }
    }

    /// The append with `ticket` got `id`.
    pub(super) fn appended(&mut self, ticket: u64, id: u64) {
        if let Some(p) = self.probe.as_mut().filter(|p| p.ticket == ticket) {
            p.id = Some(id);
        }
    }

    /// `room`'s message `id` was delivered here.
    pub(super) fn delivered(&mut self, room: &str, id: u64, now: Instant) {
        let Some(p) = &self.probe else {
            return;
        };
        if p.id == Some(id) && p.room == room {
            self.delay_last = now.saturating_duration_since(p.at);
            self.delay_max = self.delay_max.max(self.delay_last);
            self.probe = None;
        }
    }
}

/// A string unique to this process: pid, start time and address mixed.
fn instance_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}.{:x}", std::process::id(), t)
}
