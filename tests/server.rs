//! The server over real sockets on 127.0.0.1:0. No fixed ports, no sleeps: every
//! wait is a blocking read with a timeout.

mod common;

use std::io::Write;

use common::*;
use echocast::proto::Limits;
use echocast::Config;

fn server() -> echocast::ServerHandle {
    echocast::spawn(Config::local()).expect("spawn")
}

#[test]
fn echoes_text_and_binary() {
    let s = server();
    let mut c = Client::connect(s.local_addr(), "/");
    c.send_text("hello");
    assert_eq!(c.expect_text(), "hello");
    let blob: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    c.send_binary(&blob);
    let (op, echoed, _) = c.read_message();
    assert_eq!((op, echoed), (2, blob));
    c.send_text("");
    assert_eq!(c.expect_text(), "");
    drop(c);
    s.stop().unwrap();
}

#[test]
fn autobahn_paths_are_accepted() {
    let s = server();
    for path in [
        "/runCase?case=1&agent=echocast",
        "/getCaseCount",
        "/updateReports?agent=x",
    ] {
        let mut c = Client::connect(s.local_addr(), path);
        c.send_text(path);
        assert_eq!(c.expect_text(), path);
    }
}

#[test]
fn request_and_frames_in_one_write() {
    let s = server();
    let mut c = Client::raw(s.local_addr());
    let mut bytes = upgrade_request("/").into_bytes();
    bytes.extend(text("one"));
    bytes.extend(text("two"));
    c.send_raw(&bytes);
    assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
    assert_eq!(c.expect_text(), "one");
    assert_eq!(c.expect_text(), "two");
}

#[test]
fn request_split_into_single_bytes() {
    let s = server();
    let mut c = Client::raw(s.local_addr());
    for b in upgrade_request("/slow").bytes() {
        c.send_raw(&[b]);
    }
    assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
    for b in text("drip") {
        c.send_raw(&[b]);
    }
    assert_eq!(c.expect_text(), "drip");
}

#[test]
fn fragmented_message_with_ping_between() {
    let s = server();
    let mut c = Client::connect(s.local_addr(), "/");
    let k = [1, 2, 3, 4];
    c.send_raw(&client_frame(false, 1, b"Hel", k));
    c.send_raw(&client_frame(true, 9, b"are you there", k));
    assert_eq!(c.read_frame(), (true, 10, b"are you there".to_vec()));
    c.send_raw(&client_frame(true, 0, b"lo", k));
    assert_eq!(c.expect_text(), "Hello");
}

#[test]
fn close_is_echoed_and_tcp_closed_by_server() {
    let s = server();
    let mut c = Client::connect(s.local_addr(), "/");
    c.send_text("last");
    c.send_raw(&client_frame(true, 8, &4000u16.to_be_bytes(), [7, 7, 7, 7]));
    assert_eq!(c.expect_text(), "last");
    assert_eq!(c.expect_close(), Some(4000));
    assert!(c.read_to_eof().is_empty(), "nothing after the close frame");
}

#[test]
fn protocol_error_fails_with_1002_then_eof() {
    let s = server();
    let mut c = Client::connect(s.local_addr(), "/");
    c.send_raw(&[0x81, 0x02, b'n', b'o']); // unmasked
    assert_eq!(c.expect_close(), Some(1002));
    assert!(c.read_to_eof().is_empty());
}

#[test]
fn invalid_utf8_fails_with_1007_before_the_frame_ends() {
    let s = server();
    let mut c = Client::connect(s.local_addr(), "/");
    let mut payload = vec![b'a'; 10];
    payload.extend_from_slice(&[0xf8]); // never valid in UTF-8
    payload.resize(5000, b'a');
    let frame = client_frame(true, 1, &payload, [1, 2, 3, 4]);
    c.send_raw(&frame[..8 + 20]); // header + 20 payload bytes, the rest never sent
    assert_eq!(c.expect_close(), Some(1007));
}

#[test]
// docs/limits.md: "Message size (summed over fragments)"
fn oversized_message_fails_with_1009_from_the_header() {
    let config = Config {
        limits: Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        },
        ..Config::local()
    };
    let s = echocast::spawn(config).unwrap();
    let mut c = Client::connect(s.local_addr(), "/");
    // Declares 2^62 bytes; only the header is sent.
    c.send_raw(&[0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(c.expect_close(), Some(1009));
    let mut c = Client::connect(s.local_addr(), "/");
    c.send_raw(&client_frame(false, 2, &vec![0; 1 << 19], [1; 4]));
    c.send_raw(&client_frame(false, 0, &vec![0; 1 << 19], [1; 4]));
    c.send_raw(&client_frame(true, 0, &[0], [1; 4])[..6]);
    // Pieces within the cap may be echoed first (echo streams binary).
    let (code, echoed) = c.expect_close_after_data();
    assert_eq!(code, Some(1009));
    assert!(echoed <= 1 << 20);
}

#[test]
fn plain_http_gets_426_with_a_helpful_body() {
    let s = server();
    let mut c = Client::raw(s.local_addr());
    c.send_raw(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 426 Upgrade Required"), "{head}");
    assert!(head.contains("Sec-WebSocket-Version: 13"));
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("echocast") && body.contains("ws://"),
        "{body}"
    );
    assert!(
        body.contains("paths under /broadcast are broadcast rooms"),
        "{body}"
    );
    assert!(c.read_to_eof().is_empty());
}

#[test]
fn bad_upgrades_get_http_errors() {
    let s = server();
    let cases = [
        (
            upgrade_request("/").replace("Version: 13", "Version: 8"),
            "426",
        ),
        (upgrade_request("/").replace(KEY, "dG9vIHNob3J0"), "400"),
        (upgrade_request("/").replace("GET", "POST"), "405"),
        (
            upgrade_request("/").replace("Host: localhost\r\n", ""),
            "400",
        ),
        ("\x16\x03\x01 not http at all\r\n\r\n".to_string(), "400"),
    ];
    for (req, status) in cases {
        let mut c = Client::raw(s.local_addr());
        c.send_raw(req.as_bytes());
        let (head, _) = c.read_http_response();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?} -> {head}"
        );
        if status == "426" {
            assert!(head.contains("Sec-WebSocket-Version: 13"));
        }
    }
}

#[test]
// docs/limits.md: "Request head"
fn oversized_request_head_gets_431() {
    let s = server();
    let mut c = Client::raw(s.local_addr());
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 9000));
    req.extend_from_slice(b"\r\n\r\n");
    // The server may answer and close before all of it is written.
    let _ = std::io::Write::write_all(&mut c.stream, &req);
    let (head, _) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
}

#[test]
fn many_clients_at_once() {
    let s = server();
    let mut clients: Vec<Client> = (0..200)
        .map(|_| Client::connect(s.local_addr(), "/"))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("client {i}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.expect_text(), format!("client {i}"));
    }
}

#[test]
fn stop_sends_going_away() {
    let s = server();
    let mut c = Client::connect(s.local_addr(), "/");
    c.send_text("x");
    assert_eq!(c.expect_text(), "x");
    let stopper = std::thread::spawn(move || s.stop());
    assert_eq!(c.expect_close(), Some(1001));
    c.send_raw(&client_frame(true, 8, &1001u16.to_be_bytes(), [1; 4]));
    assert!(c.read_to_eof().is_empty());
    drop(c);
    stopper.join().unwrap().unwrap();
}

#[test]
fn binary_prints_its_address_and_serves() {
    // `spawn_binary` reads the one stdout line `listening on ws://ADDR`.
    let (mut child, addr) = spawn_binary(&[]);
    assert_ne!(addr.port(), 0);
    let mut c = Client::connect(addr, "/");
    c.send_text("from the binary");
    assert_eq!(c.expect_text(), "from the binary");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn large_binary_echo_streams_unless_turned_off() {
    // 4 MiB sent in 64 KiB writes: with streaming (the default) the echo is a
    // fragmented message whose first pieces come back before the client has
    // finished sending; with --no-streaming it is one frame.
    let blob: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    for (args, streamed) in [(&[][..], true), (&["--no-streaming"][..], false)] {
        let (mut child, addr) = spawn_binary(args);
        let mut c = Client::connect(addr, "/");
        let frame = client_frame(true, 2, &blob, [0x11, 0x22, 0x33, 0x44]);
        let mut writer = c.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            for piece in frame.chunks(64 * 1024) {
                writer.write_all(piece).unwrap();
            }
        });
        let (op, echoed, frames) = c.read_message();
        sender.join().unwrap();
        assert_eq!(op, 2);
        assert!(echoed == blob, "the echo differs");
        if streamed {
            assert!(frames > 1, "expected a fragmented echo");
        } else {
            assert_eq!(frames, 1);
        }
        c.send_text("after");
        assert_eq!(c.expect_text(), "after");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
// docs/limits.md: "Unsent output per connection (backpressure budget)"
fn a_client_that_sends_a_whole_large_message_before_reading_gets_its_echo() {
    // The classic blocking client: write everything, then read. The echo
    // streams back while the message arrives; the server must keep reading
    // past its 1 MiB backpressure budget until the message is complete, or
    // both sides would wait for each other forever.
    let (mut child, addr) = spawn_binary(&[]);
    let mut c = Client::connect(addr, "/");
    c.stream
        .set_write_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let blob: Vec<u8> = (0..24u32 << 20).map(|i| (i % 241) as u8).collect();
    c.stream
        .write_all(&client_frame(true, 2, &blob, [7, 7, 7, 7]))
        .expect("the server kept reading");
    let (op, echoed, _) = c.read_message();
    assert_eq!(op, 2);
    assert!(echoed == blob, "the echo differs");
    child.kill().unwrap();
    child.wait().unwrap();
}
