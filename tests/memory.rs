//! The server-wide memory budget and failing connections that do not read
//! (issue 12), against the real binary.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1 << 20;
/// A client's receive buffer: small, so that what it does not read stays in
/// the server (see `Client::connect_small_rcvbuf`).
const RCVBUF: usize = 64 * 1024;

/// The payload byte at offset `i` of every test message.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8 ^ (i >> 12) as u8
}

/// One masked fragment of `len` payload bytes, for a message made of
/// fragments of that same size (each carries `pattern(0..len)`).
fn fragment(first: bool, fin: bool, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(pattern).collect();
    client_frame(
        fin,
        if first { 2 } else { 0 },
        &payload,
        [0x5a, 0x17, 0xc3, 0x8e],
    )
}

/// Writes a fragmented binary message of `count` fragments of `len` bytes
/// (the same fragment bytes each time), never reading. Stops at a write error
/// (the server may drop the socket). Returns the bytes written.
fn send_fragments(c: &mut Client, count: usize, len: usize) -> usize {
    let first = fragment(true, false, len);
    let middle = fragment(false, false, len);
    let last = fragment(false, true, len);
    let mut sent = 0;
    for i in 0..count {
        let f = match i {
            0 => &first,
            i if i + 1 == count => &last,
            _ => &middle,
        };
        if c.stream.write_all(f).is_err() {
            break;
        }
        sent += f.len();
    }
    sent
}

#[test]
fn a_client_that_never_reads_sees_1009_within_a_second() {
    // The message is over the 16 MiB cap. Its streamed echo piles up unread
    // (by design, so a write-then-read client cannot deadlock); at the cap
    // the unsent echo is dropped and the close frame follows at most the
    // frame being written, so the client reads at most what the socket
    // buffers hold (~4 MiB here) before 1009, not 16 MiB.
    let (_server, addr) = spawn_binary(&["--max-message-size", "16777216"]);
    let mut c = Client::connect_small_rcvbuf(addr, "/", RCVBUF);
    let sent = send_fragments(&mut c, 17, MIB);
    assert!(
        sent > 16 * MIB,
        "the server stopped reading at {sent} bytes"
    );
    // The last bytes written may still be in the socket buffers: give the
    // server time to reach the fragment over the cap before we read.
    thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (code, echoed) = c.expect_close_after_data();
    let took = start.elapsed();
    eprintln!("close {code:?} after {echoed} echoed bytes, {took:?}");
    assert_eq!(code, Some(1009));
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(echoed < 8 * MIB, "{echoed} bytes came before the close");
}

/// How one hostile client ended.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// The whole echo came back, byte for byte.
    echoed: bool,
    /// The close code, if the server closed before the echo was whole.
    code: Option<u16>,
    /// Echo bytes received (all checked against what was sent).
    bytes: usize,
}

/// Sends a `count` × `len` fragmented message without reading, then reads:
/// the echo (checked byte by byte) or a close.
fn hog(addr: SocketAddr, count: usize, len: usize) -> Outcome {
    let mut c = Client::connect_small_rcvbuf(addr, "/", RCVBUF);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    send_fragments(&mut c, count, len);
    let total = count * len;
    let mut out = Outcome::default();
    loop {
        let (fin, op, payload) = c.read_frame();
        match op {
            0 | 2 => {
                for (k, b) in payload.iter().enumerate() {
                    assert_eq!(
                        *b,
                        pattern((out.bytes + k) % len),
                        "echo byte {}",
                        out.bytes + k
                    );
                }
                out.bytes += payload.len();
                if fin {
                    assert_eq!(out.bytes, total);
                    out.echoed = true;
                    return out;
                }
            }
            8 => {
                out.code = close_code(&payload);
                return out;
            }
            _ => {}
        }
    }
}

/// What one wave of hogs did, and the server's RSS meanwhile.
struct Wave {
    outcomes: Vec<Outcome>,
    peak_kib: u64,
    took: Duration,
    fresh_echoes: usize,
    slowest_fresh: Duration,
}

/// `clients` hogs at once, each sending `count` × 1 MiB without reading,
/// while a fresh client is echoed every 100 ms and the server's RSS is
/// sampled every 10 ms.
fn wave(addr: SocketAddr, pid: u32, clients: usize, count: usize) -> Wave {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let monitor = {
        let (done, peak) = (done.clone(), peak.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let fresh = {
        let done = done.clone();
        thread::spawn(move || {
            let (mut rounds, mut worst) = (0, Duration::ZERO);
            while !done.load(Ordering::Relaxed) {
                let start = Instant::now();
                assert_serving(addr);
                worst = worst.max(start.elapsed());
                rounds += 1;
                thread::sleep(Duration::from_millis(100));
            }
            (rounds, worst)
        })
    };
    let start = Instant::now();
    let hogs: Vec<_> = (0..clients)
        .map(|_| thread::spawn(move || hog(addr, count, MIB)))
        .collect();
    let outcomes = hogs.into_iter().map(|h| h.join().unwrap()).collect();
    let took = start.elapsed();
    done.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    let (fresh_echoes, slowest_fresh) = fresh.join().unwrap();
    Wave {
        outcomes,
        peak_kib: peak.load(Ordering::Relaxed),
        took,
        fresh_echoes,
        slowest_fresh,
    }
}

/// Moves 12 GiB through the server per wave: too slow for a debug build
/// (unmasking), so `tests/all.sh` runs it on the release build:
/// `cargo test --release --test memory -- --ignored`.
#[test]
#[ignore = "heavy: tests/all.sh runs it in release"]
// docs/limits.md: "The process's memory"
fn two_hundred_clients_sending_60_mib_stay_within_the_memory_budget() {
    const CLIENTS: usize = 200;
    const BUDGET_MIB: u64 = 256;
    let (server, addr) = spawn_binary(&["--max-memory", "256MiB", "--close-timeout", "60s"]);
    let pid = server.id();
    let baseline = rss_kib(pid);
    for round in 1..=2 {
        let w = wave(addr, pid, CLIENTS, 60);
        let count = |code| w.outcomes.iter().filter(|o| o.code == Some(code)).count();
        let whole = w.outcomes.iter().filter(|o| o.echoed).count();
        let (c1009, c1008) = (count(1009), count(1008));
        eprintln!(
            "wave {round}: {CLIENTS} clients in {:?}: {whole} echoed whole, {c1009} closed 1009, \
             {c1008} closed 1008; RSS baseline {baseline} KiB, peak {} KiB; fresh client: \
             {} echoes, slowest {:?}",
            w.took, w.peak_kib, w.fresh_echoes, w.slowest_fresh
        );
        assert_eq!(whole + c1009 + c1008, CLIENTS, "{:?}", w.outcomes);
        assert!(c1009 + c1008 > 0, "nobody went over the budget");
        assert!(
            // The budget weighs the process's resident set and purges the
            // allocator's freed pages first: 257-270 MiB measured over six
            // waves (309 before; the target is the budget + 32 MiB, a
            // figure docs/limits.md keeps): docs/limits.md.
            w.peak_kib < (BUDGET_MIB + 64) * 1024,
            "RSS peaked at {} KiB",
            w.peak_kib
        );
        assert!(w.fresh_echoes > 0);
        // Everything the wave held is freed, and given back to the system
        // while the server idles (jemalloc's background purge, issue 18):
        // the RSS curve after the burst, one sample a second, must reach
        // 64 MiB within 10 s, before the next wave and after the last. (The
        // peaks themselves vary by ±25 MiB from run to run, either wave
        // higher: comparing them was a coin toss, not a leak check.)
        let mut curve = Vec::new();
        for _ in 0..=10 {
            curve.push(rss_kib(pid));
            if *curve.last().unwrap() <= 64 * 1024 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        eprintln!("RSS after wave {round}, each second: {curve:?} KiB");
        assert!(
            *curve.last().unwrap() <= 64 * 1024,
            "RSS stayed at {curve:?} KiB after wave {round}"
        );
    }
    assert_serving(addr);
}
