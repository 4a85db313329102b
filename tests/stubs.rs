//! Stubs (issue 27) over real sockets: the ticker example
//! (examples/stubs/ticker.json) — a greeting on open with the query in it,
//! a JSON subscribe answered and followed by a stream, unsubscribe by
//! state, a delayed goodbye and close 4001; a path no stub covers still
//! echoes; knobs shape stub replies; a bad file stops the server with exit
//! code 2 naming its line and column.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const TICKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/stubs/ticker.json");

fn json(c: &mut Client) -> serde_json::Value {
    serde_json::from_str(&c.expect_text()).expect("a JSON reply")
}

#[test]
// docs/stubs.md: "the ticker"
fn the_ticker_example_converses() {
    let (_s, addr) = spawn_binary(&["--stubs", TICKER]);
    let mut c = Client::connect(addr, "/feed?user=ann");
    let hello = json(&mut c);
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["user"], "ann");
    assert!(hello["conn"].is_u64(), "{hello}");

    c.send_text(r#"{"type": "subscribe", "id": 42, "channel": "prices", "extra": true}"#);
    assert_eq!(
        json(&mut c),
        serde_json::json!({"type": "subscribed", "id": 42, "channel": "prices"})
    );
    let start = Instant::now();
    for n in 1..=2 {
        assert_eq!(
            json(&mut c),
            serde_json::json!({"type": "tick", "id": 42, "n": n})
        );
    }
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "{:?}",
        start.elapsed()
    );
    c.send_text(r#"{"type": "unsubscribe"}"#);
    // Ticks already queued may come first; then the answer, then no more.
    loop {
        let m = json(&mut c);
        if m["type"] == "unsubscribed" {
            break;
        }
        assert_eq!(m["type"], "tick", "{m}");
    }
    // A message no stub matches is echoed (otherwise: echo).
    c.send_text("something else");
    assert_eq!(
        c.expect_text(),
        "something else",
        "no tick after unsubscribe"
    );

    c.send_text("bye bob");
    assert_eq!(c.expect_text(), "goodbye bob");
    assert_eq!(c.expect_close(), Some(4001));
}

#[test]
fn paths_without_stubs_echo_and_knobs_shape_stub_replies() {
    let (_s, addr) = spawn_binary(&["--stubs", TICKER]);
    let mut c = Client::connect(addr, "/other");
    c.send_text("plain echo");
    assert_eq!(c.expect_text(), "plain echo");
    // ?fragment=8 applies to the stub's greeting.
    let mut c = Client::connect(addr, "/feed?fragment=8&user=bo");
    let (fin, op, first) = c.read_frame();
    assert!(!fin && op == 1 && first.len() == 8, "{fin} {op} {first:?}");
    let mut whole = first;
    loop {
        let (fin, op, piece) = c.read_frame();
        assert_eq!(op, 0);
        whole.extend(piece);
        if fin {
            break;
        }
    }
    let hello: serde_json::Value = serde_json::from_slice(&whole).unwrap();
    assert_eq!(hello["user"], "bo");
}

#[test]
// docs/stubs.md: "exit code 2"
fn a_bad_file_stops_the_server_with_its_line_and_column() {
    let dir = std::env::temp_dir().join(format!("echocast-stubs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        "{\"stubs\": [\n  {\"on\": \"open\"},\n  {\"on\": {\"regex\": \"(unclosed\"}}\n]}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_echocast"))
        .args(["--listen", "127.0.0.1:0", "--stubs"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:3: ", file.display())) && err.contains("on.regex"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
