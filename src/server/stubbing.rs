//! `Stubbing`: stubs in the loop (issue 27). Owns the rules — the file's
//! (`--stubs FILE`, re-read when it changes) and those added over HTTP —
//! as one snapshot new connections take, one `stubs::session::Session` per
//! stubbed connection with the snapshot it opened with, how often each
//! stub matched, and the newest messages no stub matched with the nearest
//! miss. The loop asks it on open, per message, when a session's timer is
//! due and for the `/stubs` endpoints, and sends what it says (`io.rs`:
//! `apply_stub`; `http.rs`: `answer_stubs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use log::{info, warn};
use mio::Token;
use serde::Serialize;

use crate::proto::MessageKind;
use crate::stubs::session::{Miss, Out, Session};
use crate::stubs::{read, Otherwise, Sender, Stub, Stubs, Upgrade, Verdict};

/// Messages no stub matched, kept for `GET /stubs/unmatched`.
const UNMATCHED: usize = 100;
/// Of each, the text kept.
const UNMATCHED_TEXT: usize = 4096;
/// Stubs accepted in one `POST /stubs`, in bytes.
pub(super) const MAX_POST: usize = 1 << 20;

struct File {
    path: PathBuf,
    modified: Option<SystemTime>,
    stubs: Vec<Arc<Stub>>,
    upgrades: Vec<Arc<Upgrade>>,
    otherwise: Otherwise,
}

#[derive(Serialize)]
struct Unmatched {
    conn: u32,
    path: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binary_len: Option<usize>,
    nearest: Option<Nearest>,
    why: String,
}

#[derive(Serialize)]
struct Nearest {
    id: u64,
    name: String,
}

#[derive(Serialize)]
struct Listed<'a> {
    id: u64,
    name: &'a str,
    source: &'static str,
    matched: u64,
    stub: &'a serde_json::Value,
}

pub(super) struct Stubbing {
    file: Option<File>,
    /// Added over HTTP, newest first.
    api: Vec<Arc<Stub>>,
    api_upgrades: Vec<Arc<Upgrade>>,
    /// What a new connection takes: `api` then the file's.
    rules: Arc<Stubs>,
    next_id: u64,
    matched: HashMap<u64, u64>,
    unmatched: VecDeque<Unmatched>,
    sessions: HashMap<Token, (Arc<Stubs>, Session)>,
    /// `POST /stubs` requests whose body is being read.
    pending: HashSet<Token>,
    max_message: usize,
    /// `--stubs-speed`: the delays of every stub loaded are divided by it.
    speed: f64,
}

fn with_ids(stubs: Vec<Arc<Stub>>, next_id: &mut u64, from_file: bool) -> Vec<Arc<Stub>> {
    stubs
        .into_iter()
        .map(|s| {
            let mut s = Arc::try_unwrap(s).unwrap_or_else(|_| unreachable!("freshly parsed"));
            *next_id += 1;
            s.id = *next_id;
            s.from_file = from_file;
            Arc::new(s)
        })
        .collect()
}

impl Stubbing {
    /// `file`: the `--stubs` path, read now; an error says where it is
    /// wrong (`FILE:LINE:COLUMN: what`).
    pub(super) fn new(
        file: Option<PathBuf>,
        max_message: usize,
        speed: f64,
    ) -> Result<Stubbing, String> {
        let mut s = Stubbing {
            file: None,
            api: Vec::new(),
            api_upgrades: Vec::new(),
            rules: Arc::default(),
            next_id: 0,
            matched: HashMap::new(),
            unmatched: VecDeque::new(),
            sessions: HashMap::new(),
            pending: HashSet::new(),
            max_message,
            speed,
        };
        if let Some(path) = file {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let stubs = read(&path, max_message)?.at_speed(speed);
            s.file = Some(File {
                path,
                modified,
                stubs: with_ids(stubs.stubs, &mut s.next_id, true),
                upgrades: stubs.upgrades,
                otherwise: stubs.otherwise,
            });
        }
        s.rebuild();
        Ok(s)
    }

    fn rebuild(&mut self) {
        let mut stubs = self.api.clone();
        let mut upgrades = self.api_upgrades.clone();
        let mut otherwise = Otherwise::Echo;
        if let Some(f) = &self.file {
            stubs.extend(f.stubs.iter().cloned());
            upgrades.extend(f.upgrades.iter().cloned());
            otherwise = f.otherwise.clone();
        }
        let mut rules = Stubs {
            stubs,
            upgrades,
            otherwise,
        };
        rules.by_priority();
        self.rules = Arc::new(rules);
    }

    /// Once a second: the file re-read if it changed. A bad edit keeps the
    /// rules in force and logs where it is wrong.
    pub(super) fn reload_if_changed(&mut self) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let modified = std::fs::metadata(&f.path).and_then(|m| m.modified()).ok();
        if modified == f.modified {
            return;
        }
        f.modified = modified;
        match read(&f.path, self.max_message).map(|s| s.at_speed(self.speed)) {
            Ok(new) => {
                f.stubs = with_ids(new.stubs, &mut self.next_id, true);
                f.upgrades = new.upgrades;
                f.otherwise = new.otherwise;
                info!(
                    "stubs: {} re-read: {} stubs for new connections",
                    f.path.display(),
                    f.stubs.len()
                );
                self.rebuild();
            }
            Err(e) => warn!("stubs: {e}; the rules in force stay"),
        }
    }

    /// Whether a stub covers the path of `target` (such a connection does
    /// not stream its echoes).
    pub(super) fn covers(&self, target: &str) -> bool {
        let path = target.split('?').next().unwrap_or(target);
        self.rules.covers(path)
    }

    /// Whether an upgrade rule may look at a request's headers.
    pub(super) fn has_upgrades(&self) -> bool {
        !self.rules.upgrades.is_empty()
    }

    /// The first upgrade rule a request on an echo path meets, if any.
    pub(super) fn verdict(&self, target: &str, headers: &[(String, String)]) -> Option<Verdict> {
        if self.rules.upgrades.is_empty() {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = crate::stubs::session::query_pairs(query);
        self.rules
            .upgrades
            .iter()
            .find(|u| u.matches(path, headers, &query))
            .map(|u| u.verdict.clone())
    }

    /// A WebSocket opened on an echo path a stub covers: its session, and
    /// what it sends first.
    pub(super) fn open(
        &mut self,
        t: Token,
        conn: u32,
        target: &str,
        headers: Vec<(String, String)>,
        now: Instant,
    ) -> Vec<Out> {
        let rules = self.rules.clone();
        let mut session = Session::new(&rules, conn, target);
        session.set_headers(headers);
        let answer = session.on_open(&rules, now);
        if let Some(i) = answer.matched {
            *self.matched.entry(rules.stubs[i].id).or_default() += 1;
        }
        self.sessions.insert(t, (rules, session));
        answer.out
    }

    /// Whether connection `t` has a stub session.
    pub(super) fn is_stubbed(&self, t: Token) -> bool {
        !self.sessions.is_empty() && self.sessions.contains_key(&t)
    }

    /// A whole message on a stubbed connection: what to send.
    pub(super) fn message(
        &mut self,
        t: Token,
        conn: u32,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> Vec<Out> {
        let Some((rules, session)) = self.sessions.get_mut(&t) else {
            return Vec::new();
        };
        let answer = session.on_message(rules, kind, data, now);
        if let Some(i) = answer.matched {
            *self.matched.entry(rules.stubs[i].id).or_default() += 1;
        }
        let out = answer.out;
        if let Some(miss) = answer.miss {
            self.note_miss(t, conn, kind, data, miss);
        }
        out
    }

    /// A message no stub matched, for `/stubs/unmatched` (the newest kept).
    fn note_miss(&mut self, t: Token, conn: u32, kind: MessageKind, data: &[u8], miss: Miss) {
        let Some((rules, session)) = self.sessions.get(&t) else {
            return;
        };
        let text = (kind == MessageKind::Text).then(|| {
            let cut = data.len().min(UNMATCHED_TEXT);
            String::from_utf8_lossy(&data[..cut]).into_owned()
        });
        if self.unmatched.len() == UNMATCHED {
            self.unmatched.pop_front();
        }
        self.unmatched.push_back(Unmatched {
            conn,
            path: session.path().to_string(),
            state: session.state().to_string(),
            binary_len: text.is_none().then_some(data.len()),
            text,
            nearest: miss.nearest.map(|i| Nearest {
                id: rules.stubs[i].id,
                name: rules.stubs[i].name.clone(),
            }),
            why: miss.why,
        });
    }

    /// A whole message on a proxied pair whose client leg `t` has a stub
    /// session, from the client or from the upstream: the replies of the
    /// stub that matched it (to the client; the message goes no further),
    /// or `None` when none did and it goes on to the other side. A client
    /// message none matched is listed in `/stubs/unmatched` as on any path.
    pub(super) fn relayed(
        &mut self,
        t: Token,
        conn: u32,
        from: Sender,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> Option<Vec<Out>> {
        let (rules, session) = self.sessions.get_mut(&t)?;
        let answer = session.on_message_from(rules, from, kind, data, now, false);
        match answer.matched {
            Some(i) => {
                *self.matched.entry(rules.stubs[i].id).or_default() += 1;
                Some(answer.out)
            }
            None => {
                if let Some(miss) = answer.miss {
                    self.note_miss(t, conn, kind, data, miss);
                }
                None
            }
        }
    }

    /// What connection `t`'s session has due at `now`.
    pub(super) fn timer(&mut self, t: Token, now: Instant) -> Vec<Out> {
        match self.sessions.get_mut(&t) {
            Some((rules, s)) => s.on_timer(rules, now),
            None => Vec::new(),
        }
    }

    pub(super) fn next_due(&self, t: Token) -> Option<Instant> {
        if self.sessions.is_empty() {
            return None;
        }
        self.sessions.get(&t)?.1.next_due()
    }

    pub(super) fn remove(&mut self, t: Token) {
        if !self.sessions.is_empty() {
            self.sessions.remove(&t);
        }
        if !self.pending.is_empty() {
            self.pending.remove(&t);
        }
    }

    /// `POST /stubs` on `t`: its body is being read.
    pub(super) fn expect_body(&mut self, t: Token) {
        self.pending.insert(t);
    }

    /// Whether `t`'s request body is a `POST /stubs`.
    pub(super) fn take_pending(&mut self, t: Token) -> bool {
        !self.pending.is_empty() && self.pending.remove(&t)
    }

    /// `POST /stubs`: the new stubs' ids, or a status and why.
    pub(super) fn add(&mut self, body: &[u8]) -> Result<String, (u16, &'static str, String)> {
        if body.len() > MAX_POST {
            return Err((
                413,
                "Content Too Large",
                format!("over {MAX_POST} bytes of stubs in one request"),
            ));
        }
        let parsed = Stubs::parse_api(body, self.max_message)
            .map(|s| s.at_speed(self.speed))
            .map_err(|e| (400, "Bad Request", e))?;
        let new = with_ids(parsed.stubs, &mut self.next_id, false);
        let ids: Vec<u64> = new.iter().map(|s| s.id).collect();
        // Newest first, in the order given.
        for s in new.into_iter().rev() {
            self.api.insert(0, s);
        }
        for u in parsed.upgrades.into_iter().rev() {
            self.api_upgrades.insert(0, u);
        }
        self.rebuild();
        Ok(serde_json::json!({ "ids": ids }).to_string())
    }

    /// `DELETE /stubs/ID` (`Some`) or every stub added over HTTP (`None`).
    pub(super) fn delete(
        &mut self,
        id: Option<u64>,
    ) -> Result<String, (u16, &'static str, String)> {
        let before = self.api.len();
        match id {
            None => {
                self.api.clear();
                self.api_upgrades.clear();
            }
            Some(id) => {
                if self
                    .file
                    .as_ref()
                    .is_some_and(|f| f.stubs.iter().any(|s| s.id == id))
                {
                    return Err((
                        409,
                        "Conflict",
                        format!("stub {id} is the file's: edit the file"),
                    ));
                }
                self.api.retain(|s| s.id != id);
                if self.api.len() == before {
                    return Err((404, "Not Found", format!("no stub {id}")));
                }
            }
        }
        self.rebuild();
        Ok(serde_json::json!({ "deleted": before - self.api.len() }).to_string())
    }

    /// `POST /stubs/reset`: the counts and the unmatched list cleared.
    pub(super) fn reset(&mut self) -> String {
        self.matched.clear();
        self.unmatched.clear();
        "{\"reset\":true}".into()
    }

    /// `GET /stubs`: every stub in the order they are tried, and the
    /// upgrade rules.
    pub(super) fn list(&self) -> String {
        let list: Vec<Listed> = self
            .rules
            .stubs
            .iter()
            .map(|s| Listed {
                id: s.id,
                name: &s.name,
                source: if s.from_file { "file" } else { "api" },
                matched: self.matched.get(&s.id).copied().unwrap_or(0),
                stub: &s.raw,
            })
            .collect();
        let upgrades: Vec<&serde_json::Value> =
            self.rules.upgrades.iter().map(|u| &u.raw).collect();
        serde_json::json!({ "stubs": list, "upgrades": upgrades }).to_string()
    }

    /// `GET /stubs/unmatched`: the newest messages no stub matched, oldest
    /// first.
    pub(super) fn unmatched(&self) -> String {
        serde_json::to_string(&self.unmatched).unwrap_or_default()
    }
}
