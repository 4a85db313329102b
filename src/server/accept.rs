//! Accepting connections: `accept` until `WouldBlock`, a slot and a token for
//! each new socket, `--max-connections` (503 at once), and the pause when the
//! process is out of file descriptors (no busy loop on a listener that stays
//! readable). Owns nothing but the listener's side of `Server`; calls `settle`
//! (io.rs) for each new connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::Interest;

use super::{token, Client, Id, Server, Slot};
use crate::proto::{Connection, HandshakeError};

/// How long accepting pauses when the process is out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl Server {
    pub(super) fn accept(&mut self, now: Instant) {
        if self.stop.load(Ordering::Acquire) || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_failing = false;
                    self.add(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient_accept_error(&e) => {
                    debug!("accept: {e}");
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) or memory: the
                    // pending connection stays in the backlog and the listener
                    // would report it again at once. Pause instead of spinning.
                    if !self.accept_failing {
                        warn!(
                            "accept failed: {e}; pausing accept, retrying every {} ms \
                             ({} connections open)",
                            ACCEPT_PAUSE.as_millis(),
                            self.open
                        );
                        self.accept_failing = true;
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    pub(super) fn add(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                gen: 0,
                client: None,
            });
            self.slots.len() - 1
        });
        let slot = &mut self.slots[index];
        let t = token(index, slot.gen);
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("{peer}: register failed: {e}");
            self.free.push(index);
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = Id(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let mut proto = Connection::with_limits(self.limits.clone(), now);
        proto.set_id(id.0);
        let overloaded = self
            .config
            .max_connections
            .is_some_and(|max| self.admitted >= max);
        self.stats.accepted += 1;
        if overloaded {
            self.stats.refused += 1;
            info!("{id} {peer}: 503, at --max-connections");
            proto.reject(HandshakeError::Overloaded, now);
        } else {
            self.admitted += 1;
        }
        slot.client = Some(Client {
            stream,
            tls: None,
            id,
            admitted: !overloaded,
            proto,
            room: None,
            held: 0,
            read_paused: false,
            dirty: false,
            scheduled: None,
            read_pending: false,
            inspecting: false,
        });
        self.open += 1;
        debug!("{id} {peer}: accepted");
        self.settle(t);
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::PermissionDenied
    )
}
