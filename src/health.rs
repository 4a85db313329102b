//! `echocast health [ADDR]`: ask a running server's `GET /healthz` and say
//! whether it answered 200. Made for a container's `HEALTHCHECK` in an image
//! with no shell and no curl; plain std networking, no name resolution.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Requests `http://ADDR/healthz` and returns `Ok` with the status line when
/// the server answered `200`, else `Err` with one line saying what went wrong
/// (nothing listening, not HTTP, another status, no answer within
/// `timeout`). An unspecified address (`0.0.0.0`, `::`) is asked on loopback,
/// where a server bound to every interface also listens.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{addr}: cannot connect: {e}"))?;
    let io_err = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| format!("{addr}: cannot send the request: {e}"))?;
    // The status line is all we need; a server's is far shorter than 256 bytes.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 256 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{addr}: no answer to GET /healthz: {e}")),
        }
    }
    if head.is_empty() {
        return Err(format!(
            "{addr}: the connection closed without an answer to GET /healthz"
        ));
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim_end().to_string();
    let mut words = line.split(' ');
    let version = words.next().unwrap_or_default();
    let status = words.next().and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200) if version.starts_with("HTTP/1.") => Ok(format!("{addr}: {line}")),
        Some(_) if version.starts_with("HTTP/1.") => {
            Err(format!("{addr}: GET /healthz answered {line:?}, not 200"))
        }
        _ => Err(format!(
            "{addr}: the answer is not HTTP (it starts {:?})",
            line.chars().take(40).collect::<String>()
        )),
    }
}
