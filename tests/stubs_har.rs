//! A browser's HAR file as stubs, over real sockets: `--stubs FILE.har`
//! answers a client that picks other ids with its own, `echocast
//! stubs-from-har` prints the same stubs, `POST /stubs` takes a HAR body,
//! and a HAR without a WebSocket is refused naming what was expected.
//! (tests/clients/har_browser.py replays a HAR Chromium itself recorded.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// A HAR as Chrome's DevTools save it: an HTTP entry, then a WebSocket on
/// `/rpc` where the server greets, then answers two calls with the
/// client's ids (7 and 8), 20 ms later each.
fn har() -> serde_json::Value {
    let t0 = 1_796_580_000.0_f64;
    let msg = |dt: f64, send: bool, data: &str| serde_json::json!({"type": if send { "send" } else { "receive" }, "time": t0 + dt, "opcode": 1, "data": data});
    serde_json::json!({"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"},
    "entries": [
        {"startedDateTime": "2026-12-06T18:00:00.000Z", "request": {"method": "GET", "url": "http://127.0.0.1:8000/"},
         "response": {"status": 200, "headers": []}},
        {"_resourceType": "websocket", "startedDateTime": "2026-12-06T18:00:00.000Z",
         "request": {"method": "GET", "url": "ws://127.0.0.1:8000/rpc?token=x", "headers": []},
         "response": {"status": 101, "headers": [{"name": "Sec-WebSocket-Protocol", "value": "rpc.v1"}]},
         "_webSocketMessages": [
            msg(0.010, false, r#"{"hello":"server"}"#),
            msg(0.100, true, r#"{"id":7,"method":"add","params":[2,3]}"#),
            msg(0.120, false, r#"{"id":7,"result":5}"#),
            msg(0.200, true, r#"{"id":8,"method":"add","params":[10,20]}"#),
            msg(0.220, false, r#"{"id":8,"result":30}"#)
         ]}
    ]}})
}

fn temp(name: &str, text: &str) -> std::path::PathBuf {
    // A directory per file: tests run at once, and one removes its own.
    let dir = std::env::temp_dir().join(format!("echocast-har-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn json_msg(c: &mut Client) -> serde_json::Value {
    let (op, data, _) = c.read_message();
    assert_eq!(op, 1);
    serde_json::from_slice(&data).unwrap()
}

#[test]
// docs/stubs.md: "From a browser's HAR file"
fn a_har_file_answers_a_client_that_picks_other_ids() {
    let file = temp("session.har", &har().to_string());
    let (_s, addr) = spawn_binary(&["--stubs", file.to_str().unwrap()]);
    let mut c = Client::connect(addr, "/rpc");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(json_msg(&mut c), serde_json::json!({"hello": "server"}));
    c.send_text(r#"{"id":"a1","method":"add","params":[2,3]}"#);
    assert_eq!(
        json_msg(&mut c),
        serde_json::json!({"id": "a1", "result": 5})
    );
    c.send_text(r#"{"method":"add","params":[10,20],"id":1001}"#);
    assert_eq!(
        json_msg(&mut c),
        serde_json::json!({"id": 1001, "result": 30})
    );

    // The subcommand prints what was loaded: a stubs file to commit.
    let out = Command::new(env!("CARGO_BIN_EXE_echocast"))
        .arg("stubs-from-har")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["upgrades"],
        serde_json::json!([{"path": "/rpc", "accept": {"subprotocol": "rpc.v1"}}])
    );
    assert_eq!(printed["otherwise"], "ignore");
    assert_eq!(printed["stubs"].as_array().unwrap().len(), 3);
    assert_eq!(
        printed["stubs"][1]["reply"][0],
        serde_json::json!({"json": {"id": "{{json.id}}", "result": 5}, "after": "20ms"})
    );

    // A HAR without a WebSocket: exit 2, naming what was expected.
    let none = temp(
        "none.har",
        r#"{"log": {"entries": [{"request": {"url": "http://h/"}}]}}"#,
    );
    for args in [
        vec!["stubs-from-har"],
        vec!["--listen", "127.0.0.1:0", "--stubs"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_echocast"))
            .args(args)
            .arg(&none)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("none.har: the HAR file has no WebSocket entry")
                && err.contains("_webSocketMessages"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(file.parent().unwrap()).ok();
}

#[test]
fn stubs_speed_zero_replays_a_recording_without_its_delays() {
    // The second answer was recorded 3 s after its call.
    let mut h = har();
    h["log"]["entries"][1]["_webSocketMessages"][4]["time"] =
        serde_json::json!(1_796_580_003.2_f64);
    let file = temp("slow.har", &h.to_string());
    for (speed, at_least, under) in [("0", 0, 1_000), ("2", 1_400, 3_000)] {
        let (_s, addr) = spawn_binary(&["--stubs", file.to_str().unwrap(), "--stubs-speed", speed]);
        let mut c = Client::connect(addr, "/rpc");
        assert_eq!(json_msg(&mut c), serde_json::json!({"hello": "server"}));
        c.send_text(r#"{"id":1,"method":"add","params":[2,3]}"#);
        assert_eq!(json_msg(&mut c)["result"], 5);
        let start = std::time::Instant::now();
        c.send_text(r#"{"id":2,"method":"add","params":[10,20]}"#);
        assert_eq!(json_msg(&mut c), serde_json::json!({"id": 2, "result": 30}));
        let ms = start.elapsed().as_millis();
        assert!(
            ms >= at_least && ms < under,
            "--stubs-speed {speed}: answered after {ms} ms"
        );
    }
}

#[test]
fn post_stubs_takes_a_har_body() {
    let (_s, addr) = spawn_binary(&["--stubs", "examples/stubs/ticker.json"]);
    let body = har().to_string();
    let mut c = Client::raw(addr);
    c.send_raw(
        format!(
            "POST /stubs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let (head, answer) = c.read_http_response();
    assert!(
        head.starts_with("HTTP/1.1 201 "),
        "{head} {}",
        String::from_utf8_lossy(&answer)
    );
    let mut c = Client::connect(addr, "/rpc");
    assert_eq!(json_msg(&mut c), serde_json::json!({"hello": "server"}));
    c.send_text(r#"{"id":"z","method":"add","params":[2,3]}"#);
    assert_eq!(
        json_msg(&mut c),
        serde_json::json!({"id": "z", "result": 5})
    );
}
