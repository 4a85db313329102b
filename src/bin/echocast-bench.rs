//! echocast-bench: a single-threaded load generator for WebSocket servers.
//!
//! Scenarios: `echo` (C connections, P messages in flight
//! each; messages/s, MB/s, latency; every echo is checked byte for byte),
//! `broadcast` (1 publisher + C subscribers of a room, deliveries/s, fails on
//! any missed or reordered message) and `idle` (hold C idle connections, report
//! the server's RSS per connection) and `connect` (handshakes per second with
//! C concurrent clients, each closing cleanly). With
//! `--server-pid` it also reports the server's CPU time per operation, read from
//! /proc (on a 2-core loopback box that is the figure that compares servers).
//! Prints a human table, then one JSON line.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use echocast::proto::FrameHeader;

#[derive(Parser)]
#[command(
    name = "echocast-bench",
    about = "Load generator for WebSocket servers"
)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One publisher and C subscribers of one room; the publisher keeps at most
    /// WINDOW messages not yet received by every subscriber.
    Broadcast {
        /// Server address and room path
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/broadcast/bench")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 1000)]
        subscribers: usize,
        /// Payload bytes per message (at least 8: a sequence number)
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Seconds to measure
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// C connections each keeping P messages in flight (P = 1: ping-pong);
    /// every echo is compared with what was sent.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 100)]
        connections: usize,
        /// Payload bytes per message
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        /// Messages in flight per connection
        #[arg(long, short = 'p', default_value_t = 1)]
        pipeline: usize,
        /// Text messages instead of binary
        #[arg(long)]
        text: bool,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// C concurrent clients each looping: connect, upgrade (101 with the right
    /// accept key), send close 1000, wait for the server's close frame and its
    /// FIN. Handshakes per second, and server CPU per handshake.
    Connect {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 50)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Hold C idle connections and report the server's RSS per connection.
    Idle {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 10_000)]
        connections: usize,
        #[arg(long)]
        server_pid: u32,
    },
}

/// Opens a WebSocket with a blocking handshake; returns the socket and any
/// bytes that followed the 101.
fn handshake(addr: SocketAddr, path: &str) -> io::Result<(StdStream, Vec<u8>)> {
    let mut s = StdStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(&request_bytes(addr, path))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::other("EOF during handshake"));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            check_upgrade(&buf[..p])?;
            return Ok((s, buf[p + 4..].to_vec()));
        }
    }
}

/// The accept value for the key every request of ours sends (RFC 6455 §1.3).
const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Checks a response head: status 101 and the right `Sec-WebSocket-Accept`.
fn check_upgrade(head: &[u8]) -> io::Result<()> {
    let text = String::from_utf8_lossy(head);
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other(format!("handshake refused: {text}")));
    }
    let accept = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| v.trim().to_string())
    });
    if accept.as_deref().map(str::as_bytes) != Some(ACCEPT) {
        return Err(io::Error::other(format!(
            "wrong Sec-WebSocket-Accept: {text}"
        )));
    }
    Ok(())
}

fn request_bytes(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Opens a WebSocket, makes it non-blocking and registers it with `poll`.
fn open_registered(
    poll: &Poll,
    addr: SocketAddr,
    path: &str,
    token: Token,
    interest: Interest,
) -> io::Result<(TcpStream, Vec<u8>)> {
    let (s, rest) = handshake(addr, path)?;
    s.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(s);
    poll.registry().register(&mut stream, token, interest)?;
    Ok((stream, rest))
}

/// Server CPU time (user + system, all threads) in nanoseconds.
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let p = t.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(p).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()
}

struct Sub {
    stream: TcpStream,
    buf: Vec<u8>,
    next: u64,
}

/// Reads until `WouldBlock`, appending to `into`; EOF is an error (servers under
/// test must not close).
fn read_available(
    stream: &mut TcpStream,
    into: &mut Vec<u8>,
    scratch: &mut [u8],
) -> io::Result<()> {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Err(io::Error::other("closed by the server")),
            Ok(n) => into.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn masked_frame_op(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let h = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let (b, n) = h.encode();
    let mut f = b[..n].to_vec();
    f.extend(payload.iter().enumerate().map(|(i, x)| x ^ key[i % 4]));
    f
}

#[allow(clippy::too_many_arguments)]
fn broadcast(
    addr: SocketAddr,
    path: &str,
    subscribers: usize,
    size: usize,
    window: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let size = size.max(8);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut subs = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (stream, rest) = open_registered(&poll, addr, path, Token(i), Interest::READABLE)
            .map_err(|e| format!("subscriber {i}: {e}"))?;
        subs.push(Sub {
            stream,
            buf: rest,
            next: 0,
        });
    }
    // The publisher is a member too; it reads (and checks) its own copy.
    let (stream, rest) = open_registered(
        &poll,
        addr,
        path,
        Token(subscribers),
        Interest::READABLE | Interest::WRITABLE,
    )
    .map_err(|e| format!("publisher: {e}"))?;
    let mut publisher = Sub {
        stream,
        buf: rest,
        next: 0,
    };

    let key = [0x5a, 0x17, 0xc3, 0x9e];
    let template = masked_frame_op(2, &vec![b'x'; size], key);
    let hdr_len = template.len() - size;
    let mut out: Vec<u8> = Vec::new();
    // received[i]: how many subscribers have message base + i.
    let mut received: VecDeque<usize> = VecDeque::new();
    let mut base: u64 = 0;
    let mut sent: u64 = 0;
    let mut deliveries: u64 = 0;
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let total = subscribers + 1;

    let start = Instant::now();
    let cpu0 = pid.and_then(cpu_ns);
    let end = start + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        // Publish while the window allows.
        while sent < base + window as u64 && out.len() < 1 << 20 {
            let mut f = template.clone();
            let seq = sent.to_be_bytes();
            for i in 0..8 {
                f[hdr_len + i] = seq[i] ^ key[i % 4];
            }
            out.extend_from_slice(&f);
            received.push_back(0);
            sent += 1;
        }
        while !out.is_empty() {
            match publisher.stream.write(&out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("publisher write: {e}")),
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let s = if i == subscribers {
                &mut publisher
            } else {
                &mut subs[i]
            };
            read_available(&mut s.stream, &mut s.buf, &mut read_buf)
                .map_err(|e| format!("connection {i}: {e}"))?;
            let mut pos = 0;
            while let Ok(Some((h, n))) = FrameHeader::decode(&s.buf[pos..]) {
                let end = pos + n + h.payload_len as usize;
                if s.buf.len() < end {
                    break;
                }
                if h.opcode == 8 {
                    return Err(format!("connection {i} got a close frame"));
                }
                let p = &s.buf[pos + n..end];
                if h.payload_len as usize != size {
                    return Err(format!("connection {i}: wrong size {}", h.payload_len));
                }
                let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
                if seq != s.next {
                    return Err(format!(
                        "connection {i}: got message {seq}, expected {} (missed or reordered)",
                        s.next
                    ));
                }
                s.next += 1;
                received[(seq - base) as usize] += 1;
                if i != subscribers {
                    deliveries += 1;
                }
                pos = end;
            }
            s.buf.drain(..pos);
        }
        while received.front() == Some(&total) {
            received.pop_front();
            base += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => cpu_ns(pid).map(|c1| (c1 - c0) as f64),
        _ => None,
    };
    let rate = deliveries as f64 / elapsed;
    let cpu_per = cpu.map(|c| c / deliveries as f64);
    println!("scenario     broadcast");
    println!("subscribers  {subscribers}");
    println!("size         {size} B");
    println!("window       {window}");
    println!("messages     {base} fully delivered");
    println!("deliveries   {deliveries} in {elapsed:.2} s = {rate:.0}/s");
    if let Some(c) = cpu_per {
        println!("server CPU   {c:.0} ns per delivery");
    }
    println!(
        "{{\"scenario\":\"broadcast\",\"subscribers\":{subscribers},\"size\":{size},\"window\":{window},\
         \"seconds\":{elapsed:.3},\"messages\":{base},\"deliveries\":{deliveries},\
         \"deliveries_per_sec\":{rate:.0},\"server_cpu_ns_per_delivery\":{}}}",
        cpu_per.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}

/// The payload of message `seq`: its number in ASCII digits (the last
/// `min(size, 20)` of 20), then `e` filler, so text and binary both carry it
/// and every echo can be checked exactly. This returns the digits.
fn echo_digits(seq: u64, size: usize) -> [u8; 20] {
    let mut d = [b'e'; 20];
    let all = format!("{seq:020}");
    let n = size.min(20);
    d[..n].copy_from_slice(&all.as_bytes()[20 - n..]);
    d
}

/// Messages up to this size are copied whole into the output buffer; larger
/// ones are sent as a patched prefix plus the shared, pre-masked template.
const SMALL: usize = 4096;

/// One piece of a connection's output.
enum Seg {
    Bytes(Vec<u8>),
    /// The template from this offset to its end (shared, never copied).
    Template(usize),
}

/// The echo being received: frames are checked as their bytes arrive and
/// never accumulated, so a 16 MiB echo costs the client one pass.
#[derive(Default)]
struct Rx {
    /// Payload bytes left in the current frame.
    frame_left: u64,
    frame_fin: bool,
    /// Inside a message (its first frame was seen).
    in_message: bool,
    /// Bytes of the message so far.
    len: usize,
    /// Every byte of this message is checked (one in 64), not just the digits.
    full: bool,
    digits: [u8; 20],
}

struct EchoConn {
    stream: TcpStream,
    buf: Vec<u8>,
    rx: Rx,
    out: VecDeque<Seg>,
    /// Bytes of `out[0]` already written.
    out_pos: usize,
    sent: u64,
    received: u64,
    sent_at: VecDeque<Instant>,
}

/// Checks `bytes`, found at `off` in the echo of a message of `size` bytes.
fn check_echo(rx: &Rx, off: usize, bytes: &[u8], size: usize) -> bool {
    let d = size.min(20);
    let end = off + bytes.len();
    if off < d {
        let n = d.min(end) - off;
        if bytes[..n] != rx.digits[off..off + n] {
            return false;
        }
    }
    if rx.full && end > d {
        let from = d.saturating_sub(off);
        return bytes[from..].iter().all(|&b| b == b'e');
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn echo(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    size: usize,
    pipeline: usize,
    text: bool,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let (stream, rest) = open_registered(
            &poll,
            addr,
            path,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(|e| format!("connection {i}: {e}"))?;
        conns.push(EchoConn {
            stream,
            buf: rest,
            rx: Rx::default(),
            out: VecDeque::new(),
            out_pos: 0,
            sent: 0,
            received: 0,
            sent_at: VecDeque::new(),
        });
    }
    let opcode = if text { 1 } else { 2 };
    let key = [0x3c, 0x91, 0x07, 0xe2];
    // Masked once; only the sequence digits are re-masked per message.
    let mut payload = vec![b'e'; size];
    payload[..size.min(20)].copy_from_slice(&echo_digits(0, size)[..size.min(20)]);
    let template = masked_frame_op(opcode, &payload, key);
    drop(payload);
    let hdr_len = template.len() - size;
    let digits = size.min(20);
    let prefix = hdr_len + digits;
    let mut latencies: Vec<u32> = Vec::new();
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let cpu0 = pid.and_then(cpu_ns);
    let mut total: u64 = 0;

    let top_up = |c: &mut EchoConn, now: Instant| -> Result<(), String> {
        while c.sent - c.received < pipeline as u64 {
            let d = echo_digits(c.sent, size);
            let masked = |p: &mut [u8]| {
                for i in 0..digits {
                    p[hdr_len + i] = d[i] ^ key[i % 4];
                }
            };
            if size <= SMALL {
                // Appending to a partly written buffer is fine: `out_pos` counts
                // from its start.
                if !matches!(c.out.back(), Some(Seg::Bytes(_))) {
                    c.out.push_back(Seg::Bytes(Vec::new()));
                }
                let Some(Seg::Bytes(b)) = c.out.back_mut() else {
                    unreachable!()
                };
                let at = b.len();
                b.extend_from_slice(&template);
                masked(&mut b[at..]);
            } else {
                let mut head = template[..prefix].to_vec();
                masked(&mut head);
                c.out.push_back(Seg::Bytes(head));
                c.out.push_back(Seg::Template(prefix));
            }
            c.sent += 1;
            c.sent_at.push_back(now);
        }
        while !c.out.is_empty() {
            let mut slices = [io::IoSlice::new(&[]); 64];
            let mut n = 0;
            for (k, seg) in c.out.iter().take(64).enumerate() {
                let bytes = match seg {
                    Seg::Bytes(b) => &b[..],
                    Seg::Template(from) => &template[*from..],
                };
                slices[n] = io::IoSlice::new(if k == 0 { &bytes[c.out_pos..] } else { bytes });
                n += 1;
            }
            match c.stream.write_vectored(&slices[..n]) {
                Ok(mut written) => {
                    while written > 0 {
                        let len = match &c.out[0] {
                            Seg::Bytes(b) => b.len(),
                            Seg::Template(from) => template.len() - from,
                        } - c.out_pos;
                        if written >= len {
                            written -= len;
                            c.out.pop_front();
                            c.out_pos = 0;
                        } else {
                            c.out_pos += written;
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    };
    let now = Instant::now();
    for c in conns.iter_mut() {
        top_up(c, now)?;
    }
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            read_available(&mut c.stream, &mut c.buf, &mut read_buf)
                .map_err(|e| format!("connection {i}: {e}"))?;
            let mut pos = 0;
            loop {
                if c.rx.frame_left > 0 {
                    let n = (c.rx.frame_left as usize).min(c.buf.len() - pos);
                    if n == 0 {
                        break;
                    }
                    let bytes = &c.buf[pos..pos + n];
                    if c.rx.len + n > size || !check_echo(&c.rx, c.rx.len, bytes, size) {
                        return Err(format!(
                            "connection {i}: echo {} differs from what was sent",
                            c.received
                        ));
                    }
                    c.rx.len += n;
                    c.rx.frame_left -= n as u64;
                    pos += n;
                    if c.rx.frame_left > 0 {
                        break;
                    }
                } else {
                    let Ok(Some((h, n))) = FrameHeader::decode(&c.buf[pos..]) else {
                        break;
                    };
                    if matches!(h.opcode, 9 | 10) {
                        // Control frames from the server are skipped whole.
                        let fend = pos + n + h.payload_len as usize;
                        if c.buf.len() < fend {
                            break;
                        }
                        pos = fend;
                        continue;
                    }
                    // A message is one frame, or a first frame with the
                    // message's opcode and continuations (RFC 6455 §5.4).
                    let expected = if c.rx.in_message { 0 } else { opcode };
                    if h.opcode != expected {
                        return Err(format!(
                            "connection {i}: unexpected frame (opcode {}, {} bytes)",
                            h.opcode, h.payload_len
                        ));
                    }
                    if !c.rx.in_message {
                        c.rx = Rx {
                            in_message: true,
                            full: c.received % 64 == 0,
                            digits: echo_digits(c.received, size),
                            ..Rx::default()
                        };
                    }
                    c.rx.frame_left = h.payload_len;
                    c.rx.frame_fin = h.fin;
                    pos += n;
                    if h.payload_len > 0 {
                        continue;
                    }
                }
                if c.rx.frame_fin {
                    if c.rx.len != size {
                        return Err(format!(
                            "connection {i}: echo of {} bytes, sent {size}",
                            c.rx.len
                        ));
                    }
                    c.rx.in_message = false;
                    c.rx.frame_fin = false;
                    c.received += 1;
                    total += 1;
                    let t0 = c.sent_at.pop_front().expect("sent before received");
                    latencies.push(now.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            c.buf.drain(..pos);
            top_up(c, now)?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => cpu_ns(pid).map(|c1| (c1 - c0) as f64 / total as f64),
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |q: f64| -> u32 {
        if latencies.is_empty() {
            0
        } else {
            latencies[((latencies.len() - 1) as f64 * q) as usize]
        }
    };
    let rate = total as f64 / elapsed;
    let mbps = rate * size as f64 / 1e6;
    let (p50, p99) = (pct(0.5), pct(0.99));
    println!("scenario     echo");
    println!("connections  {connections}");
    println!(
        "size         {size} B {}",
        if text { "text" } else { "binary" }
    );
    println!("pipeline     {pipeline}");
    println!("messages     {total} in {elapsed:.2} s = {rate:.0}/s, {mbps:.1} MB/s");
    println!("latency      p50 {p50} us, p99 {p99} us");
    if let Some(c) = cpu {
        println!("server CPU   {c:.0} ns per message");
    }
    println!(
        "{{\"scenario\":\"echo\",\"connections\":{connections},\"size\":{size},\"text\":{text},\
         \"pipeline\":{pipeline},\"seconds\":{elapsed:.3},\"messages\":{total},\
         \"messages_per_sec\":{rate:.0},\"mb_per_sec\":{mbps:.2},\"latency_p50_us\":{p50},\
         \"latency_p99_us\":{p99},\"server_cpu_ns_per_message\":{}}}",
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}

#[derive(PartialEq)]
enum Phase {
    /// TCP connect in progress; the request goes out on the first writable.
    Connecting,
    /// Request sent, waiting for the 101.
    Upgrading,
    /// Close 1000 sent, waiting for the server's close frame.
    Closing,
    /// Close frame received, waiting for the server's FIN.
    Draining,
}

struct Attempt {
    stream: TcpStream,
    token: Token,
    phase: Phase,
    buf: Vec<u8>,
    started: Instant,
}

/// One client's step on an event. Returns true when the cycle is complete.
fn connect_step(
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

fn connect(
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

fn idle(addr: SocketAddr, path: &str, connections: usize, pid: u32) -> Result<(), String> {
    let before = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        held.push(handshake(addr, path).map_err(|e| format!("connection {i}: {e}"))?);
    }
    // Let the server settle, then measure.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_mid = cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(2));
    let cpu_end = cpu_ns(pid);
    let after = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let per = (after.saturating_sub(before) as f64 * 1024.0) / connections as f64;
    let idle_cpu = match (cpu_mid, cpu_end) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 2e9 * 100.0),
        _ => None,
    };
    println!("scenario     idle");
    println!("connections  {connections}");
    println!("server RSS   {before} KiB before, {after} KiB after");
    println!("per conn     {per:.0} B");
    if let Some(c) = idle_cpu {
        println!("idle CPU     {c:.2} % of one core");
    }
    println!(
        "{{\"scenario\":\"idle\",\"connections\":{connections},\"rss_before_kib\":{before},\
         \"rss_after_kib\":{after},\"rss_bytes_per_connection\":{per:.0},\"idle_cpu_percent\":{}}}",
        idle_cpu.map_or("null".into(), |c| format!("{c:.3}"))
    );
    drop(held);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let r = match args.scenario {
        Scenario::Broadcast {
            addr,
            path,
            subscribers,
            size,
            window,
            duration,
            server_pid,
        } => broadcast(addr, &path, subscribers, size, window, duration, server_pid),
        Scenario::Connect {
            addr,
            path,
            concurrency,
            duration,
            server_pid,
        } => connect(addr, &path, concurrency, duration, server_pid),
        Scenario::Idle {
            addr,
            path,
            connections,
            server_pid,
        } => idle(addr, &path, connections, server_pid),
        Scenario::Echo {
            addr,
            path,
            connections,
            size,
            pipeline,
            text,
            duration,
            server_pid,
        } => echo(
            addr,
            &path,
            connections,
            size,
            pipeline,
            text,
            duration,
            server_pid,
        ),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echocast-bench: FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
