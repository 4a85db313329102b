//! The frame inspector (issue 19). Through the sans-IO core: the exact
//! records of a scripted conversation. Over sockets: `/connections`,
//! `/connections/ID`, `/frames` after a connection is gone, `/.inspect` live
//! with a filter and a slow reader, the access rules, `--inspect off` and a
//! listener off loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use echocast::proto::inspect::{Dir, FrameInfo, MessageInfo, Record, What};
use echocast::proto::{Connection, Event, Limits};

fn frame(dir: Dir, opcode: u8, fin: bool, masked: bool, len: u64, preview: &[u8]) -> What {
    What::Frame(FrameInfo {
        dir,
        opcode,
        fin,
        rsv: 0,
        masked,
        len,
        preview: preview.into(),
        raw: false,
    })
}

/// An uncompressed message's record (its content whole: under the preview).
fn message(dir: Dir, text: bool, content: &[u8], frames: u32) -> What {
    What::Message(MessageInfo {
        dir,
        text,
        len: content.len() as u64,
        wire_len: content.len() as u64,
        frames,
        compressed: false,
        content: content.into(),
        folded: false,
    })
}

/// A message in one uncompressed frame: that frame's record is folded into
/// the message's.
fn folded(dir: Dir, text: bool, content: &[u8]) -> What {
    match message(dir, text, content, 1) {
        What::Message(m) => What::Message(MessageInfo { folded: true, ..m }),
        _ => unreachable!(),
    }
}

#[test]
fn the_core_records_every_frame_both_ways_and_the_rule_a_client_broke() {
    let limits = Limits::default();
    limits.tap.set_on(true);
    let now = Instant::now();
    let mut conn = Connection::new(limits, now);
    conn.set_id(7);
    let key = [1, 2, 3, 4];
    let mut input = upgrade_request("/").into_bytes();
    input.extend(client_frame(true, 1, b"hello", key)); // masked text
    input.extend(client_frame(false, 2, &[1, 2, 3], key)); // fragmented binary...
    input.extend(client_frame(true, 9, b"p", key)); // ...a ping between its fragments
    input.extend(client_frame(true, 0, &[4, 5], key)); // ...and its end
    input.extend({
        let mut f = 1000u16.to_be_bytes().to_vec();
        f.extend_from_slice(b"bye");
        client_frame(true, 8, &f, key)
    });
    conn.receive(&input, now);
    while let Some(ev) = conn.poll_event() {
        match ev {
            Event::Upgrade(req) => {
                assert!(req
                    .head
                    .as_deref()
                    .is_some_and(|h| h.starts_with(b"GET / HTTP/1.1")));
                conn.accept(now)
            }
            Event::Message { kind, data } => {
                conn.send(kind, data);
            }
            other => panic!("{other:?}"),
        }
    }
    let got: Vec<What> = conn
        .tap()
        .drain()
        .into_iter()
        .map(|r: Record| {
            assert_eq!(r.conn, 7);
            r.what
        })
        .collect();
    let close_body = [&1000u16.to_be_bytes()[..], b"bye"].concat();
    // Everything arrived in one read: the frames in are parsed first, then
    // the answers go out in the same order.
    // A message's record follows its last frame in, and comes before its
    // frames out; a message in one uncompressed frame carries that frame.
    let expected = vec![
        folded(Dir::In, true, b"hello"),
        frame(Dir::In, 2, false, true, 3, &[1, 2, 3]),
        frame(Dir::In, 9, true, true, 1, b"p"),
        frame(Dir::In, 0, true, true, 2, &[4, 5]),
        message(Dir::In, false, &[1, 2, 3, 4, 5], 2),
        frame(Dir::In, 8, true, true, 5, &close_body),
        folded(Dir::Out, true, b"hello"),
        frame(Dir::Out, 10, true, false, 1, b"p"),
        folded(Dir::Out, false, &[1, 2, 3, 4, 5]),
        frame(Dir::Out, 8, true, false, 2, &1000u16.to_be_bytes()),
    ];
    assert_eq!(got, expected);
    // The folded frames are what their own records said.
    let frame_of = |w: &What| match w {
        What::Message(m) => m.frame().map(What::Frame),
        _ => None,
    };
    assert_eq!(
        frame_of(&got[0]),
        Some(frame(Dir::In, 1, true, true, 5, b"hello"))
    );
    assert_eq!(frame_of(&got[4]), None, "two frames: recorded apart");
    assert_eq!(
        frame_of(&got[8]),
        Some(frame(Dir::Out, 2, true, false, 5, &[1, 2, 3, 4, 5]))
    );
    let FrameInfo { .. } = match &got[5] {
        What::Frame(f) => {
            assert_eq!(f.close(), Some((1000, "bye".to_string())));
            f.clone()
        }
        _ => unreachable!(),
    };

    // An unmasked frame: its record (masked: false), then the error with the
    // RFC sentence it broke.
    let limits = Limits::default();
    limits.tap.set_on(true);
    let mut conn = Connection::new(limits, now);
    conn.receive(upgrade_request("/").as_bytes(), now);
    while let Some(Event::Upgrade(_)) = conn.poll_event() {
        conn.accept(now);
    }
    conn.receive(&[0x81, 0x02, b'h', b'i'], now);
    let got: Vec<What> = conn.tap().drain().into_iter().map(|r| r.what).collect();
    assert_eq!(got[0], frame(Dir::In, 1, true, false, 2, b""));
    match &got[1] {
        What::Error { close_code, rule } => {
            assert_eq!(*close_code, 1002);
            assert!(rule.starts_with("RFC 6455 §5.1:"), "{rule}");
            assert!(rule.contains("not masked"), "{rule}");
        }
        other => panic!("{other:?}"),
    }
    // Our 1002 close frame follows.
    assert!(matches!(&got[2], What::Frame(f) if f.opcode == 8 && f.dir == Dir::Out));

    // With the tap off, nothing is recorded.
    let mut conn = Connection::new(Limits::default(), now);
    conn.receive(upgrade_request("/").as_bytes(), now);
    while let Some(Event::Upgrade(_)) = conn.poll_event() {
        conn.accept(now);
    }
    conn.receive(&client_frame(true, 1, b"x", key), now);
    // Echoed: neither the message in nor its answer is recorded.
    while let Some(ev) = conn.poll_event() {
        if let Event::Message { kind, data } = ev {
            conn.send(kind, data);
        }
    }
    assert!(conn.output_len() > 0, "the echo is queued");
    assert!(conn.tap().is_empty(), "{:?}", conn.tap().drain());
}

fn json(addr: std::net::SocketAddr, target: &str) -> serde_json::Value {
    let (head, body) = http_get(addr, target);
    assert!(head.starts_with("HTTP/1.1 200 "), "{target}: {head}");
    serde_json::from_slice(&body).unwrap()
}

/// A raw GET with extra headers; returns the status line and body.
fn get_with(addr: std::net::SocketAddr, target: &str, headers: &str) -> (String, String) {
    let mut c = Client::raw(addr);
    c.send_raw(format!("GET {target} HTTP/1.1\r\n{headers}\r\n").as_bytes());
    let (head, body) = c.read_http_response();
    (
        head.lines().next().unwrap_or("").to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[test]
fn connections_show_each_client_and_its_request_with_credentials_redacted() {
    let (_s, addr) = spawn_binary(&[]);
    let mut c = Client::raw(addr);
    let req = upgrade_request("/room-less?fragment=2&x=1").replace(
        "\r\n\r\n",
        "\r\nX-Trace-Id: Abc-123\r\nAuthorization: Bearer secret-token\r\n\r\n",
    );
    c.send_raw(req.as_bytes());
    assert!(c.read_http_head().starts_with("HTTP/1.1 101 "));
    c.send_text("hey");
    let _ = c.read_message();
    let list = json(addr, "/connections");
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/room-less?fragment=2&x=1")
        .expect("listed")
        .clone();
    assert_eq!(me["state"], "open");
    assert_eq!(me["transport"], "ws");
    assert_eq!(me["room"], serde_json::Value::Null);
    assert_eq!(me["knobs"], "fragment=2");
    assert_eq!(me["messages_in"], 1);
    assert_eq!(me["messages_out"], 1);
    assert_eq!(me["bytes_in"], 3);
    assert!(me["opened_at"].as_str().unwrap().ends_with('Z'));
    assert!(me["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let id = me["id"].as_u64().unwrap();
    let one = json(addr, &format!("/connections/{id}"));
    let headers = one["request"]["headers"].as_array().unwrap();
    assert!(headers
        .iter()
        .any(|h| h[0] == "X-Trace-Id" && h[1] == "Abc-123"));
    assert!(headers
        .iter()
        .any(|h| h[0] == "Authorization" && h[1] == "<redacted, 19 bytes>"));
    assert_eq!(one["request"]["method"], "GET");
    assert_eq!(one["request"]["target"], "/room-less?fragment=2&x=1");

    // Bad input: one line each.
    let (status, body) = get_with(addr, "/connections/999999", "Host: 127.0.0.1\r\n");
    assert!(status.contains(" 404 "), "{status}");
    assert_eq!(body.lines().count(), 1);
    for bad in [
        "/connections/abc",
        "/frames?conn=x",
        "/frames?limit=0",
        "/frames?limit=-1",
        "/frames?bogus=1",
    ] {
        let (status, body) = get_with(addr, bad, "Host: 127.0.0.1\r\n");
        assert!(status.contains(" 400 "), "{bad}: {status}");
        assert_eq!(body.lines().count(), 1, "{body}");
    }
}

#[test]
// docs/limits.md: "Frame inspector ring"
fn the_ring_keeps_the_newest_records_within_its_bound() {
    let (_s, addr) = spawn_binary(&["--inspect-frames", "50"]);
    let mut c = Client::connect(addr, "/");
    for i in 0..100 {
        c.send_text(&format!("m{i}"));
        assert_eq!(c.expect_text(), format!("m{i}"));
    }
    std::thread::sleep(Duration::from_millis(100));
    let all = json(addr, "/frames?limit=100000");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 50);
    assert_eq!(all.last().unwrap()["preview"], "m99");
    // An echo in one frame each way: frame in, message in, message out,
    // frame out, numbered one after the other (docs/inspector.md).
    let last4 = &all[46..];
    let seq0 = last4[0]["seq"].as_u64().unwrap();
    for (i, (r, (dir, event))) in last4
        .iter()
        .zip([("in", false), ("in", true), ("out", true), ("out", false)])
        .enumerate()
    {
        assert_eq!(r["seq"].as_u64(), Some(seq0 + i as u64), "{r}");
        assert_eq!(r["dir"], dir, "{r}");
        assert_eq!(r["event"] == "message", event, "{r}");
    }
    assert_eq!(last4[0]["masked"], true);
    assert_eq!(last4[0]["opcode"], "text");
    assert_eq!(last4[1]["text"], "m99");
    assert_eq!(last4[3]["masked"], false);
    let stats = json(addr, "/stats");
    assert_eq!(stats["inspector"]["records"], 50);
    assert!(stats["inspector"]["evicted"].as_u64().unwrap() >= 150);
    assert!(stats["inspector"]["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn frames_outlive_their_connection_and_failed_connections_show_their_rule() {
    let (_s, addr) = spawn_binary(&[]);
    let mut c = Client::connect(addr, "/");
    c.send_text("before failing");
    assert_eq!(c.expect_text(), "before failing");
    c.send_raw(&[0x81, 0x01, b'x']); // unmasked
    assert_eq!(c.expect_close(), Some(1002));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let frames = json(addr, "/frames?limit=1000");
    let all = frames.as_array().unwrap();
    let err = all
        .iter()
        .find(|r| r["event"] == "error")
        .expect("an error record");
    assert_eq!(err["close_code"], 1002);
    assert!(err["rule"].as_str().unwrap().contains("§5.1"));
    let conn = err["conn"].as_u64().unwrap();
    let mine: Vec<&serde_json::Value> = all.iter().filter(|r| r["conn"] == conn).collect();
    assert_eq!(mine[0]["event"], "open");
    assert!(mine
        .iter()
        .any(|r| r["dir"] == "in" && r["preview"] == "before failing" && r["masked"] == true));
    assert!(mine
        .iter()
        .any(|r| r["dir"] == "in" && r["masked"] == false));
    assert_eq!(mine.last().unwrap()["event"], "closed");
    assert_eq!(mine.last().unwrap()["sent"], 1002);
    // Sequence numbers increase; `limit` keeps the newest, oldest first.
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let last2 = json(addr, &format!("/frames?conn={conn}&limit=2"));
    assert_eq!(last2.as_array().unwrap().len(), 2);
    assert_eq!(last2[1]["event"], "closed");
}

/// Reads one WebSocket text message from a raw inspector client.
fn next_record(c: &mut Client) -> serde_json::Value {
    let (op, data, _) = c.read_message();
    assert_eq!(op, 1);
    serde_json::from_slice(&data).unwrap()
}

#[test]
// docs/limits.md: "Live inspector backlog"
fn live_inspection_filters_and_a_slow_inspector_loses_records_not_clients() {
    let (_s, addr) = spawn_binary(&[]);
    let mut a = Client::connect(addr, "/a");
    let b_probe = json(addr, "/connections");
    let a_id = b_probe
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "/a")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let mut inspector = Client::connect(addr, &format!("/.inspect?conn={a_id}"));
    let mut other = Client::connect(addr, "/b");
    other.send_text("not for this inspector");
    let _ = other.expect_text();
    a.send_text("watched");
    assert_eq!(a.expect_text(), "watched");
    let r1 = next_record(&mut inspector);
    assert_eq!(
        (
            r1["conn"].as_u64(),
            r1["dir"].as_str(),
            r1["preview"].as_str()
        ),
        (Some(a_id), Some("in"), Some("watched"))
    );
    // The message as it was meant, after its last frame; the echo's message
    // before its frame.
    let r2 = next_record(&mut inspector);
    assert_eq!(
        (
            r2["event"].as_str(),
            r2["dir"].as_str(),
            r2["text"].as_str()
        ),
        (Some("message"), Some("in"), Some("watched"))
    );
    let r3 = next_record(&mut inspector);
    assert_eq!(
        (r3["event"].as_str(), r3["dir"].as_str(), r3["len"].as_u64()),
        (Some("message"), Some("out"), Some(7))
    );
    let r4 = next_record(&mut inspector);
    assert_eq!(
        (r4["dir"].as_str(), r4["opcode"].as_str()),
        (Some("out"), Some("text"))
    );

    // A path filter, and an inspector that does not read: the clients it
    // watches are served at full speed, and it is told what it missed.
    let slow = Client::connect_small_rcvbuf(addr, "/.inspect?path=/busy", 4096);
    let mut busy = Client::connect(addr, "/busy");
    let payload = "x".repeat(1000);
    let start = Instant::now();
    // 20,000 records of ~300 bytes: more than the kernel's socket buffers
    // (4 MiB of send buffer here) and the 256 KiB it may fall behind.
    for _ in 0..10_000 {
        busy.send_text(&payload);
        assert_eq!(busy.expect_text().len(), 1000);
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    // It catches up: reads everything queued for it (records that went
    // before it fell behind) until nothing more comes...
    let mut slow = slow;
    slow.stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut caught_up = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = slow.stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        caught_up.extend_from_slice(&buf[..n]);
    }
    let (frames, rest) = parse_frames(&caught_up);
    assert!(!frames.is_empty());
    // ...and with the next record it first learns how many it missed.
    slow.buf = caught_up[caught_up.len() - rest..].to_vec();
    slow.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    busy.send_text("one more");
    assert_eq!(busy.expect_text(), "one more");
    let note = next_record(&mut slow);
    assert_eq!(note["event"], "dropped", "{note}");
    let dropped = note["count"].as_u64();
    let after = next_record(&mut slow);
    assert_eq!(after["preview"], "one more");
    assert!(dropped.is_some_and(|n| n > 0), "no dropped notice");
    assert_serving(addr);
}

#[test]
fn the_inspector_refuses_foreign_pages_rebinding_and_is_off_when_asked() {
    let (_s, addr) = spawn_binary(&[]);
    let host = format!("Host: {addr}\r\n");
    for path in ["/connections", "/frames"] {
        let (status, _) = get_with(
            addr,
            path,
            &format!("{host}Origin: http://evil.example\r\n"),
        );
        assert!(status.contains(" 403 "), "{path}: {status}");
        let (status, _) = get_with(addr, path, "Host: attacker.example:9001\r\n");
        assert!(status.contains(" 403 "), "{path} rebinding: {status}");
        let (status, _) = get_with(addr, path, &format!("{host}Origin: http://{addr}\r\n"));
        assert!(status.contains(" 200 "), "{path} own page: {status}");
        let (status, body) = get_with(addr, path, &host);
        assert!(status.contains(" 200 "), "{path} tool: {status}");
        assert!(!body.is_empty());
    }
    // The live socket too (WebSocket upgrades are not subject to CORS).
    let mut c = Client::raw(addr);
    let req =
        upgrade_request("/.inspect").replace("\r\n\r\n", "\r\nOrigin: http://evil.example\r\n\r\n");
    c.send_raw(req.as_bytes());
    assert!(c.read_http_head().starts_with("HTTP/1.1 403 "));
    // No CORS headers on any of them.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(
        format!("GET /connections HTTP/1.1\r\n{host}Origin: http://{addr}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut text = String::new();
    let _ = raw.read_to_string(&mut text);
    assert!(
        !text.to_ascii_lowercase().contains("access-control-allow"),
        "{text}"
    );

    for args in [
        &["--inspect", "off"][..],
        &["--inspect", "local", "--listen", "0.0.0.0:0"][..],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_echocast"));
        let (_s, line) = spawn_first_line(cmd.args(args).args(if args.len() == 2 {
            &["--listen", "127.0.0.1:0"][..]
        } else {
            &[][..]
        }));
        let port = line.trim().rsplit(':').next().unwrap().to_string();
        let a: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for path in ["/connections", "/connections/0", "/frames"] {
            let (status, _) = get_with(a, path, &format!("Host: {a}\r\n"));
            assert!(status.contains(" 404 "), "{args:?} {path}: {status}");
        }
        let mut c = Client::raw(a);
        c.send_raw(upgrade_request("/.inspect").as_bytes());
        assert!(c.read_http_head().starts_with("HTTP/1.1 404 "), "{args:?}");
        let (_, stats) = http_get(a, "/stats");
        assert!(String::from_utf8_lossy(&stats).contains("\"inspector\":null"));
    }
}

/// `/messages` (issue 26): message records only, by connection and
/// direction; the inspector's own requests and its live socket are neither
/// listed in `/connections` nor recorded.
#[test]
fn messages_are_listed_apart_and_the_inspector_does_not_see_itself() {
    let (_s, addr) = spawn_binary(&[]);
    let _live = Client::connect(addr, "/.inspect?only=messages");
    let mut a = Client::connect(addr, "/m");
    a.send_text("{\"hello\": \"inspector\"}");
    assert_eq!(a.expect_text(), "{\"hello\": \"inspector\"}");
    a.send_binary(&[0, 1, 2, 255]);
    let _ = a.read_message();
    let list = json(addr, "/connections");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "only the client: {list:?}");
    let id = list[0]["id"].as_u64().unwrap();
    let ins = json(addr, &format!("/messages?conn={id}&dir=in"));
    let ins = ins.as_array().unwrap();
    assert_eq!(ins.len(), 2, "{ins:?}");
    assert_eq!(ins[0]["event"], "message");
    assert_eq!(ins[0]["kind"], "text");
    assert_eq!(ins[0]["text"], "{\"hello\": \"inspector\"}");
    assert_eq!(
        (ins[0]["frames"].as_u64(), ins[0]["compressed"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(ins[1]["kind"], "binary");
    assert_eq!(ins[1]["base64"], "AAEC/w==");
    let outs = json(addr, &format!("/messages?conn={id}&dir=out&limit=1"));
    assert_eq!(outs.as_array().unwrap().len(), 1);
    assert_eq!(outs[0]["dir"], "out");
    // /frames still has every record; nothing of the inspector's own.
    let all = json(addr, "/frames");
    let all = all.as_array().unwrap();
    assert!(all.iter().any(|r| r["opcode"] == "text"));
    assert!(
        all.iter().all(|r| r["conn"].as_u64() == Some(id)),
        "{all:?}"
    );
    let (head, body) = http_get(addr, "/messages?dir=sideways");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("bad dir"));
}
