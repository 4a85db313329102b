//! `connect`: C clients each looping open → 101 (accept key checked) →
//! close 1000 → the server's close frame and FIN; handshakes per second.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use echocast::proto::FrameHeader;

use crate::conn::{check_upgrade, masked_frame_op, request_bytes};
use crate::report::cpu_ns;

#[derive(PartialEq)]
pub(crate) enum Phase {
    /// TCP connect in progress; the request goes out on the first writable.
    Connecting,
    /// Request sent, waiting for the 101.
    Upgrading,
    /// Close 1000 sent, waiting for the server's close frame.
    Closing,
    /// Close frame received, waiting for the server's FIN.
    Draining,
}

pub(crate) struct Attempt {
    stream: TcpStream,
    token: Token,
    phase: Phase,
    buf: Vec<u8>,
    started: Instant,
}

/// One client's step on an event. Returns true when the cycle is complete.
pub(crate) fn connect_step(
    a: &mut Attempt,
    request: &[u8],
    close: &[u8],
    scratch: &mut [u8],
) -> Result<bool, String> {
    if a.phase == Phase::Connecting {
        if let Some(e) = a.stream.take_error().map_err(|e| e.to_string())? {
            return Err(format!("connect: {e}"));
        }
        match a.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(format!("connect: {e}")),
        }
        // A fresh socket's send buffer takes a request of this size whole.
        let n = a
            .stream
            .write(request)
            .map_err(|e| format!("request: {e}"))?;
        if n != request.len() {
            return Err("short write of the request".into());
        }
        a.phase = Phase::Upgrading;
    }
    loop {
        match a.stream.read(scratch) {
            Ok(0) => {
                return if a.phase == Phase::Draining {
                    Ok(true)
                } else {
                    Err("the server closed before the close handshake ended".into())
                };
            }
            Ok(n) => a.buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(format!("read: {e}")),
        }
        if a.phase == Phase::Upgrading {
            if let Some(p) = a.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                check_upgrade(&a.buf[..p]).map_err(|e| e.to_string())?;
                a.buf.drain(..p + 4);
                let n = a.stream.write(close).map_err(|e| format!("close: {e}"))?;
                if n != close.len() {
                    return Err("short write of the close frame".into());
                }
                a.phase = Phase::Closing;
            }
        }
        if a.phase == Phase::Closing {
            match FrameHeader::decode(&a.buf) {
                Ok(Some((h, n))) if a.buf.len() >= n + h.payload_len as usize => {
                    let p = &a.buf[n..n + h.payload_len as usize];
                    if h.opcode != 8 || p.len() < 2 || p[..2] != [0x03, 0xe8] {
                        return Err(format!(
                            "expected close 1000, got opcode {} payload {p:?}",
                            h.opcode
                        ));
                    }
                    a.phase = Phase::Draining;
                }
                Ok(_) => {}
                Err(e) => return Err(format!("bad frame from the server: {e:?}")),
            }
        }
    }
}

pub(crate) fn connect(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let request = request_bytes(addr, path);
    let close = masked_frame_op(8, &1000u16.to_be_bytes(), [0x11, 0x22, 0x33, 0x44]);
    let mut scratch = vec![0u8; 16 * 1024];
    let mut events = Events::with_capacity(1024);
    // Tokens are never reused, so an event for a finished attempt cannot
    // reach its successor in the same slot.
    let mut next_token = 0usize;
    let open = |poll: &Poll, next_token: &mut usize| -> Result<Attempt, String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).ok();
        let token = Token(*next_token);
        *next_token += 1;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        Ok(Attempt {
            stream,
            token,
            phase: Phase::Connecting,
            buf: Vec::new(),
            started: Instant::now(),
        })
    };
    let mut slots: Vec<Attempt> = Vec::with_capacity(concurrency);
    let mut slot_of: std::collections::HashMap<Token, usize> = Default::default();
    for i in 0..concurrency {
        let a = open(&poll, &mut next_token)?;
        slot_of.insert(a.token, i);
        slots.push(a);
    }
    let mut latencies: Vec<u32> = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let cpu0 = pid.and_then(cpu_ns);
    let mut done: u64 = 0;
    let mut last_progress = Instant::now();
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let Some(&i) = slot_of.get(&ev.token()) else {
                continue;
            };
            if connect_step(&mut slots[i], &request, &close, &mut scratch)
                .map_err(|e| format!("client {i}: {e}"))?
            {
                let now = Instant::now();
                latencies.push(
                    now.duration_since(slots[i].started)
                        .as_micros()
                        .min(u32::MAX as u128) as u32,
                );
                done += 1;
                last_progress = now;
                slot_of.remove(&slots[i].token);
                let a = open(&poll, &mut next_token)?;
                slot_of.insert(a.token, i);
                let mut old = std::mem::replace(&mut slots[i], a);
                poll.registry().deregister(&mut old.stream).ok();
            }
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            return Err("no handshake completed in 5 s".into());
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => cpu_ns(pid).map(|c1| (c1 - c0) as f64 / done.max(1) as f64),
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let (p50, p99) = (pct(0.5), pct(0.99));
    let rate = done as f64 / elapsed;
    println!("scenario     connect");
    println!("concurrency  {concurrency}");
    println!("handshakes   {done} in {elapsed:.2} s = {rate:.0}/s (open, 101, close 1000, FIN)");
    println!("cycle        p50 {p50} us, p99 {p99} us");
    if let Some(c) = cpu {
        println!("server CPU   {c:.0} ns per handshake");
    }
    println!(
        "{{\"scenario\":\"connect\",\"concurrency\":{concurrency},\"seconds\":{elapsed:.3},\
         \"handshakes\":{done},\"handshakes_per_sec\":{rate:.0},\"latency_p50_us\":{p50},\
         \"latency_p99_us\":{p99},\"server_cpu_ns_per_handshake\":{}}}",
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}
