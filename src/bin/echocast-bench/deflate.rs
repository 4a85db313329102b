//! permessage-deflate scenarios (`echo --deflate`, `idle --deflate`): the
//! client offers `permessage-deflate; client_max_window_bits` (what browsers
//! and Node `ws` offer), compresses every message it sends (RSV1), and
//! inflates every echo before comparing it whole with what was sent.
//! Messages are JSON-like text, each different (a sequence number and words
//! picked from it), so they compress the way real traffic does.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use echocast::proto::FrameHeader;

use crate::conn::{handshake_with, masked_frame_op};
use crate::report::cpu_ns;

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
        self.stream.write_all(&frame)
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
                            return self.inflate(payload);
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

    fn inflate(&mut self, mut payload: Vec<u8>) -> io::Result<Vec<u8>> {
        if self.server_no_context {
            self.inflate.reset(false);
        }
        payload.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(payload.len() * 8 + 1024);
        let mut input = &payload[..];
        loop {
            let before = self.inflate.total_in();
            self.inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|e| io::Error::other(format!("echo does not inflate: {e}")))?;
            input = &input[(self.inflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity());
        }
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
    let cpu = match (cpu0, pid.and_then(cpu_ns)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / seq as f64),
        _ => None,
    };
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_micros();
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
    println!("latency      p50 {} us, p99 {} us", pct(0.5), pct(0.99));
    println!("ratio        server {server_ratio:.3}, client {client_ratio:.3} (compressed / raw)");
    if let Some(c) = cpu {
        println!("server CPU   {c:.1} ns per message");
    }
    println!(
        "{{\"scenario\":\"echo-deflate\",\"connections\":{connections},\"size\":{size},\
         \"seconds\":{secs:.3},\"messages\":{seq},\"messages_per_sec\":{:.0},\
         \"latency_p50_us\":{},\"latency_p99_us\":{},\"server_ratio\":{server_ratio:.4},\
         \"client_ratio\":{client_ratio:.4},\"server_cpu_ns_per_message\":{}}}",
        seq as f64 / secs,
        pct(0.5),
        pct(0.99),
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}
