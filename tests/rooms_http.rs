//! Rooms over HTTP (issue 20), over real sockets: publishing with a POST,
//! subscribing with Server-Sent Events, history and resume, CORS, the knobs
//! of a subscription, and what bad input gets. Real clients (curl, Python,
//! Chromium's EventSource) are in tests/rooms_clients.sh.

mod common;

use std::time::{Duration, Instant};

use common::rooms::*;
use common::*;
use echocast::Config;

fn server_with(f: impl FnOnce(&mut Config)) -> echocast::ServerHandle {
    let mut c = Config::local();
    f(&mut c);
    echocast::spawn(c).expect("spawn")
}

#[test]
fn one_order_for_websocket_members_sse_subscribers_and_posts() {
    let s = server_with(|_| {});
    let addr = s.local_addr();
    let mut ws = Client::connect(addr, "/broadcast/lobby");
    let mut sse = Sse::open(addr, "/broadcast/lobby", "");
    assert!(sse.head.starts_with("HTTP/1.1 200 "), "{}", sse.head);
    assert!(sse.head.contains("Content-Type: text/event-stream\r\n"));
    assert!(sse.head.contains("Cache-Control: no-store\r\n"));
    wait_members(addr, "/broadcast/lobby", 2);

    let (head, body) = post(addr, "/broadcast/lobby", "text/plain", b"one");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("Content-Type: application/json"));
    let v = json(&body);
    assert_eq!(v["room"], "/broadcast/lobby");
    assert_eq!(v["id"], 1);
    assert_eq!(v["members"], 2);
    ws.send_text("two\r\nlines");
    post(
        addr,
        "/broadcast/lobby",
        "application/octet-stream",
        &[0, 1, 254, 255],
    );
    post(addr, "/broadcast/lobby", "application/json", b"{\"n\": 4}");

    assert_eq!(ws.expect_text(), "one");
    assert_eq!(ws.expect_text(), "two\r\nlines");
    let (op, data, _) = ws.read_message();
    assert_eq!((op, data), (2, vec![0, 1, 254, 255]));
    assert_eq!(ws.expect_text(), "{\"n\": 4}");

    let want = [
        ("1", "message", "one"),
        // A line break of any form is a new data line: EventSource gives
        // it back as LF.
        ("2", "message", "two\nlines"),
        ("3", "binary", "AAH+/w=="),
        ("4", "message", "{\"n\": 4}"),
    ];
    for (id, kind, data) in want {
        let e = sse.expect();
        assert_eq!(
            (e.id.as_deref(), e.kind.as_str(), e.data.as_str()),
            (Some(id), kind, data)
        );
    }
}

// docs/limits.md: "Kept-alive connection"
#[test]
fn bodies_by_length_chunked_and_after_100_continue_on_one_kept_connection() {
    let s = server_with(|_| {});
    let addr = s.local_addr();
    let mut sse = Sse::open(addr, "/broadcast/b", "");
    wait_members(addr, "/broadcast/b", 1);
    let mut c = Client::raw(addr);
    // Content-Length, then chunked in pieces, then Expect: 100-continue, then
    // two pipelined in one write: one connection.
    c.send_raw(b"POST /broadcast/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfirst");
    let (head, body) = c.read_http_response();
    assert!(
        head.starts_with("HTTP/1.1 200 ") && !head.contains("Connection: close"),
        "{head}"
    );
    assert_eq!(json(&body)["id"], 1);
    c.send_raw(b"POST /broadcast/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec");
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(b"\r\n3;ext=1\r\nond\r\n0\r\nTrailer: t\r\n\r\n");
    let (_, body) = c.read_http_response();
    assert_eq!(json(&body)["id"], 2);
    c.send_raw(b"POST /broadcast/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_http_head();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    c.send_raw(b"third");
    let (_, body) = c.read_http_response();
    assert_eq!(json(&body)["id"], 3);
    c.send_raw(b"POST /broadcast/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n4POST /broadcast/b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\n5");
    let (_, body) = c.read_http_response();
    assert_eq!(json(&body)["id"], 4);
    let (head, body) = c.read_http_response();
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(json(&body)["id"], 5);
    assert!(c.read_to_eof().is_empty());
    for want in ["first", "second", "third", "4", "5"] {
        assert_eq!(sse.expect().data, want);
    }
    // Kept connections do not count as incomplete handshakes.
    let (_, stats) = http_get(addr, "/stats");
    let v = json(&stats);
    assert_eq!(v["http_publishes"], 5);
    assert!(v["handshake_failures"].get("incomplete").is_none(), "{v}");
}

// docs/limits.md: "Request body (`POST` to a room)"
#[test]
fn bad_bodies_get_their_status() {
    let s = server_with(|c| c.limits.max_message_size = 1000);
    let addr = s.local_addr();
    let cases: &[(&str, &[u8], &str)] = &[
        // No length: 411.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\n\r\n", b"", "411"),
        // Declared over --max-message-size: 413 before any body byte.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", b"", "413"),
        // Chunks adding up over it: 413 at the size line.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"1f4\r\n", "413"),
        // Both lengths (request smuggling): 400.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"abc", "400"),
        // A bad chunk: 400.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\n", "400"),
        // Another coding: 501.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", b"", "501"),
        // Text that is not UTF-8: 400.
        ("POST /broadcast/x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n", b"\xff\xfe", "400"),
        // An echo path: 405.
        ("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", b"hi", "405"),
    ];
    let big_chunks = [b"1f4\r\n".as_slice(), &[b'a'; 500], b"\r\n1f5\r\n"].concat();
    for (head, body, status) in cases {
        let body = if *status == "413" && head.contains("chunked") {
            &big_chunks[..]
        } else {
            body
        };
        let (answer, text) = request(addr, head, body);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{head:?}: {answer}"
        );
        let text = String::from_utf8_lossy(&text);
        assert!(text.lines().count() == 1 && text.len() > 10, "{text:?}");
        if *status == "405" {
            assert!(answer.contains("Allow: GET\r\n"), "{answer}");
            assert!(text.contains("/broadcast"), "{text}");
        }
    }
    // 413 with Expect: 100-continue: the answer instead of 100, nothing read.
    let mut c = Client::raw(addr);
    c.send_raw(b"POST /broadcast/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2097152\r\n\r\n");
    let (head, _) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    assert_serving(addr);
}

// docs/limits.md: "Request body time"
#[test]
fn a_body_that_stops_arriving_gets_408() {
    let s = server_with(|c| c.limits.handshake_timeout = Duration::from_millis(300));
    let mut c = Client::raw(s.local_addr());
    c.send_raw(b"POST /broadcast/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    let (head, _) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
}

// docs/limits.md: "Room history"
#[test]
fn resume_after_last_event_id_with_a_gap_for_what_was_evicted() {
    let s = server_with(|c| c.room_history = 3);
    let addr = s.local_addr();
    for i in 1..=5 {
        post(
            addr,
            "/broadcast/r",
            "text/plain",
            format!("m{i}").as_bytes(),
        );
    }
    // Retained: 3, 4, 5. After 3: 4 and 5.
    let mut sse = Sse::open(addr, "/broadcast/r", "Last-Event-ID: 3\r\n");
    assert_eq!(sse.expect().data, "m4");
    assert_eq!(sse.expect().data, "m5");
    // After 1: 2 was evicted: a gap first, never a silent one.
    let mut sse = Sse::open(addr, "/broadcast/r?lastEventId=1", "");
    let gap = sse.expect();
    assert_eq!((gap.kind.as_str(), gap.id), ("gap", None));
    let v = json(gap.data.as_bytes());
    assert_eq!((v["from"].as_u64(), v["to"].as_u64()), (Some(2), Some(2)));
    for want in ["m3", "m4", "m5"] {
        assert_eq!(sse.expect().data, want);
    }
    // Then live ones.
    wait_members(addr, "/broadcast/r", 2);
    post(addr, "/broadcast/r", "text/plain", b"m6");
    let e = sse.expect();
    assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("6"), "m6"));
    // An id ahead of the room (forgotten, or a restarted server): from its start.
    let mut sse = Sse::open(addr, "/broadcast/r", "Last-Event-ID: 99\r\n");
    let gap = sse.expect();
    assert_eq!(json(gap.data.as_bytes())["from"], 1);
    assert_eq!(sse.expect().data, "m4");
    // A bogus one: 400 with the reason.
    let sse = Sse::open(addr, "/broadcast/r", "Last-Event-ID: abc\r\n");
    assert!(sse.head.starts_with("HTTP/1.1 400 "), "{}", sse.head);
    let mut c = sse.c;
    let body = String::from_utf8(c.read_to_eof()).unwrap();
    assert!(body.contains("Last-Event-ID"), "{body}");
}

// docs/limits.md: "`history=N`"
#[test]
fn websocket_members_ask_for_history() {
    let s = server_with(|c| c.room_history = 3);
    let addr = s.local_addr();
    for i in 1..=4 {
        post(
            addr,
            "/broadcast/h",
            "text/plain",
            format!("m{i}").as_bytes(),
        );
    }
    let mut ws = Client::connect(addr, "/broadcast/h?history=2");
    assert_eq!(ws.expect_text(), "m3");
    assert_eq!(ws.expect_text(), "m4");
    post(addr, "/broadcast/h", "text/plain", b"m5");
    assert_eq!(ws.expect_text(), "m5");
    // More than the room keeps, or on an echo path: 400 naming the knob.
    for path in ["/broadcast/h?history=4", "/echo?history=1"] {
        let mut c = Client::raw(addr);
        c.send_raw(upgrade_request(path).as_bytes());
        let (head, body) = c.read_http_response();
        assert!(head.starts_with("HTTP/1.1 400 "), "{path}: {head}");
        assert!(String::from_utf8_lossy(&body).contains("history"), "{path}");
    }
}

// docs/limits.md: "Room linger"
#[test]
fn rooms_linger_after_their_last_member_then_are_forgotten() {
    let s = server_with(|c| c.room_linger = Duration::from_millis(1500));
    let addr = s.local_addr();
    {
        let _ws = Client::connect(addr, "/broadcast/l");
        post(addr, "/broadcast/l", "text/plain", b"kept");
    }
    std::thread::sleep(Duration::from_millis(300));
    // Still there: a subscriber resumes from it.
    let mut sse = Sse::open(addr, "/broadcast/l", "Last-Event-ID: 0\r\n");
    assert_eq!(sse.expect().data, "kept");
    drop(sse);
    std::thread::sleep(Duration::from_millis(2600));
    let (_, body) = http_get(addr, "/stats");
    let v = json(&body);
    assert_eq!(v["rooms"]["count"], 0, "{v}");
    // A new room of the same name starts its ids again.
    let (_, body) = post(addr, "/broadcast/l", "text/plain", b"new");
    assert_eq!(json(&body)["id"], 1);
}

#[test]
fn cors_on_room_endpoints_only() {
    let s = server_with(|_| {});
    let addr = s.local_addr();
    let origin = "Origin: http://localhost:3000\r\n";
    let (head, _) = request(
        addr,
        &format!("OPTIONS /broadcast/c HTTP/1.1\r\nHost: x\r\n{origin}Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"),
        b"",
    );
    assert!(head.starts_with("HTTP/1.1 204 "), "{head}");
    assert!(head.contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"));
    assert!(head.contains("Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"));
    assert!(head.contains(
        "Access-Control-Allow-Headers: Content-Type, Last-Event-ID, Idempotency-Key\r\n"
    ));
    let (head, _) = request(
        addr,
        &format!("POST /broadcast/c HTTP/1.1\r\nHost: x\r\n{origin}Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n"),
        b"hi",
    );
    assert!(
        head.contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"),
        "{head}"
    );
    let sse = Sse::open(addr, "/broadcast/c", origin);
    assert!(sse
        .head
        .contains("Access-Control-Allow-Origin: http://localhost:3000\r\n"));
    for path in ["/stats", "/metrics", "/connections", "/frames"] {
        let (head, _) = request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{origin}\r\n"),
            b"",
        );
        assert!(!head.contains("Access-Control"), "{path}: {head}");
    }

    // With --allow-origin, another origin gets 403 on all three.
    let s = server_with(|c| c.allow_origins = vec!["http://localhost:3000".into()]);
    let addr = s.local_addr();
    let evil = "Origin: http://evil.example\r\n";
    for head in [
        format!("OPTIONS /broadcast/c HTTP/1.1\r\nHost: x\r\n{evil}Access-Control-Request-Method: POST\r\n\r\n"),
        format!("POST /broadcast/c HTTP/1.1\r\nHost: x\r\n{evil}Content-Length: 2\r\n\r\nhi"),
        format!("GET /broadcast/c HTTP/1.1\r\nHost: x\r\n{evil}Accept: text/event-stream\r\n\r\n"),
    ] {
        let (answer, _) = request(addr, &head, b"");
        assert!(answer.starts_with("HTTP/1.1 403 "), "{head}: {answer}");
        assert!(!answer.contains("Access-Control"), "{answer}");
    }
    let (answer, _) = request(
        addr,
        &format!("OPTIONS /broadcast/c HTTP/1.1\r\nHost: x\r\n{origin}Access-Control-Request-Method: POST\r\n\r\n"),
        b"",
    );
    assert!(answer.starts_with("HTTP/1.1 204 "), "{answer}");
}

#[test]
fn subscription_knobs_drop_and_greeting_and_refusals() {
    let s = server_with(|_| {});
    let addr = s.local_addr();
    for i in 1..=3 {
        post(
            addr,
            "/broadcast/k",
            "text/plain",
            format!("m{i}").as_bytes(),
        );
    }
    let mut sse = Sse::open(
        addr,
        "/broadcast/k?drop=2&greeting=hello",
        "Last-Event-ID: 0\r\n",
    );
    let g = sse.expect();
    assert_eq!((g.id, g.data.as_str()), (None, "hello"));
    assert_eq!(sse.expect().data, "m1");
    assert_eq!(sse.expect().data, "m2");
    assert_eq!(sse.next(), None, "the stream ends after 2 events");
    // As EventSource would: come back after the last id seen.
    let mut sse = Sse::open(addr, "/broadcast/k?drop=2", "Last-Event-ID: 2\r\n");
    assert_eq!(sse.expect().data, "m3");
    for (knob, path) in [
        ("fragment", "/broadcast/k?fragment=10"),
        ("reset", "/broadcast/k?drop=1&reset=1"),
        ("push", "/broadcast/k?push=3"),
    ] {
        let sse = Sse::open(addr, path, "");
        assert!(
            sse.head.starts_with("HTTP/1.1 400 "),
            "{path}: {}",
            sse.head
        );
        let mut c = sse.c;
        let body = String::from_utf8(c.read_to_eof()).unwrap();
        assert!(body.contains(knob), "{path}: {body}");
    }
}

// docs/limits.md: "Event-stream keepalive"
#[test]
fn quiet_streams_get_keepalive_comments() {
    let s = server_with(|c| c.limits.sse_keepalive = Some(Duration::from_millis(200)));
    let mut sse = Sse::open(s.local_addr(), "/broadcast/q", "");
    let start = Instant::now();
    let mut comments = 0;
    while comments < 2 {
        let line = sse.line().expect("the stream stays open");
        if line.starts_with(':') {
            comments += 1;
        }
    }
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(start.elapsed() < Duration::from_secs(5));
}

// docs/limits.md: "Subscriber backlog"
#[test]
fn a_slow_subscriber_gets_a_last_error_event() {
    let s = server_with(|c| c.max_backpressure = 64 * 1024);
    let addr = s.local_addr();
    // A subscriber with a small receive buffer that does not read.
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = Client::from_stream(stream);
    c.send_raw(b"GET /broadcast/slow HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    wait_members(addr, "/broadcast/slow", 1);
    let big = vec![b'x'; 32 * 1024];
    let mut published = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = post(addr, "/broadcast/slow", "text/plain", &big);
        published += 1;
        if json(&body)["members"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never cut off after {published} messages"
        );
    }
    let all = c.read_to_eof();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.ends_with("event: error\ndata: slow consumer\n\n"),
        "{}",
        &text[text.len().saturating_sub(100)..]
    );
    let (_, stats) = http_get(addr, "/stats");
    assert!(json(&stats)["slow_consumer_closes"].as_u64() >= Some(1));
}

// docs/limits.md: "The process's memory"
#[test]
fn thousands_of_rooms_under_a_small_budget_shed_history_and_the_server_lives() {
    let s = server_with(|c| c.max_memory = 4 << 20);
    let addr = s.local_addr();
    let body = vec![b'h'; 4096];
    let mut c = Client::raw(addr);
    for i in 0..3000 {
        c.send_raw(
            format!(
                "POST /broadcast/many/{i} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        c.send_raw(&body);
        let (head, _) = c.read_http_response();
        assert!(head.starts_with("HTTP/1.1 200 "), "{i}: {head}");
    }
    let (_, stats) = http_get(addr, "/stats");
    let v = json(&stats);
    let history = &v["rooms"]["history"];
    assert!(history["shed"].as_u64().unwrap() > 0, "{history}");
    assert!(history["bytes"].as_u64().unwrap() < 4 << 20, "{history}");
    assert_eq!(v["rooms"]["count"], 3000);
    assert_serving(addr);
    let (_, metrics) = http_get(addr, "/metrics");
    let m = String::from_utf8(metrics).unwrap();
    for name in [
        "echocast_http_publishes_total 3000",
        "echocast_room_history_shed_total",
        "echocast_room_history_bytes{room=",
        "echocast_connections{kind=\"events\"}",
    ] {
        assert!(m.contains(name), "{name}");
    }
}
