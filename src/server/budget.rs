//! The memory budget (`--max-memory`): the sum of what every connection
//! holds (each connection's share is `Client::held`, what it reported when
//! last accounted), and the decisions the loop carries out before every
//! read and once per turn: how much room history to give up first, whether
//! one more read still fits, and which connection to close when it does not
//! (the one holding the most). Episodes over the budget are logged once.

use std::time::{Duration, Instant};

use log::{debug, info, warn};

/// Under pressure, the process's resident memory is read at most this
/// often (`/proc/self/status`: a few microseconds).
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

pub(super) struct Budget {
    max: usize,
    /// Bytes one more read may add (the loop's read buffer).
    reserve: usize,
    /// Bytes held by all connections (the sum of their shares).
    total: usize,
    /// Over the budget: connections closed in this episode so far.
    episode: Option<usize>,
    /// What the process holds beyond what is counted (the allocator's
    /// freed pages not yet returned, per-connection structures, code), as
    /// last sampled under pressure; 0 without pressure.
    unaccounted: usize,
    next_sample: Option<Instant>,
}

impl Budget {
    pub(super) fn new(max: usize, reserve: usize) -> Budget {
        Budget {
            max,
            reserve,
            total: 0,
            episode: None,
            unaccounted: 0,
            next_sample: None,
        }
    }

    /// The process's resident memory beyond `total` and `fixed`, so that
    /// the budget bounds the process and not only what is counted: read
    /// from the kernel under pressure (what is counted past half the
    /// budget), at most every `SAMPLE_EVERY`. Over the budget, `purge`
    /// (the allocator's) gives freed pages back first, so no connection is
    /// closed for pages nobody holds.
    pub(super) fn unaccounted(&mut self, fixed: usize, now: Instant, purge: Option<fn()>) -> usize {
        if self.total + fixed + self.reserve < self.max / 2 {
            self.unaccounted = 0;
            return 0;
        }
        if self.next_sample.is_some_and(|t| now < t) {
            return self.unaccounted;
        }
        self.next_sample = Some(now + SAMPLE_EVERY);
        let Some(mut rss) = resident_bytes() else {
            return 0;
        };
        if rss + self.reserve > self.max {
            if let Some(purge) = purge {
                purge();
                let before = rss;
                rss = resident_bytes().unwrap_or(rss);
                debug!("memory budget: resident {before} bytes, {rss} after the allocator's purge");
            }
        }
        self.unaccounted = rss.saturating_sub(self.total + fixed);
        self.unaccounted
    }

    /// A connection's holdings are now `now`; `held` is its share.
    pub(super) fn account(&mut self, held: &mut usize, now: usize) {
        let before = std::mem::replace(held, now);
        self.total = self.total - before + now;
    }

    /// A connection holding `held` is gone.
    pub(super) fn release(&mut self, held: usize) {
        self.total -= held;
    }

    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Bytes of room history to give up so that connections, one more
    /// read, `fixed` (the inspector's ring) and `history` fit.
    pub(super) fn history_over(&self, fixed: usize, history: usize) -> usize {
        if history == 0 {
            return 0;
        }
        (self.total + self.reserve + history).saturating_sub(self.max.saturating_sub(fixed))
    }

    /// Whether one more read fits beside `fixed` bytes held elsewhere (the
    /// ring, room history).
    pub(super) fn fits(&self, fixed: usize) -> bool {
        self.total + self.reserve <= self.max.saturating_sub(fixed)
    }

    /// Back under three quarters of the budget ends an episode (logged).
    pub(super) fn calm(&mut self, fixed: usize) {
        if self.total <= self.max.saturating_sub(fixed) / 4 * 3 {
            if let Some(closed) = self.episode.take() {
                info!(
                    "memory budget: back to {} bytes held; {closed} connections were closed",
                    self.total
                );
            }
        }
    }

    /// Of `(held, key)` pairs, the one to close: the largest holder (none
    /// if nobody holds anything). Counts it in the episode.
    pub(super) fn victim<K>(
        &mut self,
        fixed: usize,
        holders: impl Iterator<Item = (usize, K)>,
    ) -> Option<(usize, K)> {
        let victim = holders
            .filter(|&(held, _)| held > 0)
            .max_by_key(|&(held, _)| held)?;
        if self.episode.is_none() {
            warn!(
                "memory budget: {} bytes held, over --max-memory {} with the next read; \
                 closing the connections holding the most",
                self.total,
                self.max.saturating_sub(fixed)
            );
        }
        *self.episode.get_or_insert(0) += 1;
        Some(victim)
    }
}

/// The process's resident set (`VmRSS` in `/proc/self/status`), where
/// there is one (Linux).
fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    static PURGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn purge() {
        PURGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn under_pressure_the_process_is_weighed_and_purged_first() {
        let calls = || PURGES.load(std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        // No pressure: nothing read, nothing added.
        let mut b = Budget::new(1 << 40, 1024);
        assert_eq!(b.unaccounted(0, now, Some(purge)), 0);
        assert_eq!(calls(), 0);
        // A 1 MiB budget with a 1 MiB reserve: under pressure, and this
        // process (the test binary) holds more than that.
        let mut b = Budget::new(1 << 20, 1 << 20);
        let rss = resident_bytes().expect("/proc/self/status");
        let extra = b.unaccounted(0, now, Some(purge));
        assert!(extra > 0 && extra <= rss * 2, "{extra} beside {rss}");
        assert_eq!(calls(), 1, "over the budget: the allocator purged first");
        assert!(!b.fits(extra));
        // Read again only after SAMPLE_EVERY.
        assert_eq!(b.unaccounted(0, now + SAMPLE_EVERY / 2, Some(purge)), extra);
        assert_eq!(calls(), 1);
        b.unaccounted(0, now + SAMPLE_EVERY, Some(purge));
        assert_eq!(calls(), 2);
    }

    #[test]
    fn the_largest_holder_goes_first_and_history_before_anyone() {
        let mut b = Budget::new(1000, 100);
        let (mut x, mut y) = (0, 0);
        b.account(&mut x, 500);
        b.account(&mut y, 300);
        assert_eq!(b.total(), 800);
        assert!(b.fits(0), "800 + 100 <= 1000");
        assert!(!b.fits(200), "800 + 100 > 800");
        // History: 200 bytes would take 800 + 100 + 200 over 1000 by 100.
        assert_eq!(b.history_over(0, 200), 100);
        assert_eq!(b.history_over(0, 0), 0);
        assert_eq!(b.history_over(150, 50), 950 - 850);
        let holders = [(x, 'x'), (y, 'y'), (0, 'z')];
        assert_eq!(b.victim(200, holders.into_iter()), Some((500, 'x')));
        assert!(b.episode.is_some());
        b.release(x);
        assert_eq!(b.total(), 300);
        assert!(b.fits(200));
        assert_eq!(
            b.victim(0, [(0, 'z')].into_iter()),
            None,
            "nobody holds anything"
        );
        b.account(&mut y, 10);
        assert_eq!(b.total(), 10);
    }
}
