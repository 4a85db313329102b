//! Where a room message gets its id and its place in the room's one order.
//!
//! Delivery never computes an id: it asks the [`Sequencer`]. In one process
//! the order is a counter per room ([`Local`]); an implementation that takes
//! its order from elsewhere (several processes sharing rooms) replaces this
//! piece alone.

use super::RoomId;

/// Gives each message of a room its id: 1 for the room's first message,
/// then consecutive integers, in the one order every member sees.
pub trait Sequencer {
    /// The id of the next message of `room`; it is taken (the next call
    /// returns the one after).
    fn next_id(&mut self, room: RoomId) -> u64;
    /// The id of `room`'s last message (0: none yet).
    fn last_id(&self, room: RoomId) -> u64;
    /// `room` was forgotten: a room that takes its place starts again from 1.
    fn forget(&mut self, room: RoomId);
    /// `room`'s last id is `id`, given elsewhere (the cluster's order in
    /// Redis, `crate::cluster`): the next local one would follow it.
    fn advance(&mut self, room: RoomId, id: u64);
}

/// The order of one process: a counter per room.
#[derive(Default)]
pub struct Local {
    /// The last id given, by room slot.
    last: Vec<u64>,
}

impl Sequencer for Local {
    fn next_id(&mut self, room: RoomId) -> u64 {
        let i = room.index();
        if self.last.len() <= i {
            self.last.resize(i + 1, 0);
        }
        self.last[i] += 1;
        self.last[i]
    }

    fn last_id(&self, room: RoomId) -> u64 {
        self.last.get(room.index()).copied().unwrap_or(0)
    }

    fn forget(&mut self, room: RoomId) {
        if let Some(n) = self.last.get_mut(room.index()) {
            *n = 0;
        }
    }

    fn advance(&mut self, room: RoomId, id: u64) {
        let i = room.index();
        if self.last.len() <= i {
            self.last.resize(i + 1, 0);
        }
        self.last[i] = id;
    }
}
