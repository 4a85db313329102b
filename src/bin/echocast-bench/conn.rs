//! Client plumbing shared by the scenarios: a blocking opening handshake
//! (the 101 and its `Sec-WebSocket-Accept` checked), registration of the
//! socket with mio, reading until `WouldBlock`, masked frames.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use echocast::proto::FrameHeader;

/// Opens a WebSocket with a blocking handshake; returns the socket and any
/// bytes that followed the 101.
pub(crate) fn handshake(addr: SocketAddr, path: &str) -> io::Result<(StdStream, Vec<u8>)> {
    let (s, _, rest) = handshake_with(addr, &request_bytes(addr, path))?;
    Ok((s, rest))
}

/// Sends `request`, reads the response head and checks the upgrade; returns
/// the socket, the head, and any bytes that followed it.
pub(crate) fn handshake_with(
    addr: SocketAddr,
    request: &[u8],
) -> io::Result<(StdStream, String, Vec<u8>)> {
    let (s, head, rest) = exchange(addr, request)?;
    check_upgrade(&head)?;
    Ok((s, String::from_utf8_lossy(&head).into_owned(), rest))
}

/// Connects, sends `request` and reads the response head (blocking);
/// returns the socket, the head (without its blank line), and any bytes
/// that followed it.
pub(crate) fn exchange(
    addr: SocketAddr,
    request: &[u8],
) -> io::Result<(StdStream, Vec<u8>, Vec<u8>)> {
    let mut s = StdStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::other("EOF during handshake"));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(p + 4);
            buf.truncate(p);
            return Ok((s, buf, rest));
        }
    }
}

/// Makes a connected socket non-blocking and registers it with `poll`.
pub(crate) fn register(
    poll: &Poll,
    s: StdStream,
    token: Token,
    interest: Interest,
) -> io::Result<TcpStream> {
    s.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(s);
    poll.registry().register(&mut stream, token, interest)?;
    Ok(stream)
}

/// The accept value for the key every request of ours sends (RFC 6455 §1.3).
pub(crate) const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Checks a response head: status 101 and the right `Sec-WebSocket-Accept`.
pub(crate) fn check_upgrade(head: &[u8]) -> io::Result<()> {
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

pub(crate) fn request_bytes(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Opens a WebSocket, makes it non-blocking and registers it with `poll`.
pub(crate) fn open_registered(
    poll: &Poll,
    addr: SocketAddr,
    path: &str,
    token: Token,
    interest: Interest,
) -> io::Result<(TcpStream, Vec<u8>)> {
    let (s, rest) = handshake(addr, path)?;
    Ok((register(poll, s, token, interest)?, rest))
}

/// Reads until `WouldBlock`, appending to `into`; EOF is an error (servers under
/// test must not close).
pub(crate) fn read_available(
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

pub(crate) fn masked_frame_op(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
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

/// Takes the complete frames off the front of `buf`, handing `f` each one's
/// header and payload; a close frame, or `f`'s error, stops it with an error.
pub(crate) fn take_frames(
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&FrameHeader, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut pos = 0;
    let mut result = Ok(());
    while let Ok(Some((h, n))) = FrameHeader::decode(&buf[pos..]) {
        let end = pos + n + h.payload_len as usize;
        if buf.len() < end {
            break;
        }
        if h.opcode == 8 {
            result = Err("got a close frame".to_string());
            break;
        }
        if let Err(e) = f(&h, &buf[pos + n..end]) {
            result = Err(e);
            break;
        }
        pos = end;
    }
    buf.drain(..pos);
    result
}
