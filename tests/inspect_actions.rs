//! The inspector's actions (issue 26) over real sockets: a message sent to a
//! chosen connection (whole, in frames of N bytes, compressed like any
//! other), a ping, a close with a code, a hang-up with and without a reset,
//! raw frames read back byte for byte (a reserved opcode, a masked frame),
//! each action recorded, the connection marked tainted, and the refusals
//! (403, 404, 409, 400, 413). Through the core: the same actions on a
//! sans-IO connection.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use echocast::proto::connection::acting::{NotNow, RawFrame};
use echocast::proto::{CloseCode, Connection, Event, Limits, MessageKind, TransportAction};

/// `POST target` with a body: the status line and the body.
fn post(addr: SocketAddr, target: &str, headers: &str, body: &[u8]) -> (String, String) {
    let mut c = Client::raw(addr);
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    c.send_raw(&[head.as_bytes(), body].concat());
    let (head, body) = c.read_http_response();
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(addr: SocketAddr, target: &str) -> serde_json::Value {
    let (_, body) = http_get(addr, target);
    serde_json::from_slice(&body).expect("JSON")
}

/// The id of the one open connection on `path`.
fn id_of(addr: SocketAddr, path: &str) -> u64 {
    let list = json(addr, "/connections");
    let mine: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"] == path)
        .collect();
    assert_eq!(mine.len(), 1, "{list}");
    mine[0]["id"].as_u64().unwrap()
}

/// Reads exactly `n` bytes (what the server said it queued).
fn read_exactly(c: &mut Client, n: usize) -> Vec<u8> {
    let mut out = std::mem::take(&mut c.buf);
    while out.len() < n {
        let mut buf = [0u8; 4096];
        let got = c.stream.read(&mut buf).expect("read");
        assert!(got > 0, "EOF after {} of {n} bytes", out.len());
        out.extend_from_slice(&buf[..got]);
    }
    c.buf = out.split_off(n);
    out
}

#[test]
// docs/inspector.md: "Acting on a connection"
fn send_ping_and_close_reach_the_chosen_connection_and_are_recorded() {
    let (_s, addr) = spawn_binary(&[]);
    let mut other = Client::connect(addr, "/other");
    let mut c = Client::connect(addr, "/target");
    let id = id_of(addr, "/target");

    let (status, body) = post(
        addr,
        &format!("/connections/{id}/send"),
        "Content-Type: text/plain\r\n",
        b"hello client",
    );
    assert!(status.contains(" 200 "), "{status} {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["conn"], id);
    assert_eq!(answer["queued"], 2 + 12);
    assert_eq!(c.read_frame(), (true, 1, b"hello client".to_vec()));

    // Binary (no text Content-Type), in frames of 3 bytes.
    let (status, _) = post(
        addr,
        &format!("/connections/{id}/send?fragment=3"),
        "",
        &[1, 2, 3, 4, 5, 6, 7],
    );
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(c.read_frame(), (false, 2, vec![1, 2, 3]));
    assert_eq!(c.read_frame(), (false, 0, vec![4, 5, 6]));
    assert_eq!(c.read_frame(), (true, 0, vec![7]));

    let (status, _) = post(
        addr,
        &format!("/connections/{id}/ping"),
        "",
        b"are you there",
    );
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(c.read_frame(), (true, 9, b"are you there".to_vec()));

    // The other connection got none of it.
    other.send_text("still mine");
    assert_eq!(other.expect_text(), "still mine");

    let (status, _) = post(
        addr,
        &format!("/connections/{id}/close"),
        "Content-Type: application/json\r\n",
        br#"{"code": 4001, "reason": "bye"}"#,
    );
    assert!(status.contains(" 200 "), "{status}");
    let (fin, op, payload) = c.read_frame();
    assert!(fin && op == 8);
    assert_eq!(close_code(&payload), Some(4001));
    assert_eq!(&payload[2..], b"bye");
    // Closing now: another action is a conflict.
    let (status, body) = post(addr, &format!("/connections/{id}/ping"), "", b"");
    assert!(status.contains(" 409 "), "{status}");
    assert!(body.contains("not an open WebSocket"), "{body}");

    std::thread::sleep(Duration::from_millis(100));
    let records = json(addr, &format!("/frames?conn={id}&limit=100"));
    let actions: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"] == "action")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "send text message of 12 bytes",
            "send binary message of 7 bytes in frames of 3",
            "ping with 13 bytes",
            "close 4001 \"bye\"",
        ]
    );
    // The inspector's own requests are not listed.
    let list = json(addr, "/connections");
    assert!(
        list.as_array().unwrap().iter().all(|c| c["path"] != "-"),
        "{list}"
    );
}

#[test]
// docs/inspector.md: "raw frames"
fn raw_frames_go_out_byte_for_byte_and_taint_the_connection() {
    let (_s, addr) = spawn_binary(&[]);
    let mut c = Client::connect(addr, "/raw");
    let id = id_of(addr, "/raw");
    assert_eq!(json(addr, &format!("/connections/{id}"))["tainted"], false);
    let frames = r#"[
        {"opcode": 3, "payload": "odd"},
        {"opcode": "text", "fin": false, "rsv2": true, "mask": "0a0b0c0d", "payload_hex": "68690a"},
        {"opcode": "ping", "fin": false, "payload_base64": "AA=="},
        {"opcode": "text", "payload_hex": "ff"}
    ]"#;
    let (status, body) = post(
        addr,
        &format!("/connections/{id}/frames"),
        "",
        frames.as_bytes(),
    );
    assert!(status.contains(" 200 "), "{status} {body}");
    let queued = serde_json::from_str::<serde_json::Value>(&body).unwrap()["queued"]
        .as_u64()
        .unwrap() as usize;
    let mut expected = vec![0x83, 3, b'o', b'd', b'd'];
    expected.extend([
        0x21,
        0x83,
        0x0a,
        0x0b,
        0x0c,
        0x0d,
        0x68 ^ 0x0a,
        0x69 ^ 0x0b,
        0x0a ^ 0x0c,
    ]);
    expected.extend([0x09, 1, 0]);
    expected.extend([0x81, 1, 0xff]);
    assert_eq!(queued, expected.len());
    assert_eq!(read_exactly(&mut c, queued), expected);

    let detail = json(addr, &format!("/connections/{id}"));
    assert_eq!(detail["tainted"], true, "{detail}");
    let records = json(addr, &format!("/frames?conn={id}&limit=100"));
    let raw: Vec<&serde_json::Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["raw"] == true)
        .collect();
    assert_eq!(raw.len(), 4, "{records}");
    assert_eq!(raw[0]["opcode"], 3);
    assert_eq!(raw[1]["masked"], true);
    assert_eq!(raw[1]["rsv2"], true);
    assert_eq!(
        raw[1]["preview"], "hi\n",
        "the preview is the payload as meant"
    );
    // Our own protocol checks are as they were: the client's echo still
    // works.
    c.send_text("after raw");
    assert_eq!(c.expect_text(), "after raw");
}

#[test]
// docs/inspector.md: "drop"
fn drop_ends_the_connection_without_a_close_frame() {
    let (_s, addr) = spawn_binary(&[]);
    let mut c = Client::connect(addr, "/drop");
    let id = id_of(addr, "/drop");
    let (status, _) = post(
        addr,
        &format!("/connections/{id}/send"),
        "Content-Type: text/plain\r\n",
        b"last words",
    );
    assert!(status.contains(" 200 "));
    let (status, _) = post(addr, &format!("/connections/{id}/drop"), "", b"");
    assert!(status.contains(" 200 "), "{status}");
    // What was queued before still arrives; then EOF, no close frame.
    assert_eq!(c.read_frame(), (true, 1, b"last words".to_vec()));
    assert!(c.read_to_eof().is_empty());

    let mut c = Client::connect(addr, "/reset");
    let id = id_of(addr, "/reset");
    let (status, _) = post(addr, &format!("/connections/{id}/drop?reset=1"), "", b"");
    assert!(status.contains(" 200 "), "{status}");
    let mut buf = [0u8; 16];
    let got = c.stream.read(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{got:?}"
    );
}

#[test]
// docs/inspector.md: "Answers"
fn refusals_say_why() {
    let (_s, addr) = spawn_binary(&["--max-message-size", "1KiB"]);
    let _c = Client::connect(addr, "/target");
    let id = id_of(addr, "/target");
    let cases: Vec<(String, &str, Vec<u8>, &str)> = vec![
        (format!("/connections/{id}/explode"), "", vec![], " 404 "),
        (
            "/connections/4000000000/send".into(),
            "",
            b"x".to_vec(),
            " 404 ",
        ),
        ("/connections/abc/send".into(), "", b"x".to_vec(), " 400 "),
        (
            format!("/connections/{id}/send?colour=red"),
            "",
            b"x".to_vec(),
            " 400 ",
        ),
        (
            format!("/connections/{id}/send"),
            "Content-Type: text/plain\r\n",
            vec![0xff],
            " 400 ",
        ),
        (
            format!("/connections/{id}/send"),
            "",
            vec![0; 1025],
            " 413 ",
        ),
        (format!("/connections/{id}/ping"), "", vec![0; 126], " 413 "),
        (
            format!("/connections/{id}/close"),
            "",
            br#"{"code": 1006}"#.to_vec(),
            " 400 ",
        ),
        (
            format!("/connections/{id}/frames"),
            "",
            b"[{\"opcode\": 99}]".to_vec(),
            " 400 ",
        ),
        (
            format!("/connections/{id}/send"),
            "Origin: http://evil.example\r\n",
            b"x".to_vec(),
            " 403 ",
        ),
    ];
    for (target, headers, body, want) in cases {
        let (status, why) = post(addr, &target, headers, &body);
        assert!(status.contains(want), "{target} {headers}: {status} {why}");
        assert_eq!(why.lines().count(), 1, "{target}: one line: {why}");
    }
    // Not an open WebSocket: an event-stream subscriber is a conflict.
    let mut sse = Client::raw(addr);
    sse.send_raw(
        format!(
            "GET /broadcast/news HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    let _ = sse.read_http_head();
    let list = json(addr, "/connections");
    let sub = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["room"] == "/broadcast/news")
        .map(|c| c["id"].as_u64().unwrap())
        .expect("the subscriber is listed");
    let (status, _) = post(addr, &format!("/connections/{sub}/send"), "", b"x");
    assert!(status.contains(" 409 "), "{status}");
    // The inspector off: 404 as for any path that does not exist.
    let (_s2, addr2) = spawn_binary(&["--inspect", "off"]);
    let (status, _) = post(addr2, "/connections/0/ping", "", b"");
    assert!(status.contains(" 404 "), "{status}");
}

fn open_core() -> Connection {
    let limits = Limits::default();
    limits.tap.set_on(true);
    let now = Instant::now();
    let mut conn = Connection::new(limits, now);
    conn.receive(upgrade_request("/").as_bytes(), now);
    while let Some(ev) = conn.poll_event() {
        if let Event::Upgrade(_) = ev {
            conn.accept(now);
        }
    }
    let mut sink = Vec::new();
    read_output(&mut conn, &mut sink, usize::MAX);
    conn
}

#[test]
fn the_core_acts_only_on_an_open_connection() {
    let now = Instant::now();
    let mut conn = open_core();
    let raw = RawFrame {
        opcode: 11,
        fin: true,
        rsv: 4,
        mask: None,
        payload: b"x".to_vec(),
    };
    assert_eq!(conn.send_raw(std::slice::from_ref(&raw)), Ok(3));
    assert_eq!(
        conn.send_message(MessageKind::Text, b"abcdef".to_vec(), Some(4)),
        Ok(10)
    );
    assert_eq!(conn.send_ping(b"p".to_vec()), Ok(3));
    let mut out = Vec::new();
    read_output(&mut conn, &mut out, usize::MAX);
    assert_eq!(&out[..3], [0xcb, 1, b'x']);
    let (frames, _) = parse_frames(&out[3..]);
    assert_eq!(
        frames,
        [
            (false, 1, b"abcd".to_vec()),
            (true, 0, b"ef".to_vec()),
            (true, 9, b"p".to_vec())
        ]
    );
    assert_eq!(conn.close_now(Some(CloseCode(4001)), "", now), Ok(4));
    assert_eq!(conn.send_ping(Vec::new()), Err(NotNow::NotOpen));
    assert_eq!(conn.send_raw(&[raw]), Err(NotNow::NotOpen));

    // A hang-up: what is queued goes, then a reset, no close frame.
    let mut conn = open_core();
    conn.send_message(MessageKind::Binary, vec![1], None)
        .unwrap();
    conn.hang_up(true, now).unwrap();
    assert_eq!(conn.poll_transport(), TransportAction::None, "output first");
    let mut out = Vec::new();
    read_output(&mut conn, &mut out, usize::MAX);
    assert_eq!(out, [0x82, 1, 1]);
    assert_eq!(conn.poll_transport(), TransportAction::Reset);
    assert_eq!(conn.close_sent(), None);

    // An empty close frame (no code).
    let mut conn = open_core();
    assert_eq!(conn.close_now(None, "", now), Ok(2));
    let mut out = Vec::new();
    read_output(&mut conn, &mut out, usize::MAX);
    assert_eq!(out, [0x88, 0]);
}
