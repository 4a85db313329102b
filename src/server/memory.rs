//! The server-wide memory budget (`--max-memory`): each connection's share
//! (`Client::held`, what `Connection::memory` last reported), their sum
//! (`Server::memory`), and before every read (and once per loop turn, for
//! output that grows without reads, such as a `push`) the closing of the
//! connection holding the most while one more read could take the sum over
//! the budget (`Connection::shed`). Debug builds check the bookkeeping every loop turn.
//! Calls `settle` (io.rs) on the connections it closes.

use std::time::Instant;

use log::{info, warn};
use mio::Token;

use super::{token, Server, READ_BUF};

impl Server {
    /// Brings `self.memory` up to date with what the connection holds now.
    /// Called wherever a connection's buffers may have changed: after each
    /// read and its events, after a broadcast queued a frame on it, and in
    /// `settle` (after writes, timers and everything else).
    pub(super) fn account(&mut self, t: Token) {
        let Some(c) = self.client_mut(t) else { return };
        let now = c.memory();
        let before = std::mem::replace(&mut c.held, now);
        self.memory = self.memory - before + now;
    }

    /// The server-wide memory budget (`--max-memory`), checked before every
    /// read and at the end of every loop turn: while one more full read could take the total over it, the
    /// connection holding the most is closed and its buffers freed
    /// ([`Connection::shed`]). Logged once per episode.
    pub(super) fn keep_memory_budget(&mut self, now: Instant) {
        // The frame inspector's ring (bounded by --inspect-frames) takes its
        // share of the budget first.
        let ring = self.inspector.as_ref().map_or(0, |i| i.memory());
        // Rooms' history is counted, and is the first thing given up.
        let over = (self.memory + READ_BUF + self.history_bytes)
            .saturating_sub(self.config.max_memory.saturating_sub(ring));
        if over > 0 && self.history_bytes > 0 {
            let freed = self.shed_history(over);
            info!("memory budget: dropped {freed} bytes of room history (oldest first)");
        }
        let max = self
            .config
            .max_memory
            .saturating_sub(ring + self.history_bytes);
        if self.memory + READ_BUF <= max {
            if self.memory <= max / 4 * 3 {
                if let Some(closed) = self.budget_episode.take() {
                    info!(
                        "memory budget: back to {} bytes held; {closed} connections were closed",
                        self.memory
                    );
                }
            }
            return;
        }
        while self.memory + READ_BUF > max {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((s.client.as_ref()?.held, token(i, s.gen))))
                .max_by_key(|&(held, _)| held);
            let Some((held, v)) = victim.filter(|&(held, _)| held > 0) else {
                return;
            };
            if self.budget_episode.is_none() {
                warn!(
                    "memory budget: {} bytes held, over --max-memory {max} with the next read; \
                     closing the connections holding the most",
                    self.memory
                );
            }
            *self.budget_episode.get_or_insert(0) += 1;
            let Some(c) = self.client_mut(v) else { return };
            let stream = c.proto.is_event_stream();
            match c.proto.shed(now) {
                None if stream => info!(
                    "{}: event stream holds {held} bytes, ended with event: error (memory budget)",
                    c.id
                ),
                Some(code) => info!("{}: holds {held} bytes, closing with {}", c.id, code.0),
                None => info!("{}: holds {held} bytes while closing, dropped", c.id),
            }
            self.settle(v);
            if self.client_mut(v).is_some_and(|c| c.held >= held) {
                // Nothing could be freed without cutting a frame: drop it.
                if let Some(c) = self.client_mut(v) {
                    c.proto.abort();
                }
                self.settle(v);
            }
        }
    }

    /// Debug builds (every test against the binary): at the end of each loop
    /// turn, every connection's holdings are accounted and the total is their
    /// sum, so a path that changes a connection's buffers without `account`
    /// cannot go unnoticed.
    #[cfg(debug_assertions)]
    pub(super) fn check_accounting(&self) {
        let mut sum = 0;
        for c in self.slots.iter().filter_map(|s| s.client.as_ref()) {
            assert_eq!(c.held, c.memory(), "{}: memory not accounted", c.id);
            sum += c.held;
        }
        assert_eq!(sum, self.memory, "memory total out of step");
    }
}
