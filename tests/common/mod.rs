//! Helpers shared by the integration tests: a minimal WebSocket client over a
//! blocking std socket, and frame builders for sans-IO conversations.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use echocast::proto::handshake::accept_key;
use echocast::proto::FrameHeader;

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

pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A blocking test client.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
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
        let mut c = Client::raw(addr);
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

    pub fn expect_text(&mut self) -> String {
        let (fin, op, p) = self.read_frame();
        assert!(fin);
        assert_eq!(op, 1, "expected a text frame, got opcode {op}");
        String::from_utf8(p).unwrap()
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
