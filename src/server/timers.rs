//! Timers: one min-heap of (deadline, token) for every connection's next
//! deadline (`Connection::poll_timeout`), and the once-a-second sweep. A
//! deadline that moved later keeps its entry (when it fires the core finds
//! nothing due and the loop re-arms it); only an earlier one adds an entry,
//! and stale entries are dropped once they are most of the heap, so idle
//! connections do not keep 16 bytes each there. Knows tokens and instants,
//! nothing of connections: the loop says which entries are still live.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use mio::Token;

use crate::proto::stamp::Stamp;

/// How often quiet connections give back their reusable buffers and
/// lingering rooms are expired: one quiet for a whole period (between one
/// and two of them) loses them.
pub(super) const SWEEP: Duration = Duration::from_secs(1);

/// Stale entries tolerated before a compaction is considered.
const STALE_MIN: usize = 1024;

pub(super) struct Timers {
    /// Deadlines as [`Stamp`]s: 16 bytes an entry.
    heap: BinaryHeap<Reverse<(Stamp, Token)>>,
    /// Entries (about) that no longer match their connection's deadline.
    stale: usize,
    next_sweep: Instant,
}

impl Timers {
    pub(super) fn new(now: Instant) -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            stale: 0,
            next_sweep: now + SWEEP,
        }
    }

    /// Puts `deadline` on the heap for `t` if it is earlier than the one
    /// there (`scheduled`, the connection's record of it, is updated).
    /// Returns whether the heap should be compacted.
    pub(super) fn arm(
        &mut self,
        t: Token,
        scheduled: &mut Option<Stamp>,
        deadline: Option<Instant>,
    ) -> bool {
        match (deadline.map(Stamp::from), *scheduled) {
            (Some(d), s) if s.is_none_or(|s| d < s) => {
                if s.is_some() {
                    self.stale += 1; // superseded by the earlier one
                }
                *scheduled = Some(d);
                self.heap.push(Reverse((d, t)));
            }
            (None, Some(_)) => {
                // No deadline any more (e.g. the handshake finished).
                *scheduled = None;
                self.stale += 1;
            }
            _ => {}
        }
        self.stale >= STALE_MIN && self.stale * 2 >= self.heap.len()
    }

    /// A connection with an entry on the heap is gone: its entry is stale.
    pub(super) fn forget(&mut self, scheduled: Option<Stamp>) {
        if scheduled.is_some() {
            self.stale += 1;
        }
    }

    /// Keeps the entries `live` says still match their connection, and gives
    /// the memory back.
    pub(super) fn compact(&mut self, live: impl Fn(Token, Stamp) -> bool) {
        self.heap.retain(|Reverse((when, t))| live(*t, *when));
        self.heap.shrink_to_fit();
        self.stale = 0;
    }

    /// The next entry due at `now`, taken off the heap. The caller checks it
    /// still matches its connection, and calls [`Timers::stale_popped`] if not.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Stamp, Token)> {
        let &Reverse((when, t)) = self.heap.peek()?;
        if when > Stamp::from(now) {
            return None;
        }
        self.heap.pop();
        Some((when, t))
    }

    pub(super) fn stale_popped(&mut self) {
        self.stale = self.stale.saturating_sub(1);
    }

    /// The earliest deadline on the heap.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| t.instant())
    }

    pub(super) fn next_sweep(&self) -> Instant {
        self.next_sweep
    }

    /// Whether the sweep is due; if so the next one is [`SWEEP`] from now.
    pub(super) fn sweep_due(&mut self, now: Instant) -> bool {
        if now < self.next_sweep {
            return false;
        }
        self.next_sweep = now + SWEEP;
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_earlier_deadline_adds_an_entry() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let (t, mut scheduled) = (Token(1), None);
        let s = Duration::from_secs(1);
        timers.arm(t, &mut scheduled, Some(t0 + 10 * s));
        timers.arm(t, &mut scheduled, Some(t0 + 20 * s));
        let at = |d: Duration| Stamp::from(t0 + d);
        assert_eq!(
            (timers.len(), scheduled),
            (1, Some(at(10 * s))),
            "later: kept"
        );
        timers.arm(t, &mut scheduled, Some(t0 + 5 * s));
        assert_eq!((timers.len(), scheduled), (2, Some(at(5 * s))));
        assert_eq!(timers.next(), Some(t0 + 5 * s));
        assert_eq!(timers.pop_due(t0 + 4 * s), None);
        assert_eq!(timers.pop_due(t0 + 5 * s), Some((at(5 * s), t)));
        // The superseded entry comes out later, and the caller finds it stale.
        assert_eq!(timers.pop_due(t0 + 60 * s), Some((at(10 * s), t)));
        assert_eq!(timers.pop_due(t0 + 60 * s), None);
    }

    #[test]
    fn stale_entries_are_compacted_once_they_are_most_of_the_heap() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let mut scheduled: Vec<Option<Stamp>> = vec![None; 3000];
        for (i, s) in scheduled.iter_mut().enumerate() {
            timers.arm(Token(i), s, Some(t0 + Duration::from_secs(5)));
        }
        let mut compact = false;
        // The handshakes finish: 2,000 deadlines go away.
        for s in scheduled.iter_mut().take(2000) {
            compact = timers.arm(Token(0), s, None);
        }
        assert!(compact);
        timers.compact(|t, when| scheduled[t.0] == Some(when));
        assert_eq!(timers.len(), 1000);
    }

    #[test]
    fn the_sweep_comes_once_a_period() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        assert!(!timers.sweep_due(t0));
        assert!(timers.sweep_due(t0 + SWEEP));
        assert!(!timers.sweep_due(t0 + SWEEP));
        assert_eq!(timers.next_sweep(), t0 + 2 * SWEEP);
    }
}
