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

/// Connects to the ticker's `/feed` with its token (and the subprotocol
/// offered), checking the 101 names it and the stub's extra header.
fn feed(addr: std::net::SocketAddr, target: &str) -> Client {
    let mut c = Client::raw(addr);
    let req = upgrade_request(target).replace(
        "\r\n\r\n",
        "\r\nAuthorization: Bearer good\r\nSec-WebSocket-Protocol: chat, feed.v1\r\n\r\n",
    );
    c.send_raw(req.as_bytes());
    let head = c.read_http_head();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Protocol: feed.v1\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Feed: ticker\r\n"), "{head}");
    c
}

fn json(c: &mut Client) -> serde_json::Value {
    serde_json::from_str(&c.expect_text()).expect("a JSON reply")
}

#[test]
// docs/stubs.md: "the ticker"
fn the_ticker_example_converses() {
    let (_s, addr) = spawn_binary(&["--stubs", TICKER]);
    let mut c = feed(addr, "/feed?user=ann");
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
// docs/stubs.md: "upgrades"
fn an_upgrade_rule_refuses_without_the_token() {
    let (_s, addr) = spawn_binary(&["--stubs", TICKER]);
    let mut c = Client::raw(addr);
    c.send_raw(upgrade_request("/feed").as_bytes());
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    assert!(head.contains("WWW-Authenticate: Bearer\r\n"), "{head}");
    assert_eq!(body, b"no token");
    // Other paths are not subject to it.
    let mut c = Client::connect(addr, "/elsewhere");
    c.send_text("x");
    assert_eq!(c.expect_text(), "x");
}

#[test]
fn paths_without_stubs_echo_and_knobs_shape_stub_replies() {
    let (_s, addr) = spawn_binary(&["--stubs", TICKER]);
    let mut c = Client::connect(addr, "/other");
    c.send_text("plain echo");
    assert_eq!(c.expect_text(), "plain echo");
    // ?fragment=8 applies to the stub's greeting.
    let mut c = feed(addr, "/feed?fragment=8&user=bo");
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

/// `METHOD target` with a body: the status line and the body.
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> (String, String) {
    let mut c = Client::raw(addr);
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send_raw(&[head.as_bytes(), body].concat());
    let (head, body) = c.read_http_response();
    (
        head.lines().next().unwrap_or_default().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[test]
// docs/stubs.md: "Over HTTP"
fn stubs_added_over_http_answer_new_connections_and_misses_say_why() {
    let (_s, addr) = spawn_binary(&["--stubs", TICKER]);
    let stub = br#"{"name": "ping", "path": "/rpc", "on": {"json": {"op": "ping"}},
                    "reply": [{"json": {"op": "pong", "seq": "{{json.seq}}"}}]}"#;
    let (status, body) = request(addr, "POST", "/stubs", stub);
    assert!(status.contains(" 201 "), "{status} {body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["ids"][0]
        .as_u64()
        .unwrap();
    let mut c = Client::connect(addr, "/rpc");
    c.send_text(r#"{"op": "ping", "seq": 5}"#);
    assert_eq!(json(&mut c), serde_json::json!({"op": "pong", "seq": 5}));
    // A near miss: echoed (otherwise), and listed with the reason.
    c.send_text(r#"{"op": "pnig"}"#);
    assert_eq!(c.expect_text(), r#"{"op": "pnig"}"#);
    let (_, body) = request(addr, "GET", "/stubs/unmatched", b"");
    let unmatched: serde_json::Value = serde_json::from_str(&body).unwrap();
    let last = &unmatched.as_array().unwrap()[0];
    assert_eq!(last["nearest"]["name"], "ping", "{unmatched}");
    assert_eq!(last["why"], r#"json.op: expected "ping", got "pnig""#);
    assert_eq!(last["path"], "/rpc");
    // Listed first (added over HTTP), matched once.
    let (_, body) = request(addr, "GET", "/stubs", b"");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stubs = &list["stubs"];
    assert_eq!(stubs[0]["id"], id);
    assert_eq!(
        (stubs[0]["source"].as_str(), stubs[0]["matched"].as_u64()),
        (Some("api"), Some(1))
    );
    assert!(stubs
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .all(|s| s["source"] == "file"));
    assert_eq!(list["upgrades"][1]["refuse"]["status"], 401, "{list}");
    // Refusals.
    let (status, body) = request(addr, "POST", "/stubs", br#"{"on": {"regex": "("}}"#);
    assert!(
        status.contains(" 400 ") && body.contains("on.regex") && body.lines().count() == 1,
        "{status} {body}"
    );
    let (status, _) = request(addr, "DELETE", "/stubs/999", b"");
    assert!(status.contains(" 404 "), "{status}");
    let (status, _) = request(addr, "DELETE", "/stubs/1", b"");
    assert!(status.contains(" 409 "), "a file stub: {status}");
    let (status, _) = request(addr, "PUT", "/stubs", b"");
    assert!(status.contains(" 405 "), "{status}");
    // Deleted: a new connection echoes again.
    let (status, _) = request(addr, "DELETE", &format!("/stubs/{id}"), b"");
    assert!(status.contains(" 200 "), "{status}");
    let mut c = Client::connect(addr, "/rpc");
    c.send_text(r#"{"op": "ping"}"#);
    assert_eq!(c.expect_text(), r#"{"op": "ping"}"#);
    let (status, body) = request(addr, "POST", "/stubs/reset", b"");
    assert!(status.contains(" 200 "), "{status} {body}");
    let (_, body) = request(addr, "GET", "/stubs/unmatched", b"");
    assert_eq!(body, "[]");
    // With the inspector off the API is not there.
    let (_s2, addr2) = spawn_binary(&["--inspect", "off"]);
    let (status, _) = request(addr2, "GET", "/stubs", b"");
    assert!(status.contains(" 404 "), "{status}");
}

#[test]
// docs/stubs.md: "re-read"
fn an_edited_file_is_picked_up_and_a_bad_edit_is_ignored() {
    let dir = std::env::temp_dir().join(format!("echocast-stubs-edit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stubs.json");
    let write = |reply: &str| {
        std::fs::write(
            &file,
            format!(
                r#"{{"stubs": [{{"path": "/v", "on": "open", "reply": [{{"text": "{reply}"}}]}}]}}"#
            ),
        )
        .unwrap()
    };
    write("one");
    let (_s, addr) = spawn_binary(&["--stubs", file.to_str().unwrap()]);
    assert_eq!(Client::connect(addr, "/v").expect_text(), "one");
    // The file's time must change: the check is once a second.
    std::thread::sleep(Duration::from_millis(1100));
    write("two");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = Client::connect(addr, "/v").expect_text();
        if got == "two" {
            break;
        }
        assert!(Instant::now() < deadline, "the edit was not picked up");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&file, "{\"stubs\": [{\"on\": \"sometimes\"}]}").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        Client::connect(addr, "/v").expect_text(),
        "two",
        "a bad edit keeps the rules"
    );
    std::fs::remove_dir_all(&dir).ok();
}
