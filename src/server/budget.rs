//! The memory budget (`--max-memory`): the sum of what every connection
//! holds (each connection's share is `Client::held`, what it reported when
//! last accounted), and the decisions the loop carries out before every
//! read and once per turn: how much room history to give up first, whether
//! one more read still fits, and which connection to close when it does not
//! (the one holding the most). Episodes over the budget are logged once.

use log::{info, warn};

pub(super) struct Budget {
    max: usize,
    /// Bytes one more read may add (the loop's read buffer).
    reserve: usize,
    /// Bytes held by all connections (the sum of their shares).
    total: usize,
    /// Over the budget: connections closed in this episode so far.
    episode: Option<usize>,
}

impl Budget {
    pub(super) fn new(max: usize, reserve: usize) -> Budget {
        Budget {
            max,
            reserve,
            total: 0,
            episode: None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
