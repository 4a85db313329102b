//! `h2-echo` and `h2-idle`: WebSockets over HTTP/2 (RFC 8441, h2c with
//! prior knowledge). `h2-echo` opens C WebSocket streams on one connection,
//! each keeping P binary messages in flight, every echo's sequence digits
//! checked; `h2-idle` holds C WebSocket streams (up to 1,000 per connection,
//! the server's stream limit) and reports the server's RSS per stream. The
//! client's windows are raised to 2^30 at the start, so the server never
//! waits for ours; the server's windows are honoured.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loona_hpack::{Decoder, Encoder};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use echocast::proto::h2::frame::{self, Head};
use echocast::proto::h2::PREFACE;
use echocast::proto::FrameHeader;

use crate::conn::masked_frame_op;
use crate::echo::echo_digits;
use crate::report::{cpu_ns, cpu_per_op, rss_kib};

const OUR_WINDOW: u32 = 1 << 30;

struct Stream {
    /// WebSocket bytes to send, not yet framed.
    pending: VecDeque<u8>,
    send_window: i64,
    rx: Vec<u8>,
    sent: u64,
    received: u64,
    open: bool,
}

/// One HTTP/2 connection carrying WebSocket streams (ids 1, 3, 5, …).
struct H2 {
    sock: std::net::TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    decoder: Decoder<'static>,
    send_window: i64,
    peer_initial: i64,
    streams: Vec<Stream>,
}

impl H2 {
    /// Connects, exchanges SETTINGS and opens `count` WebSocket streams on
    /// `path`, each answered `:status 200`.
    fn open(addr: SocketAddr, path: &str, count: usize) -> io::Result<H2> {
        let sock = std::net::TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        let mut h = H2 {
            sock,
            inbuf: Vec::new(),
            out: PREFACE.to_vec(),
            decoder: Decoder::new(),
            send_window: frame::DEFAULT_WINDOW,
            peer_initial: frame::DEFAULT_WINDOW,
            streams: Vec::new(),
        };
        frame::put_settings(
            &mut h.out,
            &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, OUR_WINDOW)],
            false,
        );
        frame::put_window_update(&mut h.out, 0, OUR_WINDOW - 65_535);
        let mut encoder = Encoder::new();
        let authority = addr.to_string();
        for i in 0..count {
            let fields: [(&[u8], &[u8]); 6] = [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":path", path.as_bytes()),
                (b":authority", authority.as_bytes()),
                (b"sec-websocket-version", b"13"),
            ];
            let block = encoder.encode(fields);
            frame::put_headers(&mut h.out, 1 + 2 * i as u32, &block, false, 16_384);
            h.streams.push(Stream {
                pending: VecDeque::new(),
                send_window: frame::DEFAULT_WINDOW,
                rx: Vec::new(),
                sent: 0,
                received: 0,
                open: false,
            });
        }
        let out = std::mem::take(&mut h.out);
        h.sock.write_all(&out)?;
        let mut buf = vec![0u8; 64 * 1024];
        while h.streams.iter().any(|s| !s.open) {
            let n = h.sock.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::other("the server closed during setup"));
            }
            h.take(&buf[..n])?;
            let out = std::mem::take(&mut h.out);
            h.sock.write_all(&out)?;
        }
        Ok(h)
    }

    /// Frames from the server: windows, SETTINGS (acked), PING (answered),
    /// HEADERS (`:status 200`), DATA into each stream's `rx`.
    fn take(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inbuf.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(h) = Head::parse(&self.inbuf[at..]) {
            let end = at + 9 + h.len;
            if end > self.inbuf.len() {
                break;
            }
            let p = &self.inbuf[at + 9..end];
            let index = (h.stream.max(1) as usize - 1) / 2;
            match h.kind {
                frame::SETTINGS if !h.has(frame::ACK) => {
                    for s in p.chunks_exact(6) {
                        if u16::from_be_bytes([s[0], s[1]]) == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                            let v = i64::from(u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                            for st in &mut self.streams {
                                st.send_window += v - self.peer_initial;
                            }
                            self.peer_initial = v;
                        }
                    }
                    frame::put_settings(&mut self.out, &[], true);
                }
                frame::WINDOW_UPDATE => {
                    let inc = i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
                    match self.streams.get_mut(index).filter(|_| h.stream != 0) {
                        Some(s) => s.send_window += inc,
                        None => self.send_window += inc,
                    }
                }
                frame::PING if !h.has(frame::ACK) => frame::put_ping_ack(&mut self.out, p),
                frame::HEADERS => {
                    let fields = self
                        .decoder
                        .decode(p)
                        .map_err(|e| io::Error::other(format!("HPACK: {e:?}")))?;
                    let status = fields.iter().find(|(n, _)| n == b":status");
                    if status.map(|(_, v)| &v[..]) != Some(b"200") {
                        return Err(io::Error::other(format!(
                            "stream {}: answered {:?}",
                            h.stream,
                            status.map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        )));
                    }
                    if let Some(s) = self.streams.get_mut(index) {
                        s.open = true;
                    }
                }
                frame::DATA => {
                    if let Some(s) = self.streams.get_mut(index) {
                        s.rx.extend_from_slice(p);
                    }
                }
                frame::RST_STREAM | frame::GOAWAY => {
                    return Err(io::Error::other(format!(
                        "the server sent frame type {} on stream {}",
                        h.kind, h.stream
                    )));
                }
                _ => {}
            }
            at = end;
        }
        self.inbuf.drain(..at);
        Ok(())
    }

    /// Frames what the streams have pending as DATA, within the windows.
    fn frame_pending(&mut self) {
        for (i, s) in self.streams.iter_mut().enumerate() {
            while !s.pending.is_empty() && s.send_window > 0 && self.send_window > 0 {
                let n = s
                    .pending
                    .len()
                    .min(16_384)
                    .min(s.send_window as usize)
                    .min(self.send_window as usize);
                let chunk: Vec<u8> = s.pending.drain(..n).collect();
                frame::put_data(&mut self.out, 1 + 2 * i as u32, &chunk, false);
                s.send_window -= n as i64;
                self.send_window -= n as i64;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn h2_echo(
    addr: SocketAddr,
    path: &str,
    streams: usize,
    size: usize,
    pipeline: usize,
    text: bool,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let mut h = H2::open(addr, path, streams).map_err(|e| format!("setup: {e}"))?;
    let key = [0x3c, 0x91, 0x07, 0xe2];
    let mut payload = vec![b'e'; size];
    let digits = size.min(20);
    let opcode = if text { 1 } else { 2 };
    let template = masked_frame_op(opcode, &payload, key);
    let hdr = template.len() - size;
    h.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::from_std(h.sock.try_clone().map_err(|e| e.to_string())?);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(16);
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let cpu0 = pid.and_then(cpu_ns);
    let mut total = 0u64;
    let mut out_pos = 0;
    let top_up = |h: &mut H2| {
        for s in h.streams.iter_mut() {
            while s.sent - s.received < pipeline as u64 {
                let d = echo_digits(s.sent, size);
                let mut f = template.clone();
                for i in 0..digits {
                    f[hdr + i] = d[i] ^ key[i % 4];
                }
                s.pending.extend(f);
                s.sent += 1;
            }
        }
        h.frame_pending();
    };
    top_up(&mut h);
    payload.clear();
    while Instant::now() < end {
        // Write what is framed.
        while out_pos < h.out.len() {
            match sock.write(&h.out[out_pos..]) {
                Ok(n) => out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if out_pos == h.out.len() {
            h.out.clear();
            out_pos = 0;
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => h.take(&buf[..n]).map_err(|e| e.to_string())?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        for (i, s) in h.streams.iter_mut().enumerate() {
            let mut pos = 0;
            while let Ok(Some((fh, n))) = FrameHeader::decode(&s.rx[pos..]) {
                let fend = pos + n + fh.payload_len as usize;
                if fend > s.rx.len() {
                    break;
                }
                let want = echo_digits(s.received, size);
                if fh.opcode != opcode
                    || fh.payload_len as usize != size
                    || s.rx[pos + n..pos + n + digits] != want[..digits]
                {
                    return Err(format!("stream {}: echo {} differs", 1 + 2 * i, s.received));
                }
                s.received += 1;
                total += 1;
                pos = fend;
            }
            s.rx.drain(..pos);
        }
        top_up(&mut h);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_per_op(pid, cpu0, total);
    let rate = total as f64 / elapsed;
    println!("scenario     h2-echo (WebSockets over HTTP/2, h2c)");
    println!("streams      {streams} on one connection");
    println!(
        "size         {size} B {}",
        if text { "text" } else { "binary" }
    );
    println!("pipeline     {pipeline}");
    println!("messages     {total} in {elapsed:.2} s = {rate:.0}/s");
    if let Some(c) = cpu {
        println!("server CPU   {c:.0} ns per message");
    }
    println!(
        "{{\"scenario\":\"h2-echo\",\"streams\":{streams},\"size\":{size},\"text\":{text},\"pipeline\":{pipeline},\
         \"seconds\":{elapsed:.3},\"messages\":{total},\"messages_per_sec\":{rate:.0},\
         \"server_cpu_ns_per_message\":{}}}",
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}

pub(crate) fn h2_idle(
    addr: SocketAddr,
    path: &str,
    streams: usize,
    pid: u32,
) -> Result<(), String> {
    const PER_CONNECTION: usize = 1000;
    // One connection with one stream first, not counted (as `idle` does).
    let warm = H2::open(addr, path, 1).map_err(|e| format!("setup: {e}"))?;
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let mut held = Vec::new();
    let mut left = streams;
    while left > 0 {
        let n = left.min(PER_CONNECTION);
        held.push(H2::open(addr, path, n).map_err(|e| format!("setup: {e}"))?);
        left -= n;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let per = (after.saturating_sub(before) as f64 * 1024.0) / streams as f64;
    println!("scenario     h2-idle (WebSocket streams over HTTP/2, h2c)");
    println!("streams      {streams} on {} connections", held.len());
    println!("server RSS   {before} KiB before, {after} KiB after");
    println!("per stream   {per:.0} B");
    println!(
        "{{\"scenario\":\"h2-idle\",\"streams\":{streams},\"connections\":{},\"rss_before_kib\":{before},\
         \"rss_after_kib\":{after},\"rss_bytes_per_stream\":{per:.0}}}",
        held.len()
    );
    drop((warm, held));
    Ok(())
}
