//! Rooms over HTTP. `sse`: C event-stream subscribers (`GET` with `Accept:
//! text/event-stream`) of one room and one WebSocket member publishing to it,
//! at most WINDOW messages not yet received by everyone; every event's id
//! must follow the last one and carry the message sent in that place.
//! `publish`: P kept HTTP connections each `POST`ing to a room with C
//! WebSocket members, one request in flight each; every member must get
//! every publisher's messages in that publisher's order. Both fail on any
//! missed, reordered or wrong delivery, and print the server's CPU per
//! delivery (and per publish).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::conn::{
    exchange, masked_frame_op, open_registered, read_available, register, take_frames,
};
use crate::report::{cpu_ns, cpu_per_op, Also, Fanout};

/// A text message of `size` bytes whose first 20 are `n` in decimal.
fn payload(n: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{n:020}").into_bytes();
    p.resize(size.max(20), b'x');
    p
}

/// Opens a plain HTTP connection: sends `request`, reads up to the end of
/// the response head (which must start with `expect`), registers the rest.
fn http_open(
    poll: &Poll,
    addr: SocketAddr,
    request: &[u8],
    expect: &str,
    token: Token,
    interest: Interest,
) -> io::Result<(TcpStream, Vec<u8>)> {
    let (s, head, rest) = exchange(addr, request)?;
    if !head.starts_with(expect.as_bytes()) {
        let head = String::from_utf8_lossy(&head);
        return Err(io::Error::other(format!("unexpected answer: {head}")));
    }
    Ok((register(poll, s, token, interest)?, rest))
}

struct Subscriber {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The id of the last event (0: none yet).
    last_id: u64,
    /// The next message number expected.
    next: u64,
}

/// Parses the complete events in `s.buf`; checks each and returns how many.
fn take_events(s: &mut Subscriber, size: usize) -> Result<u64, String> {
    let mut pos = 0;
    let mut got = 0;
    while let Some(len) = s.buf[pos..].windows(2).position(|w| w == b"\n\n") {
        let block = &s.buf[pos..pos + len];
        pos += len + 2;
        let (mut id, mut data) = (None, None);
        for line in block.split(|&b| b == b'\n') {
            if let Some(v) = line.strip_prefix(b"id: ") {
                id = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
            } else if let Some(v) = line.strip_prefix(b"data: ") {
                data = Some(v);
            } else if line.starts_with(b"event: ") && !line.ends_with(b"message") {
                let what = String::from_utf8_lossy(line);
                return Err(format!("unexpected {what}"));
            }
        }
        // `retry:` and keepalive comments carry no id.
        let Some(id) = id else { continue };
        if s.last_id != 0 && id != s.last_id + 1 {
            return Err(format!("event id {id} after {}", s.last_id));
        }
        let data = data.ok_or(format!("event {id} has no data"))?;
        if data != payload(s.next, size).as_slice() {
            return Err(format!(
                "event {id}: not message {} ({} bytes)",
                s.next,
                data.len()
            ));
        }
        s.last_id = id;
        s.next += 1;
        got += 1;
    }
    s.buf.drain(..pos);
    Ok(got)
}

pub(crate) fn sse(
    addr: SocketAddr,
    path: &str,
    subscribers: usize,
    size: usize,
    window: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let size = size.max(20);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    let mut subs = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (stream, buf) = http_open(
            &poll,
            addr,
            request.as_bytes(),
            "HTTP/1.1 200",
            Token(i),
            Interest::READABLE,
        )
        .map_err(|e| format!("subscriber {i}: {e}"))?;
        subs.push(Subscriber {
            stream,
            buf,
            last_id: 0,
            next: 0,
        });
    }
    // The publisher is a WebSocket member; its own copies are read and dropped.
    let pub_token = Token(subscribers);
    let (mut publisher, mut pub_buf) = open_registered(
        &poll,
        addr,
        path,
        pub_token,
        Interest::READABLE | Interest::WRITABLE,
    )
    .map_err(|e| format!("publisher: {e}"))?;
    let key = [0x5a, 0x17, 0xc3, 0x9e];
    let mut out: Vec<u8> = Vec::new();
    let (mut sent, mut deliveries) = (0u64, 0u64);
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let cpu0 = pid.and_then(cpu_ns);
    let also = Also::start();
    let end = start + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        let done = subs.iter().map(|s| s.next).min().unwrap_or(sent);
        while sent < done + window as u64 && out.len() < 1 << 20 {
            out.extend_from_slice(&masked_frame_op(1, &payload(sent, size), key));
            sent += 1;
        }
        while !out.is_empty() {
            match publisher.write(&out) {
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
            if ev.token() == pub_token {
                read_available(&mut publisher, &mut pub_buf, &mut read_buf)
                    .map_err(|e| format!("publisher: {e}"))?;
                take_frames(&mut pub_buf, |_, _| Ok(())).map_err(|e| format!("publisher: {e}"))?;
                continue;
            }
            let i = ev.token().0;
            let s = &mut subs[i];
            read_available(&mut s.stream, &mut s.buf, &mut read_buf)
                .map_err(|e| format!("subscriber {i}: {e}"))?;
            deliveries += take_events(s, size).map_err(|e| format!("subscriber {i}: {e}"))?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let messages = subs.iter().map(|s| s.next).min().unwrap_or(0);
    Fanout {
        scenario: "sse",
        kind: " (event streams)",
        subscribers,
        size,
        window,
        messages,
        deliveries,
        elapsed,
        cpu_per_delivery: cpu_per_op(pid, cpu0, deliveries),
        also: also.json(deliveries),
    }
    .print();
    Ok(())
}

struct Publisher {
    stream: TcpStream,
    buf: Vec<u8>,
    sent: u64,
    /// A request is waiting for its answer.
    waiting: bool,
}

struct Member {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The next message number expected from each publisher.
    next: Vec<u64>,
}

/// Reads complete `200` answers (with `Content-Length`) off a publisher.
fn take_answers(p: &mut Publisher) -> Result<u64, String> {
    let mut got = 0;
    loop {
        let Some(head_end) = p.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(got);
        };
        let head = String::from_utf8_lossy(&p.buf[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {head}"));
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or("an answer without Content-Length")?;
        if p.buf.len() < head_end + 4 + len {
            return Ok(got);
        }
        p.buf.drain(..head_end + 4 + len);
        got += 1;
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn publish(
    addr: SocketAddr,
    path: &str,
    members: usize,
    publishers: usize,
    size: usize,
    window: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let size = size.max(24);
    let publishers = publishers.max(1);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut room: Vec<Member> = Vec::with_capacity(members);
    for i in 0..members {
        let (stream, buf) = open_registered(&poll, addr, path, Token(i), Interest::READABLE)
            .map_err(|e| format!("member {i}: {e}"))?;
        room.push(Member {
            stream,
            buf,
            next: vec![0; publishers],
        });
    }
    let mut pubs = Vec::with_capacity(publishers);
    for j in 0..publishers {
        // An OPTIONS preflight opens the kept connection (answered 204,
        // kept alive) without publishing anything.
        let hello = format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://bench\r\n\
             Access-Control-Request-Method: POST\r\n\r\n"
        );
        let (stream, buf) = http_open(
            &poll,
            addr,
            hello.as_bytes(),
            "HTTP/1.1 204",
            Token(members + j),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(|e| format!("publisher {j}: {e}"))?;
        pubs.push(Publisher {
            stream,
            buf,
            sent: 0,
            waiting: false,
        });
    }
    let body = |j: usize, n: u64| {
        let mut p = format!("{j:03}:{n:020}").into_bytes();
        p.resize(size, b'x');
        p
    };
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let (mut published, mut answered, mut deliveries) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let cpu0 = pid.and_then(cpu_ns);
    let also = Also::start();
    let end = start + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        // Keep members at most `window` messages behind.
        let behind = published * members as u64 - deliveries;
        for (j, p) in pubs.iter_mut().enumerate() {
            if p.waiting || behind > (window * members) as u64 {
                continue;
            }
            let b = body(j, p.sent);
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            req.extend_from_slice(&b);
            // One small request on an idle kept connection: the socket takes it whole.
            match p.stream.write(&req) {
                Ok(n) if n == req.len() => {}
                Ok(n) => return Err(format!("publisher {j}: short write {n}")),
                Err(e) => return Err(format!("publisher {j}: {e}")),
            }
            p.sent += 1;
            p.waiting = true;
            published += 1;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            if i >= members {
                let p = &mut pubs[i - members];
                read_available(&mut p.stream, &mut p.buf, &mut read_buf)
                    .map_err(|e| format!("publisher {}: {e}", i - members))?;
                let got = take_answers(p).map_err(|e| format!("publisher {}: {e}", i - members))?;
                if got > 0 {
                    p.waiting = false;
                    answered += got;
                }
                continue;
            }
            let m = &mut room[i];
            read_available(&mut m.stream, &mut m.buf, &mut read_buf)
                .map_err(|e| format!("member {i}: {e}"))?;
            let next = &mut m.next;
            take_frames(&mut m.buf, |_, p| {
                let j: usize = p
                    .get(..3)
                    .and_then(|j| std::str::from_utf8(j).ok())
                    .and_then(|j| j.parse().ok())
                    .filter(|&j| j < publishers)
                    .ok_or("a message from nowhere")?;
                if p != body(j, next[j]).as_slice() {
                    return Err(format!(
                        "expected message {} of publisher {j} (missed or reordered)",
                        next[j]
                    ));
                }
                next[j] += 1;
                deliveries += 1;
                Ok(())
            })
            .map_err(|e| format!("member {i}: {e}"))?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(c0)) => cpu_ns(pid).map(|c1| (c1 - c0) as f64),
        _ => None,
    };
    let rate = answered as f64 / elapsed;
    let per_publish = cpu.map(|c| c / answered.max(1) as f64);
    let per_delivery = cpu.map(|c| c / deliveries.max(1) as f64);
    println!("scenario     publish");
    println!("members      {members} (WebSocket)");
    println!("publishers   {publishers} (kept HTTP connections)");
    println!("size         {size} B");
    println!("publishes    {answered} answered in {elapsed:.2} s = {rate:.0}/s");
    println!("deliveries   {deliveries}");
    if let (Some(p), Some(d)) = (per_publish, per_delivery) {
        println!("server CPU   {p:.0} ns per publish, {d:.0} ns per delivery");
    }
    let num = |v: Option<f64>| v.map_or("null".into(), |c| format!("{c:.1}"));
    println!(
        "{{\"scenario\":\"publish\",\"members\":{members},\"publishers\":{publishers},\"size\":{size},\
         \"seconds\":{elapsed:.3},\"publishes\":{answered},\"publishes_per_sec\":{rate:.0},\
         \"deliveries\":{deliveries},\"server_cpu_ns_per_publish\":{},\
         \"server_cpu_ns_per_delivery\":{}{}}}",
        num(per_publish),
        num(per_delivery),
        also.json(deliveries)
    );
    Ok(())
}
