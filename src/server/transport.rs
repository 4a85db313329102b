//! The transport: a socket and its record layer, the bytes in and out of
//! one connection whatever the session on it ([`Transport`]). A socket is
//! not a session: the session is the sans-IO [`Connection`] the bytes go to
//! (a WebSocket in the server or the client role, an HTTP exchange); a slot
//! of the table holds one transport and its session, and a proxied pair is
//! two slots. Plain TCP, or TLS (rustls) when the server has a certificate
//! or when we connect to a `wss://` upstream. rustls is sans-IO like the
//! core, so the layer is two state machines back to back: ciphertext read
//! into the loop's read buffer goes into `read_tls`, `process_new_packets`
//! decrypts it, and the plaintext is fed to `Connection::receive`; the
//! core's output goes into rustls's `writer()` (bounded: rustls stops taking
//! plaintext once 64 KiB of records are unsent, so backpressure stays the
//! core's), and `write_tls` writes the records. `proto/` never sees TLS.
//!
//! One port serves both: with TLS on, the first byte of a connection decides
//! (0x16 opens a TLS handshake record, RFC 8446 §5.1; an HTTP request starts
//! with a letter). Shutdown: once the core asks for the write half to be shut
//! (after its close frame), a TLS connection sends `close_notify` first and
//! shuts the socket down once that is written. A TLS error (a bad record, a
//! record over 2^14 + 256 bytes, garbage after the ClientHello) sends rustls's
//! alert and drops the connection. Owns `Transport` and `Tls`; called from
//! io.rs.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection, ServerConnection};

use crate::proto::Connection;
use crate::tls::TlsConfig;

/// Slices per write into rustls.
const MAX_IOV: usize = 64;

/// What rustls holds for one connection, as counted against `--max-memory`:
/// the connection state, a record being received (at most 2^14 + 2,048 bytes
/// of ciphertext, RFC 8446 §5.2) and up to 64 KiB of records not yet written
/// (the buffer limit below) — a bound, not a measurement.
const TLS_BYTES: usize = std::mem::size_of::<rustls::Connection>() + 18 * 1024;

/// Unsent TLS records rustls keeps at most before it stops taking plaintext.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The first byte of a TLS handshake record (RFC 8446 §5.1, `ContentType`).
const HANDSHAKE_RECORD: u8 = 0x16;

/// A connection's socket and, once decided, its TLS record layer.
pub(super) struct Transport {
    stream: TcpStream,
    /// With TLS on, a connection whose session has seen no byte and that
    /// has no TLS layer yet is still to be decided (`sniff`).
    tls: Option<Box<Tls>>,
}

impl Transport {
    /// A socket, plain until its first bytes say otherwise.
    pub(super) fn new(stream: TcpStream) -> Transport {
        Transport { stream, tls: None }
    }

    /// A socket we opened with TLS to its server (a `wss://` upstream).
    pub(super) fn with_tls(stream: TcpStream, tls: Box<Tls>) -> Transport {
        Transport {
            stream,
            tls: Some(tls),
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The peer's address (a syscall: asked only where it is shown).
    pub(super) fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// What the record layer holds, as counted against `--max-memory`.
    pub(super) fn memory(&self) -> usize {
        self.tls.as_ref().map_or(0, |_| TLS_BYTES)
    }

    /// Reads ciphertext (or plaintext) from the socket.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    /// With TLS on, the first bytes decide: a TLS handshake record starts
    /// TLS, anything else stays plain.
    pub(super) fn sniff(&mut self, first: &[u8], config: &TlsConfig) -> Result<(), String> {
        self.tls = sniff(first, config)?;
        Ok(())
    }

    /// Bytes read from the socket, into `session`: decrypted first with TLS
    /// (through `plain`, the loop's second buffer). An error means the
    /// connection must go once rustls's alert (if any) is written.
    pub(super) fn receive(
        &mut self,
        bytes: &[u8],
        plain: &mut [u8],
        session: &mut Connection,
        now: Instant,
    ) -> Result<(), String> {
        match self.tls.as_mut() {
            None => {
                session.receive(bytes, now);
                Ok(())
            }
            Some(tls) => tls.receive(bytes, plain, session, now),
        }
    }

    /// The socket reached EOF or failed.
    pub(super) fn receive_eof(&mut self, session: &mut Connection, now: Instant) {
        match self.tls.as_mut() {
            Some(tls) => tls.receive_eof(session, now),
            None => session.receive_eof(now),
        }
    }

    /// Writes the session's output until it is all written or the socket
    /// would block; vectored writes, one plain `write` when the output is
    /// one chunk (a room's run, a tail of echoes).
    pub(super) fn flush(&mut self, session: &mut Connection) -> io::Result<()> {
        if let Some(tls) = self.tls.as_mut() {
            return tls.flush(&mut self.stream, session);
        }
        loop {
            let written = {
                let front = session.output_front();
                if front.is_empty() {
                    return Ok(());
                }
                if front.len() == session.output_len() {
                    self.stream.write(front)
                } else {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = session.fill_output(&mut slices);
                    self.stream.write_vectored(&slices[..n])
                }
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => session.consume_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The session wants the write half shut (after its last bytes): with
    /// TLS, `close_notify` goes first.
    pub(super) fn shutdown(&mut self, session: &mut Connection) {
        match self.tls.as_mut() {
            Some(tls) => tls.shutdown(&mut self.stream, session),
            None => {
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
    }

    /// Makes the close a TCP reset (SO_LINGER 0): the `drop=N&reset=1` knob.
    pub(super) fn reset(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO))
    }
}

/// One TLS connection's record layer: a connection we accepted (server),
/// or one we opened to a proxy's `wss://` upstream (client).
pub(super) struct Tls {
    conn: rustls::Connection,
    /// The core asked for the write half to be shut: `close_notify` is
    /// queued and the socket is shut down once the records are written.
    shutdown_pending: bool,
    /// The peer's `close_notify` (or EOF) was passed to the core.
    eof_seen: bool,
}

/// The largest record a ClientHello may come in: a plaintext record carries
/// at most 2^14 bytes (RFC 8446 §5.1, RFC 5246 §6.2.1). rustls, which cannot
/// know the version yet, accepts headers up to the TLS 1.2 ciphertext limit
/// (2^14 + 2048) there and then waits for the whole record.
const MAX_PLAINTEXT_RECORD: usize = 1 << 14;

/// Decides the transport from a connection's first bytes: a TLS handshake
/// record starts TLS, anything else stays plain. A first record declaring
/// more than 2^14 bytes is refused at once (rather than waited for until the
/// handshake timeout).
fn sniff(first: &[u8], config: &TlsConfig) -> Result<Option<Box<Tls>>, String> {
    if first.first() != Some(&HANDSHAKE_RECORD) {
        return Ok(None);
    }
    if let Some(len) = first
        .get(3..5)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
    {
        if len > MAX_PLAINTEXT_RECORD {
            return Err(format!(
                "record_overflow: the first record declares {len} bytes; a plaintext record \
                 carries at most 16384 (RFC 8446 §5.1: \"The length MUST NOT exceed 2^14 bytes\")"
            ));
        }
    }
    let mut conn = ServerConnection::new(config.clone()).map_err(|e| e.to_string())?;
    conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(Some(Box::new(Tls {
        conn: conn.into(),
        shutdown_pending: false,
        eof_seen: false,
    })))
}

/// The record layer of a connection we open to `name` (a proxy's `wss://`
/// upstream): its ClientHello is queued, written with the first flush.
pub(super) fn client(config: Arc<ClientConfig>, name: &str) -> Result<Box<Tls>, String> {
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name}: {e}"))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(Box::new(Tls {
        conn: conn.into(),
        shutdown_pending: false,
        eof_seen: false,
    }))
}

impl Tls {
    /// Feeds ciphertext read from the socket: decrypts it and passes the
    /// plaintext to the core, through `plain` (the loop's second buffer).
    /// An error means the connection must be dropped once rustls's alert
    /// (if any) is written.
    pub(super) fn receive(
        &mut self,
        mut cipher: &[u8],
        plain: &mut [u8],
        proto: &mut Connection,
        now: Instant,
    ) -> Result<(), String> {
        while !cipher.is_empty() {
            self.conn.read_tls(&mut cipher).map_err(|e| e.to_string())?;
            self.conn.process_new_packets().map_err(|e| e.to_string())?;
            loop {
                match self.conn.reader().read(plain) {
                    // The peer's close_notify: a clean end of its data.
                    Ok(0) => {
                        self.receive_eof(proto, now);
                        break;
                    }
                    Ok(n) => proto.receive(&plain[..n], now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(())
    }

    /// The socket reached EOF or failed (or the peer sent `close_notify`).
    pub(super) fn receive_eof(&mut self, proto: &mut Connection, now: Instant) {
        if !std::mem::replace(&mut self.eof_seen, true) {
            proto.receive_eof(now);
        }
    }

    /// Moves the core's output into rustls and writes records until there is
    /// nothing left or the socket would block. Shuts the write half down once
    /// a requested `close_notify` is out.
    pub(super) fn flush(
        &mut self,
        stream: &mut TcpStream,
        proto: &mut Connection,
    ) -> io::Result<()> {
        loop {
            let mut moved = 0;
            loop {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = proto.fill_output(&mut slices);
                if n == 0 {
                    break;
                }
                let taken = self.conn.writer().write_vectored(&slices[..n])?;
                if taken == 0 {
                    break; // rustls's buffer limit: write records first
                }
                proto.consume_output(taken);
                moved += taken;
            }
            while self.conn.wants_write() {
                match self.conn.write_tls(stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if moved == 0 || proto.output_len() == 0 {
                break;
            }
        }
        if self.shutdown_pending && !self.conn.wants_write() {
            self.shutdown_pending = false;
            let _ = stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// The core wants the write half shut: `close_notify` goes first.
    pub(super) fn shutdown(&mut self, stream: &mut TcpStream, proto: &mut Connection) {
        self.conn.send_close_notify();
        self.shutdown_pending = true;
        if let Err(e) = self.flush(stream, proto) {
            debug!("TLS shutdown: {e}");
        }
    }
}
