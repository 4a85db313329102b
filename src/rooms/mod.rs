//! Rooms, sans-IO: a name → room table where each room has members (opaque
//! keys: the driver's connections, WebSocket members and event-stream
//! subscribers alike), one order of messages with ids (given by the
//! [`Sequencer`]), a history of its last messages bounded by count and
//! bytes, and a linger after its last member left so a client can come back
//! for what it missed. No sockets, no clock (time is passed in), no I/O:
//! [`Rooms::publish`] says who gets a message (gathered with the messages
//! published just before it into a [`Run`]), [`forms::Forms`] encodes the
//! run once per form, and the driver queues it (server/rooms.rs).
//!
//! History across rooms is one budget the driver weighs against
//! `--max-memory`: [`Rooms::shed`] gives up the oldest retained messages
//! first, whatever room they are in.

pub mod forms;
pub mod keys;
pub mod run;
pub mod sequencer;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::proto::MessageKind;
pub use run::Run;
pub use sequencer::{Local, Sequencer};

/// A room's history holds at most this many payload bytes.
pub const HISTORY_BYTES: usize = 1024 * 1024;

/// A room: its slot in the table. Valid until the room is forgotten (no
/// member left and `linger` passed); a member holds one, so its room lives
/// at least as long as it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomId(NonZeroU32);

impl RoomId {
    fn new(index: usize) -> RoomId {
        RoomId(NonZeroU32::new(index as u32 + 1).expect("room index + 1 is not 0"))
    }

    pub fn index(self) -> usize {
        self.0.get() as usize - 1
    }

    /// As the driver stores it (4 bytes, and `Option` of it too).
    pub fn key(self) -> NonZeroU32 {
        self.0
    }

    pub fn from_key(key: NonZeroU32) -> RoomId {
        RoomId(key)
    }
}

/// What the rooms keep: set once, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Messages each room keeps (`--room-history`; 0: none).
    pub history: usize,
    /// Payload bytes each room keeps at most ([`HISTORY_BYTES`]).
    pub history_bytes: usize,
    /// How long a room without members is kept (`--room-linger`).
    pub linger: Duration,
}

/// A message a room keeps for members that join or come back later.
#[derive(Clone, Debug)]
pub struct Retained {
    pub id: u64,
    pub kind: MessageKind,
    pub data: Rc<[u8]>,
    /// The server-wide retain order: history is shed oldest first across
    /// rooms.
    seq: u64,
}

/// What a member resuming after an id gets: the ids it can no longer have
/// (`gap`: first and last, inclusive), then the retained messages after it.
#[derive(Debug, Default)]
pub struct Replay {
    pub gap: Option<(u64, u64)>,
    pub messages: Vec<Retained>,
    /// The id asked for was ahead of the room (its last id): the room was
    /// forgotten or the server restarted. Answered from the room's start.
    pub ahead_of: Option<u64>,
}

struct Room<M> {
    name: String,
    members: Vec<M>,
    /// Bumped at every join and leave: a [`run::Run`] continues only while
    /// it is unchanged.
    generation: u64,
    /// The last messages, oldest first.
    history: VecDeque<Retained>,
    history_bytes: usize,
    /// When the last member left (or a publisher last used it): the room
    /// stays until `linger` later.
    empty_since: Option<Instant>,
}

impl<M> Room<M> {
    fn new(name: String, now: Instant) -> Room<M> {
        Room {
            name,
            members: Vec::new(),
            generation: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            empty_since: Some(now),
        }
    }

    fn pop_oldest(&mut self) -> Option<Retained> {
        let r = self.history.pop_front()?;
        self.history_bytes -= r.data.len();
        Some(r)
    }
}

/// Every room of the process. `M` is the driver's member key.
pub struct Rooms<M, S = Local> {
    rooms: Vec<Option<Room<M>>>,
    by_name: HashMap<String, RoomId>,
    free: Vec<RoomId>,
    sequencer: S,
    settings: Settings,
    /// Messages retained so far (orders history across rooms).
    retain_seq: u64,
    /// Payload bytes all histories hold.
    history_bytes: usize,
    /// Retained messages given up to keep the memory budget.
    shed: u64,
}

impl<M: Copy + Eq> Rooms<M, Local> {
    pub fn new(settings: Settings) -> Rooms<M, Local> {
        Rooms::with_sequencer(settings, Local::default())
    }
}

impl<M: Copy + Eq, S: Sequencer> Rooms<M, S> {
    pub fn with_sequencer(settings: Settings, sequencer: S) -> Rooms<M, S> {
        Rooms {
            rooms: Vec::new(),
            by_name: HashMap::new(),
            free: Vec::new(),
            sequencer,
            settings,
            retain_seq: 0,
            history_bytes: 0,
            shed: 0,
        }
    }

    fn room(&self, id: RoomId) -> &Room<M> {
        self.rooms[id.index()].as_ref().expect("a live room id")
    }

    fn room_mut(&mut self, id: RoomId) -> &mut Room<M> {
        self.rooms[id.index()].as_mut().expect("a live room id")
    }

    /// The room named `name`, created if it does not exist. It counts as
    /// used now: a lingering room is kept `linger` from now.
    pub fn open(&mut self, name: &str, now: Instant) -> RoomId {
        if let Some(&id) = self.by_name.get(name) {
            let room = self.room_mut(id);
            if room.members.is_empty() {
                room.empty_since = Some(now);
            }
            return id;
        }
        let room = Some(Room::new(name.to_owned(), now));
        let id = match self.free.pop() {
            Some(id) => {
                self.rooms[id.index()] = room;
                id
            }
            None => {
                self.rooms.push(room);
                RoomId::new(self.rooms.len() - 1)
            }
        };
        self.by_name.insert(name.to_owned(), id);
        id
    }

    /// `member` joins the room named `name` (created if need be).
    pub fn join(&mut self, name: &str, member: M, now: Instant) -> RoomId {
        let id = self.open(name, now);
        let room = self.room_mut(id);
        room.members.push(member);
        room.generation += 1;
        room.empty_since = None;
        id
    }

    /// `member` leaves; the last to leave starts the room's linger (with no
    /// linger, the room and its ids are forgotten at once).
    pub fn leave(&mut self, id: RoomId, member: M, now: Instant) {
        let room = self.room_mut(id);
        if let Some(pos) = room.members.iter().position(|&m| m == member) {
            room.members.swap_remove(pos);
            room.generation += 1;
        }
        if room.members.is_empty() {
            room.empty_since = Some(now);
            if self.settings.linger.is_zero() {
                self.forget(id);
            }
        }
    }

    fn forget(&mut self, id: RoomId) {
        if let Some(room) = self.rooms[id.index()].take() {
            self.by_name.remove(&room.name);
            self.history_bytes -= room.history_bytes;
            self.sequencer.forget(id);
            self.free.push(id);
        }
    }

    /// Forgets the rooms without members for `linger` (their history and
    /// ids with them). Returns how many. The driver calls it once a second.
    pub fn expire(&mut self, now: Instant) -> usize {
        let linger = self.settings.linger;
        let due: Vec<RoomId> = self
            .by_name
            .values()
            .copied()
            .filter(|&id| {
                self.room(id)
                    .empty_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= linger)
            })
            .collect();
        for &id in &due {
            self.forget(id);
        }
        due.len()
    }

    /// Publishes a message: it takes the room's next id from the sequencer,
    /// is retained, and is added to `run` for every member of the room now
    /// (the run keeps its own copy of the list, so members may leave or
    /// join while the driver delivers). `from` names the publisher in the
    /// run (see [`run::Entry`]). `run` must be empty or continue in this
    /// room ([`Rooms::continues`]): the driver delivers and clears it
    /// first otherwise. Returns the id.
    pub fn publish(
        &mut self,
        id: RoomId,
        from: u32,
        kind: MessageKind,
        data: &[u8],
        run: &mut Run<M>,
    ) -> u64 {
        let msg_id = self.sequencer.next_id(id);
        self.publish_as(id, from, msg_id, kind, data, run);
        msg_id
    }

    /// A message whose id was given elsewhere (the cluster's one order):
    /// retained and added to `run`, as [`publish`](Self::publish) does
    /// with an id of its own.
    pub fn publish_as(
        &mut self,
        id: RoomId,
        from: u32,
        msg_id: u64,
        kind: MessageKind,
        data: &[u8],
        run: &mut Run<M>,
    ) {
        self.sequencer.advance(id, msg_id);
        self.retain(id, msg_id, kind, data);
        let room = self.room(id);
        run.push(
            (id, room.generation, &room.members),
            from,
            msg_id,
            kind,
            data,
        );
    }

    /// Whether a message to room `id` may join `run`: it is empty, or for
    /// this room and the very members it has now.
    pub fn continues(&self, run: &Run<M>, id: RoomId) -> bool {
        run.continues(id, self.room(id).generation)
    }

    /// The room's history and last id as the cluster has them (this
    /// instance starts watching it): what was kept here is replaced.
    pub fn restore(&mut self, id: RoomId, last: u64, messages: &[(u64, MessageKind, Vec<u8>)]) {
        let room = self.room_mut(id);
        let dropped = room.history_bytes;
        room.history.clear();
        room.history_bytes = 0;
        self.history_bytes -= dropped;
        self.sequencer.advance(id, last);
        for (msg_id, kind, data) in messages {
            self.retain(id, *msg_id, *kind, data);
        }
    }

    /// Keeps a message in its room's history, evicting the oldest past the
    /// count or the bytes a room keeps.
    fn retain(&mut self, id: RoomId, msg_id: u64, kind: MessageKind, data: &[u8]) {
        let Settings {
            history: max,
            history_bytes: max_bytes,
            ..
        } = self.settings;
        if max == 0 {
            return;
        }
        self.retain_seq += 1;
        let seq = self.retain_seq;
        let room = self.room_mut(id);
        let before = room.history_bytes;
        room.history_bytes += data.len();
        room.history.push_back(Retained {
            id: msg_id,
            kind,
            data: Rc::from(data),
            seq,
        });
        while room.history.len() > max || room.history_bytes > max_bytes {
            room.pop_oldest();
        }
        let after = room.history_bytes;
        self.history_bytes = self.history_bytes - before + after;
    }

    /// What a member resuming after `last_event_id` gets, or (none given)
    /// the last `history` ids (`history=N`); neither: nothing.
    pub fn resume(&self, id: RoomId, last_event_id: Option<u64>, history: Option<usize>) -> Replay {
        let room = self.room(id);
        let last = self.sequencer.last_id(id);
        let first = room.history.front().map_or(last + 1, |r| r.id);
        let mut replay = Replay::default();
        let after = match (last_event_id, history) {
            (Some(l), _) if l > last => {
                replay.ahead_of = Some(last);
                0
            }
            (Some(l), _) => l,
            (None, Some(n)) => last.saturating_sub(n as u64),
            (None, None) => return replay,
        };
        if after + 1 < first {
            replay.gap = Some((after + 1, first - 1));
        }
        replay.messages = room
            .history
            .iter()
            .filter(|m| m.id > after)
            .cloned()
            .collect();
        replay
    }

    /// The last `n` retained messages, oldest first (a WebSocket member's
    /// `?history=N`).
    pub fn last_messages(&self, id: RoomId, n: usize) -> impl Iterator<Item = &Retained> {
        let h = &self.room(id).history;
        h.iter().skip(h.len().saturating_sub(n))
    }

    /// `history=N` asks for at most what a room keeps.
    pub fn check_history(&self, n: Option<usize>) -> Result<(), String> {
        match n {
            Some(n) if n > self.settings.history => Err(format!(
                "bad value for history: at most --room-history ({}) messages, not {n}",
                self.settings.history
            )),
            _ => Ok(()),
        }
    }

    /// Gives up retained messages, oldest first across rooms, until `need`
    /// bytes are freed or none is left. Returns the bytes freed.
    pub fn shed(&mut self, need: usize) -> usize {
        let mut heap: BinaryHeap<Reverse<(u64, RoomId)>> = self
            .by_name
            .values()
            .filter_map(|&id| Some(Reverse((self.room(id).history.front()?.seq, id))))
            .collect();
        let mut freed = 0;
        while freed < need {
            let Some(Reverse((_, id))) = heap.pop() else {
                break;
            };
            let room = self.room_mut(id);
            let popped = room.pop_oldest().map(|r| r.data.len());
            let next = room.history.front().map(|r| r.seq);
            if let Some(n) = popped {
                freed += n;
                self.history_bytes -= n;
                self.shed += 1;
            }
            if let Some(seq) = next {
                heap.push(Reverse((seq, id)));
            }
        }
        freed
    }

    /// Payload bytes all rooms' histories hold.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Retained messages given up by [`Rooms::shed`] so far.
    pub fn shed_count(&self) -> u64 {
        self.shed
    }

    /// Rooms kept now, with members or lingering.
    pub fn count(&self) -> usize {
        self.by_name.len()
    }

    pub fn name(&self, id: RoomId) -> &str {
        &self.room(id).name
    }

    pub fn members(&self, id: RoomId) -> &[M] {
        &self.room(id).members
    }

    /// The id of the room's last message (0: none yet).
    pub fn last_id(&self, id: RoomId) -> u64 {
        self.sequencer.last_id(id)
    }

    /// The room named `name`, if it is kept.
    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    /// The `limit` rooms with the most members, largest first (names break
    /// ties).
    pub fn largest(&self, limit: usize) -> Vec<(&str, usize)> {
        self.top(limit, |r| r.members.len(), false)
    }

    /// The `limit` rooms retaining the most bytes, largest first.
    pub fn largest_history(&self, limit: usize) -> Vec<(&str, usize)> {
        self.top(limit, |r| r.history_bytes, true)
    }

    fn top(
        &self,
        limit: usize,
        key: impl Fn(&Room<M>) -> usize,
        nonzero: bool,
    ) -> Vec<(&str, usize)> {
        let mut v: Vec<(&str, usize)> = self
            .by_name
            .iter()
            .map(|(name, &id)| (name.as_str(), key(self.room(id))))
            .filter(|&(_, n)| !nonzero || n > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(limit);
        v
    }
}
