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
use std::rc::Rc;

use crate::proto::connection::BroadcastForm;
use crate::proto::{CloseCode, MessageKind};

pub(super) struct Room {
    name: String,
    members: Vec<Token>,
}

impl Room {
    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }
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
    /// frame is encoded once and shared: once plain, and once compressed per
    /// window size among the members that agreed permessage-deflate without
    /// server context (a member with its own context gets its own
    /// compression). A recipient still holding more than the budget of unsent
    /// bytes after a write attempt is closed with 1008.
    pub(super) fn broadcast(&mut self, id: usize, kind: MessageKind, data: &[u8], now: Instant) {
        let mut plain: Option<Rc<[u8]>> = None;
        let mut compressed: [Option<Rc<[u8]>>; 7] = Default::default();
        let members = std::mem::take(&mut self.rooms[id].members);
        let budget = self.config.max_backpressure;
        for &m in &members {
            let Some(c) = self.client_mut(m) else {
                continue;
            };
            let form = c.proto.broadcast_form(data.len());
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
                    self.stats.slow_consumers += 1;
                    self.account(m);
                    self.mark_dirty(m);
                    continue;
                }
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
            let sent = match frame {
                Some(f) => c.proto.send_encoded(f),
                None => c.proto.send(kind, data.to_vec()),
            };
            if sent {
                self.stats.messages_out += 1;
                self.stats.bytes_out += data.len() as u64;
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
