//! Recorded conversations become stubs: a pure function from what a client
//! and a server said (a browser's HAR file, `har.rs`; later a proxied
//! connection) to a stubs file in the format of docs/stubs.md, which the
//! loader then checks like any other.
//!
//! - The opening: the subprotocol the server chose (an `accept` rule) or
//!   its refusal (a `refuse` rule).
//! - What the server sent before the client said anything: a stub `on:
//!   open` whose replies keep their recorded delays.
//! - Each client message: a stub that matches it (a JSON subset for JSON,
//!   the text otherwise, binary exactly), whose replies are the server's
//!   messages up to the client's next one, with their delays; states keep
//!   the recorded order.
//! - Values the client chose come back as the client's own: a scalar the
//!   client sent that a reply carries back at the same key path becomes
//!   `{{json.PATH}}` there, and that key is left out of every match of the
//!   conversation where it holds that value, so a client that picks new ids
//!   is answered with its own. The same value under another key is left
//!   alone.
//! - Several conversations on one path share their common beginning (the
//!   same messages in the same states lead to the same state, answered as
//!   first recorded); where they differ, each goes on in states of its own.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Map, Value};

/// What one side sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Text(String),
    Binary(Vec<u8>),
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Milliseconds after the connection opened.
    pub at_ms: u64,
    pub from_client: bool,
    pub data: Data,
}

/// How the opening handshake ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opening {
    Accepted {
        subprotocol: Option<String>,
    },
    Refused {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// One recorded connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The request's path, without its query.
    pub path: String,
    pub opening: Opening,
    pub messages: Vec<Message>,
}

/// The longest delay a stub takes (docs/stubs.md).
const MAX_AFTER_MS: u64 = 3_600_000;

/// The stubs file for `conversations` (in the order recorded). `otherwise`:
/// what a client message no stub foresaw gets (`"ignore"` for a file; none
/// for stubs added over HTTP, where it is the file's).
pub fn stubs_file(conversations: &[Conversation], otherwise: Option<&str>) -> Value {
    let mut stubs = Vec::new();
    let mut upgrades = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    for c in conversations {
        if !paths.contains(&c.path.as_str()) {
            paths.push(&c.path);
        }
    }
    for path in paths {
        let on_path: Vec<&Conversation> = conversations.iter().filter(|c| c.path == path).collect();
        upgrades.extend(opening_rule(path, &on_path));
        let mut trie = Trie::default();
        for c in on_path {
            if matches!(c.opening, Opening::Accepted { .. }) {
                trie.add(path, c, &mut stubs);
            }
        }
    }
    let mut file = Map::new();
    file.insert("stubs".into(), Value::Array(stubs));
    if !upgrades.is_empty() {
        file.insert("upgrades".into(), Value::Array(upgrades));
    }
    if let Some(o) = otherwise {
        file.insert("otherwise".into(), Value::String(o.into()));
    }
    Value::Object(file)
}

/// The first recorded opening on a path answers every upgrade there: a
/// refusal, or an acceptance naming the subprotocol (none: no rule).
fn opening_rule(path: &str, on_path: &[&Conversation]) -> Option<Value> {
    match &on_path.first()?.opening {
        Opening::Accepted {
            subprotocol: Some(p),
        } => Some(json!({"path": path, "accept": {"subprotocol": p}})),
        Opening::Accepted { subprotocol: None } => None,
        Opening::Refused {
            status,
            headers,
            body,
        } => {
            let headers: Map<String, Value> = headers
                .iter()
                .filter(|(n, _)| !is_hop_by_hop(n))
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect();
            Some(
                json!({"path": path, "refuse": {"status": status, "headers": headers, "body": body}}),
            )
        }
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "date",
        "server",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The states of one path: which message in which state leads where.
#[derive(Default)]
struct Trie {
    /// (state, the stub's `on` as text) → the next state.
    next: HashMap<(String, String), String>,
    states: usize,
    open_answered: bool,
}

impl Trie {
    fn add(&mut self, path: &str, c: &Conversation, stubs: &mut Vec<Value>) {
        let carried = carried_back(c);
        let mut state = "start".to_string();
        let mut i = 0;
        // What the server said first.
        let first: Vec<&Message> = c.messages.iter().take_while(|m| !m.from_client).collect();
        if !first.is_empty() && !self.open_answered {
            let replies = first.iter().map(|m| reply(m, m.at_ms, None)).collect();
            stubs.push(json!({"path": path, "on": "open", "reply": Value::Array(replies)}));
        }
        self.open_answered |= !first.is_empty();
        i += first.len();
        while i < c.messages.len() {
            let asked = &c.messages[i];
            let answers: Vec<&Message> = c.messages[i + 1..]
                .iter()
                .take_while(|m| !m.from_client)
                .collect();
            i += 1 + answers.len();
            let on = on(&asked.data, &carried);
            let key = (state.clone(), on.to_string());
            if let Some(next) = self.next.get(&key) {
                state = next.clone();
                continue;
            }
            self.states += 1;
            let next = format!("recorded-{}", self.states);
            self.next.insert(key, next.clone());
            let parsed = json_of(&asked.data);
            let replies: Vec<Value> = answers
                .iter()
                .map(|m| {
                    let back = parsed.as_ref().map(|p| (p, &carried));
                    reply(m, m.at_ms.saturating_sub(asked.at_ms), back)
                })
                .collect();
            stubs.push(json!({
                "path": path,
                "state": state,
                "on": on,
                "reply": replies,
                "then": {"state": next},
            }));
            state = next;
        }
    }
}

/// A key path into a JSON value: object keys and array indexes.
type KeyPath = Vec<String>;

/// The (key path, value) pairs of the client's JSON messages that a reply
/// to that message carries back at the same key path.
fn carried_back(c: &Conversation) -> HashSet<(KeyPath, String)> {
    let mut carried = HashSet::new();
    let mut i = 0;
    while i < c.messages.len() {
        let m = &c.messages[i];
        i += 1;
        if !m.from_client {
            continue;
        }
        let Some(asked) = json_of(&m.data) else {
            continue;
        };
        let sent = scalars(&asked);
        for answer in c.messages[i..].iter().take_while(|m| !m.from_client) {
            let Some(answer) = json_of(&answer.data) else {
                continue;
            };
            let back = scalars(&answer);
            for (path, value) in &sent {
                if back.get(path) == Some(value) {
                    carried.insert((path.clone(), value.clone()));
                }
            }
        }
    }
    carried
}

/// Every scalar (string or number) of a JSON value, by key path, as JSON
/// text (so `1` and `"1"` differ).
fn scalars(v: &Value) -> BTreeMap<KeyPath, String> {
    let mut out = BTreeMap::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, at: &mut KeyPath, out: &mut BTreeMap<KeyPath, String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                at.push(k.clone());
                walk(v, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                at.push(i.to_string());
                walk(v, at, out);
                at.pop();
            }
        }
        Value::String(_) | Value::Number(_) if !at.is_empty() => {
            out.insert(at.clone(), v.to_string());
        }
        _ => {}
    }
}

/// A text message as JSON, when it is an object or an array.
fn json_of(data: &Data) -> Option<Value> {
    let Data::Text(t) = data else {
        return None;
    };
    serde_json::from_str::<Value>(t)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// A stub's `on` for a client message: a JSON object without the values
/// the client chose (a subset match); other JSON and text exactly; binary
/// as hex.
fn on(data: &Data, carried: &HashSet<(KeyPath, String)>) -> Value {
    match (data, json_of(data)) {
        (_, Some(Value::Object(o))) => {
            let mut pattern = Value::Object(o);
            strip(&mut pattern, &mut Vec::new(), carried);
            json!({"json": pattern})
        }
        // An array is matched whole (a JSON pattern's arrays are equal):
        // with a value the client chose in it, only by its shape's text.
        (Data::Text(t), _) => json!({"text": t}),
        (Data::Binary(b), _) => json!({"binary_hex": hex(b)}),
    }
}

/// Leaves out of an object pattern the keys holding a value the client
/// chose (objects only: an array pattern is compared whole).
fn strip(v: &mut Value, at: &mut KeyPath, carried: &HashSet<(KeyPath, String)>) {
    let Value::Object(o) = v else {
        return;
    };
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        at.push(k.clone());
        let drop = o
            .get(&k)
            .is_some_and(|x| carried.contains(&(at.clone(), x.to_string())));
        if drop {
            o.remove(&k);
        } else if let Some(inner) = o.get_mut(&k) {
            strip(inner, at, carried);
        }
        at.pop();
    }
}

/// A reply for a server message sent `after_ms` after what it answers;
/// `back`: the client's message (JSON) and the values it chose, which the
/// reply takes from the message it answers.
fn reply(m: &Message, after_ms: u64, back: Option<(&Value, &HashSet<(KeyPath, String)>)>) -> Value {
    let mut r = match (&m.data, json_of(&m.data)) {
        (_, Some(mut v)) => {
            escape(&mut v);
            if let Some((asked, carried)) = back {
                let sent = scalars(asked);
                template(&mut v, &mut Vec::new(), &sent, carried);
            }
            json!({"json": v})
        }
        (Data::Text(t), None) => json!({"text": t.replace("{{", "{{braces}}")}),
        (Data::Binary(b), None) => json!({"binary_hex": hex(b)}),
    };
    let after = after_ms.min(MAX_AFTER_MS);
    if after > 0 {
        r["after"] = Value::String(format!("{after}ms"));
    }
    r
}

/// `{{` in a recorded string is a literal, not a placeholder.
fn escape(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("{{") => *s = s.replace("{{", "{{braces}}"),
        Value::Array(a) => a.iter_mut().for_each(escape),
        Value::Object(o) => o.values_mut().for_each(escape),
        _ => {}
    }
}

/// Where a reply carries back, at the same key path, a value the client
/// chose in the message it answers: `{{json.PATH}}` (typed as sent).
fn template(
    v: &mut Value,
    at: &mut KeyPath,
    sent: &BTreeMap<KeyPath, String>,
    carried: &HashSet<(KeyPath, String)>,
) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                at.push(k.clone());
                template(x, at, sent, carried);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                at.push(i.to_string());
                template(x, at, sent, carried);
                at.pop();
            }
        }
        Value::String(_) | Value::Number(_) => {
            let text = v.to_string();
            let chosen = sent.get(at) == Some(&text) && carried.contains(&(at.clone(), text));
            if chosen && !at.is_empty() {
                *v = Value::String(format!("{{{{json.{}}}}}", at.join(".")));
            }
        }
        _ => {}
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
