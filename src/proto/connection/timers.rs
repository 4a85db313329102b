//! Timers: the deadline each state carries, keepalive pings and the idle
//! timeout while open, and the knobs' timers; one query for the next one due.

use std::time::Instant;

use super::{Chunk, CloseCode, Connection, OpCode, State};

impl Connection {
    /// Advances timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.mis().is_some() {
            self.knob_timers(now);
        }
        if self.state.is_open() {
            if self.idle_due().is_some_and(|d| now >= d) {
                self.close(CloseCode::GOING_AWAY, "idle timeout", now);
            } else if self.ping_due().is_some_and(|d| now >= d) {
                self.state = State::Open {
                    last_ping: Some(now),
                };
                self.queue_frame(OpCode::Ping, Chunk::Owned(Vec::new()));
            }
            return;
        }
        if let State::Stream { .. } = self.state {
            return self.stream_keepalive(now);
        }
        if self.held_close_due().is_some_and(|d| now >= d) {
            self.release_close();
        }
        if self.state.deadline().is_some_and(|d| now >= d) {
            if let State::Body { .. } = self.state {
                return self.body_timed_out(now);
            }
            if self.awaits_answer() {
                return self.answer_cut_short(true);
            }
            self.state = State::Dead { timed_out: true };
        }
    }

    /// The next instant at which [`Connection::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let open = self.state.is_open();
        let own = if open {
            match (self.idle_due(), self.ping_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else if let State::Stream { last_out } = self.state {
            self.stream_keepalive_due(last_out)
        } else {
            match (self.state.deadline(), self.held_close_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        match self.mis().and_then(|m| m.next_due(open, self.last_rx())) {
            Some(k) => Some(own.map_or(k, |o| o.min(k))),
            None => own,
        }
    }

    // A zero interval means "off" (it could never be satisfied).
    fn idle_due(&self) -> Option<Instant> {
        let t = self.limits.idle_timeout.filter(|d| !d.is_zero())?;
        Some(self.last_rx() + t)
    }

    /// A keepalive ping is due once nothing arrived, and no ping went out,
    /// for an interval.
    fn ping_due(&self) -> Option<Instant> {
        let State::Open { last_ping } = self.state else {
            return None;
        };
        let quiet_since = last_ping.map_or(self.last_rx(), |p| p.max(self.last_rx()));
        Some(quiet_since + self.limits.ping_interval.filter(|d| !d.is_zero())?)
    }
}
