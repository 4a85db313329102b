//! The frame inspector (docs/inspector.md), one component fed by the loop:
//! the bounded ring of records — the core's (drained from `Limits::tap` once
//! per loop turn and stamped with the turn's time) and the driver's own
//! (open, http, closed, broadcast) —, what is kept per connection while the
//! inspector is on, the live subscribers of `/.inspect` (which record goes
//! to whom, and what a slow one missed), the `echocast::frames` log, the
//! JSON of `/connections`, `/connections/ID` and `/frames`, and the access
//! rules of its endpoints (endpoints.rs). The loop delivers what it says to
//! the connections (server/inspecting.rs); nothing here touches a socket.

pub mod actions;
pub mod endpoints;
mod json;

pub(crate) use json::{request_json, rfc3339_micros};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::proto::inspect::{Dir, FrameInfo, MessageInfo, Record, What};

/// A live inspector with more than this unsent loses records (and is told
/// how many once it catches up) instead of slowing anyone down.
pub(crate) const SUBSCRIBER_BACKLOG: usize = 256 * 1024;

/// What is kept per connection while the inspector is on.
pub(crate) struct ConnInfo {
    pub(crate) path: Box<str>,
    pub(crate) subprotocol: Option<Box<str>>,
    /// The upgrade request head as received.
    pub(crate) head: Option<Box<[u8]>>,
    pub(crate) opened_us: u64,
    pub(crate) messages_in: u64,
    pub(crate) bytes_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_out: u64,
    /// Raw frames were sent to it (`POST /connections/ID/frames`).
    pub(crate) tainted: bool,
}

/// Connection ids are small distinct integers: a multiply spreads them,
/// with none of SipHash's cost on a lookup per record.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHash;

pub(crate) struct IdHasher(u64);

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A ring entry's content.
pub(crate) enum Body {
    Frame(FrameInfo),
    /// A complete message; a broadcast's once, with its room and how many
    /// members it went to.
    Message {
        info: MessageInfo,
        /// Boxed: most message records have none, and every record is
        /// moved a few times on its way into the ring.
        room: Option<Box<(Box<str>, usize)>>,
    },
    /// A broadcast, recorded once per message: its frame and the room
    /// (boxed: the largest variant would make every record larger).
    Broadcast(Box<Broadcast>),
    Open {
        peer: Option<SocketAddr>,
        path: Box<str>,
    },
    Http {
        status: u16,
        why: Box<str>,
    },
    Error {
        close_code: u16,
        rule: &'static str,
    },
    Closed {
        sent: Option<u16>,
        received: Option<u16>,
        not_delivered: Option<u16>,
    },
    Knob(Box<str>),
    /// The inspector acted on the connection (`POST /connections/ID/...`).
    Action(Box<str>),
}

impl Body {
    /// How many records this entry stands for: two for a message with its
    /// frame folded in.
    fn records(&self) -> usize {
        1 + usize::from(matches!(self, Body::Message { info, .. } if info.folded))
    }
}

pub(crate) struct Broadcast {
    pub(crate) frame: FrameInfo,
    pub(crate) room: Box<str>,
    pub(crate) members: usize,
}

pub(crate) struct Entry {
    seq: u64,
    at_us: u64,
    pub(crate) conn: u32,
    /// Its heap bytes (counted once, when it is pushed).
    bytes: u32,
    pub(crate) body: Body,
}

/// A live subscriber's filter (`/.inspect?conn=ID` or `?path=PREFIX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    All,
    Conn(u32),
    Path(String),
}

/// What a record is: a watcher may want only frames or only messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Frame,
    Message,
    /// `open`, `http`, `error`, `knob`, `action`, `closed`.
    Event,
}

/// `?only=messages` / `?only=frames` (or every record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Only {
    Everything,
    Messages,
    Frames,
}

impl Only {
    pub(crate) fn passes(self, part: Part) -> bool {
        match self {
            Only::Everything => true,
            Only::Messages => part == Part::Message,
            Only::Frames => part == Part::Frame,
        }
    }
}

/// One live subscriber (a WebSocket connection on `/.inspect`), known by
/// its connection's key in the loop: every inspector's connection has the
/// same id (`u32::MAX`, so its own frames stay out of the ring), never a
/// way to tell two apart.
pub(crate) struct Subscriber {
    /// The loop's key for its connection.
    pub(crate) key: usize,
    pub(crate) filter: Filter,
    pub(crate) only: Only,
    /// Records it wanted and was not sent because it read too slowly, to
    /// report before the next one it is sent.
    pub(crate) dropped: u64,
}

pub(crate) struct Inspector {
    ring: VecDeque<Entry>,
    cap: usize,
    /// Content bytes the ring may hold (a share of `--max-memory`).
    max_bytes: usize,
    next_seq: u64,
    /// Heap bytes of the ring (counted against `--max-memory`).
    bytes: usize,
    /// Records that left the ring (the oldest, once it was full).
    pub(crate) evicted: u64,
    /// Records in the ring (an entry holds two when a message's frame is
    /// folded into it).
    records: usize,
    /// Per open connection (by id).
    pub(crate) infos: HashMap<u32, Box<ConnInfo>, IdHash>,
    pub(crate) subscribers: Vec<Subscriber>,
    /// Actions whose request body is being read, by the requester's key.
    pub(crate) pending: HashMap<usize, actions::Pending>,
    pub(crate) secrets: bool,
    /// `--inspect local`: only requests whose `Host` is a loopback address.
    pub(crate) local_only: bool,
    /// The other half of the tap's double buffer.
    tap_buf: Vec<Record>,
    clock: (Instant, SystemTime),
    /// The last `micros` answer: every record of a loop turn has the same.
    last_micros: std::cell::Cell<Option<(Instant, u64)>>,
}

impl Inspector {
    /// A ring of at most `cap` records and `max_bytes` of their content.
    pub(crate) fn new(cap: usize, max_bytes: usize, secrets: bool, local_only: bool) -> Inspector {
        Inspector {
            ring: VecDeque::new(),
            cap: cap.max(1),
            max_bytes,
            next_seq: 1,
            bytes: 0,
            evicted: 0,
            records: 0,
            infos: HashMap::default(),
            subscribers: Vec::new(),
            pending: HashMap::new(),
            secrets,
            local_only,
            tap_buf: Vec::new(),
            clock: (Instant::now(), SystemTime::now()),
            last_micros: std::cell::Cell::new(None),
        }
    }

    /// Microseconds since the Unix epoch at `now` (the loop's clock).
    pub(crate) fn micros(&self, now: Instant) -> u64 {
        if let Some((_, us)) = self.last_micros.get().filter(|(at, _)| *at == now) {
            return us;
        }
        let t = self.clock.1 + now.saturating_duration_since(self.clock.0);
        let us = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last_micros.set(Some((now, us)));
        us
    }

    pub(crate) fn memory(&self) -> usize {
        self.bytes + self.ring.capacity() * std::mem::size_of::<Entry>()
    }

    /// Records in the ring.
    pub(crate) fn len(&self) -> usize {
        self.records
    }

    /// The core's records of this turn (the tap's double buffer swapped):
    /// hand the vector back with [`Inspector::return_records`].
    pub(crate) fn take_records(&mut self, tap: &crate::proto::inspect::Tap) -> Vec<Record> {
        let mut records = std::mem::take(&mut self.tap_buf);
        tap.swap_into(&mut records);
        records
    }

    pub(crate) fn return_records(&mut self, mut records: Vec<Record>) {
        records.clear();
        self.tap_buf = records;
    }

    /// The newest entry's records as JSON, each with what it is, and the
    /// keys of the live subscribers whose filter passes the entry, each
    /// with which of its records it wants (`None`: nobody wants any).
    #[allow(clippy::type_complexity)]
    pub(crate) fn live(&self) -> Option<(Vec<(String, Part)>, Vec<(usize, Only)>)> {
        let entry = self.last().filter(|_| !self.subscribers.is_empty())?;
        let parts = json::parts(entry);
        let keys: Vec<(usize, Only)> = self
            .subscribers
            .iter()
            .filter(|s| parts.iter().any(|&p| s.only.passes(p)) && self.matches(&s.filter, entry))
            .map(|s| (s.key, s.only))
            .collect();
        (!keys.is_empty()).then(|| (self.json(entry), keys))
    }

    /// Whether a record goes to the live subscriber `key`: not while it is
    /// `behind` (the record is counted as dropped); once it caught up,
    /// `Some(n)`: it first learns it missed `n`.
    pub(crate) fn deliver_to(&mut self, key: usize, behind: bool) -> Option<u64> {
        let sub = self.subscribers.iter_mut().find(|s| s.key == key)?;
        if behind {
            sub.dropped += 1;
            return None;
        }
        Some(std::mem::take(&mut sub.dropped))
    }

    /// The connection with id `conn` and key `key` ended: what was kept of
    /// it goes. Returns whether it was a live subscriber (whose end is not
    /// recorded).
    pub(crate) fn ended(&mut self, conn: u32, key: usize) -> bool {
        self.infos.remove(&conn);
        match self.subscribers.iter().position(|s| s.key == key) {
            Some(pos) => {
                self.subscribers.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// Adds a record: counts it into its connection, keeps it in the ring
    /// (dropping the oldest past the bound), logs it.
    pub(crate) fn push(&mut self, conn: u32, body: Body, now: Instant) {
        let at_us = self.micros(now);
        self.push_at(conn, body, at_us);
    }

    /// [`Inspector::push`] at a time already converted (one conversion for
    /// the records of a loop turn).
    pub(crate) fn push_at(&mut self, conn: u32, body: Body, at_us: u64) {
        // A connection's own messages (not a room's broadcast) are counted
        // with the payload bytes their frames had on the wire.
        if let Body::Message {
            info: m,
            room: None,
        } = &body
        {
            if let Some(info) = self.infos.get_mut(&conn) {
                let (messages, bytes) = match m.dir {
                    Dir::In => (&mut info.messages_in, &mut info.bytes_in),
                    Dir::Out => (&mut info.messages_out, &mut info.bytes_out),
                };
                *bytes += m.wire_len;
                *messages += 1;
            }
        }
        let records = body.records();
        let entry = Entry {
            seq: self.next_seq,
            at_us,
            conn,
            bytes: body_bytes(&body) as u32,
            body,
        };
        self.next_seq += records as u64;
        self.records += records;
        if log::log_enabled!(target: "echocast::frames", log::Level::Debug) {
            for (line, _) in self.json(&entry) {
                log::debug!(target: "echocast::frames", "{line}");
            }
        }
        self.bytes += entry.bytes as usize;
        self.ring.push_back(entry);
        // The oldest go past the count, or past the bytes the ring may
        // hold (message content is what makes records large).
        // The newest entry always stays.
        while (self.records > self.cap || self.bytes > self.max_bytes) && self.ring.len() > 1 {
            if let Some(old) = self.ring.pop_front() {
                let n = old.body.records();
                self.bytes -= old.bytes as usize;
                self.records -= n;
                self.evicted += n as u64;
            }
        }
    }

    /// The newest entry.
    pub(crate) fn last(&self) -> Option<&Entry> {
        self.ring.back()
    }

    /// Turns the core's records into entries (see [`Inspector::push`]).
    pub(crate) fn body_of(record: Record) -> Body {
        match record.what {
            What::Frame(f) => Body::Frame(f),
            What::Message(info) => Body::Message { info, room: None },
            What::Error { close_code, rule } => Body::Error { close_code, rule },
            What::Knob(k) => Body::Knob(k.into()),
        }
    }

    /// `/frames?conn=ID&limit=N`: the newest `limit` records (of `conn`),
    /// oldest first, as a JSON array.
    pub(crate) fn frames_json(&self, conn: Option<u32>, limit: usize) -> String {
        self.select_json(limit, false, |e| conn.is_none_or(|c| e.conn == c))
    }

    /// `/messages?conn=ID&dir=in|out&limit=N`: the newest `limit` message
    /// records (of `conn`, in direction `dir`), oldest first.
    pub(crate) fn messages_json(
        &self,
        conn: Option<u32>,
        dir: Option<Dir>,
        limit: usize,
    ) -> String {
        self.select_json(limit, true, |e| {
            conn.is_none_or(|c| e.conn == c)
                && matches!(&e.body, Body::Message { info, .. } if dir.is_none_or(|d| info.dir == d))
        })
    }

    /// The newest `limit` records of the wanted entries (only their message
    /// records if `only_messages`), oldest first, as a JSON array.
    fn select_json(
        &self,
        limit: usize,
        only_messages: bool,
        wanted: impl Fn(&Entry) -> bool,
    ) -> String {
        let mut items = Vec::new();
        for e in self.ring.iter().rev().filter(|e| wanted(e)) {
            for (v, part) in json::values(e).into_iter().rev() {
                if items.len() == limit {
                    break;
                }
                if part == Part::Message || !only_messages {
                    items.push(v);
                }
            }
            if items.len() == limit {
                break;
            }
        }
        items.reverse();
        serde_json::to_string(&items).unwrap_or_else(|_| "[]".into())
    }

    /// An entry's records as JSON text (log lines, live messages), each with
    /// whether it is a message record: one, or two for a message with its
    /// frame folded in.
    pub(crate) fn json(&self, e: &Entry) -> Vec<(String, Part)> {
        json::values(e)
            .into_iter()
            .map(|(v, message)| (serde_json::to_string(&v).unwrap_or_default(), message))
            .collect()
    }

    /// Whether a live subscriber wants this entry.
    pub(crate) fn matches(&self, filter: &Filter, e: &Entry) -> bool {
        match filter {
            Filter::All => true,
            Filter::Conn(c) => e.conn == *c,
            Filter::Path(prefix) => match &e.body {
                Body::Broadcast(b) => b.room.starts_with(prefix.as_str()),
                Body::Message { room: Some(r), .. } => r.0.starts_with(prefix.as_str()),
                Body::Open { path, .. } => path.starts_with(prefix.as_str()),
                _ => self
                    .infos
                    .get(&e.conn)
                    .is_some_and(|i| i.path.starts_with(prefix.as_str())),
            },
        }
    }
}

fn body_bytes(body: &Body) -> usize {
    match body {
        Body::Frame(_) => 0,
        Body::Message { info, room } => info.content.len() + room.as_ref().map_or(0, |r| r.0.len()),
        Body::Broadcast(b) => b.room.len(),
        Body::Open { path, .. } => path.len(),
        Body::Http { why, .. } => why.len(),
        Body::Knob(k) | Body::Action(k) => k.len(),
        Body::Error { .. } | Body::Closed { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> Body {
        Body::Message {
            info: MessageInfo {
                dir: Dir::In,
                text: false,
                len: bytes as u64,
                wire_len: bytes as u64,
                frames: 1,
                compressed: false,
                content: vec![7u8; bytes].into(),
                folded: false,
            },
            room: None,
        }
    }

    fn watcher(key: usize, filter: Filter, only: Only) -> Subscriber {
        Subscriber {
            key,
            filter,
            only,
            dropped: 0,
        }
    }

    #[test]
    fn each_watcher_counts_what_it_missed_and_leaves_alone() {
        let now = Instant::now();
        let mut ins = Inspector::new(100, 1 << 20, false, false);
        ins.subscribers
            .push(watcher(10, Filter::Conn(1), Only::Everything));
        ins.subscribers
            .push(watcher(11, Filter::All, Only::Messages));
        ins.subscribers.push(watcher(12, Filter::All, Only::Frames));
        // A message on connection 2: only the unfiltered watchers, and of
        // its two records (frame folded in) each the one it wants.
        let mut m = message(3);
        if let Body::Message { info, .. } = &mut m {
            info.folded = true;
        }
        ins.push(2, m, now);
        let (parts, keys) = ins.live().unwrap();
        let kinds: Vec<Part> = parts.iter().map(|p| p.1).collect();
        assert_eq!(kinds, [Part::Frame, Part::Message]);
        assert_eq!(keys, [(11, Only::Messages), (12, Only::Frames)]);
        // 11 is behind for 3 records; 12 is not: each its own count.
        for _ in 0..3 {
            assert_eq!(ins.deliver_to(11, true), None);
            assert_eq!(ins.deliver_to(12, false), Some(0));
        }
        assert_eq!(ins.deliver_to(11, false), Some(3));
        assert_eq!(ins.deliver_to(11, false), Some(0));
        // Every inspector's connection has the same id: the key says which.
        assert!(ins.ended(u32::MAX, 11));
        let keys: Vec<usize> = ins.subscribers.iter().map(|s| s.key).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&10) && keys.contains(&12));
        assert!(!ins.ended(u32::MAX, 11), "gone once");
        // An event is neither a frame nor a message.
        ins.push(1, Body::Knob("drop=1 fired".into()), now);
        let (_, keys) = ins.live().unwrap();
        assert_eq!(keys, [(10, Only::Everything)]);
    }

    #[test]
    fn the_ring_is_bounded_by_count_and_by_content_bytes() {
        let now = Instant::now();
        let mut ins = Inspector::new(100, 10_000, false, false);
        for _ in 0..10 {
            ins.push(1, message(3000), now);
        }
        assert_eq!(ins.len(), 3, "3 × 3000 <= 10,000");
        assert_eq!((ins.bytes, ins.evicted), (9000, 7));
        // A record larger than the bound alone is kept (the newest always is).
        ins.push(1, message(20_000), now);
        assert_eq!((ins.len(), ins.bytes), (1, 20_000));
        let mut small = Inspector::new(2, 1 << 20, false, false);
        for _ in 0..5 {
            small.push(1, message(10), now);
        }
        assert_eq!((small.len(), small.evicted), (2, 3));
        let json = small.records_answer("/messages", "dir=in").unwrap();
        assert!(json.contains("\"base64\":\"BwcHBwcHBwcHBw==\""), "{json}");
    }
}
