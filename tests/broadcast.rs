//! Broadcast rooms, backpressure and the page, over real sockets on port 0.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use echocast::handler::Mode;
use echocast::Config;

fn server_with(f: impl FnOnce(&mut Config)) -> echocast::ServerHandle {
    let mut c = Config::local();
    f(&mut c);
    echocast::spawn(c).expect("spawn")
}

fn seq_message(sender: usize, seq: usize, size: usize) -> String {
    let mut s = format!("{sender}:{seq}:");
    while s.len() < size {
        s.push('.');
    }
    s
}

fn parse_seq(s: &str) -> (usize, usize) {
    let mut it = s.split(':');
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

#[test]
fn one_total_order_per_room() {
    let s = server_with(|_| {});
    const CLIENTS: usize = 5;
    const EACH: usize = 100;
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::connect(s.local_addr(), "/broadcast/order"))
        .collect();
    // Every client sends from its own thread, all at once, and reads everything.
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let mut writer = Client::from_stream(c.stream.try_clone().unwrap());
            let w = thread::spawn(move || {
                for seq in 0..EACH {
                    writer.send_text(&seq_message(i, seq, 20));
                }
            });
            thread::spawn(move || {
                let got: Vec<String> = (0..CLIENTS * EACH).map(|_| c.expect_text()).collect();
                w.join().unwrap();
                got
            })
        })
        .collect();
    let all: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for other in &all[1..] {
        assert_eq!(other, &all[0], "every client sees the same order");
    }
    // Each sender's messages appear in the order it sent them.
    let mut next = [0usize; CLIENTS];
    for m in &all[0] {
        let (sender, seq) = parse_seq(m);
        assert_eq!(seq, next[sender]);
        next[sender] += 1;
    }
    assert_eq!(next, [EACH; CLIENTS]);
}

#[test]
fn rooms_are_isolated_and_echo_is_separate() {
    let s = server_with(|_| {});
    let mut a1 = Client::connect(s.local_addr(), "/broadcast/a");
    let mut a2 = Client::connect(s.local_addr(), "/broadcast/a?nick=x");
    let mut b = Client::connect(s.local_addr(), "/broadcast/b");
    let mut echo = Client::connect(s.local_addr(), "/");
    a1.send_text("for a");
    assert_eq!(a1.expect_text(), "for a");
    assert_eq!(a2.expect_text(), "for a");
    b.send_text("for b");
    assert_eq!(b.expect_text(), "for b", "b saw nothing of room a");
    echo.send_text("just me");
    assert_eq!(echo.expect_text(), "just me");
    // Binary stays binary.
    a2.send_binary(&[0, 255, 1]);
    assert_eq!(a1.read_frame(), (true, 2, vec![0, 255, 1]));
    assert_eq!(a2.read_frame(), (true, 2, vec![0, 255, 1]));
    // After a member leaves, the room goes on.
    drop(a1);
    a2.send_text("still here");
    assert_eq!(a2.expect_text(), "still here");
}

#[test]
fn broadcast_mode_makes_every_path_a_room() {
    let s = server_with(|c| c.mode = Mode::Broadcast);
    let mut x = Client::connect(s.local_addr(), "/");
    let mut y = Client::connect(s.local_addr(), "/");
    let mut z = Client::connect(s.local_addr(), "/other");
    x.send_text("hello root");
    assert_eq!(x.expect_text(), "hello root");
    assert_eq!(y.expect_text(), "hello root");
    z.send_text("other room");
    assert_eq!(z.expect_text(), "other room");
    // The 426 to a plain request says how this server routes (issue 21 #8).
    let mut c = Client::raw(s.local_addr());
    c.send_raw(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("Every path is a broadcast room"), "{body}");
    assert!(!body.contains("echoes"), "{body}");
}

#[test]
// docs/limits.md: "Unsent output per connection (backpressure budget)"
fn slow_consumer_is_closed_with_1008_while_others_get_everything() {
    let s = server_with(|c| c.max_backpressure = 64 * 1024);
    let addr = s.local_addr();
    const COUNT: usize = 2000;
    const SIZE: usize = 16 * 1024;
    let mut publisher = Client::connect(addr, "/broadcast/slow");
    let mut fast = Client::connect(addr, "/broadcast/slow");
    let mut slow = Client::connect(addr, "/broadcast/slow");
    // The publisher is a member too: it reads its own messages.
    let mut pub_reader = Client::from_stream(publisher.stream.try_clone().unwrap());
    let pub_thread = thread::spawn(move || {
        for seq in 0..COUNT {
            assert_eq!(parse_seq(&pub_reader.expect_text()), (0, seq));
        }
    });
    let fast_thread = thread::spawn(move || {
        for seq in 0..COUNT {
            assert_eq!(parse_seq(&fast.expect_text()), (0, seq));
        }
    });
    for seq in 0..COUNT {
        publisher.send_text(&seq_message(0, seq, SIZE));
    }
    pub_thread.join().unwrap();
    fast_thread.join().unwrap();
    // The slow one gets a gap-free prefix, then close 1008 "slow consumer".
    let mut next = 0;
    loop {
        let (_, op, payload) = slow.read_frame();
        if op == 8 {
            assert_eq!(close_code(&payload), Some(1008));
            assert_eq!(&payload[2..], b"slow consumer");
            break;
        }
        assert_eq!(parse_seq(std::str::from_utf8(&payload).unwrap()), (0, next));
        next += 1;
    }
    assert!(next < COUNT, "the slow consumer was cut off");
}

#[test]
// docs/limits.md: "Unsent output per connection (backpressure budget)"
fn echo_backpressure_bounds_memory_and_loses_nothing() {
    let (mut child, addr) = spawn_binary(&[]);
    const COUNT: usize = 1024;
    const SIZE: usize = 64 * 1024;
    let mut hog = Client::connect(addr, "/");
    let mut writer = hog.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (stalled_tx, stalled_rx) = mpsc::channel();
    // Writes 64 MiB of echo requests and never reads (until told to).
    let w = thread::spawn(move || {
        let mut told = false;
        for seq in 0..COUNT {
            let frame = client_frame(true, 2, &seq_payload(seq, SIZE), [1, 2, 3, 4]);
            let mut off = 0;
            while off < frame.len() {
                match writer.write(&frame[off..]) {
                    Ok(n) => off += n,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if !told {
                            told = true;
                            stalled_tx.send(seq).unwrap();
                        }
                    }
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
    });
    let stalled_at = stalled_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server stops reading a client that does not read");
    let rss = rss_kib(child.id());
    eprintln!("stalled after {stalled_at} messages of 64 KiB; server RSS {rss} KiB");
    assert!(rss < 48 * 1024, "server RSS {rss} KiB");
    // Everyone else is still served.
    let mut other = Client::connect(addr, "/");
    other.send_text("still served?");
    assert_eq!(other.expect_text(), "still served?");
    // Nothing was dropped: once the hog reads, every echo arrives, in order.
    for seq in 0..COUNT {
        // (A 64 KiB message may come back as a fragmented message: echo streams.)
        let (op, payload, _) = hog.read_message();
        assert_eq!(op, 2);
        assert!(payload == seq_payload(seq, SIZE), "echo {seq} differs");
    }
    w.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

fn seq_payload(seq: usize, size: usize) -> Vec<u8> {
    let mut p = vec![(seq % 251) as u8; size];
    p[..8].copy_from_slice(&(seq as u64).to_be_bytes());
    p
}

#[test]
fn page_on_get_root_and_426_elsewhere() {
    let s = server_with(|_| {});
    let mut c = Client::raw(s.local_addr());
    c.send_raw(b"GET /?room=lobby HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/html"));
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("new WebSocket(") && body.contains("/broadcast/"));
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no CDN"
    );
    let mut c = Client::raw(s.local_addr());
    c.send_raw(b"GET /favicon.ico HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(c.read_http_response().0.starts_with("HTTP/1.1 426 "));

    let s = server_with(|c| c.page = false);
    let mut c = Client::raw(s.local_addr());
    c.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(c.read_http_response().0.starts_with("HTTP/1.1 426 "));
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
}
