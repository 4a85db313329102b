//! One connection's stub engine, sans-IO: messages in, replies, closes and
//! timers out (`next_due`, `on_timer`). It keeps the connection's state
//! name, how often each stub matched, and the replies still to come
//! (delayed ones and streams). The driver sends what it says.

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::template::Context;
use super::{Body, On, Otherwise, Sender, Stubs, Then};
use crate::proto::MessageKind;

/// What the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Send(MessageKind, Vec<u8>),
    /// No stub matched and `otherwise` is `echo`: echo the message.
    Echo,
    Close(u16, String),
    /// Without a close frame; a TCP reset if `true`.
    Drop(bool),
}

/// What a session made of an event: what to send, which stub matched (by
/// index), and for a message none matched, the nearest miss.
#[derive(Debug, Default)]
pub struct Answer {
    pub out: Vec<Out>,
    pub matched: Option<usize>,
    pub miss: Option<Miss>,
}

/// Why no stub answered a message: the stub that came closest (by index)
/// and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub nearest: Option<usize>,
    pub why: String,
}

#[derive(Debug)]
enum Later {
    Reply {
        stub: usize,
        reply: usize,
        ctx: Rc<Context>,
        /// A stream: the state epoch it belongs to, messages left, the
        /// interval.
        stream: Option<(u64, u64, Duration)>,
    },
    Then(Then),
}

#[derive(Debug)]
pub struct Session {
    conn: u32,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    state: String,
    /// Bumped when the state changes: streams of an older epoch stop.
    epoch: u64,
    /// How many times each stub matched here.
    counts: Vec<u64>,
    /// Replies and closes to come, with when and an order for ties.
    later: Vec<(Instant, u64, Later)>,
    seq: u64,
    /// A close or drop was given: nothing more.
    done: bool,
}

/// `a=1&b=x%20y` as pairs (percent-decoded, `+` as a space).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    use crate::proto::knobs::unescape;
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// Whether `value` contains `pattern`: every key of a pattern object
/// present with a matching value, recursively; anything else equal.
pub fn contains(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| contains(vv, pv))),
        _ => value == pattern,
    }
}

/// At most 80 characters of `s`, for a reason.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The first place `value` does not contain `pattern`, with how many
/// pattern keys matched before it (`None`: it contains it).
fn first_difference(value: &Value, pattern: &Value, at: &str) -> Option<(u32, String)> {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => {
            let mut matched = 0;
            for (k, pv) in p {
                let here = format!("{at}.{k}");
                match v.get(k) {
                    None => return Some((matched, format!("{here}: missing (expected {pv})"))),
                    Some(vv) => {
                        if let Some((m, why)) = first_difference(vv, pv, &here) {
                            return Some((matched + m, why));
                        }
                        matched += 1;
                    }
                }
            }
            None
        }
        _ if value == pattern => None,
        _ => Some((0, format!("{at}: expected {pattern}, got {value}"))),
    }
}

impl Session {
    /// A session for a connection with id `conn` opened on `target` (the
    /// request target, query included).
    pub fn new(stubs: &Stubs, conn: u32, target: &str) -> Session {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Session {
            conn,
            path: path.to_string(),
            query: query_pairs(query),
            headers: Vec::new(),
            state: "start".into(),
            epoch: 0,
            counts: vec![0; stubs.stubs.len()],
            later: Vec::new(),
            seq: 0,
            done: false,
        }
    }

    /// The upgrade request's headers (for `{{header.NAME}}`).
    pub fn set_headers(&mut self, headers: Vec<(String, String)>) {
        self.headers = headers;
    }

    /// The request path (query removed).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The connection's state name (every one starts in `"start"`).
    pub fn state(&self) -> &str {
        &self.state
    }

    /// Right after the handshake: the `"open"` stubs.
    pub fn on_open(&mut self, stubs: &Stubs, now: Instant) -> Answer {
        let mut a = Answer::default();
        let found = stubs.stubs.iter().position(|s| {
            matches!(s.on, On::Open)
                && s.path.matches(&self.path)
                && self.in_state(s.state.as_deref())
        });
        if let Some(i) = found {
            let ctx = self.context();
            self.fire(stubs, i, ctx, now, &mut a.out);
            a.matched = Some(i);
        }
        a
    }

    /// A whole message: the first stub that matches answers it, else
    /// `otherwise`.
    pub fn on_message(
        &mut self,
        stubs: &Stubs,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> Answer {
        self.on_message_from(stubs, Sender::Client, kind, data, now, true)
    }

    /// A whole message from `from` (on a proxied path, the client's or the
    /// upstream's): only the stubs for that sender are tried. `otherwise`:
    /// apply the file's `otherwise` when none matched (not on a proxied
    /// path, where an unmatched message goes on to the other side); a miss
    /// is reported for the client's messages only.
    pub fn on_message_from(
        &mut self,
        stubs: &Stubs,
        from: Sender,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
        otherwise: bool,
    ) -> Answer {
        let mut a = Answer::default();
        if self.done {
            return a;
        }
        let text = (kind == MessageKind::Text)
            .then(|| std::str::from_utf8(data).ok())
            .flatten();
        let json: Option<Value> = text.and_then(|t| serde_json::from_str(t).ok());
        for (i, s) in stubs.stubs.iter().enumerate() {
            if s.from != from || !s.path.matches(&self.path) || !self.in_state(s.state.as_deref()) {
                continue;
            }
            let mut captures = Vec::new();
            let hit = match &s.on {
                On::Open => false,
                On::Any => true,
                On::Text(t) => text == Some(t.as_str()),
                On::Binary(b) => kind == MessageKind::Binary && data == b.as_slice(),
                On::Json(p) => json.as_ref().is_some_and(|v| contains(v, p)),
                // Without groups the match alone (the regex crate's faster
                // engines); with groups, the captures.
                On::Regex(r) if r.captures_len() == 1 => match text.and_then(|t| r.find(t)) {
                    Some(m) => {
                        captures.push(("0".to_string(), Some(m.as_str().to_string())));
                        true
                    }
                    None => false,
                },
                On::Regex(r) => match text.and_then(|t| r.captures(t)) {
                    Some(c) => {
                        for (g, name) in r.capture_names().enumerate() {
                            let v = c.get(g).map(|m| m.as_str().to_string());
                            captures.push((g.to_string(), v.clone()));
                            if let Some(name) = name {
                                captures.push((name.to_string(), v));
                            }
                        }
                        true
                    }
                    None => false,
                },
            };
            if hit {
                let mut ctx = self.context();
                ctx.message = text.map(str::to_string);
                ctx.json = json;
                ctx.captures = captures;
                self.fire(stubs, i, ctx, now, &mut a.out);
                a.matched = Some(i);
                return a;
            }
        }
        if from == Sender::Client {
            a.miss = Some(self.nearest(stubs, kind, data, text, json.as_ref()));
        }
        if !otherwise {
            return a;
        }
        match &stubs.otherwise {
            Otherwise::Echo => a.out.push(Out::Echo),
            Otherwise::Ignore => {}
            Otherwise::Close(code, reason) => {
                self.done = true;
                a.out.push(Out::Close(*code, reason.clone()));
            }
        }
        a
    }

    /// The stub on this path that came closest to matching a message, and
    /// what was wrong: a right message in the wrong state beats a message
    /// that differs; among JSON patterns, the one with more keys matched.
    fn nearest(
        &self,
        stubs: &Stubs,
        kind: MessageKind,
        data: &[u8],
        text: Option<&str>,
        json: Option<&Value>,
    ) -> Miss {
        let mut best: Option<(u32, usize, String)> = None;
        for (i, s) in stubs.stubs.iter().enumerate() {
            if s.from != Sender::Client || !s.path.matches(&self.path) || matches!(s.on, On::Open) {
                continue;
            }
            let on = match &s.on {
                On::Open => continue,
                On::Any => Ok(()),
                On::Text(t) => match text {
                    Some(x) if x == t => Ok(()),
                    Some(x) => Err((10, format!("text: expected {t:?}, got {:?}", clip(x)))),
                    None => Err((2, format!("text: expected {t:?}, got a binary message"))),
                },
                On::Binary(b) if kind == MessageKind::Binary => match data == b.as_slice() {
                    true => Ok(()),
                    false => Err((
                        10,
                        format!(
                            "binary_hex: expected {}, got {}",
                            hex(b),
                            hex(&data[..data.len().min(32)])
                        ),
                    )),
                },
                On::Binary(_) => Err((2, "binary_hex: a text message".to_string())),
                On::Regex(r) => match text {
                    Some(x) if r.is_match(x) => Ok(()),
                    Some(x) => Err((
                        10,
                        format!("regex {:?} does not match {:?}", r.as_str(), clip(x)),
                    )),
                    None => Err((2, format!("regex {:?}: a binary message", r.as_str()))),
                },
                On::Json(p) => match json {
                    None => Err((2, "json: the message is not JSON".to_string())),
                    Some(v) => match first_difference(v, p, "json") {
                        None => Ok(()),
                        Some((matched, why)) => Err((10 + matched, why)),
                    },
                },
            };
            let (score, why) = match (on, s.state.as_deref()) {
                (Ok(()), Some(w)) if w != self.state => {
                    (1000, format!("state is {:?}, stub wants {w:?}", self.state))
                }
                (Ok(()), _) => continue,
                (Err((score, why)), Some(w)) if w != self.state => (
                    score / 2,
                    format!("{why}; and state is {:?}, stub wants {w:?}", self.state),
                ),
                (Err((score, why)), _) => (score, why),
            };
            if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                best = Some((score, i, why));
            }
        }
        match best {
            Some((_, i, why)) => Miss {
                nearest: Some(i),
                why,
            },
            None => Miss {
                nearest: None,
                why: "no stub on this path answers messages".into(),
            },
        }
    }

    /// When the next delayed reply or stream message is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.later.iter().map(|(t, _, _)| *t).min()
    }

    /// What is due at `now`, in order.
    pub fn on_timer(&mut self, stubs: &Stubs, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        while let Some(at) = self
            .later
            .iter()
            .enumerate()
            .filter(|(_, (t, _, _))| *t <= now)
            .min_by_key(|(_, (t, seq, _))| (*t, *seq))
            .map(|(i, _)| i)
        {
            let (due, _, item) = self.later.swap_remove(at);
            if self.done {
                self.later.clear();
                break;
            }
            match item {
                Later::Then(then) => self.apply_end(then, &mut out),
                Later::Reply {
                    stub,
                    reply,
                    ctx,
                    stream,
                } => {
                    if let Some((epoch, left, every)) = stream {
                        // A stream stops when the state changes.
                        if epoch != self.epoch {
                            continue;
                        }
                        out.push(render(stubs, stub, reply, &ctx));
                        if left > 1 {
                            let mut next = (*ctx).clone();
                            next.n += 1;
                            self.push_later(
                                due + every,
                                Later::Reply {
                                    stub,
                                    reply,
                                    ctx: Rc::new(next),
                                    stream: Some((epoch, left - 1, every)),
                                },
                            );
                        }
                    } else {
                        out.push(render(stubs, stub, reply, &ctx));
                    }
                }
            }
        }
        out
    }

    fn in_state(&self, wanted: Option<&str>) -> bool {
        wanted.is_none_or(|w| w == self.state)
    }

    fn context(&self) -> Context {
        Context {
            query: self.query.clone(),
            headers: self.headers.clone(),
            conn: self.conn,
            n: 1,
            ..Context::default()
        }
    }

    fn push_later(&mut self, at: Instant, item: Later) {
        self.seq += 1;
        self.later.push((at, self.seq, item));
    }

    fn apply_end(&mut self, then: Then, out: &mut Vec<Out>) {
        match then {
            Then::State(_) => {}
            Then::Close(code, reason) => {
                self.done = true;
                self.later.clear();
                out.push(Out::Close(code, reason));
            }
            Then::Drop(reset) => {
                self.done = true;
                self.later.clear();
                out.push(Out::Drop(reset));
            }
        }
    }

    /// Stub `i` matched: its replies (now, later, or as a stream), its
    /// state move, and its close or drop after the replies that are not
    /// streams.
    fn fire(
        &mut self,
        stubs: &Stubs,
        i: usize,
        mut ctx: Context,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let stub = &stubs.stubs[i];
        self.counts[i] += 1;
        ctx.count = self.counts[i];
        if let Some(Then::State(s)) = &stub.then {
            if *s != self.state {
                self.state = s.clone();
                self.epoch += 1;
            }
        }
        let ctx = Rc::new(ctx);
        let mut last = None::<Instant>;
        for (j, r) in stub.reply.iter().enumerate() {
            match r.every {
                Some(every) => self.push_later(
                    now + r.after + every,
                    Later::Reply {
                        stub: i,
                        reply: j,
                        ctx: ctx.clone(),
                        stream: Some((self.epoch, r.count, every)),
                    },
                ),
                None if r.after.is_zero() => out.push(render(stubs, i, j, &ctx)),
                None => {
                    let at = now + r.after;
                    last = Some(last.map_or(at, |l| l.max(at)));
                    self.push_later(
                        at,
                        Later::Reply {
                            stub: i,
                            reply: j,
                            ctx: ctx.clone(),
                            stream: None,
                        },
                    );
                }
            }
        }
        match (&stub.then, last) {
            (Some(Then::State(_)) | None, _) => {}
            (Some(end), Some(at)) => self.push_later(at, Later::Then(end.clone())),
            (Some(end), None) => self.apply_end(end.clone(), out),
        }
    }
}

/// Reply `j` of stub `i`, rendered.
fn render(stubs: &Stubs, i: usize, j: usize, ctx: &Context) -> Out {
    match &stubs.stubs[i].reply[j].body {
        Body::Text(t) => Out::Send(MessageKind::Text, t.render(ctx).into_bytes()),
        Body::Json(t) => Out::Send(
            MessageKind::Text,
            serde_json::to_vec(&t.render(ctx)).unwrap_or_default(),
        ),
        Body::Binary(b) => Out::Send(MessageKind::Binary, b.clone()),
    }
}
