//! Whether Redis still answers, decided from time passed in (like a
//! WebSocket's ping, never from a socket's state): a connection attempt
//! must be answered (its hello) within the timeout; once up, a link that
//! waits for replies must hear one within the timeout of the wait's start
//! or of the last reply, whichever is later; a link that waits for nothing
//! is asked a `PING` after half a second of quiet (so an idle link to a
//! Redis that stopped is found within the timeout and a half). The check is on an overdue
//! answer, not on throughput: a slow Redis that keeps answering (many
//! commands in flight, a long queue) is never declared lost, one that
//! answers nothing for the timeout is.
//!
//! Times are stamped lazily at the first `tick` after a change (the
//! driver ticks at the end of every turn, the turn the change happened in).

use std::time::{Duration, Instant};

/// A link that waits for nothing is asked a `PING` after this long.
pub const PING_AFTER: Duration = Duration::from_millis(500);

/// What `tick` found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing overdue; `PING` the links marked `true`.
    Fine([bool; 2]),
    /// Redis is not answering: why, for the log.
    Lost(String),
}

#[derive(Debug)]
pub(super) struct Liveness {
    timeout: Duration,
    /// A connection attempt under way (sockets opened, hello not answered
    /// yet): when it started, once stamped.
    attempt: Option<Option<Instant>>,
    /// Per link, while replies are awaited: when the wait for the next one
    /// began (the first request, or the last reply).
    waiting: [Option<Instant>; 2],
    /// Per link, while nothing is awaited: since when.
    quiet: [Option<Instant>; 2],
    /// Per link: a reply came since the last tick.
    heard: [bool; 2],
}

impl Liveness {
    pub(super) fn new(timeout: Duration) -> Liveness {
        Liveness {
            timeout,
            attempt: None,
            waiting: [None; 2],
            quiet: [None; 2],
            heard: [false; 2],
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The driver opened the sockets.
    pub(super) fn connecting(&mut self) {
        *self = Liveness::new(self.timeout);
        self.attempt = Some(None);
    }

    /// The sockets are gone: nothing to watch until the next attempt.
    pub(super) fn reset(&mut self) {
        *self = Liveness::new(self.timeout);
    }

    /// A reply (of any kind) came on link `i`.
    pub(super) fn heard(&mut self, i: usize) {
        self.heard[i] = true;
    }

    /// `tick` asked for a `PING` on link `i`, sent at `now`: waited for from
    /// now.
    pub(super) fn pinged(&mut self, i: usize, now: Instant) {
        self.waiting[i] = Some(now);
    }

    /// Checks the links at `now`. `awaited`: replies each link waits for;
    /// `ready`: which links answered their hello (only those are pinged).
    pub(super) fn tick(&mut self, now: Instant, awaited: [usize; 2], ready: [bool; 2]) -> Verdict {
        if let Some(start) = self.attempt.as_mut() {
            let start = *start.get_or_insert(now);
            if ready == [true; 2] {
                self.attempt = None;
            } else if now >= start + self.timeout {
                return Verdict::Lost(format!(
                    "no answer {} ms after connecting",
                    self.timeout.as_millis()
                ));
            }
        }
        let mut ping = [false; 2];
        for i in 0..2 {
            let heard = std::mem::take(&mut self.heard[i]);
            if awaited[i] > 0 {
                self.quiet[i] = None;
                match self.waiting[i] {
                    Some(since) if !heard => {
                        if now >= since + self.timeout {
                            return Verdict::Lost(format!(
                                "a reply overdue by {} ms",
                                self.timeout.as_millis()
                            ));
                        }
                    }
                    _ => self.waiting[i] = Some(now),
                }
            } else {
                self.waiting[i] = None;
                if ready[i] {
                    let since = *self.quiet[i].get_or_insert(now);
                    if now >= since + PING_AFTER {
                        ping[i] = true;
                        self.quiet[i] = None;
                    }
                }
            }
        }
        Verdict::Fine(ping)
    }

    /// When `tick` must run next (a deadline or a ping), if anything is
    /// watched.
    pub(super) fn next(&self) -> Option<Instant> {
        let attempt = self.attempt.flatten().map(|s| s + self.timeout);
        let waits = self.waiting.iter().flatten().map(|s| *s + self.timeout);
        let pings = self.quiet.iter().flatten().map(|s| *s + PING_AFTER);
        attempt.into_iter().chain(waits).chain(pings).min()
    }
}
