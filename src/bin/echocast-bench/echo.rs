//! `echo`: C connections with P messages in flight; every echo's sequence
//! number, and every byte of one message in 64, checked as the bytes arrive.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use echocast::proto::FrameHeader;

use crate::conn::{masked_frame_op, open_registered, read_available};
use crate::report::cpu_ns;

/// The payload of message `seq`: its number in ASCII digits (the last
/// `min(size, 20)` of 20), then `e` filler, so text and binary both carry it
/// and every echo can be checked exactly. This returns the digits.
pub(crate) fn echo_digits(seq: u64, size: usize) -> [u8; 20] {
    let mut d = [b'e'; 20];
    let all = format!("{seq:020}");
    let n = size.min(20);
    d[..n].copy_from_slice(&all.as_bytes()[20 - n..]);
    d
}

/// Messages up to this size are copied whole into the output buffer; larger
/// ones are sent as a patched prefix plus the shared, pre-masked template.
pub(crate) const SMALL: usize = 4096;

/// One piece of a connection's output.
pub(crate) enum Seg {
    Bytes(Vec<u8>),
    /// The template from this offset to its end (shared, never copied).
    Template(usize),
}

/// The echo being received: frames are checked as their bytes arrive and
/// never accumulated, so a 16 MiB echo costs the client one pass.
#[derive(Default)]
pub(crate) struct Rx {
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

pub(crate) struct EchoConn {
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

/// Where a message's sequence digits are and what surrounds them: at 0 in
/// `e` filler, or (`--json`) inside `{"pad":"eee…","seq":"DIGITS","type":"bench"}`
/// (keys in the order a JSON serializer with sorted keys writes them, so a
/// stub that rebuilds the object answers the same bytes).
pub(crate) struct Layout {
    /// The payload with message 0's digits.
    pub(crate) payload: Vec<u8>,
    pub(crate) digits_at: usize,
}

impl Layout {
    pub(crate) fn new(size: usize, json: bool) -> Result<Layout, String> {
        if !json {
            let mut payload = vec![b'e'; size];
            payload[..size.min(20)].copy_from_slice(&echo_digits(0, size)[..size.min(20)]);
            return Ok(Layout {
                payload,
                digits_at: 0,
            });
        }
        let frame = |pad: usize| {
            format!(
                r#"{{"pad":"{}","seq":"{}","type":"bench"}}"#,
                "e".repeat(pad),
                std::str::from_utf8(&echo_digits(0, 20)).unwrap_or_default()
            )
        };
        let min = frame(0).len();
        if size < min {
            return Err(format!("--json needs a size of at least {min} bytes"));
        }
        let payload = frame(size - min).into_bytes();
        let digits_at = payload.len() - r#"","type":"bench"}"#.len() - 20;
        Ok(Layout { payload, digits_at })
    }

    fn digits(&self, size: usize) -> usize {
        if self.digits_at == 0 {
            size.min(20)
        } else {
            20
        }
    }
}

/// Checks `bytes`, found at `off` in the echo of a message of `size` bytes:
/// the digits always, every other byte in one message of 64.
pub(crate) fn check_echo(rx: &Rx, off: usize, bytes: &[u8], size: usize, layout: &Layout) -> bool {
    let (d0, d1) = (layout.digits_at, layout.digits_at + layout.digits(size));
    let end = off + bytes.len();
    let (lo, hi) = (off.max(d0), end.min(d1));
    if lo < hi && bytes[lo - off..hi - off] != rx.digits[lo - d0..hi - d0] {
        return false;
    }
    if rx.full {
        let before = off..end.min(d0);
        let after = off.max(d1)..end;
        for r in [before, after] {
            if r.start < r.end && bytes[r.start - off..r.end - off] != layout.payload[r.clone()] {
                return false;
            }
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn echo(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    size: usize,
    pipeline: usize,
    text: bool,
    json: bool,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let layout = Layout::new(size, json)?;
    let text = text || json;
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
    let template = masked_frame_op(opcode, &layout.payload, key);
    let hdr_len = template.len() - size;
    let digits = layout.digits(size);
    let at = layout.digits_at;
    let prefix = hdr_len + at + digits;
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
                    p[hdr_len + at + i] = d[i] ^ key[(at + i) % 4];
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
                    if c.rx.len + n > size || !check_echo(&c.rx, c.rx.len, bytes, size, &layout) {
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
                            digits: echo_digits(c.received, if at == 0 { size } else { 20 }),
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
