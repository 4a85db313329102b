//! Hostile input against the real binary: after each attack a fresh client gets
//! its echo promptly and the server's RSS (from /proc) stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Far above what the server needs (a few MiB), far below what any of these
/// attacks would cost an unbounded server.
const RSS_BOUND_KIB: u64 = 64 * 1024;

struct Server {
    child: Spawned,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let (child, addr) = spawn_binary(args);
        Server { child, addr }
    }

    fn check(&self, what: &str) {
        assert_serving(self.addr);
        let rss = rss_kib(self.child.id());
        eprintln!("{what}: server RSS {rss} KiB");
        assert!(rss < RSS_BOUND_KIB, "{what}: RSS {rss} KiB");
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn garbage_and_huge_headers_get_http_errors() {
    let s = Server::start(&[]);
    let mut c = Client::raw(s.addr);
    c.send_raw(b"\x00\xff\xfe garbage \x01\x02\r\n\r\n");
    assert!(c.read_http_response().0.starts_with("HTTP/1.1 400 "));
    // 10 KB with no line end at all, then 200 KB of headers.
    let mut c = Client::raw(s.addr);
    let _ = c.stream.write_all(&[b'A'; 10_000]);
    assert!(c.read_http_response().0.starts_with("HTTP/1.1 431 "));
    let mut c = Client::raw(s.addr);
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while req.len() < 200_000 {
        req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let _ = c.stream.write_all(&req); // the server answers and closes early
    assert!(c.read_http_response().0.starts_with("HTTP/1.1 431 "));
    s.check("garbage and 200 KB headers");
}

#[test]
// docs/limits.md: "Handshake time"
fn half_sent_requests_are_dropped_at_the_handshake_timeout() {
    let s = Server::start(&["--handshake-timeout", "1s"]);
    let mut held: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut t = TcpStream::connect(s.addr).unwrap();
            t.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: webso")
                .unwrap();
            t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            t
        })
        .collect();
    // Served while they hang.
    s.check("500 half-sent requests");
    let start = Instant::now();
    for t in &mut held {
        let mut buf = [0u8; 64];
        // EOF (or a reset) once the deadline passes; never an answer.
        match t.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(8));
    s.check("after the handshake timeout");
}

#[test]
fn declared_huge_frames_fail_before_any_payload() {
    let s = Server::start(&["--max-message-size", "1048576"]);
    let mut c = Client::connect(s.addr, "/");
    c.send_raw(&[0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]); // 2^62
    assert_eq!(c.expect_close(), Some(1009));
    let mut c = Client::connect(s.addr, "/");
    c.send_raw(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]); // 2^63
    assert_eq!(c.expect_close(), Some(1002));
    let mut c = Client::connect(s.addr, "/");
    for op in [2, 0, 0] {
        c.send_raw(&client_frame(false, op, &vec![0; 400_000], [1; 4]));
    }
    c.send_raw(&client_frame(true, 0, b"", [1; 4]));
    // The fragments within the cap may already be echoed in pieces (echo
    // streams binary messages); at most the cap comes back before the close.
    let (code, echoed) = c.expect_close_after_data();
    assert_eq!(code, Some(1009));
    assert!(echoed <= 1_048_576, "{echoed} bytes echoed");
    s.check("huge frames");
}

/// Writes `frame` `count` times and never reads; reports once the server stops
/// taking bytes (or when all was written).
fn write_without_reading(
    addr: std::net::SocketAddr,
    frame: Vec<u8>,
    count: usize,
) -> (TcpStream, mpsc::Receiver<usize>) {
    let c = Client::connect(addr, "/");
    let mut w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut sent = 0usize;
        for _ in 0..count {
            let mut off = 0;
            while off < frame.len() {
                match w.write(&frame[off..]) {
                    Ok(n) => {
                        off += n;
                        sent += n;
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        let _ = tx.send(sent);
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
        let _ = tx.send(sent);
    });
    (c.stream, rx)
}

#[test]
// docs/limits.md: "Read per connection per loop turn"
fn a_client_sending_256_mib_without_reading() {
    let s = Server::start(&[]);
    let frame = client_frame(true, 2, &vec![7u8; 1 << 20], [1, 2, 3, 4]);
    let (_hog, rx) = write_without_reading(s.addr, frame, 256);
    let sent = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    eprintln!("the server took {} MiB before pushing back", sent >> 20);
    assert!(sent < 128 << 20, "the server stopped reading");
    s.check("256 MiB never read");
}

#[test]
// docs/limits.md: "Unanswered pongs"
fn ping_flood_without_reading() {
    let s = Server::start(&[]);
    let ping = client_frame(true, 9, &[b'p'; 125], [1, 2, 3, 4]);
    let mut burst = Vec::new();
    for _ in 0..1000 {
        burst.extend_from_slice(&ping);
    }
    // 200,000 pings (26 MB).
    let (_flooder, rx) = write_without_reading(s.addr, burst, 200);
    let sent = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    eprintln!("ping flood: {} pings taken", sent / ping.len());
    s.check("ping flood");
}

#[test]
fn connections_reset_mid_frame() {
    let s = Server::start(&[]);
    for _ in 0..200 {
        let mut c = Client::connect(s.addr, "/");
        c.send_text("unread echo");
        // The echo sits unread in our receive buffer, so closing now sends RST.
        let frame = client_frame(true, 2, &[0u8; 5000], [1, 2, 3, 4]);
        c.send_raw(&frame[..1000]);
        let mut first = [0u8; 1];
        c.stream.read_exact(&mut first).unwrap();
        drop(c);
    }
    s.check("200 resets mid-frame");
}

#[test]
fn thousands_of_concurrent_connections() {
    let s = Server::start(&[]);
    let mut clients: Vec<Client> = (0..3000).map(|_| Client::connect(s.addr, "/")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&i.to_string());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.expect_text(), i.to_string());
    }
    s.check("3000 concurrent connections");
}

#[test]
// docs/limits.md: "Connections"
fn max_connections_answers_503() {
    let s = Server::start(&["--max-connections", "3"]);
    let mut open: Vec<Client> = (0..3).map(|_| Client::connect(s.addr, "/")).collect();
    let mut c = Client::raw(s.addr);
    c.send_raw(upgrade_request("/").as_bytes());
    let (head, body) = c.read_http_response();
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(!body.is_empty());
    // Once one leaves (the server sees it close), a new one gets in.
    let mut leaving = open.pop().unwrap();
    leaving.send_raw(&client_frame(true, 8, &1000u16.to_be_bytes(), [1; 4]));
    assert_eq!(leaving.expect_close(), Some(1000));
    drop(leaving.read_to_eof());
    drop(leaving);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::raw(s.addr);
        c.send_raw(upgrade_request("/").as_bytes());
        let head = c.read_http_head();
        if head.starts_with("HTTP/1.1 101 ") {
            break;
        }
        assert!(Instant::now() < deadline, "a slot never freed: {head}");
    }
}

#[test]
// docs/limits.md: "Origins"
fn origin_allowlist() {
    let s = Server::start(&["--allow-origin", "http://good.example"]);
    let req = |origin: Option<&str>| {
        let mut r = upgrade_request("/");
        if let Some(o) = origin {
            r = r.replace(
                "Host: localhost\r\n",
                &format!("Host: localhost\r\nOrigin: {o}\r\n"),
            );
        }
        let mut c = Client::raw(s.addr);
        c.send_raw(r.as_bytes());
        c.read_http_head()
    };
    assert!(req(Some("http://good.example")).starts_with("HTTP/1.1 101 "));
    assert!(req(Some("HTTP://GOOD.EXAMPLE")).starts_with("HTTP/1.1 101 "));
    assert!(req(Some("http://evil.example")).starts_with("HTTP/1.1 403 "));
    assert!(
        req(None).starts_with("HTTP/1.1 101 "),
        "non-browser clients send no Origin"
    );
}

#[test]
// docs/limits.md: "Keepalive"
// docs/limits.md: "Idle time"
fn keepalive_and_idle_timeout_over_sockets() {
    let s = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "700ms"]);
    let mut c = Client::connect(s.addr, "/");
    assert_eq!(c.read_frame().1, 9, "a ping when quiet");
    // Answering pongs counts as activity; stop answering and we are closed.
    c.send_raw(&client_frame(true, 10, b"", [1; 4]));
    loop {
        let (_, op, payload) = c.read_frame();
        if op == 8 {
            assert_eq!(close_code(&payload), Some(1001));
            break;
        }
        assert_eq!(op, 9);
    }
}

#[test]
fn sigterm_closes_everyone_with_1001_and_exits_0() {
    let mut s = Server::start(&[]);
    let mut a = Client::connect(s.addr, "/");
    let mut b = Client::connect(s.addr, "/broadcast/x");
    signal(s.child.id(), "TERM");
    for c in [&mut a, &mut b] {
        assert_eq!(c.expect_close(), Some(1001));
        c.send_raw(&client_frame(true, 8, &1001u16.to_be_bytes(), [1; 4]));
        assert!(c.read_to_eof().is_empty());
    }
    drop((a, b));
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // No longer listening.
    assert!(TcpStream::connect(s.addr).is_err());
}

#[test]
fn second_signal_exits_at_once() {
    let mut s = Server::start(&["--close-timeout", "60s"]);
    let mut a = Client::connect(s.addr, "/");
    signal(s.child.id(), "INT");
    assert_eq!(a.expect_close(), Some(1001));
    // We never answer; a second signal must not wait 60 s.
    let start = Instant::now();
    signal(s.child.id(), "INT");
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
// docs/limits.md: "File descriptors"
fn out_of_file_descriptors_pauses_accept_without_spinning() {
    // 40 descriptors: a handful for the process itself, the rest for clients.
    let bin = env!("CARGO_BIN_EXE_echocast");
    let (child, addr) = spawn_command(Command::new("sh").args([
        "-c",
        &format!("ulimit -n 40 && exec {bin} \"$@\""),
        "sh",
    ]));
    let s = Server { child, addr };
    let mut clients: Vec<Client> = Vec::new();
    // Connect until the server stops accepting (connections stay in the backlog).
    let mut pending = Vec::new();
    for _ in 0..60 {
        let mut t = TcpStream::connect(addr).unwrap();
        t.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        t.write_all(upgrade_request("/").as_bytes()).unwrap();
        let mut c = Client::from_stream(t);
        let mut probe = [0u8; 1];
        match c.stream.peek(&mut probe) {
            Ok(_) => {
                assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
                clients.push(c);
            }
            Err(_) => pending.push(c),
        }
    }
    assert!(!pending.is_empty(), "the descriptor limit was reached");
    let ticks = cpu_ticks(s.child.id());
    let wall = Instant::now();
    // Wait a while with the backlog full: the server must not spin.
    let mut c = pending.pop().unwrap();
    let mut probe = [0u8; 1];
    assert!(c.stream.peek(&mut probe).is_err());
    thread::sleep(Duration::from_millis(700));
    let used = cpu_ticks(s.child.id()) - ticks;
    let elapsed_ticks = (wall.elapsed().as_secs_f64() * 100.0) as u64;
    eprintln!("server used {used} of {elapsed_ticks} ticks while out of descriptors");
    assert!(
        used * 4 < elapsed_ticks,
        "accept spins at {used}/{elapsed_ticks} ticks"
    );
    // Free descriptors: the waiting connections are accepted and served.
    drop(clients);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(c.read_http_head().starts_with("HTTP/1.1 101"));
    c.send_text("finally");
    assert_eq!(c.expect_text(), "finally");
    drop(pending);
    s.check("after running out of descriptors");
}

/// A client that offered permessage-deflate (the server agrees in shared mode).
fn connect_deflate(addr: std::net::SocketAddr) -> Client {
    let mut c = Client::raw(addr);
    let req = upgrade_request("/").replace(
        "Host: localhost\r\n",
        "Host: localhost\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
    );
    c.send_raw(req.as_bytes());
    let head = c.read_http_head();
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate"),
        "{head}"
    );
    c
}

/// Raw deflate with a sync flush, the `00 00 ff ff` tail stripped.
fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 4096);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

fn with_rsv1(mut frame: Vec<u8>) -> Vec<u8> {
    frame[0] |= 0x40;
    frame
}

#[test]
fn inflate_bombs_and_rsv1_abuse_close_with_the_right_codes() {
    let s = Server::start(&["--max-message-size", "1048576"]);
    // 32 MiB of zeros (32 times the cap) in ~32 KiB: one frame, and the same
    // in 64 fragments.
    let bomb = deflate(&vec![0u8; 32 << 20]);
    eprintln!("bomb: {} bytes inflating to 32 MiB", bomb.len());
    let mut c = connect_deflate(s.addr);
    c.send_raw(&with_rsv1(client_frame(true, 2, &bomb, [1, 2, 3, 4])));
    assert_eq!(c.expect_close(), Some(1009));
    let mut c = connect_deflate(s.addr);
    let step = bomb.len().div_ceil(64);
    for (i, part) in bomb.chunks(step).enumerate() {
        let f = client_frame(false, if i == 0 { 2 } else { 0 }, part, [5; 4]);
        if c.stream
            .write_all(&if i == 0 { with_rsv1(f) } else { f })
            .is_err()
        {
            break; // closed already
        }
    }
    assert_eq!(c.expect_close(), Some(1009));
    // Fifty bombs at once: each is stopped at the cap, so RSS stays bounded.
    let mut many: Vec<Client> = (0..50).map(|_| connect_deflate(s.addr)).collect();
    let frame = with_rsv1(client_frame(true, 1, &bomb, [7; 4]));
    for c in &mut many {
        c.send_raw(&frame);
    }
    for c in &mut many {
        assert_eq!(c.expect_close(), Some(1009));
    }
    // RSV1 where RFC 7692 forbids it, a compressed control frame, garbage.
    let mut c = connect_deflate(s.addr);
    c.send_raw(&with_rsv1(client_frame(true, 9, b"ping", [1; 4])));
    assert_eq!(c.expect_close(), Some(1002));
    let mut c = connect_deflate(s.addr);
    c.send_raw(&client_frame(false, 2, b"a", [1; 4]));
    c.send_raw(&with_rsv1(client_frame(true, 0, b"b", [1; 4])));
    assert_eq!(c.expect_close(), Some(1002));
    let mut c = Client::connect(s.addr, "/"); // no deflate agreed
    c.send_raw(&with_rsv1(client_frame(true, 2, &deflate(b"hi"), [1; 4])));
    assert_eq!(c.expect_close(), Some(1002));
    let mut c = connect_deflate(s.addr);
    c.send_raw(&with_rsv1(client_frame(true, 2, &[0xff; 100], [1; 4])));
    assert_eq!(c.expect_close(), Some(1007));
    s.check("inflate bombs and RSV1 abuse");
}
