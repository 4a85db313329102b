//! `Stubbing`: the stub sessions of the loop's connections (issue 27).
//! Owns the rules (`--stubs FILE`) and one `stubs::session::Session` per
//! connection on a path a stub covers; the loop asks it what to send on
//! open, on each message and when a session's timer is due, and sends it
//! (`io.rs`: `apply_stub`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use mio::Token;

use crate::proto::MessageKind;
use crate::stubs::session::{Out, Session};
use crate::stubs::Stubs;

#[derive(Default)]
pub(super) struct Stubbing {
    rules: Option<Arc<Stubs>>,
    sessions: HashMap<Token, Session>,
}

impl Stubbing {
    pub(super) fn new(rules: Option<Arc<Stubs>>) -> Stubbing {
        Stubbing {
            rules,
            sessions: HashMap::new(),
        }
    }

    /// A WebSocket opened on an echo path (`target`: path and query): a
    /// session if a stub covers the path, and what it sends first. `None`:
    /// no stub covers it (the connection echoes as usual).
    pub(super) fn open(
        &mut self,
        t: Token,
        conn: u32,
        target: &str,
        now: Instant,
    ) -> Option<Vec<Out>> {
        let rules = self.rules.as_ref()?;
        let path = target.split('?').next().unwrap_or(target);
        if !rules.covers(path) {
            return None;
        }
        let mut session = Session::new(rules, conn, target);
        let out = session.on_open(rules, now);
        self.sessions.insert(t, session);
        Some(out)
    }

    /// Whether connection `t` has a stub session.
    pub(super) fn is_stubbed(&self, t: Token) -> bool {
        !self.sessions.is_empty() && self.sessions.contains_key(&t)
    }

    /// Whether a stub covers the path of `target` (such a connection does
    /// not stream its echoes).
    pub(super) fn covers(&self, target: &str) -> bool {
        let path = target.split('?').next().unwrap_or(target);
        self.rules.as_ref().is_some_and(|r| r.covers(path))
    }

    /// A whole message on a stubbed connection: what to send (`None`: not
    /// stubbed).
    pub(super) fn message(
        &mut self,
        t: Token,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> Option<Vec<Out>> {
        let rules = self.rules.as_ref()?;
        let session = self.sessions.get_mut(&t)?;
        Some(session.on_message(rules, kind, data, now))
    }

    /// What connection `t`'s session has due at `now`.
    pub(super) fn timer(&mut self, t: Token, now: Instant) -> Vec<Out> {
        match (self.rules.as_ref(), self.sessions.get_mut(&t)) {
            (Some(rules), Some(s)) => s.on_timer(rules, now),
            _ => Vec::new(),
        }
    }

    pub(super) fn next_due(&self, t: Token) -> Option<Instant> {
        if self.sessions.is_empty() {
            return None;
        }
        self.sessions.get(&t)?.next_due()
    }

    pub(super) fn remove(&mut self, t: Token) {
        if !self.sessions.is_empty() {
            self.sessions.remove(&t);
        }
    }
}
