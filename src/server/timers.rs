//! Timers: one min-heap of (deadline, token) for every connection's next
//! deadline (`Connection::poll_timeout`). A deadline that moved later keeps
//! its entry (the core finds nothing due and it is re-armed); only an earlier
//! one adds an entry, and stale entries are dropped once they are most of the
//! heap. Calls the core's `handle_timeout` and `settle` (io.rs). Also the
//! periodic sweep that makes quiet connections give back the buffers they
//! keep for reuse (`Connection::release_if_quiet`), accounted in memory.rs.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use mio::Token;

use super::{split, token, Server};

/// How often quiet connections give back their reusable buffers: one quiet
/// for a whole period (between one and two of them) loses them.
pub(super) const QUIET_SWEEP: Duration = Duration::from_secs(1);

impl Server {
    /// Puts the connection's next deadline on the heap if it is earlier than
    /// the one already there (see the module header).
    pub(super) fn arm_timer(&mut self, t: Token) {
        let Some(c) = self.client_mut(t) else { return };
        // A deadline that moved later (traffic pushing an idle timer back) keeps
        // its heap entry: when that fires, the core says nothing is due and the
        // entry is re-armed. Only an earlier deadline adds an entry, so the heap
        // does not grow with every message.
        let mut stale = 0;
        match (c.proto.poll_timeout(), c.scheduled) {
            (Some(d), s) if s.is_none_or(|s| d < s) => {
                if s.is_some() {
                    stale += 1; // superseded by the earlier one
                }
                c.scheduled = Some(d);
                self.timers.push(Reverse((d, t)));
            }
            (None, Some(_)) => {
                // No deadline any more (e.g. the handshake finished): the
                // entry is stale.
                c.scheduled = None;
                stale += 1;
            }
            _ => {}
        }
        self.stale_timers += stale;
        self.compact_timers();
    }

    /// Drops stale heap entries once they are most of the heap, and gives the
    /// memory back: every connection pushes a handshake deadline, and 10,000
    /// connections that opened and went idle would otherwise keep 24 bytes
    /// each in the heap until their handshake timeout passes.
    pub(super) fn compact_timers(&mut self) {
        if self.stale_timers < 1024 || self.stale_timers * 2 < self.timers.len() {
            return;
        }
        let slots = &self.slots;
        self.timers.retain(|Reverse((when, t))| {
            let (index, gen) = split(*t);
            slots
                .get(index)
                .filter(|s| s.gen == gen)
                .and_then(|s| s.client.as_ref())
                .is_some_and(|c| c.scheduled == Some(*when))
        });
        self.timers.shrink_to_fit();
        self.stale_timers = 0;
    }

    pub(super) fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((when, t))) = self.timers.peek().copied() {
            if when > now {
                return;
            }
            self.timers.pop();
            let Some(c) = self.client_mut(t).filter(|c| c.scheduled == Some(when)) else {
                // Superseded, or the connection is gone.
                self.stale_timers = self.stale_timers.saturating_sub(1);
                continue;
            };
            c.scheduled = None;
            c.proto.handle_timeout(now);
            self.settle(t);
        }
    }

    /// Once per [`QUIET_SWEEP`]: every connection that neither received nor
    /// queued anything since the previous sweep frees the buffers it keeps
    /// for reuse. A walk over the slots (10,000 connections: some tens of
    /// microseconds a second), nothing per message.
    pub(super) fn sweep_quiet(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + QUIET_SWEEP;
        self.expire_rooms(now);
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let gen = slot.gen;
            if let Some(c) = slot.client.as_mut() {
                if c.proto.release_if_quiet() {
                    self.account(token(i, gen));
                }
            }
        }
    }
}
