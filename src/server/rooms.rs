//! Broadcast rooms: a name → members table (tokens), joined when an upgrade
//! is accepted and left when the connection is removed, and the fan-out of a
//! message: encoded once into an `Rc<[u8]>`, queued on every open member,
//! written once per loop turn (members are marked dirty). A member still over
//! `--max-backpressure` after a write attempt is closed with 1008 `slow
//! consumer`. Calls `flush` (io.rs) and `account` (memory.rs).

use std::time::Instant;

use log::info;
use mio::Token;

use super::Server;
use crate::handler;
use crate::proto::{CloseCode, MessageKind};

pub(super) struct Room {
    name: String,
    members: Vec<Token>,
}

impl Server {
    pub(super) fn join(&mut self, name: String, t: Token) -> usize {
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

    pub(super) fn leave(&mut self, id: usize, t: Token) {
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
    pub(super) fn broadcast(&mut self, id: usize, kind: MessageKind, data: &[u8], now: Instant) {
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

    pub(super) fn mark_dirty(&mut self, t: Token) {
        if let Some(c) = self.client_mut(t) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
        }
    }
}
