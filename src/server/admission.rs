//! Admission: how many connections are admitted against
//! `--max-connections` (over it a connection is accepted and answered 503
//! at once), and the pause when accepting fails for want of descriptors or
//! memory (no busy loop on a listener that stays readable), logged once per
//! episode. The loop accepts (io.rs) and asks this.

use std::io;
use std::time::{Duration, Instant};

/// How long accepting pauses when the process is out of file descriptors.
pub(super) const PAUSE: Duration = Duration::from_millis(100);

pub(super) struct Admission {
    max: Option<usize>,
    admitted: usize,
    /// Accepting is paused until then.
    paused_until: Option<Instant>,
    /// The current run of accept failures was logged already.
    failing: bool,
}

impl Admission {
    pub(super) fn new(max: Option<usize>) -> Admission {
        Admission {
            max,
            admitted: 0,
            paused_until: None,
            failing: false,
        }
    }

    /// A new connection: admitted (counted) unless at `--max-connections`.
    pub(super) fn admit(&mut self) -> bool {
        if self.max.is_some_and(|max| self.admitted >= max) {
            return false;
        }
        self.admitted += 1;
        true
    }

    /// An admitted connection ended.
    pub(super) fn release(&mut self) {
        self.admitted -= 1;
    }

    /// An accept succeeded: a run of failures is over.
    pub(super) fn accepted(&mut self) {
        self.failing = false;
    }

    /// An accept failed with an error that is not transient: pause. Returns
    /// whether this is the first failure of a run (to be logged).
    pub(super) fn failed(&mut self, now: Instant) -> bool {
        self.paused_until = Some(now + PAUSE);
        !std::mem::replace(&mut self.failing, true)
    }

    pub(super) fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    pub(super) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Whether a pause ended at `now` (accepting resumes).
    pub(super) fn resume_due(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            return true;
        }
        false
    }
}

/// Errors after which the next accept may well succeed: skipped.
pub(super) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_counts_the_admitted_only() {
        let mut a = Admission::new(Some(2));
        assert!(a.admit() && a.admit());
        assert!(!a.admit(), "the third gets 503");
        assert!(!a.admit(), "a refused one is not counted");
        a.release();
        assert!(a.admit());
        let mut unlimited = Admission::new(None);
        assert!((0..10_000).all(|_| unlimited.admit()));
    }

    #[test]
    fn out_of_descriptors_pauses_and_logs_once_per_run() {
        let t0 = Instant::now();
        let mut a = Admission::new(None);
        assert!(a.failed(t0), "first failure: logged");
        assert!(a.is_paused());
        assert!(!a.resume_due(t0 + PAUSE / 2));
        assert!(a.resume_due(t0 + PAUSE));
        assert!(!a.is_paused());
        assert!(!a.failed(t0 + PAUSE), "still the same run: not logged");
        assert_eq!(a.paused_until(), Some(t0 + 2 * PAUSE));
        a.accepted();
        assert!(a.failed(t0 + PAUSE * 3), "a new run");
        assert!(is_transient(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_transient(&io::Error::from_raw_os_error(24)), "EMFILE");
    }
}
