//! `broadcast`: one publisher and C subscribers of one room, at most WINDOW
//! messages not yet received by everyone; fails on any missed or reordered
//! delivery.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::conn::{masked_frame_op, open_registered, read_available, take_frames};
use crate::report::{cpu_ns, cpu_per_op, Also, Fanout};

pub(crate) struct Sub {
    stream: TcpStream,
    buf: Vec<u8>,
    next: u64,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn broadcast(
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
    let also = Also::start();
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
            let next = &mut s.next;
            take_frames(&mut s.buf, |h, p| {
                if h.payload_len as usize != size {
                    return Err(format!("wrong size {}", h.payload_len));
                }
                let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
                if seq != *next {
                    return Err(format!(
                        "got message {seq}, expected {next} (missed or reordered)"
                    ));
                }
                *next += 1;
                received[(seq - base) as usize] += 1;
                if i != subscribers {
                    deliveries += 1;
                }
                Ok(())
            })
            .map_err(|e| format!("connection {i}: {e}"))?;
        }
        while received.front() == Some(&total) {
            received.pop_front();
            base += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Fanout {
        scenario: "broadcast",
        kind: "",
        subscribers,
        size,
        window,
        messages: base,
        deliveries,
        elapsed,
        cpu_per_delivery: cpu_per_op(pid, cpu0, deliveries),
        also: also.json(deliveries),
    }
    .print();
    Ok(())
}
