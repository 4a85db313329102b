//! permessage-deflate scenarios (`echo --deflate`, `idle --deflate`): the
//! client offers `permessage-deflate; client_max_window_bits` (what browsers
//! and Node `ws` offer), compresses every message it sends (RSV1), and
//! inflates every echo before comparing it whole with what was sent.
//! Messages are JSON-like text, each different (a sequence number and words
//! picked from it), so they compress the way real traffic does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use echocast::proto::FrameHeader;

use crate::conn::{handshake_with, masked_frame_op};
use crate::report::{cpu_ns, cpu_per_op, p50_p99_us};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// One client connection with permessage-deflate agreed.
pub(crate) struct DeflateConn {
    stream: TcpStream,
    buf: Vec<u8>,
    compress: Compress,
    inflate: Decompress,
    /// We compress each message on its own (the server asked for it).
    client_no_context: bool,
    /// The server compresses each message on its own.
    server_no_context: bool,
    /// Raw bytes sent, compressed bytes sent, compressed bytes received.
    pub(crate) raw: u64,
    pub(crate) sent_z: u64,
    pub(crate) recv_z: u64,
}

/// A JSON-like message of about `size` bytes, different for every `seq`.
pub(crate) fn json_message(seq: u64, size: usize) -> String {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut s = format!(
        "{{\"seq\":{seq},\"user\":\"user-{}\",\"room\":\"lobby\",\"text\":\"",
        seq % 97
    );
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while s.len() + 40 < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % 16) as usize]);
        s.push(' ');
    }
    s.push_str("\",\"tags\":[\"a\",\"b\"]}");
    while s.len() < size {
        s.push(' ');
    }
    s
}

impl DeflateConn {
    /// Connects and upgrades offering permessage-deflate; fails if the
    /// server declines it.
    pub(crate) fn open(addr: SocketAddr, path: &str) -> io::Result<DeflateConn> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: {OFFER}\r\n\r\n"
        );
        let (s, head, buf) = handshake_with(addr, req.as_bytes())?;
        let head = head.to_ascii_lowercase();
        let ext = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
            .ok_or_else(|| io::Error::other("the server declined permessage-deflate"))?
            .to_string();
        let bits = ext
            .split(';')
            .find_map(|p| p.trim().strip_prefix("client_max_window_bits="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(15u8);
        Ok(DeflateConn {
            stream: s,
            buf,
            compress: Compress::new_with_window_bits(Compression::default(), false, bits.max(9)),
            inflate: Decompress::new_with_window_bits(false, 15),
            client_no_context: ext.contains("client_no_context_takeover"),
            server_no_context: ext.contains("server_no_context_takeover"),
            raw: 0,
            sent_z: 0,
            recv_z: 0,
        })
    }

    /// Sends `text` compressed, as one masked frame with RSV1.
    pub(crate) fn send(&mut self, text: &str) -> io::Result<()> {
        let frame = self.encode(text)?;
        self.stream.write_all(&frame)
    }

    /// `text` compressed, as one masked frame with RSV1.
    pub(crate) fn encode(&mut self, text: &str) -> io::Result<Vec<u8>> {
        if self.client_no_context {
            self.compress.reset();
        }
        let mut z = Vec::with_capacity(text.len() + 64);
        let start = self.compress.total_in();
        while ((self.compress.total_in() - start) as usize) < text.len() || !z.ends_with(&TAIL) {
            let done = (self.compress.total_in() - start) as usize;
            z.reserve(1024);
            self.compress
                .compress_vec(&text.as_bytes()[done..], &mut z, FlushCompress::Sync)
                .map_err(io::Error::other)?;
        }
        z.truncate(z.len() - 4);
        let mut frame = masked_frame_op(1, &z, [0x5a, 0x17, 0xc3, 0x8e]);
        frame[0] |= 0x40;
        self.raw += text.len() as u64;
        self.sent_z += z.len() as u64;
        Ok(frame)
    }

    /// Reads the next data message (control frames skipped), inflating it if
    /// compressed.
    pub(crate) fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut tmp = [0u8; 65536];
        loop {
            if let Ok(Some((h, n))) = FrameHeader::decode(&self.buf) {
                let end = n + h.payload_len as usize;
                if self.buf.len() >= end {
                    let payload: Vec<u8> = self.buf[n..end].to_vec();
                    self.buf.drain(..end);
                    match h.opcode {
                        1 | 2 if !h.fin => return Err(io::Error::other("fragmented echo")),
                        1 | 2 if h.rsv & 4 != 0 => {
                            self.recv_z += payload.len() as u64;
                            return inflate(&mut self.inflate, self.server_no_context, payload);
                        }
                        1 | 2 => return Ok(payload),
                        8 => return Err(io::Error::other("closed by the server")),
                        _ => continue,
                    }
                }
            }
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::other("EOF"));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

/// Inflates one message from the server (`no_context`: it was compressed on
/// its own).
fn inflate(d: &mut Decompress, no_context: bool, mut payload: Vec<u8>) -> io::Result<Vec<u8>> {
    if no_context {
        d.reset(false);
    }
    payload.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(payload.len() * 8 + 1024);
    let mut input = &payload[..];
    loop {
        let before = d.total_in();
        d.decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|e| io::Error::other(format!("message does not inflate: {e}")))?;
        input = &input[(d.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

/// `echo --deflate`: C connections ping-pong (each keeps one message in
/// flight), every echo inflated and compared whole.
pub(crate) fn echo_deflate(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    size: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let mut conns = (0..connections)
        .map(|i| DeflateConn::open(addr, path).map_err(|e| format!("connection {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let cpu0 = pid.and_then(cpu_ns);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let mut seq = 0u64;
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let sent_at = Instant::now();
        let first = seq;
        for c in &mut conns {
            c.send(&json_message(seq, size))
                .map_err(|e| e.to_string())?;
            seq += 1;
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let echo = c.recv().map_err(|e| e.to_string())?;
            if echo != json_message(first + i as u64, size).as_bytes() {
                return Err(format!("echo of message {} differs", first + i as u64));
            }
            latencies.push(sent_at.elapsed());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_per_op(pid, cpu0, seq);
    let (p50, p99) = p50_p99_us(&mut latencies);
    let (raw, sent_z, recv_z) = conns.iter().fold((0, 0, 0), |(a, b, c), k| {
        (a + k.raw, b + k.sent_z, c + k.recv_z)
    });
    let server_ratio = recv_z as f64 / raw as f64;
    let client_ratio = sent_z as f64 / raw as f64;
    println!("scenario     echo (permessage-deflate, JSON-like text)");
    println!("connections  {connections}, {size} B per message, ping-pong");
    println!(
        "messages     {seq} in {secs:.2} s = {:.0}/s",
        seq as f64 / secs
    );
    println!("latency      p50 {p50} us, p99 {p99} us");
    println!("ratio        server {server_ratio:.3}, client {client_ratio:.3} (compressed / raw)");
    if let Some(c) = cpu {
        println!("server CPU   {c:.1} ns per message");
    }
    println!(
        "{{\"scenario\":\"echo-deflate\",\"connections\":{connections},\"size\":{size},\
         \"seconds\":{secs:.3},\"messages\":{seq},\"messages_per_sec\":{:.0},\
         \"latency_p50_us\":{p50},\"latency_p99_us\":{p99},\"server_ratio\":{server_ratio:.4},\
         \"client_ratio\":{client_ratio:.4},\"server_cpu_ns_per_message\":{}}}",
        seq as f64 / secs,
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}

/// A room member of `broadcast --deflate`, read without blocking.
struct Member {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    inflate: Decompress,
    server_no_context: bool,
    next: u64,
    recv_z: u64,
    raw: u64,
}

impl Member {
    fn register(c: DeflateConn, poll: &mio::Poll, token: mio::Token) -> io::Result<Member> {
        c.stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(c.stream);
        poll.registry()
            .register(&mut stream, token, mio::Interest::READABLE)?;
        Ok(Member {
            stream,
            buf: c.buf,
            inflate: c.inflate,
            server_no_context: c.server_no_context,
            next: 0,
            recv_z: 0,
            raw: 0,
        })
    }

    /// Takes every complete message in the buffer: each must be the next in
    /// sequence and equal, once inflated, to what was published.
    fn take_messages(&mut self, base: u64, sent: &VecDeque<String>) -> Result<u64, String> {
        let mut got = 0;
        let mut pos = 0;
        while let Ok(Some((h, n))) = FrameHeader::decode(&self.buf[pos..]) {
            let end = pos + n + h.payload_len as usize;
            if self.buf.len() < end {
                break;
            }
            let payload = self.buf[pos + n..end].to_vec();
            pos = end;
            match h.opcode {
                8 => return Err("got a close frame".into()),
                1 if !h.fin => return Err("fragmented message".into()),
                1 => {}
                _ => continue,
            }
            self.recv_z += payload.len() as u64;
            let text = if h.rsv & 4 != 0 {
                inflate(&mut self.inflate, self.server_no_context, payload)
                    .map_err(|e| e.to_string())?
            } else {
                payload
            };
            self.raw += text.len() as u64;
            let want = self
                .next
                .checked_sub(base)
                .and_then(|i| sent.get(i as usize))
                .ok_or("a message that was not published")?;
            if text != want.as_bytes() {
                return Err(format!(
                    "message {} differs (missed, reordered or corrupted)",
                    self.next
                ));
            }
            self.next += 1;
            got += 1;
        }
        self.buf.drain(..pos);
        Ok(got)
    }
}

/// `broadcast --deflate`: one publisher and C subscribers of one room, all
/// with permessage-deflate; the publisher sends JSON-like text compressed,
/// every member inflates every message and compares it whole with what was
/// published, in order. At most WINDOW messages not yet received by everyone.
pub(crate) fn broadcast_deflate(
    addr: SocketAddr,
    path: &str,
    subscribers: usize,
    size: usize,
    window: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    use mio::{Events, Poll, Token};
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut members = Vec::with_capacity(subscribers + 1);
    for i in 0..subscribers {
        let c = DeflateConn::open(addr, path).map_err(|e| format!("subscriber {i}: {e}"))?;
        members.push(Member::register(c, &poll, Token(i)).map_err(|e| e.to_string())?);
    }
    // The publisher is a member too and checks its own copy; it writes on its
    // blocking clone of the socket (a window of 1 KiB messages fits in the
    // socket buffers, and the members are read between batches).
    let mut publisher = DeflateConn::open(addr, path).map_err(|e| format!("publisher: {e}"))?;
    let mut writer = publisher.stream.try_clone().map_err(|e| e.to_string())?;
    let own = DeflateConn {
        stream: publisher.stream.try_clone().map_err(|e| e.to_string())?,
        buf: std::mem::take(&mut publisher.buf),
        compress: Compress::new(Compression::fast(), false),
        inflate: Decompress::new_with_window_bits(false, 15),
        client_no_context: publisher.client_no_context,
        server_no_context: publisher.server_no_context,
        raw: 0,
        sent_z: 0,
        recv_z: 0,
    };
    members.push(Member::register(own, &poll, Token(subscribers)).map_err(|e| e.to_string())?);
    let total = members.len();

    let mut sent_msgs: VecDeque<String> = VecDeque::new();
    let mut received: VecDeque<usize> = VecDeque::new();
    let (mut base, mut sent, mut deliveries) = (0u64, 0u64, 0u64);
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let cpu0 = pid.and_then(cpu_ns);
    let end = start + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        let mut batch = Vec::new();
        while sent < base + window as u64 {
            let m = json_message(sent, size);
            batch.extend(publisher.encode(&m).map_err(|e| e.to_string())?);
            sent_msgs.push_back(m);
            received.push_back(0);
            sent += 1;
        }
        if !batch.is_empty() {
            writer
                .write_all(&batch)
                .map_err(|e| format!("publisher write: {e}"))?;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let i = ev.token().0;
            let m = &mut members[i];
            crate::conn::read_available(&mut m.stream, &mut m.buf, &mut read_buf)
                .map_err(|e| format!("member {i}: {e}"))?;
            let first = m.next;
            let got = m
                .take_messages(base, &sent_msgs)
                .map_err(|e| format!("member {i}: {e}"))?;
            for seq in first..first + got {
                received[(seq - base) as usize] += 1;
            }
            if i != subscribers {
                deliveries += got;
            }
        }
        while received.front() == Some(&total) {
            received.pop_front();
            sent_msgs.pop_front();
            base += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();

    let (raw, z) = members[..subscribers]
        .iter()
        .fold((0, 0), |(a, b), m| (a + m.raw, b + m.recv_z));
    let ratio = z as f64 / raw.max(1) as f64;
    let rate = deliveries as f64 / elapsed;
    let cpu_per = cpu_per_op(pid, cpu0, deliveries);
    println!("scenario     broadcast (permessage-deflate, JSON-like text)");
    println!("subscribers  {subscribers}, {size} B per message, window {window}");
    println!("messages     {base} fully delivered");
    println!("deliveries   {deliveries} in {elapsed:.2} s = {rate:.0}/s");
    println!("ratio        {ratio:.3} (compressed / raw, server to subscribers)");
    if let Some(c) = cpu_per {
        println!("server CPU   {c:.0} ns per delivery");
    }
    println!(
        "{{\"scenario\":\"broadcast-deflate\",\"subscribers\":{subscribers},\"size\":{size},\
         \"window\":{window},\"seconds\":{elapsed:.3},\"messages\":{base},\
         \"deliveries\":{deliveries},\"deliveries_per_sec\":{rate:.0},\"server_ratio\":{ratio:.4},\
         \"server_cpu_ns_per_delivery\":{}}}",
        cpu_per.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}
