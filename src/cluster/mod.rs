//! Rooms across processes (`--cluster redis://…`), sans-IO: no socket, no
//! clock. The driver (`server/clustering.rs`) owns two connections to
//! Redis — one for commands, one subscribed to the rooms this instance has
//! members in — feeds this state machine what it reads, and writes what it
//! asks for.
//!
//! One order per room, the same on every instance: a message is appended in
//! Redis by a script (`resp::APPEND`) that gives it the room's next id,
//! keeps it in the room's stream and publishes it; every instance, the
//! sender's too, delivers in the order the publications arrive. An
//! instance that starts watching a room (its first member), reconnects, or
//! sees an id it did not expect, catches up (`resp::CATCH_UP`): it
//! subscribes first, then reads the room's last id and retained messages,
//! holding what is published meanwhile, so nothing falls between the two.
//! Members' messages sent while Redis is away are held in order and
//! appended when it is back; an append whose reply was lost is resent
//! under the same key, which Redis remembers, so it is appended once.
//!
//! Redis that stops answering with its sockets open (a paused VM, a
//! partition, SIGSTOP) is found by `liveness`: the driver ticks the core
//! with the time, and an overdue reply makes `tick` say the link is lost,
//! which the driver treats as a refused connection. A message may carry an
//! idempotency key: Redis appends a room's key once (`resp::APPEND`).

mod links;
mod liveness;
mod order;
pub mod resp;
mod url;

pub use url::Url;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::proto::MessageKind;

/// One of the two connections to Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Commands and their replies, in order.
    Commands,
    /// `SUBSCRIBE`d to the watched rooms' channels.
    Subscriber,
}

/// What the driver does for the cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Both connections answered their hello (logged once per transition).
    Up,
    /// A message of `room`, in the room's order: deliver it to this
    /// instance's members and keep it in the room's history.
    Deliver {
        room: String,
        id: u64,
        kind: MessageKind,
        data: Vec<u8>,
    },
    /// `room`'s members here missed these ids (inclusive) and no one can
    /// have them any more: tell the event-stream subscribers (`event: gap`).
    Gap { room: String, from: u64, to: u64 },
    /// This instance starts watching `room`: its history is these messages
    /// (oldest first) and its last id is `last`. Nothing to deliver.
    Restore {
        room: String,
        last: u64,
        messages: Vec<(u64, MessageKind, Vec<u8>)>,
    },
    /// `room` is caught up: members waiting to be replayed can be now.
    Live { room: String },
    /// The append with this ticket has its id; `duplicate`: its
    /// idempotency key was appended before, under this id, and it was not
    /// appended again.
    Appended {
        ticket: u64,
        id: u64,
        duplicate: bool,
    },
    /// Redis refused the append (its error).
    Refused { ticket: u64, why: String },
}

/// What a reply on the command connection answers.
#[derive(Debug)]
enum Awaiting {
    Hello,
    /// The last reply of the hello: the link is ready.
    Ready,
    Ping,
    Append(u64),
    CatchUp(String),
}

/// A message to append.
#[derive(Debug)]
struct Append {
    ticket: u64,
    room: String,
    kind: MessageKind,
    data: Vec<u8>,
    /// `Idempotency-Key`: appended once per room within the window.
    key: Option<Vec<u8>>,
}

/// An idempotency key is remembered this long in a room (unless 100,000
/// newer keys of the room pushed it out first).
pub const KEY_WINDOW: Duration = Duration::from_secs(600);
/// The keys a room remembers at most.
pub const KEY_COUNT: usize = 100_000;

/// Where an append stood when it was withdrawn (`Cluster::withdraw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withdrawn {
    /// Never sent to Redis: dropped, it will not be appended.
    Unsent,
    /// Sent and not answered: it may have been appended, and is still
    /// resent after a reconnect (Redis remembers its ticket).
    InFlight,
    /// Already answered (or unknown).
    Answered,
}

#[derive(Debug, PartialEq, Eq)]
enum Watch {
    /// `SUBSCRIBE` sent (or to send once connected), not confirmed.
    Subscribing,
    /// Subscribed; the catch-up's reply is awaited.
    CatchingUp,
    Live,
}

/// A room this instance has members in.
#[derive(Debug)]
struct Watched {
    state: Watch,
    /// The last id delivered here (or restored); `None`: nothing known yet.
    last: Option<u64>,
    epoch: Option<Vec<u8>>,
    /// Publications that came while catching up: applied after it.
    held: Vec<(u64, Vec<u8>, MessageKind, Vec<u8>)>,
}

/// The cluster's state in this instance.
pub struct Cluster {
    url: Url,
    /// Keys and channels start with this (channels are not per database).
    prefix: String,
    /// Unique to this process: names its appends and any epoch it creates.
    instance: String,
    /// `--room-history`: the stream is trimmed to this.
    history: usize,
    /// The SHA-1s of `resp::APPEND` and `resp::CATCH_UP`.
    scripts: (String, String),
    /// Per link: its hello was answered.
    up: [bool; 2],
    /// Per link: the socket is connected (its hello sent).
    linked: [bool; 2],
    /// Replies the subscriber connection waits for (AUTH, PING,
    /// (UN)SUBSCRIBE: one each).
    sub_awaiting: usize,
    liveness: liveness::Liveness,
    out: [Vec<u8>; 2],
    input: [Vec<u8>; 2],
    awaiting: VecDeque<Awaiting>,
    /// Sent, not answered: resent first after a reconnect.
    in_flight: VecDeque<Append>,
    /// Not sent yet (Redis away, or the room being caught up here).
    held: VecDeque<Append>,
    /// Bytes of the messages held or in flight.
    pending_bytes: usize,
    next_ticket: u64,
    rooms: HashMap<String, Watched>,
    events: VecDeque<Event>,
    pub stats: Stats,
}

/// Counters for `/stats` and `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub reconnects: u64,
    /// Of those, links declared lost because Redis stopped answering.
    pub timeouts: u64,
    /// Appends whose idempotency key Redis had seen: not appended again.
    pub duplicates: u64,
    pub appended: u64,
    pub delivered: u64,
    pub catch_ups: u64,
    pub gaps: u64,
}

impl Cluster {
    /// `instance`: a string unique to this process (random); `timeout`:
    /// how long a reply may be overdue before the link is lost
    /// (`--cluster-timeout`).
    pub fn new(url: Url, history: usize, instance: String, timeout: Duration) -> Cluster {
        let prefix = format!("echocast:{}:", url.db);
        Cluster {
            url,
            prefix,
            instance,
            history,
            scripts: (resp::sha(resp::APPEND), resp::sha(resp::CATCH_UP)),
            up: [false; 2],
            linked: [false; 2],
            sub_awaiting: 0,
            liveness: liveness::Liveness::new(timeout),
            out: [Vec::new(), Vec::new()],
            input: [Vec::new(), Vec::new()],
            awaiting: VecDeque::new(),
            in_flight: VecDeque::new(),
            held: VecDeque::new(),
            pending_bytes: 0,
            next_ticket: 0,
            rooms: HashMap::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether both connections are up (their hello answered).
    pub fn is_up(&self) -> bool {
        self.up == [true; 2]
    }

    /// `--cluster-timeout`.
    pub fn timeout(&self) -> Duration {
        self.liveness.timeout()
    }

    /// Takes back the append `ticket` (its `POST` is answered without
    /// waiting more): dropped if it was never sent.
    pub fn withdraw(&mut self, ticket: u64) -> Withdrawn {
        if let Some(i) = self.held.iter().position(|a| a.ticket == ticket) {
            if let Some(a) = self.held.remove(i) {
                self.pending_bytes -= a.data.len();
            }
            return Withdrawn::Unsent;
        }
        if self.in_flight.iter().any(|a| a.ticket == ticket) {
            return Withdrawn::InFlight;
        }
        Withdrawn::Answered
    }

    /// Bytes of members' messages held while Redis is away (counted in the
    /// memory budget).
    pub fn held_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Appends waiting for Redis (held) or for its reply.
    pub fn pending_appends(&self) -> usize {
        self.held.len() + self.in_flight.len()
    }

    /// The rooms watched here.
    pub fn watched(&self) -> usize {
        self.rooms.len()
    }

    /// The rooms watched here and caught up.
    pub fn live(&self) -> usize {
        self.rooms
            .values()
            .filter(|w| w.state == Watch::Live)
            .count()
    }

    fn idx(link: Link) -> usize {
        match link {
            Link::Commands => 0,
            Link::Subscriber => 1,
        }
    }

    fn channel(&self, room: &str) -> Vec<u8> {
        format!("{}room:{room}", self.prefix).into_bytes()
    }

    /// A room's keys, as the scripts take them: its counter, its epoch and
    /// its stream.
    fn room_keys(&self, room: &str) -> [String; 3] {
        ["seq", "epoch", "log"].map(|what| format!("{}{what}:{room}", self.prefix))
    }

    /// A room's idempotency keys: by time (a sorted set) and their ids (a
    /// hash).
    fn key_keys(&self, room: &str) -> [String; 2] {
        ["keys", "keyids"].map(|what| format!("{}{what}:{room}", self.prefix))
    }

    /// Sends held appends, in order, while Redis is up and the first one's
    /// room is not being caught up here: a message of a room this instance
    /// watches is appended only once it is subscribed, so it comes back to
    /// its sender (and to the members who joined before it was sent).
    pub(crate) fn send_held(&mut self) {
        while self.is_up() {
            let Some(a) = self.held.front() else {
                break;
            };
            if self
                .rooms
                .get(&a.room)
                .is_some_and(|w| w.state != Watch::Live)
            {
                break;
            }
            let Some(a) = self.held.pop_front() else {
                break;
            };
            self.send_append(a);
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A member of `room` is here: its messages must reach this instance.
    /// Returns whether the room is live (a new member's replay can be
    /// served now) or caught up later (`Event::Live`).
    pub fn watch(&mut self, room: &str) -> bool {
        if let Some(w) = self.rooms.get(room) {
            return w.state == Watch::Live;
        }
        self.rooms.insert(
            room.to_owned(),
            Watched {
                state: Watch::Subscribing,
                last: None,
                epoch: None,
                held: Vec::new(),
            },
        );
        if self.is_up() {
            self.subscribe(room);
        }
        false
    }

    /// Whether `room` is watched and caught up.
    pub fn is_live(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|w| w.state == Watch::Live)
    }

    /// Stops watching the rooms `keep` says no (no member left here).
    pub fn unwatch_unless(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<String> = self.rooms.keys().filter(|r| !keep(r)).cloned().collect();
        for room in gone {
            self.unwatch(&room);
        }
    }

    /// Stops watching `room` (it was forgotten here).
    pub fn unwatch(&mut self, room: &str) {
        if self.rooms.remove(room).is_some() && self.is_up() {
            let ch = self.channel(room);
            resp::command(&mut self.out[1], &[b"UNSUBSCRIBE", &ch]);
            self.sub_awaiting += 1;
        }
    }

    fn subscribe(&mut self, room: &str) {
        let ch = self.channel(room);
        resp::command(&mut self.out[1], &[b"SUBSCRIBE", &ch]);
        self.sub_awaiting += 1;
        if let Some(w) = self.rooms.get_mut(room) {
            w.state = Watch::Subscribing;
        }
    }

    /// Appends a message to `room` (a member's or a `POST`'s). Returns its
    /// ticket (`Event::Appended` carries it back with the id). While Redis
    /// is away, or its room is being caught up here, it is held, in order.
    /// `key`: an idempotency key (a room appends a key once within
    /// `KEY_WINDOW` / `KEY_COUNT`).
    pub fn append(
        &mut self,
        room: &str,
        kind: MessageKind,
        data: &[u8],
        key: Option<&[u8]>,
    ) -> u64 {
        self.next_ticket += 1;
        self.pending_bytes += data.len();
        self.held.push_back(Append {
            ticket: self.next_ticket,
            room: room.to_owned(),
            kind,
            data: data.to_vec(),
            key: key.map(<[u8]>::to_vec),
        });
        self.send_held();
        self.next_ticket
    }

    fn send_append(&mut self, a: Append) {
        let room = &a.room;
        let floor = self
            .rooms
            .get(room)
            .and_then(|w| w.last)
            .unwrap_or(0)
            .to_string();
        let sent = format!("{}sent:{}", self.prefix, self.instance);
        let ticket = a.ticket.to_string();
        let lo = self
            .in_flight
            .front()
            .map_or(a.ticket, |f| f.ticket)
            .to_string();
        let [seq, epoch, log] = self.room_keys(room);
        let [keys, key_ids] = self.key_keys(room);
        let ch = self.channel(room);
        let history = self.history.to_string();
        let window = KEY_WINDOW.as_millis().to_string();
        let count = KEY_COUNT.to_string();
        let kind: &[u8] = match a.kind {
            MessageKind::Text => b"t",
            MessageKind::Binary => b"b",
        };
        let new_epoch = self.new_epoch();
        resp::command(
            &mut self.out[0],
            &[
                b"EVALSHA",
                self.scripts.0.as_bytes(),
                b"6",
                seq.as_bytes(),
                epoch.as_bytes(),
                log.as_bytes(),
                sent.as_bytes(),
                keys.as_bytes(),
                key_ids.as_bytes(),
                new_epoch.as_bytes(),
                floor.as_bytes(),
                &ch,
                history.as_bytes(),
                kind,
                &a.data,
                ticket.as_bytes(),
                lo.as_bytes(),
                a.key.as_deref().unwrap_or_default(),
                window.as_bytes(),
                count.as_bytes(),
            ],
        );
        self.awaiting.push_back(Awaiting::Append(a.ticket));
        self.in_flight.push_back(a);
    }

    fn new_epoch(&self) -> String {
        format!("{}-{}", self.instance, self.next_ticket)
    }

    fn catch_up(&mut self, room: &str) {
        let Some(w) = self.rooms.get_mut(room) else {
            return;
        };
        w.state = Watch::CatchingUp;
        let after = w.last.map(|l| l.to_string()).unwrap_or_default();
        let floor = w.last.unwrap_or(0).to_string();
        let [seq, epoch, log] = self.room_keys(room);
        let count = self.history.to_string();
        let new_epoch = self.new_epoch();
        resp::command(
            &mut self.out[0],
            &[
                b"EVALSHA",
                self.scripts.1.as_bytes(),
                b"3",
                seq.as_bytes(),
                epoch.as_bytes(),
                log.as_bytes(),
                new_epoch.as_bytes(),
                floor.as_bytes(),
                after.as_bytes(),
                count.as_bytes(),
            ],
        );
        self.awaiting.push_back(Awaiting::CatchUp(room.to_owned()));
        self.stats.catch_ups += 1;
    }
}
