//! Broadcast rooms: a name → room table. A room has members (WebSocket
//! connections and event-stream subscribers, by token), one order of
//! messages with ids, a history of the last ones, and lingers
//! `--room-linger` after its last member left so a client can come back
//! for what it missed. A message's fan-out is encoded once per form (a
//! WebSocket frame, plain or compressed per window; an event) into an
//! `Rc<[u8]>`, queued on every member, written once per loop turn (members
//! are marked dirty). A member still over `--max-backpressure` after a write
//! attempt is closed with 1008 `slow consumer` (a subscriber: a last
//! `event: error`). Calls `flush` (io.rs) and `account` (memory.rs); the
//! HTTP side (publish, subscribe) is sse.rs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use log::info;
use mio::Token;

use super::Server;
use crate::handler;
use crate::proto::output::Chunk;

use crate::proto::connection::BroadcastForm;
use crate::proto::{CloseCode, MessageKind};

/// A message a room keeps for members that join or come back later.
pub(super) struct Retained {
    pub(super) id: u64,
    pub(super) kind: MessageKind,
    pub(super) data: Rc<[u8]>,
    /// The server-wide publish order: history is shed oldest first across
    /// rooms.
    seq: u64,
}

pub(super) struct Room {
    name: String,
    /// WebSocket members and event-stream subscribers.
    members: Vec<Token>,
    /// The id the next message gets: ids start at 1 and go up by one in the
    /// room's single order.
    next_id: u64,
    /// The last messages, oldest first (`--room-history`, at most
    /// [`HISTORY_BYTES`] of payload).
    pub(super) history: VecDeque<Retained>,
    pub(super) history_bytes: usize,
    /// When the last member left: the room stays until `--room-linger` later.
    empty_since: Option<Instant>,
}

/// A room's history holds at most this many payload bytes.
pub const HISTORY_BYTES: usize = 1024 * 1024;

impl Room {
    fn new(name: String) -> Room {
        Room {
            name,
            members: Vec::new(),
            next_id: 1,
            history: VecDeque::new(),
            history_bytes: 0,
            empty_since: None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The id of the last message sent (0: none yet).
    pub(super) fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// The id of the oldest message still retained (`next_id` when none is).
    pub(super) fn first_retained(&self) -> u64 {
        self.history.front().map_or(self.next_id, |r| r.id)
    }

    fn pop_oldest(&mut self) -> Option<Retained> {
        let r = self.history.pop_front()?;
        self.history_bytes -= r.data.len();
        Some(r)
    }
}

impl Server {
    /// The room named `name`, created if it does not exist; it counts as
    /// used now (a lingering room is kept).
    pub(super) fn room_id(&mut self, name: &str, now: Instant) -> usize {
        if let Some(&id) = self.room_ids.get(name) {
            let room = &mut self.rooms[id];
            if room.members.is_empty() {
                room.empty_since = Some(now);
            }
            return id;
        }
        let room = Room {
            empty_since: Some(now),
            ..Room::new(name.to_owned())
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
        self.room_ids.insert(name.to_owned(), id);
        id
    }

    pub(super) fn join(&mut self, name: &str, t: Token, now: Instant) -> usize {
        let id = self.room_id(name, now);
        let room = &mut self.rooms[id];
        room.members.push(t);
        room.empty_since = None;
        id
    }

    pub(super) fn leave(&mut self, id: usize, t: Token, now: Instant) {
        let room = &mut self.rooms[id];
        if let Some(pos) = room.members.iter().position(|&m| m == t) {
            room.members.swap_remove(pos);
        }
        if room.members.is_empty() {
            room.empty_since = Some(now);
            if self.config.room_linger.is_zero() {
                self.forget_room(id);
            }
        }
    }

    fn forget_room(&mut self, id: usize) {
        let room = &mut self.rooms[id];
        self.room_ids.remove(&room.name);
        self.history_bytes -= room.history_bytes;
        *room = Room::new(String::new());
        self.free_rooms.push(id);
    }

    /// Rooms without members for `--room-linger` are forgotten (their
    /// history and their ids with them). Called once a second.
    pub(super) fn expire_rooms(&mut self, now: Instant) {
        let linger = self.config.room_linger;
        let due: Vec<usize> = self
            .room_ids
            .values()
            .copied()
            .filter(|&id| {
                self.rooms[id]
                    .empty_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= linger)
            })
            .collect();
        for id in due {
            self.forget_room(id);
        }
    }

    /// Rooms kept without members (for the sweep timer).
    pub(super) fn has_rooms(&self) -> bool {
        !self.room_ids.is_empty()
    }

    /// Keeps a message in its room's history, evicting the oldest past
    /// `--room-history` messages or [`HISTORY_BYTES`].
    fn retain(&mut self, id: usize, msg_id: u64, kind: MessageKind, data: &[u8]) {
        let max = self.config.room_history;
        if max == 0 {
            return;
        }
        let data: Rc<[u8]> = Rc::from(data);
        self.publish_seq += 1;
        let room = &mut self.rooms[id];
        let before = room.history_bytes;
        room.history_bytes += data.len();
        room.history.push_back(Retained {
            id: msg_id,
            kind,
            data,
            seq: self.publish_seq,
        });
        while room.history.len() > max || room.history_bytes > HISTORY_BYTES {
            room.pop_oldest();
        }
        self.history_bytes = self.history_bytes - before + room.history_bytes;
    }

    /// Over the memory budget, history goes first: the oldest retained
    /// messages, across rooms, until `need` bytes are freed or none is left.
    /// Returns the bytes freed.
    pub(super) fn shed_history(&mut self, need: usize) -> usize {
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = self
            .room_ids
            .values()
            .filter_map(|&id| Some(Reverse((self.rooms[id].history.front()?.seq, id))))
            .collect();
        let mut freed = 0;
        while freed < need {
            let Some(Reverse((_, id))) = heap.pop() else {
                break;
            };
            let room = &mut self.rooms[id];
            if let Some(r) = room.pop_oldest() {
                freed += r.data.len();
                self.history_bytes -= r.data.len();
                self.stats.history_shed += 1;
            }
            if let Some(next) = room.history.front() {
                heap.push(Reverse((next.seq, id)));
            }
        }
        freed
    }

    /// Publishes a message to a room: it takes the room's next id, is kept
    /// in its history, and goes to every member. Returns the id and the
    /// number of members it went to.
    pub(super) fn publish(
        &mut self,
        id: usize,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> (u64, usize) {
        let room = &mut self.rooms[id];
        let msg_id = room.next_id;
        room.next_id += 1;
        self.retain(id, msg_id, kind, data);
        let members = self.broadcast(id, msg_id, kind, data, now);
        (msg_id, members)
    }

    /// Sends one message to every open member of a room, the sender included. The
    /// frame is encoded once and shared: once plain, and once compressed per
    /// window size among the members that agreed permessage-deflate without
    /// server context (a member with its own context gets its own
    /// compression). A recipient still holding more than the budget of unsent
    /// bytes after a write attempt is closed with 1008.
    fn broadcast(
        &mut self,
        id: usize,
        msg_id: u64,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> usize {
        let mut plain: Option<Rc<[u8]>> = None;
        let mut event: Option<Rc<[u8]>> = None;
        let mut compressed: [Option<Rc<[u8]>>; 7] = Default::default();
        let members = std::mem::take(&mut self.rooms[id].members);
        let budget = self.config.max_backpressure;
        let mut sent = 0;
        for &m in &members {
            let Some(c) = self.client_mut(m) else {
                continue;
            };
            let form = c.proto.broadcast_form(data.len());
            let stream = c.proto.is_event_stream();
            if c.proto.output_len() > budget {
                self.flush(m);
                let Some(c) = self.client_mut(m) else {
                    continue;
                };
                if c.proto.output_len() > budget && stream {
                    info!(
                        "{}: slow subscriber ({} bytes unsent), ending its stream",
                        c.id,
                        c.proto.output_len()
                    );
                    c.proto.end_events(SLOW_EVENT, true, now);
                    self.stats.slow_consumers += 1;
                    self.account(m);
                    self.mark_dirty(m);
                    continue;
                }
                if c.proto.output_len() > budget {
                    info!(
                        "{}: slow consumer ({} bytes unsent), closing",
                        c.id,
                        c.proto.output_len()
                    );
                    c.proto
                        .close_discarding(CloseCode::POLICY_VIOLATION, "slow consumer", now);
                    self.stats.slow_consumers += 1;
                    self.account(m);
                    self.mark_dirty(m);
                    continue;
                }
            }
            if stream {
                let e = event
                    .get_or_insert_with(|| super::sse::encode(msg_id, kind, data))
                    .clone();
                let Some(c) = self.client_mut(m) else {
                    continue;
                };
                if c.proto.send_event(Chunk::Shared(e), true, now) {
                    sent += 1;
                    self.stats.messages_out += 1;
                    self.stats.bytes_out += data.len() as u64;
                    self.account(m);
                    self.mark_dirty(m);
                }
                continue;
            }
            let frame = match form {
                BroadcastForm::Plain => Some(
                    plain
                        .get_or_insert_with(|| {
                            handler::encode_shared_with(kind, data, &mut self.scratch)
                        })
                        .clone(),
                ),
                BroadcastForm::Compressed(bits) => Some(
                    compressed[usize::from(bits.clamp(9, 15) - 9)]
                        .get_or_insert_with(|| {
                            let z = self.deflate_codec.compress(bits, data);
                            handler::encode_compressed_with(kind, &z, &mut self.scratch)
                        })
                        .clone(),
                ),
                BroadcastForm::Own => None,
            };
            let Some(c) = self.client_mut(m) else {
                continue;
            };
            let ok = match frame {
                Some(f) => c.proto.send_encoded(f),
                None => c.proto.send(kind, data.to_vec()),
            };
            if ok {
                sent += 1;
                self.stats.messages_out += 1;
                self.stats.bytes_out += data.len() as u64;
                self.account(m);
                self.mark_dirty(m);
            }
        }
        self.rooms[id].members = members;
        sent
    }

    /// The rooms' history bytes, for `/stats`: the 100 rooms holding the
    /// most, largest first.
    pub(super) fn history_top(&self) -> Vec<(&str, usize)> {
        let mut v: Vec<(&str, usize)> = self
            .room_ids
            .iter()
            .map(|(name, &id)| (name.as_str(), self.rooms[id].history_bytes))
            .filter(|&(_, b)| b > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(100);
        v
    }

    pub(super) fn mark_dirty(&mut self, t: Token) {
        if let Some(c) = self.client_mut(t) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
        }
    }
}

/// The last event of a subscriber too slow to keep up.
const SLOW_EVENT: &[u8] = b"event: error\ndata: slow consumer\n\n";
