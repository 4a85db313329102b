//! A real `redis-server` (Debian's package) for the cluster tests: started
//! on a free port in a temporary directory with persistence off, stopped
//! (or paused with SIGSTOP) by the test, killed when dropped; and the
//! instances that use it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::rooms::json;
use super::rooms::{post, Sse};
use super::{http_get, Client};
use echocast::{Config, ServerHandle};

/// A `redis-server` of our own; killed when dropped.
pub struct Redis {
    pub child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::on(free_port())
    }

    pub fn on(port: u16) -> Redis {
        Redis::with(port, &[])
    }

    /// With more arguments (with `--tls-port`: waited for there).
    pub fn with(port: u16, extra: &[&str]) -> Redis {
        let tls_port = extra
            .iter()
            .position(|a| *a == "--tls-port")
            .and_then(|i| extra.get(i + 1)?.parse::<u16>().ok());
        let dir =
            std::env::temp_dir().join(format!("echocast-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(extra)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; tests/all.sh installs it)");
        let r = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while match tls_port {
            Some(tls) => TcpStream::connect(("127.0.0.1", tls)).is_err(),
            None => r.cmd("PING") != "+PONG",
        } {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn url(&self) -> echocast::cluster::Url {
        echocast::cluster::Url::parse(&format!("redis://127.0.0.1:{}", self.port)).unwrap()
    }

    /// One inline command's first reply line ("" if Redis is not there).
    pub fn cmd(&self, c: &str) -> String {
        cmd(self.port, c)
    }

    pub fn stop(&mut self) {
        // A paused Redis is killed too (SIGKILL works on a stopped process).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// SIGSTOP: the process stops answering, its sockets stay open.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// SIGCONT: it answers again (what it read meanwhile first).
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One inline command to the Redis on `port`: its first reply line ("" if
/// Redis is not there).
pub fn cmd(port: u16, c: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(format!("{c}\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line.trim_end().to_string()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

pub fn instance(redis: &Redis, f: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut c = Config::local();
    c.cluster = Some(redis.url());
    f(&mut c);
    echocast::spawn(c).expect("spawn")
}

/// Waits until `/healthz` says 200 (the instance reached Redis).
pub fn wait_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(addr, "/healthz").0.contains(" 200 ") {
        assert!(
            Instant::now() < deadline,
            "{addr}: the cluster never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the instance watches `n` rooms, caught up with Redis (a
/// member's join takes effect on an instance new to the room once it is
/// subscribed: docs/cluster.md).
pub fn wait_live(addr: SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = json(&http_get(addr, "/stats").1);
        if v["cluster"]["rooms_live"].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr}: {}", v["cluster"]);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends one command to Redis and returns its reply.
pub fn call(redis: &Redis, args: &[&[u8]]) -> redis_protocol::resp2::types::OwnedFrame {
    use echocast::cluster::resp;
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    resp::command(&mut out, args);
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some((frame, _)) = resp::reply(&buf).unwrap() {
            return frame;
        }
        let mut tmp = [0u8; 4096];
        let n = std::io::Read::read(&mut s, &mut tmp).unwrap();
        assert!(n > 0, "Redis closed the connection");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A message every reader gets, and its id.
pub fn warm_up(
    addr: SocketAddr,
    room: &str,
    members: &mut [&mut Client],
    subs: &mut [&mut Sse],
) -> u64 {
    let (head, body) = post(addr, room, "text/plain", b"warm-up");
    assert!(head.contains(" 200 "), "{head}");
    let id = json(&body)["id"].as_u64().unwrap();
    for m in members.iter_mut() {
        assert_eq!(m.expect_text(), "warm-up");
    }
    for s in subs.iter_mut() {
        let e = s.expect();
        assert_eq!((e.id, e.data.as_str()), (Some(id.to_string()), "warm-up"));
    }
    id
}

/// The append script's arguments a test chooses (the room's keys are
/// `t:*`); the rest as an instance sends them.
pub struct Append<'a> {
    pub ticket: &'a str,
    pub lo: &'a str,
    pub floor: &'a str,
    pub history: &'a str,
    pub key: &'a str,
    pub window_ms: &'a str,
    pub count: &'a str,
}

impl Default for Append<'_> {
    fn default() -> Self {
        Append {
            ticket: "1",
            lo: "1",
            floor: "0",
            history: "3",
            key: "",
            window_ms: "600000",
            count: "100000",
        }
    }
}

/// Runs the append script (`EVAL`): the id, and whether it was a duplicate
/// of an idempotency key (not appended).
pub fn append_script(redis: &Redis, a: &Append) -> (u64, bool) {
    use echocast::cluster::resp;
    use redis_protocol::resp2::types::OwnedFrame;
    let reply = call(
        redis,
        &[
            b"EVAL",
            resp::APPEND.as_bytes(),
            b"6",
            b"t:seq",
            b"t:epoch",
            b"t:log",
            b"t:sent",
            b"t:keys",
            b"t:keyids",
            b"e1",
            a.floor.as_bytes(),
            b"t:channel",
            a.history.as_bytes(),
            b"t",
            a.ticket.as_bytes(),
            a.ticket.as_bytes(),
            a.lo.as_bytes(),
            a.key.as_bytes(),
            a.window_ms.as_bytes(),
            a.count.as_bytes(),
        ],
    );
    let OwnedFrame::Array(v) = reply else {
        panic!("{reply:?}");
    };
    (resp::int(&v[0]).unwrap(), v.len() == 3)
}
