//! A run: consecutive messages of one room published to the same members,
//! delivered as one. The driver gathers what one read of a publisher (or
//! one batch from the cluster) publishes to a room into a run and delivers
//! it when that input is handled: every member then gets the run in its
//! form ([`super::forms::Forms`]) as one queued chunk, written with one
//! `writev` — one frame buffer shared by the whole room instead of a copy
//! per member per message, as a do-nothing server would write it.
//!
//! A run holds the members it is for (a copy of the room's list when its
//! first message was published) and the room's membership generation then:
//! a run only continues while both are unchanged, so a member that joined
//! after a message never gets it live (its history replay may have it),
//! and one that left is not written to.

use std::ops::Range;

use super::RoomId;
use crate::proto::{FrameHeader, MessageKind};

/// One message of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who published it, as the driver names connections (0: none, such as
    /// a message from the cluster), for the inspector's record.
    pub from: u32,
    pub id: u64,
    pub kind: MessageKind,
    /// Where its payload is in [`Run::frames`].
    payload: Range<usize>,
}

/// Consecutive messages of one room for the same members.
#[derive(Debug)]
pub struct Run<M> {
    /// The room and its membership generation when the run began.
    room: Option<(RoomId, u64)>,
    members: Vec<M>,
    entries: Vec<Entry>,
    /// The messages' plain frames, one after the other: what a plain
    /// member is sent.
    frames: Vec<u8>,
}

impl<M> Default for Run<M> {
    fn default() -> Run<M> {
        Run {
            room: None,
            members: Vec::new(),
            entries: Vec::new(),
            frames: Vec::new(),
        }
    }
}

/// Buffers above this are not kept once a run is delivered (a run of one
/// full 256 KiB read, headers included, is kept).
const KEEP_BYTES: usize = 512 * 1024;

impl<M: Copy> Run<M> {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Messages in the run.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a message published to `room`, whose membership generation
    /// is `generation`, may join this run (an empty run takes any).
    pub fn continues(&self, room: RoomId, generation: u64) -> bool {
        self.room.is_none_or(|r| r == (room, generation))
    }

    /// The room of a run that holds messages.
    pub fn room(&self) -> Option<RoomId> {
        self.room.map(|(r, _)| r)
    }

    /// Adds a message. The first one sets the room and its `members`; the
    /// caller checked [`Run::continues`] (a run that does not continue is
    /// delivered and cleared first).
    pub fn push(
        &mut self,
        (room, generation, members): (RoomId, u64, &[M]),
        from: u32,
        id: u64,
        kind: MessageKind,
        data: &[u8],
    ) {
        debug_assert!(self.continues(room, generation), "a run of another room");
        if self.room.is_none() {
            self.room = Some((room, generation));
            self.members.clear();
            self.members.extend_from_slice(members);
        }
        let (header, n) = FrameHeader::server(kind.opcode(), data.len()).encode();
        self.frames.extend_from_slice(&header[..n]);
        let start = self.frames.len();
        self.frames.extend_from_slice(data);
        self.entries.push(Entry {
            from,
            id,
            kind,
            payload: start..self.frames.len(),
        });
    }

    /// Who the run is for.
    pub fn members(&self) -> &[M] {
        &self.members
    }

    /// The messages, in order, with their payloads.
    pub fn messages(&self) -> impl Iterator<Item = (&Entry, &[u8])> {
        self.entries
            .iter()
            .map(|e| (e, &self.frames[e.payload.clone()]))
    }

    /// The plain frames of every message, one after the other.
    pub fn frames(&self) -> &[u8] {
        &self.frames
    }

    /// Payload bytes of every message.
    pub fn payload_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.payload.len()).sum()
    }

    /// Empties the run (delivered), keeping its buffers unless large.
    pub fn clear(&mut self) {
        self.room = None;
        self.members.clear();
        self.entries.clear();
        self.frames.clear();
        if self.frames.capacity() > KEEP_BYTES {
            self.frames = Vec::new();
        }
    }
}
