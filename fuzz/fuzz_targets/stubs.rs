//! Stub matching and templating (issue 27): stubs built from the input
//! (a regex, a JSON pattern, a text and reply templates taken from its
//! bytes, any of which may be invalid and must then be refused at load),
//! then messages from the rest of the input fed to a session with random
//! time steps. Invariants: no panic; what a session sends per event is
//! bounded by the stubs and the message (no blow-up); a JSON reply is
//! valid JSON; nothing is sent after a close or a drop.
#![no_main]
use std::time::{Duration, Instant};

use echocast::proto::MessageKind;
use echocast::stubs::session::{Out, Session};
use echocast::stubs::Stubs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Five fields separated by 0xff: regex, JSON pattern, text, reply
    // template, then the messages (separated by 0xfe).
    let mut parts = data.splitn(5, |&b| b == 0xff);
    let mut field = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (regex, pattern, text, reply) = (field(), field(), field(), field());
    let messages: Vec<u8> = parts.next().unwrap_or_default().to_vec();
    let pattern: serde_json::Value =
        serde_json::from_str(&pattern).unwrap_or(serde_json::Value::Null);
    let file = serde_json::json!({
        "stubs": [
            {"name": "open", "on": "open", "reply": [{"text": reply.clone()}]},
            {"name": "regex", "on": {"regex": regex}, "reply": [{"text": reply.clone(), "after": "10ms"}],
             "then": {"state": "b"}},
            {"name": "json", "state": "b", "on": {"json": pattern}, "reply": [
                {"json": {"echo": reply.clone(), "whole": "{{message}}", "n": "{{n}}"}, "every": "5ms", "count": 3}]},
            {"name": "text", "on": {"text": text}, "reply": [{"text": reply.clone()}],
             "then": {"close": {"code": 4000, "reason": "fuzz"}}}
        ],
        "otherwise": "echo"
    });
    let Ok(stubs) = Stubs::parse(&file.to_string(), 1 << 20) else {
        return;
    };
    let mut now = Instant::now();
    let mut session = Session::new(&stubs, 1, "/fuzz?q=1");
    let mut ended = false;
    let mut check = |out: Vec<Out>, msg_len: usize, ended: &mut bool| {
        // Each reply renders the template once, with at most the message
        // (and small values) per placeholder.
        let bound = 64 * 1024 + (reply.len() + 64) * (msg_len + 64);
        let total: usize = out
            .iter()
            .map(|o| match o {
                Out::Send(_, b) => b.len(),
                _ => 0,
            })
            .sum();
        assert!(
            total <= 8 * bound,
            "{total} bytes out for a {msg_len}-byte message"
        );
        for o in &out {
            assert!(!*ended, "output after a close or a drop: {o:?}");
            if let Out::Close(..) | Out::Drop(_) = o {
                *ended = true;
            }
        }
    };
    check(session.on_open(&stubs, now).out, 0, &mut ended);
    for (i, m) in messages.split(|&b| b == 0xfe).enumerate() {
        let kind = if std::str::from_utf8(m).is_ok() {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let a = session.on_message(&stubs, kind, m, now);
        if a.matched.is_none() && !ended {
            assert!(a.miss.is_some(), "an unmatched message says why");
        }
        // A JSON stub's replies are JSON.
        check(a.out, m.len(), &mut ended);
        now += Duration::from_millis((i as u64 * 7) % 23);
        if let Some(due) = session.next_due() {
            assert!(due >= now - Duration::from_secs(1));
            let out = session.on_timer(&stubs, due.max(now));
            for o in &out {
                if let Out::Send(MessageKind::Text, b) = o {
                    // The JSON stub's replies (keys sorted: `echo` first);
                    // a text reply could look alike only if its template did.
                    if b.starts_with(b"{\"echo\":") && !reply.starts_with("{\"echo\":") {
                        assert!(
                            serde_json::from_slice::<serde_json::Value>(b).is_ok(),
                            "JSON reply"
                        );
                    }
                }
            }
            check(out, m.len(), &mut ended);
        }
    }
});
