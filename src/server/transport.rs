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

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection, ServerConnection};

use mio::Token;

use crate::proto::h2::{self, Session};
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

/// Where a slot's bytes come from and go to: a socket of its own (with TLS
/// and HTTP/2 once decided), or a stream of another slot's HTTP/2
/// connection, whose bytes the loop moves through that slot's `h2::Session`
/// (http2.rs). 16 bytes for a plain socket: what is not plain is boxed.
pub(super) struct Transport {
    /// `None` for an HTTP/2 stream.
    stream: Option<TcpStream>,
    layers: Option<Box<Layers>>,
}

/// What a socket has beyond plain TCP, or what a stream is.
#[derive(Default)]
struct Layers {
    /// With TLS on, a connection whose session has seen no byte and that
    /// has no TLS layer yet is still to be decided (`sniff`).
    tls: Option<Box<Tls>>,
    /// HTTP/2: the multiplexer the bytes go to instead of the slot's own
    /// session (which then sees none).
    h2: Option<Box<Session>>,
    link: Option<StreamLink>,
}

/// An HTTP/2 stream as a slot's transport.
#[derive(Clone, Copy)]
pub(super) struct StreamLink {
    /// The slot whose socket carries the stream.
    pub(super) parent: Token,
    pub(super) id: u32,
    tls: bool,
    peer: Option<SocketAddr>,
}

/// Where plaintext goes: the slot's session, or its HTTP/2 session once
/// the first bytes or ALPN chose HTTP/2.
struct Sink<'a> {
    proto: &'a mut Connection,
    h2: &'a mut Option<Box<Session>>,
    /// HTTP/2 as configured (`None`: `--http2 off`).
    h2_config: Option<&'a h2::Config>,
    now: Instant,
}

impl Sink<'_> {
    fn receive(&mut self, bytes: &[u8]) {
        match self.h2.as_deref_mut() {
            Some(h2) => h2.receive(bytes, self.now),
            None => self.proto.receive(bytes, self.now),
        }
    }

    fn receive_eof(&mut self) {
        match self.h2.as_deref_mut() {
            Some(h2) => h2.receive_eof(),
            None => self.proto.receive_eof(self.now),
        }
    }

    /// The TLS handshake is done: ALPN `h2` makes the connection HTTP/2.
    fn alpn(&mut self, protocol: Option<&[u8]>) {
        if let Some(config) = self.h2_config.filter(|_| protocol == Some(b"h2")) {
            *self.h2 = Some(Box::new(Session::new(config.clone(), self.now)));
        }
    }
}

impl Transport {
    /// A socket, plain until its first bytes say otherwise.
    pub(super) fn new(stream: TcpStream) -> Transport {
        Transport {
            stream: Some(stream),
            layers: None,
        }
    }

    /// A socket we opened with TLS to its server (a `wss://` upstream).
    pub(super) fn with_tls(stream: TcpStream, tls: Tls) -> Transport {
        Transport {
            stream: Some(stream),
            layers: Some(Box::new(Layers {
                tls: Some(Box::new(tls)),
                ..Layers::default()
            })),
        }
    }

    /// Stream `id` of the HTTP/2 connection in slot `parent`.
    pub(super) fn stream(parent: Token, id: u32, tls: bool, peer: Option<SocketAddr>) -> Transport {
        Transport {
            stream: None,
            layers: Some(Box::new(Layers {
                link: Some(StreamLink {
                    parent,
                    id,
                    tls,
                    peer,
                }),
                ..Layers::default()
            })),
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        self.layers
            .as_ref()
            .is_some_and(|l| l.tls.is_some() || l.link.is_some_and(|k| k.tls))
    }

    /// `ws`/`wss` for a socket, `h2c`/`h2` for a stream or an HTTP/2 socket.
    pub(super) fn name(&self) -> &'static str {
        match (self.is_h2(), self.is_tls()) {
            (false, false) => "ws",
            (false, true) => "wss",
            (true, false) => "h2c",
            (true, true) => "h2",
        }
    }

    /// Whether HTTP/2 carries the slot: its socket's, or as a stream.
    pub(super) fn is_h2(&self) -> bool {
        self.layers
            .as_ref()
            .is_some_and(|l| l.h2.is_some() || l.link.is_some())
    }

    /// The HTTP/2 stream this slot is, if it is one.
    pub(super) fn link(&self) -> Option<StreamLink> {
        self.layers.as_ref()?.link
    }

    /// The socket's HTTP/2 session, if it carries one.
    pub(super) fn h2(&self) -> Option<&Session> {
        self.layers.as_ref()?.h2.as_deref()
    }

    pub(super) fn h2_mut(&mut self) -> Option<&mut Session> {
        self.layers.as_mut()?.h2.as_deref_mut()
    }

    /// The peer's address (a syscall: asked only where it is shown).
    pub(super) fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.stream {
            Some(s) => s.peer_addr().ok(),
            None => self.link()?.peer,
        }
    }

    /// What the record layer and an HTTP/2 session hold, as counted
    /// against `--max-memory`.
    pub(super) fn memory(&self) -> usize {
        self.layers.as_ref().map_or(0, |l| {
            std::mem::size_of::<Layers>()
                + l.tls.as_ref().map_or(0, |_| TLS_BYTES)
                + l.h2.as_ref().map_or(0, |h| h.memory())
        })
    }

    /// Reads ciphertext (or plaintext) from the socket (a stream's bytes
    /// come through its parent: http2.rs).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.as_mut() {
            Some(s) => s.read(buf),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// The first bytes decide: with TLS on, a TLS handshake record starts
    /// TLS; with HTTP/2 on, the client preface starts HTTP/2 (h2c with prior
    /// knowledge); anything else stays plain HTTP/1.1.
    pub(super) fn sniff(
        &mut self,
        first: &[u8],
        tls: Option<&TlsConfig>,
        h2: Option<&h2::Config>,
        now: Instant,
    ) -> Result<(), String> {
        if self.stream.is_none() {
            return Ok(());
        }
        if let Some(t) = tls.map(|c| sniff(first, c)).transpose()?.flatten() {
            self.layers.get_or_insert_with(Box::default).tls = Some(Box::new(t));
        } else if let Some(config) = h2.filter(|_| starts_preface(first)) {
            self.layers.get_or_insert_with(Box::default).h2 =
                Some(Box::new(Session::new(config.clone(), now)));
        }
        Ok(())
    }

    /// Bytes read from the socket, into `session` (or the socket's HTTP/2
    /// session): decrypted first with TLS, where ALPN may choose HTTP/2
    /// (`h2_config`). An error means the connection must go once rustls's
    /// alert (if any) is written.
    pub(super) fn receive(
        &mut self,
        bytes: &[u8],
        session: &mut Connection,
        h2_config: Option<&h2::Config>,
        now: Instant,
    ) -> Result<(), String> {
        let Some(layers) = self.layers.as_deref_mut() else {
            session.receive(bytes, now);
            return Ok(());
        };
        let mut sink = Sink {
            proto: session,
            h2: &mut layers.h2,
            h2_config,
            now,
        };
        match layers.tls.as_mut() {
            None => {
                sink.receive(bytes);
                Ok(())
            }
            Some(tls) => tls.receive(bytes, &mut sink),
        }
    }

    /// The socket reached EOF or failed.
    pub(super) fn receive_eof(&mut self, session: &mut Connection, now: Instant) {
        let Some(layers) = self.layers.as_deref_mut() else {
            return session.receive_eof(now);
        };
        let mut sink = Sink {
            proto: session,
            h2: &mut layers.h2,
            h2_config: None,
            now,
        };
        match layers.tls.as_mut() {
            Some(tls) => tls.receive_eof(&mut sink),
            None => sink.receive_eof(),
        }
    }

    /// Writes the session's output (or the HTTP/2 session's) until it is
    /// all written or the socket would block; vectored writes, one plain
    /// `write` when the output is one chunk (a room's run, a tail of echoes).
    pub(super) fn flush(&mut self, session: &mut Connection) -> io::Result<()> {
        let Some((stream, tls, out)) = self.writing(session) else {
            return Ok(());
        };
        if let Some(tls) = tls {
            return tls.flush(stream, out);
        }
        loop {
            let written = {
                let front = out.front();
                if front.is_empty() {
                    return Ok(());
                }
                if front.len() == out.len() {
                    stream.write(front)
                } else {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = out.fill(&mut slices);
                    stream.write_vectored(&slices[..n])
                }
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The session wants the write half shut (after its last bytes): with
    /// TLS, `close_notify` goes first.
    pub(super) fn shutdown(&mut self, session: &mut Connection) {
        let Some((stream, tls, out)) = self.writing(session) else {
            return;
        };
        match tls {
            Some(tls) => tls.shutdown(stream, out),
            None => {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }

    /// The socket, its TLS layer, and the output that goes out on it: the
    /// socket's HTTP/2 session's if it has one, else `session`'s. `None`
    /// for a stream (its parent writes it).
    fn writing<'a>(
        &'a mut self,
        session: &'a mut Connection,
    ) -> Option<(&'a mut TcpStream, Option<&'a mut Tls>, &'a mut dyn Output)> {
        let stream = self.stream.as_mut()?;
        Some(match self.layers.as_deref_mut() {
            None => (stream, None, session),
            Some(l) => match l.h2.as_deref_mut() {
                Some(h2) => (stream, l.tls.as_deref_mut(), h2),
                None => (stream, l.tls.as_deref_mut(), session),
            },
        })
    }

    /// Makes the close a TCP reset (SO_LINGER 0): the `drop=N&reset=1` knob.
    pub(super) fn reset(&self) -> io::Result<()> {
        match &self.stream {
            Some(s) => socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)),
            None => Ok(()),
        }
    }
}

/// Whether a connection's first bytes can be the HTTP/2 client preface
/// (RFC 9113 §3.4). Three bytes decide (`PRI` is no method the server
/// serves); a first read shorter than that stays HTTP/1.1.
fn starts_preface(first: &[u8]) -> bool {
    let n = first.len().min(h2::PREFACE.len());
    n >= 3 && first[..n] == h2::PREFACE[..n]
}

/// Output a transport writes: a connection's, or an HTTP/2 session's.
trait Output {
    fn front(&self) -> &[u8];
    fn len(&self) -> usize;
    fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize;
    fn consume(&mut self, n: usize);
}

impl Output for Connection {
    fn front(&self) -> &[u8] {
        self.output_front()
    }
    fn len(&self) -> usize {
        self.output_len()
    }
    fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.fill_output(slices)
    }
    fn consume(&mut self, n: usize) {
        self.consume_output(n)
    }
}

impl Output for Session {
    fn front(&self) -> &[u8] {
        self.output_front()
    }
    fn len(&self) -> usize {
        self.output_len()
    }
    fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let front = self.output_front();
        if front.is_empty() || slices.is_empty() {
            return 0;
        }
        slices[0] = IoSlice::new(front);
        1
    }
    fn consume(&mut self, n: usize) {
        self.consume_output(n)
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
    /// The handshake's ALPN result was passed on.
    alpn_seen: bool,
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
fn sniff(first: &[u8], config: &TlsConfig) -> Result<Option<Tls>, String> {
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
    Ok(Some(Tls {
        conn: conn.into(),
        shutdown_pending: false,
        eof_seen: false,
        alpn_seen: false,
    }))
}

/// The record layer of a connection we open to `name` (a proxy's `wss://`
/// upstream): its ClientHello is queued, written with the first flush.
pub(super) fn client(config: Arc<ClientConfig>, name: &str) -> Result<Tls, String> {
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name}: {e}"))?;
    let mut conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(Tls {
        conn: conn.into(),
        shutdown_pending: false,
        eof_seen: false,
        alpn_seen: false,
    })
}

impl Tls {
    /// Feeds ciphertext read from the socket: decrypts it and passes the
    /// plaintext to the core, a record at a time.
    /// An error means the connection must be dropped once rustls's alert
    /// (if any) is written.
    fn receive(&mut self, mut cipher: &[u8], sink: &mut Sink<'_>) -> Result<(), String> {
        while !cipher.is_empty() {
            self.conn.read_tls(&mut cipher).map_err(|e| e.to_string())?;
            self.conn.process_new_packets().map_err(|e| e.to_string())?;
            if !self.alpn_seen && !self.conn.is_handshaking() {
                self.alpn_seen = true;
                sink.alpn(self.conn.alpn_protocol());
            }
            // Each decrypted record goes to the core where rustls holds it
            // (`fill_buf`), not through a copy.
            loop {
                let mut reader = self.conn.reader();
                match reader.fill_buf() {
                    // The peer's close_notify: a clean end of its data.
                    Ok([]) => {
                        self.receive_eof(sink);
                        break;
                    }
                    Ok(record) => {
                        let n = record.len();
                        sink.receive(record);
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Ok(())
    }

    /// The socket reached EOF or failed (or the peer sent `close_notify`).
    fn receive_eof(&mut self, sink: &mut Sink<'_>) {
        if !std::mem::replace(&mut self.eof_seen, true) {
            sink.receive_eof();
        }
    }

    /// Moves the core's output into rustls and writes records until there is
    /// nothing left or the socket would block. Shuts the write half down once
    /// a requested `close_notify` is out.
    fn flush(&mut self, stream: &mut TcpStream, proto: &mut dyn Output) -> io::Result<()> {
        loop {
            let mut moved = 0;
            loop {
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let n = proto.fill(&mut slices);
                if n == 0 {
                    break;
                }
                let taken = self.conn.writer().write_vectored(&slices[..n])?;
                if taken == 0 {
                    break; // rustls's buffer limit: write records first
                }
                proto.consume(taken);
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
            if moved == 0 || proto.len() == 0 {
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
    fn shutdown(&mut self, stream: &mut TcpStream, proto: &mut dyn Output) {
        self.conn.send_close_notify();
        self.shutdown_pending = true;
        if let Err(e) = self.flush(stream, proto) {
            debug!("TLS shutdown: {e}");
        }
    }
}
