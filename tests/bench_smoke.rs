//! The load generator against echocast: a correctness smoke test, not a timing
//! assertion (it fails if any echo differs or any broadcast is missed/reordered).

mod common;

use std::process::Command;

use common::*;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_echocast-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap().to_string()
}

/// Runs the load generator expecting it to fail; returns its stderr.
fn bench_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_echocast-bench"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} passed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn field(json: &str, name: &str) -> f64 {
    let start = json.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

#[test]
fn echo_broadcast_and_connect_scenarios_verify_what_comes_back() {
    let (mut child, addr) = spawn_binary(&[]);
    let pid = child.id().to_string();
    let a = addr.to_string();
    let json = bench(&[
        "echo",
        "--addr",
        &a,
        "-c",
        "8",
        "-s",
        "100",
        "-p",
        "4",
        "--text",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    assert!(field(&json, "messages") > 0.0, "{json}");
    let json = bench(&[
        "echo",
        "--addr",
        &a,
        "-c",
        "2",
        "-s",
        "70000",
        "--duration",
        "0.5",
    ]);
    assert!(field(&json, "messages") > 0.0, "{json}");
    let json = bench(&[
        "broadcast",
        "--addr",
        &a,
        "-c",
        "50",
        "-s",
        "20",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    assert!(field(&json, "deliveries") >= 50.0, "{json}");
    // connect: open, 101 with the right accept key, close 1000, the server's
    // close frame and FIN; every cycle is checked.
    let json = bench(&[
        "connect",
        "--addr",
        &a,
        "-c",
        "4",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    assert!(field(&json, "handshakes") > 0.0, "{json}");
    assert!(field(&json, "server_cpu_ns_per_handshake") > 0.0, "{json}");
    // permessage-deflate: every echo inflated and compared; JSON-like text
    // compresses.
    let json = bench(&[
        "echo",
        "--deflate",
        "--addr",
        &a,
        "-c",
        "4",
        "-s",
        "1024",
        "--duration",
        "0.5",
    ]);
    assert!(field(&json, "messages") > 0.0, "{json}");
    let ratio = field(&json, "server_ratio");
    assert!(ratio > 0.05 && ratio < 0.8, "{json}");
    child.kill().unwrap();
    child.wait().unwrap();
    // A server that declines permessage-deflate fails the deflate scenario.
    let (_off, addr) = spawn_binary(&["--deflate", "off"]);
    let a = addr.to_string();
    let err = bench_fails(&[
        "echo",
        "--deflate",
        "--addr",
        &a,
        "-c",
        "1",
        "--duration",
        "0.2",
    ]);
    assert!(err.contains("declined permessage-deflate"), "{err}");
}

#[test]
fn connect_fails_on_a_wrong_accept_key() {
    // A plain TCP server that answers 101 with a made-up accept value.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
            );
        }
    });
    let err = bench_fails(&["connect", "--addr", &addr, "-c", "1", "--duration", "1"]);
    assert!(err.contains("Sec-WebSocket-Accept"), "{err}");
}

#[test]
fn a_broken_server_cannot_score() {
    // In `--mode broadcast`, "echo" on a room that another client also talks in
    // behaves like a broken echo server: foreign messages arrive among the echoes.
    let (mut child, addr) = spawn_binary(&["--mode", "broadcast"]);
    let mut intruder = Client::connect(addr, "/");
    let a = addr.to_string();
    let gen = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_echocast-bench"))
            .args(["echo", "--addr", &a, "-c", "1", "--text", "--duration", "2"])
            .output()
            .unwrap()
    });
    // Inject foreign messages for as long as the generator runs.
    while !gen.is_finished() {
        // (If the room closes it as a slow consumer, the generator has long failed.)
        let _ = std::io::Write::write_all(&mut intruder.stream, &text("99999999999999999999"));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = gen.join().unwrap();
    assert!(!out.status.success(), "foreign messages must be detected");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED"));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// An echo server built on echocast's sans-IO core that corrupts one byte
/// deep inside every large message: the load generator must notice (it checks
/// every byte of one echo in 64, the first one included).
fn corrupting_server() -> std::net::SocketAddr {
    use echocast::proto::{Connection, Event, Limits};
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let now = std::time::Instant::now();
                let mut conn = Connection::new(Limits::default(), now);
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = s.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    conn.receive(&buf[..n], now);
                    while let Some(ev) = conn.poll_event() {
                        match ev {
                            Event::Upgrade(_) => conn.accept(now),
                            Event::Message { kind, mut data } => {
                                if data.len() > 50_000 {
                                    data[50_000] ^= 1;
                                }
                                conn.send(kind, data);
                            }
                            _ => return,
                        }
                    }
                    while conn.output_len() > 0 {
                        let front = conn.output_front().to_vec();
                        if s.write_all(&front).is_err() {
                            return;
                        }
                        conn.consume_output(front.len());
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_corrupted_byte_deep_in_a_large_echo_is_caught() {
    let addr = corrupting_server().to_string();
    // Small messages pass through this server untouched...
    let json = bench(&[
        "echo",
        "--addr",
        &addr,
        "-c",
        "1",
        "-s",
        "1000",
        "--duration",
        "0.3",
    ]);
    assert!(field(&json, "messages") > 0.0, "{json}");
    // ...a flipped byte at offset 50,000 of a 100 kB echo fails the run.
    let err = bench_fails(&[
        "echo",
        "--addr",
        &addr,
        "-c",
        "1",
        "-s",
        "100000",
        "--duration",
        "0.5",
    ]);
    assert!(err.contains("differs"), "{err}");
}

#[test]
fn tls_scenarios_check_every_echo_over_wss() {
    let dir = std::env::temp_dir().join(format!("echocast-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("cert.pem");
    let pem = pem.to_str().unwrap();
    let (server, addr) = spawn_binary(&["--tls-self-signed", "--tls-cert-out", pem]);
    let addr = addr.to_string();
    let pid = server.id().to_string();
    let tls = [
        "--tls",
        "--tls-ca",
        pem,
        "--addr",
        &addr,
        "--server-pid",
        &pid,
    ];
    let mut args = vec!["echo", "-c", "4", "-s", "70000", "--duration", "0.5"];
    args.extend_from_slice(&tls);
    let out = bench(&args);
    assert!(field(&out, "messages") > 0.0, "{out}");
    let mut args = vec!["connect", "-c", "4", "--duration", "0.5"];
    args.extend_from_slice(&tls);
    assert!(field(&bench(&args), "handshakes") > 0.0);
    let mut args = vec!["idle", "-c", "20"];
    args.extend_from_slice(&tls);
    assert!(field(&bench(&args), "rss_bytes_per_connection") >= 0.0);
    // A certificate the client does not trust fails the run.
    let other = dir.join("other.pem");
    std::fs::write(&other, echocast::tls::self_signed().unwrap().cert_pem).unwrap();
    let err = bench_fails(&[
        "echo",
        "-c",
        "1",
        "--duration",
        "0.2",
        "--tls",
        "--tls-ca",
        other.to_str().unwrap(),
        "--addr",
        &addr,
    ]);
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sse_and_publish_scenarios_check_every_delivery() {
    let (mut child, addr) = spawn_binary(&[]);
    let pid = child.id().to_string();
    let a = addr.to_string();
    // Event streams of one room, fed by a WebSocket member: every event's id
    // follows the last and carries the message sent in its place.
    let json = bench(&[
        "sse",
        "--addr",
        &a,
        "-c",
        "20",
        "-s",
        "100",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    assert!(field(&json, "deliveries") >= 20.0, "{json}");
    assert!(field(&json, "server_cpu_ns_per_delivery") > 0.0, "{json}");
    // POSTs on kept connections to WebSocket members, each publisher's
    // messages in its order at every member.
    let json = bench(&[
        "publish",
        "--addr",
        &a,
        "--path",
        "/broadcast/other",
        "-c",
        "10",
        "-p",
        "3",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    let (publishes, deliveries) = (field(&json, "publishes"), field(&json, "deliveries"));
    assert!(publishes > 0.0, "{json}");
    assert!(deliveries >= publishes * 10.0 - 3.0 * 10.0, "{json}");
    assert!(field(&json, "server_cpu_ns_per_publish") > 0.0, "{json}");
    // A message nobody of the scenario sent, published into its room, is
    // caught by both.
    for scenario in ["sse", "publish"] {
        let path = format!("/broadcast/{scenario}-intruded");
        let mut intruder = Client::connect(addr, &path);
        let a = a.clone();
        let args = [
            scenario,
            "--addr",
            &a,
            "--path",
            &path,
            "-c",
            "5",
            "--duration",
            "2",
        ];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let gen = std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_echocast-bench"))
                .args(&args)
                .output()
                .unwrap()
        });
        while !gen.is_finished() {
            let _ =
                std::io::Write::write_all(&mut intruder.stream, &text("999 not from a publisher"));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let out = gen.join().unwrap();
        assert!(
            !out.status.success(),
            "{scenario}: a foreign message must be detected"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
