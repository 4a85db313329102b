//! The soak test (issue 12): mixed traffic against the release binary for
//! `SOAK_SECONDS` (default 60), every answer checked, then the server must be
//! back where it started: descriptors at the baseline, RSS within 10 % of its
//! value after warm-up, no connection left behind, still serving. Run by
//! `tests/soak.sh` (CI, 60 s); `SOAK_SECONDS=3600 tests/soak.sh` for a long
//! one. Prints a one-line summary.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Counters shared by the workers.
#[derive(Default)]
struct Stats {
    echoes: AtomicU64,
    echo_bytes: AtomicU64,
    deliveries: AtomicU64,
    connections: AtomicU64,
    hostile: AtomicU64,
    slow_closed: AtomicU64,
    subscriber_1008: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A small xorshift generator: the soak is random but needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Ctx {
    addr: SocketAddr,
    stop: AtomicBool,
    stats: Stats,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn connect(&self, path: &str) -> Client {
        Stats::add(&self.stats.connections, 1);
        Client::connect(self.addr, path)
    }
}

/// Ends a connection with the closing handshake, skipping data still coming.
fn close_cleanly(mut c: Client) {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.send_raw(&client_frame(true, 8, &1000u16.to_be_bytes(), [7; 4]));
    loop {
        let (_, op, payload) = c.read_frame();
        if op == 8 {
            assert_eq!(close_code(&payload), Some(1000));
            break;
        }
    }
    c.read_to_eof();
}

/// Pipelined text echo: 16 messages in flight, multi-byte text, connections
/// closed cleanly after a random number of rounds (churn).
fn pipelined_echo(ctx: &Ctx, seed: u64) {
    let mut rng = Rng(seed);
    while ctx.running() {
        let mut c = ctx.connect("/");
        for round in 0..1 + rng.below(50) {
            let msgs: Vec<String> = (0..16)
                .map(|i| {
                    format!(
                        "{seed}-{round}-{i} κόσμε 𝄞 {}",
                        "x".repeat(rng.below(200) as usize)
                    )
                })
                .collect();
            let mut burst = Vec::new();
            for m in &msgs {
                burst.extend(text(m));
            }
            c.send_raw(&burst);
            for m in &msgs {
                assert_eq!(&c.expect_text(), m, "pipelined echo");
                Stats::add(&ctx.stats.echo_bytes, m.len() as u64);
            }
            Stats::add(&ctx.stats.echoes, 16);
        }
        close_cleanly(c);
    }
}

/// Large binary echo, 1 B to 4 MiB (streamed back in fragments), every byte checked.
fn large_echo(ctx: &Ctx, seed: u64) {
    let mut rng = Rng(seed);
    while ctx.running() {
        let mut c = ctx.connect("/large");
        for _ in 0..1 + rng.below(8) {
            let len = 1 + rng.below(4 << 20) as usize;
            let salt = rng.next() as u8;
            let payload: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ salt)
                .collect();
            c.send_binary(&payload);
            let (op, echo, _) = c.read_message();
            assert_eq!(op, 2);
            assert!(echo == payload, "large echo of {len} bytes differs");
            Stats::add(&ctx.stats.echoes, 1);
            Stats::add(&ctx.stats.echo_bytes, len as u64);
        }
        close_cleanly(c);
    }
}

/// The number a room message carries.
fn seq_of(payload: &[u8]) -> u64 {
    let end = payload
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(payload.len());
    std::str::from_utf8(&payload[..end])
        .unwrap()
        .parse()
        .unwrap()
}

/// One publisher per room: numbered messages of `size` bytes, each read
/// back (it is a member too) before the next, so the room is paced.
fn publisher(ctx: &Ctx, room: &str, size: usize) {
    let mut c = ctx.connect(room);
    let mut seq = 0u64;
    while ctx.running() {
        let mut msg = format!("{seq} ").into_bytes();
        msg.resize(size.max(msg.len()), b'.');
        c.send_binary(&msg);
        let (op, back, _) = c.read_message();
        assert_eq!(
            (op, seq_of(&back)),
            (2, seq),
            "{room}: publisher's own copy"
        );
        seq += 1;
        if seq % 64 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    close_cleanly(c);
}

/// Members that join, read a random number of messages checking the room's
/// total order (consecutive numbers, no gap, no reordering), and leave. A
/// member closed with 1008 (slow consumer) must have had a gap-free prefix.
fn subscriber(ctx: &Ctx, room: &str, seed: u64) {
    let mut rng = Rng(seed);
    while ctx.running() {
        let mut c = ctx.connect(room);
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let want = 20 + rng.below(500);
        let (got, closed) = read_room(ctx, &mut c, room, want);
        Stats::add(&ctx.stats.deliveries, got);
        if closed {
            Stats::add(&ctx.stats.subscriber_1008, 1);
            answer_close_1008(c);
        } else {
            close_cleanly(c);
        }
    }
}

/// Answers the server's 1008 with our close (the server waits for it, up to
/// its close timeout) and reads until the server's FIN.
fn answer_close_1008(mut c: Client) {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.send_raw(&client_frame(true, 8, &1008u16.to_be_bytes(), [1; 4]));
    c.read_to_eof();
}

/// Reads up to `want` room messages (until the soak stops), checking that
/// their numbers are consecutive. Returns how many, and whether the server
/// closed us with 1008 (after that gap-free prefix).
fn read_room(ctx: &Ctx, c: &mut Client, room: &str, want: u64) -> (u64, bool) {
    let mut last: Option<u64> = None;
    let mut got = 0;
    while got < want {
        let Some((_, op, payload)) = c.try_read_frame() else {
            if ctx.running() {
                continue;
            }
            break;
        };
        match op {
            2 => {
                let seq = seq_of(&payload);
                if let Some(l) = last {
                    assert_eq!(seq, l + 1, "{room}: gap or reorder");
                }
                last = Some(seq);
                got += 1;
            }
            8 => {
                assert_eq!(close_code(&payload), Some(1008), "{room}");
                return (got, true);
            }
            _ => {}
        }
    }
    (got, false)
}

/// A member that does not read for 3 s (small receive buffer): the server
/// closes it with 1008 once over its backpressure budget, after a gap-free
/// prefix. (If the room was too quiet to fill its buffers, it catches up and
/// leaves normally.)
fn slow_consumer(ctx: &Ctx, room: &str) {
    while ctx.running() {
        Stats::add(&ctx.stats.connections, 1);
        let mut c = Client::connect_small_rcvbuf(ctx.addr, room, 64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(3);
        while ctx.running() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (_, closed) = read_room(ctx, &mut c, room, u64::MAX);
        if closed {
            Stats::add(&ctx.stats.slow_closed, 1);
            answer_close_1008(c);
        } else {
            close_cleanly(c);
        }
    }
}

/// Hostile clients, one kind after another, each answered as it must be.
fn hostile(ctx: &Ctx, seed: u64) {
    let mut rng = Rng(seed);
    while ctx.running() {
        Stats::add(&ctx.stats.connections, 1);
        match rng.below(7) {
            0 => {
                let mut c = Client::raw(ctx.addr);
                c.send_raw(b"\x16\x03\x01 not http at all\r\n\r\n");
                assert!(c.read_http_response().0.starts_with("HTTP/1.1 400 "));
            }
            1 => {
                let mut c = Client::connect(ctx.addr, "/");
                let mut f = client_frame(true, 1, b"unmasked", [0; 4]);
                f[1] &= 0x7f;
                f.drain(2..6);
                c.send_raw(&f);
                assert_eq!(c.expect_close(), Some(1002));
            }
            2 => {
                let mut c = Client::connect(ctx.addr, "/");
                c.send_raw(&[0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
                assert_eq!(c.expect_close(), Some(1009));
            }
            3 => {
                let mut c = Client::connect(ctx.addr, "/");
                c.send_raw(&client_frame(true, 1, &[b'o', b'k', 0xc0, 0xaf], [9; 4]));
                assert_eq!(c.expect_close(), Some(1007));
            }
            4 => {
                // Reset mid-frame with an echo left unread.
                let mut c = Client::connect(ctx.addr, "/");
                c.send_text("unread");
                let f = client_frame(true, 2, &[0; 5000], [1; 4]);
                c.send_raw(&f[..1000]);
                thread::sleep(Duration::from_millis(5));
            }
            5 => {
                // Half a request, then gone.
                let mut c = Client::raw(ctx.addr);
                c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr");
            }
            _ => {
                // A bad close code.
                let mut c = Client::connect(ctx.addr, "/");
                c.send_raw(&client_frame(true, 8, &999u16.to_be_bytes(), [3; 4]));
                assert_eq!(c.expect_close(), Some(1002));
            }
        }
        Stats::add(&ctx.stats.hostile, 1);
        thread::sleep(Duration::from_millis(rng.below(20)));
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
#[ignore = "long: tests/soak.sh runs it (SOAK_SECONDS, default 60)"]
fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .map(|s| s.parse().expect("SOAK_SECONDS is a number of seconds"))
        .unwrap_or(60);
    // The close timeout stays at its default (5 s), longer than the 3 s a
    // slow consumer does not read: the server must still be waiting to
    // deliver its 1008 when the consumer reads again. (With 2 s, one hour
    // found the window: the close frame had not fit in the socket buffers,
    // the server gave up, and the consumer saw EOF without it.)
    let (server, addr) = spawn_binary(&["--max-memory", "256MiB", "--handshake-timeout", "2s"]);
    let pid = server.id();
    thread::sleep(Duration::from_millis(200));
    let fds_before = fd_count(pid);
    let ctx = Arc::new(Ctx {
        addr,
        stop: AtomicBool::new(false),
        stats: Stats::default(),
    });
    type Work = Box<dyn FnOnce(&Ctx) + Send>;
    let mut work: Vec<Work> = Vec::new();
    for seed in 1..=3 {
        work.push(Box::new(move |c: &Ctx| pipelined_echo(c, seed * 7919)));
    }
    work.push(Box::new(|c: &Ctx| large_echo(c, 104_729)));
    for (room, size, subs) in [
        ("/broadcast/chat", 100, 4),
        ("/broadcast/bulk", 16 * 1024, 2),
    ] {
        work.push(Box::new(move |c: &Ctx| publisher(c, room, size)));
        for s in 0..subs {
            work.push(Box::new(move |c: &Ctx| subscriber(c, room, 31 + s)));
        }
    }
    work.push(Box::new(|c: &Ctx| slow_consumer(c, "/broadcast/bulk")));
    work.push(Box::new(|c: &Ctx| hostile(c, 65_537)));
    let workers: Vec<_> = work
        .into_iter()
        .map(|w| {
            let ctx = ctx.clone();
            thread::spawn(move || w(&ctx))
        })
        .collect();

    // RSS is sampled every 250 ms; its level after warm-up is the highest
    // sample of the second half of the warm-up (the first quarter of the run).
    let start = Instant::now();
    let warm_up = Duration::from_secs((seconds / 4).clamp(1, 60));
    let (mut rss_warm, mut rss_peak) = (0, 0);
    while start.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(250));
        let rss = rss_kib(pid);
        rss_peak = rss_peak.max(rss);
        if start.elapsed() >= warm_up / 2 && start.elapsed() <= warm_up {
            rss_warm = rss_warm.max(rss);
        }
    }
    ctx.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker saw a wrong answer");
    }
    // Every connection is gone once the server has seen them close
    // (half-sent requests and resets included); wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(pid) > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let fds_after = fd_count(pid);
    assert_serving(addr);
    let rss_end = rss_kib(pid);
    let s = &ctx.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = format!(
        "soak: {seconds} s, {} echoes ({} MiB) and {} room deliveries checked, {} connections, \
         {} hostile clients answered, {} slow consumers and {} lagging members closed 1008; \
         fds {fds_before} -> {fds_after}; RSS after warm-up {rss_warm} KiB, peak {rss_peak} KiB, \
         end {rss_end} KiB",
        get(&s.echoes),
        get(&s.echo_bytes) >> 20,
        get(&s.deliveries),
        get(&s.connections),
        get(&s.hostile),
        get(&s.slow_closed),
        get(&s.subscriber_1008),
    );
    println!("{summary}");
    assert_eq!(fds_after, fds_before, "connections left behind: {summary}");
    assert!(
        rss_end * 10 <= rss_warm * 11,
        "RSS not back within 10 % of its warm-up value: {summary}"
    );
    assert!(get(&s.echoes) > 0 && get(&s.deliveries) > 0 && get(&s.hostile) > 0);
    assert!(
        get(&s.slow_closed) > 0,
        "no slow consumer was closed: {summary}"
    );
}
