//! The stub engine through its sans-IO API: each `on`, state moves, streams
//! stopped by a state change, templates with types kept, delayed replies
//! and the close after them, `otherwise`, and a bad file's place.

use std::time::{Duration, Instant};

use super::session::{Out, Session};
use super::{Sender, Stubs};
use crate::proto::MessageKind::{Binary, Text};

const TICKER: &str = r#"{
  "stubs": [
    {"name": "hello", "path": "/feed", "on": "open", "reply": [{"json": {"type": "hello", "conn": "{{conn}}", "user": "{{query.user}}"}}]},
    {"name": "subscribe", "path": "/feed", "on": {"json": {"type": "subscribe"}},
     "reply": [{"json": {"type": "subscribed", "id": "{{json.id}}", "channel": "{{json.channel}}"}},
               {"json": {"type": "tick", "id": "{{json.id}}", "n": "{{n}}"}, "every": "100ms", "count": 5}],
     "then": {"state": "subscribed"}},
    {"name": "unsubscribe", "path": "/feed", "state": "subscribed", "on": {"text": "unsubscribe"},
     "reply": [{"text": "unsubscribed"}], "then": {"state": "start"}},
    {"name": "bye", "path": "/feed", "state": "subscribed", "on": {"regex": "^bye (?P<who>\\w+)$"},
     "reply": [{"text": "goodbye {{regex.1}} ({{regex.who}}), {{count}}", "after": "50ms"}],
     "then": {"close": {"code": 4001, "reason": "bye"}}},
    {"name": "bin", "path": "/bin/*", "on": {"binary_hex": "0102"}, "reply": [{"binary_base64": "AwQ="}]},
    {"name": "any", "path": "/bin/*", "on": {"any": true}, "reply": [{"text": "got {{message}}"}], "then": {"drop": "reset"}}
  ],
  "otherwise": "ignore"
}"#;

fn text(out: &Out) -> serde_json::Value {
    match out {
        Out::Send(Text, b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into_owned())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_conversation_with_state_streams_and_a_delayed_close() {
    let stubs = Stubs::parse(TICKER, 1 << 20).unwrap();
    let t0 = Instant::now();
    let mut s = Session::new(&stubs, 7, "/feed?user=ann%20b");
    let out = s.on_open(&stubs, t0).out;
    assert_eq!(out.len(), 1);
    assert_eq!(
        text(&out[0]),
        serde_json::json!({"type": "hello", "conn": 7, "user": "ann b"})
    );

    // A JSON subset: extra keys are fine; the id keeps its type.
    let out = s
        .on_message(
            &stubs,
            Text,
            br#"{"type": "subscribe", "id": 42, "channel": "prices", "x": 1}"#,
            t0,
        )
        .out;
    assert_eq!(
        text(&out[0]),
        serde_json::json!({"type": "subscribed", "id": 42, "channel": "prices"})
    );
    assert_eq!(s.state(), "subscribed");
    assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(100)));
    // The stream: one tick per 100 ms, numbered.
    let mut ticks = Vec::new();
    for k in 1..=3u64 {
        let now = t0 + Duration::from_millis(100 * k);
        for o in s.on_timer(&stubs, now) {
            ticks.push(text(&o));
        }
    }
    assert_eq!(ticks.len(), 3);
    assert_eq!(
        ticks[2],
        serde_json::json!({"type": "tick", "id": 42, "n": 3})
    );
    // A state change stops it.
    let now = t0 + Duration::from_millis(350);
    let out = s.on_message(&stubs, Text, b"unsubscribe", now).out;
    assert_eq!(text(&out[0]), "unsubscribed");
    assert_eq!(s.state(), "start");
    assert!(
        s.on_timer(&stubs, t0 + Duration::from_secs(5)).is_empty(),
        "the stream stopped"
    );

    // "bye" only matches while subscribed: not now (otherwise: ignore).
    assert!(s.on_message(&stubs, Text, b"bye bob", now).out.is_empty());
    s.on_message(&stubs, Text, br#"{"type": "subscribe", "id": 1}"#, now);
    let out = s.on_message(&stubs, Text, b"bye bob", now).out;
    assert!(out.is_empty(), "the reply is 50 ms later: {out:?}");
    let out = s.on_timer(&stubs, now + Duration::from_millis(50));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(text(&out[0]), "goodbye bob (bob), 1");
    assert_eq!(out[1], Out::Close(4001, "bye".into()));
    // Closed: the stream started by the second subscribe is gone too.
    assert!(s.on_timer(&stubs, now + Duration::from_secs(5)).is_empty());
    assert!(s
        .on_message(&stubs, Text, b"unsubscribe", now)
        .out
        .is_empty());
}

#[test]
fn binary_any_and_otherwise() {
    let stubs = Stubs::parse(TICKER, 1 << 20).unwrap();
    let now = Instant::now();
    let mut s = Session::new(&stubs, 1, "/bin/x");
    assert_eq!(
        s.on_message(&stubs, Binary, &[1, 2], now).out,
        [Out::Send(Binary, vec![3, 4])]
    );
    let out = s.on_message(&stubs, Text, b"hi", now).out;
    assert_eq!(out, [Out::Send(Text, b"got hi".to_vec()), Out::Drop(true)]);

    // A path no stub covers falls to `otherwise`; echo is the default.
    let echo = Stubs::parse(
        r#"{"stubs": [{"path": "/a", "on": {"text": "x"}, "reply": [{"text": "y"}]}]}"#,
        100,
    )
    .unwrap();
    let mut s = Session::new(&echo, 1, "/a");
    assert_eq!(s.on_message(&echo, Text, b"z", now).out, [Out::Echo]);
    assert!(!echo.covers("/b") && echo.covers("/a"));
    let close = Stubs::parse(
        r#"{"otherwise": {"close": {"code": 1008, "reason": "unexpected"}}}"#,
        100,
    )
    .unwrap();
    let mut s = Session::new(&close, 1, "/");
    assert_eq!(
        s.on_message(&close, Text, b"z", now).out,
        [Out::Close(1008, "unexpected".into())]
    );
}

#[test]
fn a_bad_file_says_where_and_what() {
    for (file, line, needle) in [
        ("{\n  \"stubs\": [],\n  \"colour\": 1\n}", "3:", "unknown field `colour`"),
        ("{\"stubs\": [\n {\"on\": \"open\"},\n {\"on\": {\"regex\": \"(\"}}]}", "3:", "on.regex"),
        ("{\"stubs\": [{\"on\": \"open\", \"reply\": [{\"text\": \"{{nope}}\"}]}]}", "1:", "unknown placeholder"),
        ("{\"stubs\": [{\"on\": \"open\", \"reply\": [{\"text\": \"x\", \"after\": \"soon\"}]}]}", "1:", "after"),
        ("{\"stubs\": [{\"on\": \"open\", \"then\": {\"close\": {\"code\": 1005}}}]}", "1:", "1005"),
        ("{\"stubs\": [{\"on\": \"open\", \"reply\": [{\"text\": \"x\", \"every\": \"1s\"}]}]}", "1:", "count"),
        ("{\"stubs\": [{\"on\": \"open\", \"reply\": [{\"binary_hex\": \"0000\"}]}]}", "1:", "max-message-size"),
        ("{\"stubs\": [{\"on\": \"sometimes\"}]}", "1:", "on:"),
        ("{\"stubs\": [{\"on\": {\"from\": \"server\", \"any\": true}}]}", "1:", "on.from"),
        ("{\"stubs\": [{\"on\": {\"from\": \"upstream\"}}]}", "1:", "on:"),
    ] {
        let err = Stubs::parse(file, 1).unwrap_err();
        assert!(err.starts_with(line), "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
    }
}

#[test]
fn a_stub_from_the_upstream_matches_only_the_upstreams_messages() {
    let file = r#"{"stubs": [
      {"path": "/p", "on": {"from": "upstream", "text": "ping"}, "reply": [{"text": "pong from the stub"}]},
      {"path": "/p", "on": {"text": "ping"}, "reply": [{"text": "the client's ping"}]}
    ]}"#;
    let stubs = Stubs::parse(file, 1 << 20).unwrap();
    let now = Instant::now();
    let mut s = Session::new(&stubs, 1, "/p");
    let up = s.on_message_from(&stubs, Sender::Upstream, Text, b"ping", now, false);
    assert_eq!(up.out, [Out::Send(Text, b"pong from the stub".to_vec())]);
    let client = s.on_message_from(&stubs, Sender::Client, Text, b"ping", now, false);
    assert_eq!(client.out, [Out::Send(Text, b"the client's ping".to_vec())]);
    // Unmatched from the upstream: nothing, no miss, no `otherwise`.
    let other = s.on_message_from(&stubs, Sender::Upstream, Text, b"data", now, false);
    assert!(other.matched.is_none() && other.miss.is_none() && other.out.is_empty());
}

#[test]
fn a_message_no_stub_matched_says_which_came_closest_and_why() {
    let stubs = Stubs::parse(TICKER, 1 << 20).unwrap();
    let now = Instant::now();
    let mut s = Session::new(&stubs, 1, "/feed");
    let miss = |s: &mut Session, m: &[u8]| s.on_message(&stubs, Text, m, now).miss.expect("a miss");
    let m = miss(&mut s, br#"{"type": "subscrbe", "id": 1}"#);
    assert_eq!(stubs.stubs[m.nearest.unwrap()].name, "subscribe");
    assert_eq!(m.why, r#"json.type: expected "subscribe", got "subscrbe""#);
    // The right message in the wrong state.
    let m = miss(&mut s, b"unsubscribe");
    assert_eq!(stubs.stubs[m.nearest.unwrap()].name, "unsubscribe");
    assert_eq!(m.why, r#"state is "start", stub wants "subscribed""#);
    // Equally near (both want another state): the first in order.
    let m = miss(&mut s, b"not json");
    assert!(
        m.why
            .starts_with(r#"text: expected "unsubscribe", got "not json"; and state is"#),
        "{m:?}"
    );
    // A match is not a miss.
    let a = s.on_message(&stubs, Text, br#"{"type": "subscribe", "id": 1}"#, now);
    assert!(a.miss.is_none() && a.matched == Some(1));
}

#[test]
fn priority_orders_stubs_lower_first() {
    let file = r#"{"stubs": [
        {"name": "late", "on": {"any": true}, "reply": [{"text": "late"}]},
        {"name": "early", "priority": -1, "on": {"any": true}, "reply": [{"text": "early"}]}
    ]}"#;
    let stubs = Stubs::parse(file, 100).unwrap();
    assert_eq!(stubs.stubs[0].name, "early");
    let mut s = Session::new(&stubs, 1, "/");
    let a = s.on_message(&stubs, Text, b"x", Instant::now());
    assert_eq!(a.out, [Out::Send(Text, b"early".to_vec())]);
}
