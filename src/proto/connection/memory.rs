//! Memory: what a connection holds in buffers (for the server's budget) and
//! the storage a quiet connection gives back.

use super::{Connection, Deflate};

impl Connection {
    /// Heap bytes this connection holds in buffers: the request being read,
    /// the message being assembled, control payloads, events not yet taken,
    /// and the output queue with its buffers kept for reuse (see
    /// [`OutQueue::memory`]). Not counted: the fixed-size struct itself (a
    /// few hundred bytes, the same for every connection). O(1) while the
    /// event queue is drained, which it is between reads.
    pub fn memory(&self) -> usize {
        self.hs.as_ref().map_or(0, |h| {
            h.pending.capacity() + h.body.as_ref().map_or(0, |b| b.memory())
        }) + self.message().map_or(0, |m| m.capacity())
            + self.ctl.as_ref().map_or(0, |c| {
                c.payload.capacity()
                    + c.pending_pong.as_ref().map_or(0, |p| p.capacity())
                    + c.held_close.as_ref().map_or(0, |p| p.capacity())
                    + c.deflate.as_ref().map_or(0, Deflate::memory)
                    + c.knobs.as_ref().map_or(0, |m| m.memory())
            })
            + self.items.memory()
            + self.out.memory()
    }

    /// Gives back the storage a quiet connection keeps for reuse: the event
    /// queue's, the output queue's with its spare buffers (all of it if
    /// nothing is unsent, else the spares) and an empty control buffer.
    /// Busy connections reuse these to not allocate per message; one that
    /// went quiet has no use for them (10,000 idle connections that each
    /// sent one message would otherwise keep ~2 KiB each). The driver calls
    /// this periodically: a connection that received or queued anything
    /// since the previous call only has that noted, so only a connection
    /// quiet for a whole period loses its buffers. Returns whether anything
    /// was freed.
    pub fn release_if_quiet(&mut self) -> bool {
        if std::mem::take(&mut self.recent) {
            return false;
        }
        let before = self.memory();
        self.items.release();
        if self.out.is_empty() {
            self.out.release();
        } else {
            self.out.release_spares();
        }
        if let Some(c) = self.ctl.as_mut().filter(|c| c.payload.is_empty()) {
            c.payload = Vec::new();
            // Not while a frame is being received: a control frame's header
            // may have come without its payload yet.
            if c.pending_pong.is_none()
                && c.deflate.is_none()
                && c.knobs.is_none()
                && c.close_received.is_none()
                && c.keys.is_none()
                && !c.hold_closes
                && c.error.is_none()
                && self.frame().is_none()
            {
                self.ctl = None;
            }
        }
        if self
            .rx
            .as_ref()
            .is_some_and(|r| r.frame.is_none() && r.message.is_none() && r.header_len == 0)
        {
            self.rx = None;
        }
        self.memory() != before
    }
}
