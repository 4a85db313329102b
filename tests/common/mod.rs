//! Helpers shared by the integration tests: a minimal WebSocket client over a
//! blocking std socket, and frame builders for sans-IO conversations.
#![allow(dead_code)]

pub mod redis;
pub mod rooms;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use echocast::proto::handshake::accept_key;
use echocast::proto::{Connection, FrameHeader};

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let hdr = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let (h, n) = hdr.encode();
    let mut out = h[..n].to_vec();
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

pub fn text(payload: &str) -> Vec<u8> {
    client_frame(true, 1, payload.as_bytes(), [0x11, 0x22, 0x33, 0x44])
}

/// Parses unmasked server frames: (fin, opcode, payload), and the bytes left over.
pub fn parse_frames(mut bytes: &[u8]) -> (Vec<(bool, u8, Vec<u8>)>, usize) {
    let mut frames = Vec::new();
    loop {
        match FrameHeader::decode(bytes) {
            Ok(Some((h, n))) if bytes.len() >= n + h.payload_len as usize => {
                assert!(h.mask.is_none(), "server frames are never masked");
                assert_eq!(h.rsv, 0);
                let end = n + h.payload_len as usize;
                frames.push((h.fin, h.opcode, bytes[n..end].to_vec()));
                bytes = &bytes[end..];
            }
            _ => return (frames, bytes.len()),
        }
    }
}

/// The server frames written after the 101 response, and the bytes of a
/// partial frame left over.
pub fn frames_after_101(written: &[u8]) -> (Vec<(bool, u8, Vec<u8>)>, usize) {
    let pos = written
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("101 response");
    assert!(written.starts_with(b"HTTP/1.1 101 "));
    parse_frames(&written[pos + 4..])
}

/// A sans-IO peer reading: takes the connection's output into `written`,
/// one front chunk at a time, until it is empty or `written` holds `limit`
/// bytes (`usize::MAX`: everything).
pub fn read_output(conn: &mut Connection, written: &mut Vec<u8>, limit: usize) {
    while conn.output_len() > 0 && written.len() < limit {
        let front = conn.output_front();
        let take = front.len().min(limit - written.len());
        written.extend_from_slice(&front[..take]);
        conn.consume_output(take);
    }
}

pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A blocking test client.
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    /// Connects without any handshake.
    pub fn raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// A client on an already connected socket (e.g. a clone of another
    /// client's socket, to read and write from two threads).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes the opening handshake, checking the 101.
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        Client::raw(addr).handshake(path)
    }

    /// Connects with a small receive buffer (set before `connect`, when the
    /// window scale is fixed): on loopback the kernel would otherwise let an
    /// unread receive buffer grow to 32 MiB and hide the server's
    /// backpressure (see ../shared/tooling.md). Then the opening handshake.
    pub fn connect_small_rcvbuf(addr: SocketAddr, path: &str, rcvbuf: usize) -> Client {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client::from_stream(stream).handshake(path)
    }

    /// Sends the upgrade request and checks the 101.
    pub fn handshake(self, path: &str) -> Client {
        let mut c = self;
        c.send_raw(upgrade_request(path).as_bytes());
        let head = c.read_http_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let expected = format!("Sec-WebSocket-Accept: {}", accept_key(KEY.as_bytes()));
        assert!(head.contains(&expected), "{head}");
        c
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_text(&mut self, s: &str) {
        self.send_raw(&text(s));
    }

    pub fn send_binary(&mut self, b: &[u8]) {
        self.send_raw(&client_frame(true, 2, b, [9, 8, 7, 6]));
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp).expect("read");
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Reads an HTTP response head (and body by Content-Length) as text.
    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return String::from_utf8(head).unwrap();
            }
            assert!(self.fill() > 0, "EOF before the response head");
        }
    }

    /// Reads a whole HTTP response: (head, body).
    pub fn read_http_response(&mut self) -> (String, Vec<u8>) {
        let head = self.read_http_head();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while self.buf.len() < len {
            assert!(self.fill() > 0, "EOF in body");
        }
        let body = self.buf.drain(..len).collect();
        (head, body)
    }

    /// Reads one server frame.
    pub fn read_frame(&mut self) -> (bool, u8, Vec<u8>) {
        loop {
            if let Ok(Some((h, n))) = FrameHeader::decode(&self.buf) {
                let end = n + h.payload_len as usize;
                if self.buf.len() >= end {
                    assert!(h.mask.is_none());
                    let payload = self.buf[n..end].to_vec();
                    self.buf.drain(..end);
                    return (h.fin, h.opcode, payload);
                }
            }
            assert!(self.fill() > 0, "EOF while waiting for a frame");
        }
    }

    /// Reads one server frame, or `None` if the read timeout passes first
    /// (what was read of a frame is kept for the next call).
    pub fn try_read_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        loop {
            if let Ok(Some((h, n))) = FrameHeader::decode(&self.buf) {
                if self.buf.len() >= n + h.payload_len as usize {
                    return Some(self.read_frame());
                }
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => panic!("EOF while waiting for a frame"),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads one data message, reassembling fragments (control frames in
    /// between are skipped); returns (opcode, payload, frames it came in).
    pub fn read_message(&mut self) -> (u8, Vec<u8>, usize) {
        let mut msg: Option<(u8, Vec<u8>)> = None;
        let mut frames = 0;
        loop {
            let (fin, op, p) = self.read_frame();
            match op {
                0 => msg
                    .as_mut()
                    .expect("continuation outside a message")
                    .1
                    .extend_from_slice(&p),
                1 | 2 => {
                    assert!(msg.is_none(), "data frame inside a fragmented message");
                    msg = Some((op, p));
                }
                _ => continue,
            }
            frames += 1;
            if fin {
                let (op, p) = msg.unwrap();
                return (op, p, frames);
            }
        }
    }

    pub fn expect_text(&mut self) -> String {
        let (fin, op, p) = self.read_frame();
        assert!(fin);
        assert_eq!(op, 1, "expected a text frame, got opcode {op}");
        String::from_utf8(p).unwrap()
    }

    /// Reads binary data frames (pieces of a streamed echo) until a close
    /// frame; returns its code and how many data bytes came before it.
    pub fn expect_close_after_data(&mut self) -> (Option<u16>, usize) {
        let mut echoed = 0;
        loop {
            let (_, op, p) = self.read_frame();
            match op {
                0 | 2 => echoed += p.len(),
                8 => return (close_code(&p), echoed),
                _ => panic!("unexpected opcode {op} before the close"),
            }
        }
    }

    /// Reads a close frame and returns its code.
    pub fn expect_close(&mut self) -> Option<u16> {
        let (_, op, p) = self.read_frame();
        assert_eq!(op, 8, "expected close, got opcode {op} {p:?}");
        close_code(&p)
    }

    /// Reads until the server closes the TCP connection; returns what came.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return rest,
                Ok(n) => rest.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return rest,
                Err(e) => panic!("waiting for EOF: {e}"),
            }
        }
    }
}

/// The echocast binary on 127.0.0.1:0 with extra arguments, and its address.
/// A child process that is killed when dropped, also when a test panics (so a
/// failed test leaves no server running).
pub struct Spawned(pub Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_binary(args: &[&str]) -> (Spawned, SocketAddr) {
    spawn_command(Command::new(env!("CARGO_BIN_EXE_echocast")).args(args))
}

/// Runs a command that prints `listening on ws://ADDR` (or `wss://`) first (it gets
/// `--listen 127.0.0.1:0` appended).
pub fn spawn_command(cmd: &mut Command) -> (Spawned, SocketAddr) {
    let (server, line) = spawn_first_line(cmd.args(["--listen", "127.0.0.1:0"]));
    let addr = line
        .trim()
        .strip_prefix("listening on ws://")
        .or_else(|| line.trim().strip_prefix("listening on wss://"))
        .unwrap_or_else(|| panic!("{line:?}"));
    (server, addr.parse().unwrap())
}

/// Runs a command and returns it with the first line it prints.
pub fn spawn_first_line(cmd: &mut Command) -> (Spawned, String) {
    spawn_first_line_to(cmd, Stdio::null())
}

/// The echocast binary on 127.0.0.1:0 with extra arguments, its log (stderr)
/// going to `log`.
pub fn spawn_logged(args: &[&str], log: &std::path::Path) -> (Spawned, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echocast"));
    cmd.args(args).args(["--listen", "127.0.0.1:0"]);
    let (server, line) = spawn_first_line_to(&mut cmd, std::fs::File::create(log).unwrap().into());
    let addr = line.trim().trim_start_matches("listening on ws://");
    (server, addr.parse().unwrap_or_else(|_| panic!("{line:?}")))
}

fn spawn_first_line_to(cmd: &mut Command, stderr: Stdio) -> (Spawned, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Spawned(child), line)
}

/// Resident memory of a process, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

/// CPU time (user + system) of a process in clock ticks, from /proc.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A fresh client gets its echo: the server is alive and serving.
pub fn assert_serving(addr: SocketAddr) {
    let mut c = Client::connect(addr, "/");
    c.send_text("still there?");
    assert_eq!(c.expect_text(), "still there?");
}

/// A plain `GET path` (no upgrade); returns the response head and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut c = Client::raw(addr);
    c.send_raw(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    c.read_http_response()
}
