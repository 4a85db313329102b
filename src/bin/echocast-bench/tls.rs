//! `wss://` scenarios (`--tls`): the same questions as the plain ones, asked
//! over TLS with rustls as the client, trusting the PEM given with
//! `--tls-ca` (the server's certificate, for `localhost`). Blocking sockets:
//! - `echo --tls`: C connections ping-pong (each sends one message, then each
//!   reads its echo, compared whole); with `-c 1 -s 16777216` the 16 MiB case;
//! - `connect --tls`: C threads each looping a full TLS handshake (session
//!   resumption off), the upgrade, and the close handshake ending in the
//!   server's `close_notify` or FIN;
//! - `idle --tls`: C upgraded `wss://` connections held open; server RSS per
//!   connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use echocast::proto::FrameHeader;

use crate::conn::{check_upgrade, masked_frame_op, request_bytes};
use crate::report::{cpu_ns, cpu_per_op, p50_p99_us, rss_kib};

/// A client configuration trusting the PEM certificate at `ca`, with session
/// resumption off (every handshake is a full one).
pub(crate) fn client_config(ca: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--tls-ca {ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("--tls-ca {ca}: {e}"))?)
            .map_err(|e| format!("--tls-ca {ca}: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

pub(crate) struct Wss {
    s: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl Wss {
    /// TLS to `localhost` at `addr`, then the upgrade (101 and accept key checked).
    pub(crate) fn open(
        addr: SocketAddr,
        path: &str,
        config: &Arc<ClientConfig>,
    ) -> io::Result<Wss> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("a valid name");
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        let mut w = Wss {
            s: StreamOwned::new(conn, sock),
            buf: Vec::new(),
        };
        w.s.write_all(&request_bytes(addr, path))?;
        let mut tmp = [0u8; 4096];
        loop {
            let n = w.s.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::other("EOF during handshake"));
            }
            w.buf.extend_from_slice(&tmp[..n]);
            if let Some(p) = w.buf.windows(4).position(|x| x == b"\r\n\r\n") {
                check_upgrade(&w.buf[..p])?;
                w.buf.drain(..p + 4);
                return Ok(w);
            }
        }
    }

    /// Reads one data message (control frames skipped): opcode and payload.
    fn read_message(&mut self, tmp: &mut [u8]) -> io::Result<(u8, Vec<u8>)> {
        let mut msg: Option<(u8, Vec<u8>)> = None;
        let mut pos = 0;
        loop {
            while let Ok(Some((h, n))) = FrameHeader::decode(&self.buf[pos..]) {
                let end = pos + n + h.payload_len as usize;
                if self.buf.len() < end {
                    break;
                }
                let payload = &self.buf[pos + n..end];
                match h.opcode {
                    8 => return Err(io::Error::other("closed by the server")),
                    0 => msg
                        .as_mut()
                        .ok_or_else(|| io::Error::other("stray continuation"))?
                        .1
                        .extend_from_slice(payload),
                    1 | 2 => msg = Some((h.opcode, payload.to_vec())),
                    _ => {}
                }
                pos = end;
                if h.fin && h.opcode < 8 {
                    self.buf.drain(..pos);
                    return msg.ok_or_else(|| io::Error::other("no message"));
                }
            }
            let n = self.s.read(tmp)?;
            if n == 0 {
                return Err(io::Error::other("EOF"));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

/// `echo --tls`.
pub(crate) fn echo_tls(
    addr: SocketAddr,
    path: &str,
    config: &Arc<ClientConfig>,
    connections: usize,
    size: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let mut conns = (0..connections)
        .map(|i| Wss::open(addr, path, config).map_err(|e| format!("connection {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut tmp = vec![0u8; 256 * 1024];
    let cpu0 = pid.and_then(cpu_ns);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(duration);
    let (mut seq, mut latencies) = (0u64, Vec::new());
    while Instant::now() < end {
        let sent_at = Instant::now();
        let first = seq;
        for c in &mut conns {
            let n = payload.len().min(8);
            payload[..n].copy_from_slice(&seq.to_be_bytes()[..n]);
            let frame = masked_frame_op(2, &payload, [0x37, 0xfa, 0x21, 0x3d]);
            c.s.write_all(&frame).map_err(|e| e.to_string())?;
            seq += 1;
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let (op, echo) = c.read_message(&mut tmp).map_err(|e| e.to_string())?;
            let n = payload.len().min(8);
            payload[..n].copy_from_slice(&(first + i as u64).to_be_bytes()[..n]);
            if op != 2 || echo != payload {
                return Err(format!("echo of message {} differs", first + i as u64));
            }
            latencies.push(sent_at.elapsed());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_per_op(pid, cpu0, seq);
    let (p50, p99) = p50_p99_us(&mut latencies);
    let mbps = (seq as f64 * size as f64) / secs / 1e6;
    println!("scenario     echo over TLS");
    println!("connections  {connections}, {size} B per message, ping-pong");
    println!(
        "messages     {seq} in {secs:.2} s = {:.0}/s, {mbps:.1} MB/s",
        seq as f64 / secs
    );
    println!("latency      p50 {p50} us, p99 {p99} us");
    if let Some(c) = cpu {
        println!("server CPU   {c:.1} ns per message");
    }
    println!(
        "{{\"scenario\":\"echo-tls\",\"connections\":{connections},\"size\":{size},\
         \"seconds\":{secs:.3},\"messages\":{seq},\"messages_per_sec\":{:.0},\"mb_per_sec\":{mbps:.2},\
         \"latency_p50_us\":{p50},\"latency_p99_us\":{p99},\"server_cpu_ns_per_message\":{}}}",
        seq as f64 / secs,
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}

/// One full cycle: TLS handshake, upgrade, close 1000 both ways, then the
/// server's end of the connection.
fn cycle(addr: SocketAddr, path: &str, config: &Arc<ClientConfig>) -> io::Result<()> {
    let mut w = Wss::open(addr, path, config)?;
    let close = masked_frame_op(8, &1000u16.to_be_bytes(), [0x11, 0x22, 0x33, 0x44]);
    w.s.write_all(&close)?;
    let mut tmp = [0u8; 4096];
    loop {
        if let Ok(Some((h, n))) = FrameHeader::decode(&w.buf) {
            if w.buf.len() >= n + h.payload_len as usize {
                if h.opcode != 8 {
                    return Err(io::Error::other("expected the close frame"));
                }
                break;
            }
        }
        let n = w.s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::other("EOF before the close frame"));
        }
        w.buf.extend_from_slice(&tmp[..n]);
    }
    // Then close_notify (read returns 0) or a bare FIN (UnexpectedEof).
    loop {
        match w.s.read(&mut tmp) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// `connect --tls`: C threads each looping a full handshake and close.
pub(crate) fn connect_tls(
    addr: SocketAddr,
    path: &str,
    config: &Arc<ClientConfig>,
    concurrency: usize,
    duration: f64,
    pid: Option<u32>,
) -> Result<(), String> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = pid.and_then(cpu_ns);
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (done, stop, config, path) =
                (done.clone(), stop.clone(), config.clone(), path.to_string());
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::Relaxed) {
                    cycle(addr, &path, &config).map_err(|e| e.to_string())?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(duration));
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_per_op(pid, cpu0, n);
    for t in threads {
        t.join().map_err(|_| "a client thread panicked")??;
    }
    let rate = n as f64 / secs;
    println!("scenario     TLS handshakes (full, no resumption), upgrade, close");
    println!("concurrency  {concurrency}");
    println!("handshakes   {n} in {secs:.2} s = {rate:.0}/s");
    if let Some(c) = cpu {
        println!("server CPU   {:.1} us per handshake", c / 1e3);
    }
    println!(
        "{{\"scenario\":\"connect-tls\",\"concurrency\":{concurrency},\"seconds\":{secs:.3},\
         \"handshakes\":{n},\"handshakes_per_sec\":{rate:.0},\"server_cpu_ns_per_handshake\":{}}}",
        cpu.map_or("null".into(), |c| format!("{c:.1}"))
    );
    Ok(())
}

/// `idle --tls`: C upgraded wss:// connections held; server RSS per connection.
pub(crate) fn idle_tls(
    addr: SocketAddr,
    path: &str,
    config: &Arc<ClientConfig>,
    connections: usize,
    pid: u32,
) -> Result<(), String> {
    let before = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let held = (0..connections)
        .map(|i| Wss::open(addr, path, config).map_err(|e| format!("connection {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    // Let the server settle (its quiet sweep runs every second), then measure.
    std::thread::sleep(Duration::from_millis(2500));
    let after = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let per = (after.saturating_sub(before) as f64 * 1024.0) / connections as f64;
    println!("scenario     idle over TLS");
    println!("connections  {connections}");
    println!("server RSS   {before} KiB -> {after} KiB = {per:.0} B per connection");
    println!(
        "{{\"scenario\":\"idle-tls\",\"connections\":{connections},\"rss_before_kib\":{before},\
         \"rss_after_kib\":{after},\"rss_bytes_per_connection\":{per:.0}}}"
    );
    drop(held);
    Ok(())
}
