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

fn field(json: &str, name: &str) -> f64 {
    let start = json.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

#[test]
fn echo_and_broadcast_scenarios_verify_what_comes_back() {
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
    child.kill().unwrap();
    child.wait().unwrap();
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
