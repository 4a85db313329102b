//! The proxy over real sockets: echocast between a blocking test client and
//! an upstream that is either another echocast (the ordinary path) or a
//! scripted raw socket (every way an upstream can answer badly: a refusal,
//! nothing, an invalid 101, a masked frame, vanishing, pushing while the
//! client does not read). The Python and Node servers and clients are in
//! tests/proxy_clients.sh.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use echocast::proto::handshake::accept_key;
use echocast::proto::FrameHeader;
use echocast::proxy::{parse_route, Routes};
use echocast::{Config, ServerHandle};

/// An echocast proxying `routes` (`PATH=URL` each).
fn proxy(routes: &[String], tune: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut config = Config::local();
    config.proxy = Routes::new(routes.iter().map(|r| parse_route(r).unwrap()).collect());
    tune(&mut config);
    echocast::spawn(config).expect("spawn")
}

/// A raw upstream: one connection accepted and handed to `script`, which
/// returns what it wants the test to see.
fn upstream<T: Send + 'static>(
    script: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        script(s)
    });
    (addr, h)
}

/// Reads a request head from a raw socket.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in the head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Answers the upgrade with a valid 101 and `extra` header lines.
fn answer_101(s: &mut TcpStream, head: &str, extra: &str) {
    let key = header(head, "sec-websocket-key").expect("a key");
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_key(key.as_bytes())
    );
    s.write_all(answer.as_bytes()).unwrap();
}

/// Reads one frame our upstream leg sent: it must be masked. (opcode, payload)
fn read_client_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if let Ok(Some((h, n))) = FrameHeader::decode(buf) {
            let end = n + h.payload_len as usize;
            if buf.len() >= end {
                let key = h.mask.expect("a client frame is masked (RFC 6455 §5.3)");
                let mut p = buf[n..end].to_vec();
                echocast::proto::mask::apply_mask(&mut p, key, 0);
                buf.drain(..end);
                return (h.opcode, p);
            }
        }
        let mut tmp = [0u8; 65536];
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "EOF while waiting for a frame");
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let (h, n) = FrameHeader::server(
        echocast::proto::OpCode::from_u8(opcode).unwrap(),
        payload.len(),
    )
    .encode();
    let mut out = h[..n].to_vec();
    out.extend_from_slice(payload);
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[test]
fn messages_and_closes_pass_through_to_an_echocast_upstream() {
    let up = echocast::spawn(Config::local()).unwrap();
    let route = format!("/=ws://{}/*", up.local_addr());
    let px = proxy(&[route], |_| {});
    let mut c = Client::connect(px.local_addr(), "/any/path?x=1");
    c.send_text("hello through");
    assert_eq!(c.expect_text(), "hello through");
    // Several frames' worth both ways, fragmented by the client.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    c.send_raw(&client_frame(false, 2, &big[..1_000_000], [1, 2, 3, 4]));
    c.send_raw(&client_frame(true, 0, &big[1_000_000..], [5, 6, 7, 8]));
    let (op, data, _) = c.read_message();
    assert_eq!((op, data.len()), (2, big.len()));
    assert!(data == big);
    // A close with a code and reason reaches the upstream, whose answer
    // (the same code) reaches the client.
    c.send_raw(&client_frame(
        true,
        8,
        &close_payload(4001, "done here"),
        [1, 1, 1, 1],
    ));
    let (_, op, p) = c.read_frame();
    assert_eq!((op, close_code(&p)), (8, Some(4001)));
    c.read_to_eof();
}

#[test]
fn headers_pass_end_to_end_and_the_upstream_chooses_the_subprotocol() {
    let (addr, up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(
            &mut s,
            &head,
            "Sec-WebSocket-Protocol: v2\r\nSet-Cookie: sid=42\r\nX-Upstream: yes\r\n",
        );
        let mut buf = Vec::new();
        let (op, p) = read_client_frame(&mut s, &mut buf);
        s.write_all(&server_frame(
            1,
            format!("got {op} {}", String::from_utf8(p).unwrap()).as_bytes(),
        ))
        .unwrap();
        head
    });
    let px = proxy(&[format!("/chat=ws://{addr}/socket")], |c| {
        c.proxy_headers = vec![("X-Env".into(), "test".into())];
    });
    let mut c = Client::raw(px.local_addr());
    c.send_raw(
        format!(
            "GET /chat?token=abc HTTP/1.1\r\nHost: localhost:9\r\nUpgrade: websocket\r\n\
             Connection: Upgrade, X-Hop\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: v1, v2\r\nAuthorization: Bearer abc\r\nCookie: a=1\r\n\
             Origin: http://app.test\r\nX-Hop: private\r\nX-Custom: kept\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = c.read_http_head();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(header(&head, "sec-websocket-protocol"), Some("v2"));
    assert_eq!(header(&head, "set-cookie"), Some("sid=42"));
    assert_eq!(header(&head, "x-upstream"), Some("yes"));
    c.send_text("hi");
    assert_eq!(c.expect_text(), "got 1 hi");
    let up_head = up.join().unwrap();
    assert!(
        up_head.starts_with("GET /socket?token=abc HTTP/1.1\r\n"),
        "{up_head}"
    );
    assert_eq!(header(&up_head, "host"), Some(addr.to_string().as_str()));
    for (name, value) in [
        ("authorization", "Bearer abc"),
        ("cookie", "a=1"),
        ("origin", "http://app.test"),
        ("x-custom", "kept"),
        ("x-forwarded-for", "127.0.0.1"),
        ("x-env", "test"),
        ("sec-websocket-protocol", "v1, v2"),
    ] {
        assert_eq!(header(&up_head, name), Some(value), "{name} in {up_head}");
    }
    assert_eq!(
        header(&up_head, "x-hop"),
        None,
        "named in Connection: hop-by-hop"
    );
    assert_ne!(
        header(&up_head, "sec-websocket-key"),
        Some(KEY),
        "each leg its own key"
    );
}

#[test]
fn an_upstream_refusal_reaches_the_client_with_its_status_headers_and_body() {
    let (addr, _up) = upstream(|mut s| {
        read_head(&mut s);
        s.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"up\"\r\n\
              Content-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"error\":\"no token\"}\n",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let mut c = Client::raw(px.local_addr());
    c.send_raw(upgrade_request("/private").as_bytes());
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    assert_eq!(
        header(&head, "www-authenticate"),
        Some("Bearer realm=\"up\"")
    );
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(body, b"{\"error\":\"no token\"}\n");
}

// docs/limits.md: "Upstream not reachable (`--proxy`)"
#[test]
fn an_upstream_that_cannot_be_reached_is_a_502_naming_why() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let px = proxy(&[format!("/=ws://{closed}/")], |_| {});
    let mut c = Client::raw(px.local_addr());
    c.send_raw(upgrade_request("/x").as_bytes());
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{head}");
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("cannot connect") && body.contains("refused"),
        "{body}"
    );
}

// docs/limits.md: "Upstream answer time (`--proxy`)"
#[test]
fn an_upstream_that_does_not_answer_is_a_504_before_the_client_deadline() {
    let (addr, _up) = upstream(|mut s| {
        read_head(&mut s);
        std::thread::sleep(Duration::from_secs(3));
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |c| {
        c.limits.handshake_timeout = Duration::from_secs(1);
    });
    let start = Instant::now();
    let mut c = Client::raw(px.local_addr());
    c.send_raw(upgrade_request("/x").as_bytes());
    let (head, body) = c.read_http_response();
    assert!(
        head.starts_with("HTTP/1.1 504 Gateway Timeout\r\n"),
        "{head}"
    );
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("no answer in time"));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn an_invalid_101_is_a_502_saying_which_rule_it_broke() {
    let (addr, _up) = upstream(|mut s| {
        read_head(&mut s);
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBvbmU=\r\n\r\n",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let mut c = Client::raw(px.local_addr());
    c.send_raw(upgrade_request("/x").as_bytes());
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("Sec-WebSocket-Accept"));
}

#[test]
fn an_upstream_that_vanishes_gives_the_client_1014_after_what_it_sent() {
    let (addr, _up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        s.write_all(&server_frame(1, b"last words")).unwrap();
        // Gone without a close frame.
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let mut c = Client::connect(px.local_addr(), "/x");
    assert_eq!(c.expect_text(), "last words");
    let (_, op, p) = c.read_frame();
    assert_eq!((op, close_code(&p)), (8, Some(1014)));
    assert!(String::from_utf8_lossy(&p[2..]).contains("upstream went away"));
}

#[test]
fn an_upstream_that_breaks_the_protocol_gives_the_client_1014_with_the_rule() {
    let (addr, _up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        // A masked frame from a server (RFC 6455 §5.1).
        s.write_all(&client_frame(true, 1, b"masked", [1, 2, 3, 4]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let mut c = Client::connect(px.local_addr(), "/x");
    let (_, op, p) = c.read_frame();
    assert_eq!((op, close_code(&p)), (8, Some(1014)));
    assert!(String::from_utf8_lossy(&p[2..]).contains("masked"), "{p:?}");
}

#[test]
fn a_client_that_vanishes_closes_the_upstream_with_1001_and_closes_pass_upstream_too() {
    let (addr, up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        let mut buf = Vec::new();
        read_client_frame(&mut s, &mut buf)
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let c = Client::connect(px.local_addr(), "/x");
    drop(c);
    let (op, p) = up.join().unwrap();
    assert_eq!((op, close_code(&p)), (8, Some(1001)));
}

#[test]
fn rooms_and_unrouted_paths_are_never_proxied() {
    // An upstream that must never be reached.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let px = proxy(&[format!("/live/*=ws://{addr}/*")], |_| {});
    let mut echo = Client::connect(px.local_addr(), "/other?upstream=ws://evil.test/");
    echo.send_text("local");
    assert_eq!(echo.expect_text(), "local");
    let px_all = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let mut room = Client::connect(px_all.local_addr(), "/broadcast/lobby");
    room.send_text("to the room");
    assert_eq!(room.expect_text(), "to the room");
    let (head, _) = http_get(px_all.local_addr(), "/healthz");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(listener.accept().is_err(), "nothing reached the upstream");
}

// docs/limits.md: "Proxy backpressure (`--proxy`)"
#[test]
fn a_client_that_does_not_read_stops_echocast_reading_the_upstream() {
    const FRAME: usize = 64 * 1024;
    let (addr, up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        // Push until the writes block for a second: how much got out.
        s.set_nonblocking(true).unwrap();
        let frame = server_frame(2, &vec![7u8; FRAME]);
        let (mut sent, mut pos) = (0usize, 0usize);
        let mut stalled = Instant::now();
        while stalled.elapsed() < Duration::from_secs(1) && sent < 512 * FRAME {
            match s.write(&frame[pos..]) {
                Ok(n) => {
                    pos += n;
                    if pos == frame.len() {
                        pos = 0;
                        sent += FRAME;
                    }
                    stalled = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        s.set_nonblocking(false).unwrap();
        (sent, s)
    });
    // The binary, for its resident memory while the client does not read.
    let (server, px) = spawn_binary(&[
        "--proxy",
        &format!("/=ws://{addr}/"),
        "--max-backpressure",
        "256KiB",
    ]);
    let before = rss_kib(server.id());
    let mut c = Client::connect_small_rcvbuf(px, "/x", 64 * 1024);
    let (sent, _s) = up.join().unwrap();
    let held = rss_kib(server.id()).saturating_sub(before);
    // Socket buffers on both hops (loopback autotuning allows a few MiB
    // each) plus the budget: far from the 32 MiB the upstream offered; and
    // the proxy itself holds the budget and a message, not what is pushed.
    assert!(sent < 16 * 1024 * 1024, "the upstream pushed {sent} bytes");
    assert!(held < 8 * 1024, "the proxy grew by {held} KiB");
    // Everything the upstream got out reaches the client once it reads.
    // (Each 64 KiB message streams through in pieces: it is read whole.)
    let mut got = 0;
    while got < sent {
        let (op, p, _) = c.read_message();
        assert_eq!((op, p.len()), (2, FRAME));
        got += p.len();
    }
    assert_eq!(got, sent);
}

#[test]
fn stats_and_metrics_count_pairs_upstream_failures_and_messages_each_way() {
    let up = echocast::spawn(Config::local()).unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let px = proxy(
        &[
            format!("/ok/*=ws://{}/*", up.local_addr()),
            format!("/down=ws://{closed}/"),
        ],
        |_| {},
    );
    let mut c = Client::connect(px.local_addr(), "/ok/a");
    c.send_text("twelve bytes");
    assert_eq!(c.expect_text(), "twelve bytes");
    let mut refused = Client::raw(px.local_addr());
    refused.send_raw(upgrade_request("/down").as_bytes());
    assert!(refused.read_http_head().starts_with("HTTP/1.1 502 "));
    let (_, body) = http_get(px.local_addr(), "/stats");
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let p = &stats["proxy"];
    assert_eq!(p["pairs"], 1, "{p}");
    assert_eq!(
        stats["connections"]["proxied"], 2,
        "both legs of the open pair"
    );
    assert_eq!(p["upstream_connects"], 2, "{p}");
    assert_eq!(p["upstream_failures"]["connect"], 1, "{p}");
    assert_eq!(p["messages_to_upstream"], 1, "{p}");
    assert_eq!(p["messages_from_upstream"], 1, "{p}");
    assert_eq!(p["bytes_to_upstream"], 12, "{p}");
    let (_, metrics) = http_get(px.local_addr(), "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    for line in [
        "echocast_proxy_pairs 1",
        "echocast_proxy_upstream_failures_total{reason=\"connect\"} 1",
        "echocast_proxy_messages_total{direction=\"from_upstream\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in /metrics");
    }
    // Without --proxy there is no proxy section.
    let (_, body) = http_get(up.local_addr(), "/stats");
    let plain: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(plain["proxy"].is_null());
}

#[test]
fn knobs_shape_what_the_client_is_sent_and_stay_off_the_upstream_request() {
    let (addr, up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        for i in 1..=4 {
            s.write_all(&server_frame(1, format!("update {i}").as_bytes()))
                .unwrap();
        }
        // The client's close (1011, echoing the knob's close) reaches us.
        let mut buf = Vec::new();
        let (op, p) = read_client_frame(&mut s, &mut buf);
        (head, op, close_code(&p))
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |_| {});
    let start = Instant::now();
    let mut c = Client::connect(
        px.local_addr(),
        "/feed?fragment=3&delay=300ms&close=1011&after=2&token=t",
    );
    let (op, p, frames) = c.read_message();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "delay held it"
    );
    assert_eq!(
        (op, p.as_slice(), frames),
        (1, &b"update 1"[..], 3),
        "fragment=3"
    );
    let (_, p, _) = c.read_message();
    assert_eq!(p, b"update 2");
    // close=1011&after=2: after the upstream's second message.
    let (_, op, p) = c.read_frame();
    assert_eq!((op, close_code(&p)), (8, Some(1011)));
    c.send_raw(&client_frame(true, 8, &p, [3, 3, 3, 3]));
    let (head, op, code) = up.join().unwrap();
    assert!(head.starts_with("GET /?token=t HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        (op, code),
        (8, Some(1011)),
        "the close went on to the upstream"
    );
    // A bad knob is refused before any upstream is asked.
    let mut bad = Client::raw(px.local_addr());
    bad.send_raw(upgrade_request("/feed?delay=forever").as_bytes());
    assert!(bad.read_http_head().starts_with("HTTP/1.1 400 "));
}

#[test]
fn a_wss_upstream_is_verified_with_the_ca_given_refused_without_it_or_taken_insecurely() {
    let cert = echocast::tls::self_signed().unwrap();
    let up = echocast::spawn(Config {
        tls: Some(cert.config.clone()),
        ..Config::local()
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("echocast-proxy-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("upstream.pem");
    std::fs::write(&ca, &cert.cert_pem).unwrap();
    let route = format!("/=wss://localhost:{}/*", up.local_addr().port());
    for (ca, insecure, opens) in [
        (Some(ca.to_str().unwrap()), false, true),
        (None, true, true),
        (None, false, false),
    ] {
        let tls = echocast::tls::proxy_client_config(ca, insecure).unwrap();
        let px = proxy(std::slice::from_ref(&route), |c| c.proxy_tls = Some(tls));
        let mut c = Client::raw(px.local_addr());
        c.send_raw(upgrade_request("/over-tls").as_bytes());
        if opens {
            let head = c.read_http_head();
            if !head.starts_with("HTTP/1.1 101 ") {
                let (_, body) = (head.clone(), c.read_to_eof());
                panic!("{head}{}", String::from_utf8_lossy(&body));
            }
            c.send_text("encrypted upstream");
            assert_eq!(c.expect_text(), "encrypted upstream");
        } else {
            let (head, body) = c.read_http_response();
            assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
            let body = String::from_utf8(body).unwrap();
            assert!(
                body.contains("TLS") && body.contains("certificate"),
                "{body}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stubs_override_some_messages_both_ways_and_the_rest_goes_through() {
    let (addr, up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        // What reaches the upstream: only what no stub answered.
        loop {
            let (op, p) = read_client_frame(&mut s, &mut buf);
            if op == 8 {
                break;
            }
            let text = String::from_utf8(p).unwrap();
            if text == "live please" {
                s.write_all(&server_frame(1, br#"{"type":"heartbeat"}"#))
                    .unwrap();
                s.write_all(&server_frame(1, br#"{"type":"price","v":1}"#))
                    .unwrap();
            }
            seen.push(text);
        }
        seen
    });
    let dir = std::env::temp_dir().join(format!("echocast-proxy-stubs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stubs = dir.join("overrides.json");
    std::fs::write(
        &stubs,
        r#"{"stubs": [
          {"path": "/live", "on": {"json": {"type": "login"}},
           "reply": [{"json": {"type": "welcome", "user": "{{json.user}}"}}]},
          {"path": "/live", "on": {"from": "upstream", "json": {"type": "heartbeat"}}, "reply": []},
          {"path": "/live", "on": {"from": "upstream", "json": {"type": "price"}},
           "reply": [{"json": {"type": "price", "v": 99, "stubbed": true}}]}
        ]}"#,
    )
    .unwrap();
    let px = proxy(&[format!("/live=ws://{addr}/")], |c| {
        c.stubs = Some(stubs.clone())
    });
    let mut c = Client::connect(px.local_addr(), "/live");
    c.send_text(r#"{"type": "login", "user": "ann"}"#);
    assert_eq!(
        c.expect_text(),
        r#"{"type":"welcome","user":"ann"}"#,
        "answered by the stub"
    );
    c.send_text("live please");
    // The heartbeat is dropped, the price replaced.
    let price: serde_json::Value = serde_json::from_str(&c.expect_text()).unwrap();
    assert_eq!(
        price,
        serde_json::json!({"type": "price", "v": 99, "stubbed": true})
    );
    c.send_raw(&client_frame(
        true,
        8,
        &close_payload(1000, ""),
        [1, 2, 3, 4],
    ));
    let (_, op, _) = c.read_frame();
    assert_eq!(op, 8);
    assert_eq!(
        up.join().unwrap(),
        ["live please"],
        "the login never reached the upstream"
    );
    // The client's message no stub matched is listed, as on any stubbed path.
    let (_, body) = http_get(px.local_addr(), "/stubs/unmatched");
    assert!(String::from_utf8(body).unwrap().contains("live please"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_inspector_acts_on_either_leg_of_a_pair() {
    let (addr, up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "");
        let mut buf = Vec::new();
        // The inspector's message to the upstream leg arrives masked, as
        // any frame of ours to the upstream.
        read_client_frame(&mut s, &mut buf)
    });
    let px = proxy(&[format!("/=ws://{addr}/")], |c| {
        c.inspect = echocast::config::InspectMode::On;
    });
    let mut c = Client::connect(px.local_addr(), "/acted");
    let (_, body) = http_get(px.local_addr(), "/connections");
    let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let client = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/acted")
        .expect("the client leg is listed");
    let upstream_id = client["upstream"]
        .as_u64()
        .expect("linked to its upstream leg");
    let post = |id: u64, action: &str, body: &str| {
        let mut h = Client::raw(px.local_addr());
        h.send_raw(
            format!(
                "POST /connections/{id}/{action} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let (head, body) = h.read_http_response();
        format!("{head}{}", String::from_utf8_lossy(&body))
    };
    // The client leg first: the upstream goes once it has its message.
    let head = post(
        client["id"].as_u64().unwrap(),
        "send",
        "from the inspector, client",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(c.expect_text(), "from the inspector, client");
    let head = post(upstream_id, "send", "from the inspector, upstream");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        up.join().unwrap(),
        (1, b"from the inspector, upstream".to_vec())
    );
}

// docs/limits.md: "Message through the proxy (`--proxy`)"
#[test]
fn a_large_binary_message_streams_through_in_bounded_memory() {
    let up = echocast::spawn(Config::local()).unwrap();
    let px = proxy(&[format!("/=ws://{}/*", up.local_addr())], |c| {
        // Far under the message: held whole, it would be closed for memory.
        c.max_memory = 8 << 20;
        c.limits.max_message_size = 64 << 20;
    });
    let mut c = Client::connect(px.local_addr(), "/big");
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 253) as u8).collect();
    let frame = client_frame(true, 2, &big, [7, 7, 7, 7]);
    let mut writer = c.stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&frame).unwrap());
    let (op, data, frames) = c.read_message();
    sending.join().unwrap();
    assert_eq!((op, data.len()), (2, big.len()));
    assert!(data == big, "the same bytes back");
    assert!(frames > 1, "it came back in pieces: {frames} frames");
}

#[test]
fn a_recording_is_a_stubs_file_served_reset_and_written_when_a_conversation_ends() {
    let (addr, _up) = upstream(|mut s| {
        let head = read_head(&mut s);
        answer_101(&mut s, &head, "Sec-WebSocket-Protocol: rpc\r\n");
        let mut buf = Vec::new();
        let (_, p) = read_client_frame(&mut s, &mut buf);
        assert_eq!(p, br#"{"id":"a1","method":"add","params":[2,3]}"#);
        s.write_all(&server_frame(1, br#"{"id":"a1","result":5}"#))
            .unwrap();
        let _ = read_client_frame(&mut s, &mut buf); // the close
    });
    let dir = std::env::temp_dir().join(format!("echocast-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("session.json");
    let px = proxy(&[format!("/rpc=ws://{addr}/")], |c| {
        c.record = Some(file.clone());
        c.inspect = echocast::config::InspectMode::On;
    });
    let mut c = Client::raw(px.local_addr());
    c.send_raw(
        format!(
            "GET /rpc?token=x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: rpc\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(c.read_http_head().starts_with("HTTP/1.1 101 "));
    c.send_text(r#"{"id":"a1","method":"add","params":[2,3]}"#);
    assert_eq!(c.expect_text(), r#"{"id":"a1","result":5}"#);
    // As it stands, while the conversation goes on.
    let (head, body) = http_get(px.local_addr(), "/recording");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let rec: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = rec.to_string();
    assert!(text.contains("\"rpc\""), "the subprotocol: {text}");
    assert!(
        text.contains("{{json.id}}"),
        "the client's id carried back: {text}"
    );
    assert!(!file.exists(), "written when a conversation ends");
    c.send_raw(&client_frame(
        true,
        8,
        &close_payload(1000, ""),
        [1, 2, 3, 4],
    ));
    let (_, op, _) = c.read_frame();
    assert_eq!(op, 8);
    c.read_to_eof();
    drop(c);
    let mut written = None;
    for _ in 0..100 {
        if let Ok(t) = std::fs::read_to_string(&file) {
            written = Some(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let written: serde_json::Value = serde_json::from_str(&written.expect("the file")).unwrap();
    assert_eq!(written, rec, "the file is the recording");
    // It loads as a stubs file.
    echocast::stubs::read(&file, 1 << 20).expect("a valid stubs file");
    // DELETE starts afresh.
    let mut d = Client::raw(px.local_addr());
    d.send_raw(b"DELETE /recording HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(d.read_http_response().0.starts_with("HTTP/1.1 200"));
    let (_, body) = http_get(px.local_addr(), "/recording");
    let empty: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(empty["stubs"], serde_json::json!([]), "{empty}");
    std::fs::remove_dir_all(&dir).unwrap();
}
