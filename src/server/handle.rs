//! Stopping the loop: [`Control`] (the stop flag, the waker that interrupts
//! `poll`, and SIGINT/SIGTERM through signal-hook-mio in the same `Poll`),
//! and embedding: [`spawn`] binds in the caller's thread (so the address is
//! known and bind errors are returned), runs the loop on a new thread, and
//! returns a [`ServerHandle`] whose `stop` (or drop) closes every connection
//! with 1001 and joins the thread. Touches the loop only through its stop flag
//! and waker.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Interest, Registry, Token, Waker};

use super::Server;
use crate::config::Config;

/// What stops the loop: a flag set from any thread (or by a signal), and the
/// waker that makes `poll` return to see it.
pub(super) struct Control {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
}

impl Control {
    pub(super) fn new(registry: &Registry, waker: Token) -> io::Result<Control> {
        Ok(Control {
            stop: Arc::new(AtomicBool::new(false)),
            waker: Arc::new(Waker::new(registry, waker)?),
            signals: None,
        })
    }

    pub(super) fn stopper(&self) -> (Arc<AtomicBool>, Arc<Waker>) {
        (self.stop.clone(), self.waker.clone())
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(super) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// SIGINT and SIGTERM raise `token` in the loop's `Poll`.
    pub(super) fn handle_signals(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Signals received since the last call.
    pub(super) fn pending_signals(&mut self) -> usize {
        self.signals.as_mut().map_or(0, |s| s.pending().count())
    }
}

/// A server running on a background thread.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server (close 1001 to every connection) and waits for its thread.
    pub fn stop(mut self) -> io::Result<()> {
        self.signal_stop();
        match self.thread.take().expect("joined once").join() {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("server thread panicked")),
        }
    }

    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.signal_stop();
            let _ = t.join();
        }
    }
}

/// Binds `config.listen` and runs the server on a new thread.
pub fn spawn(config: Config) -> io::Result<ServerHandle> {
    let listener = std::net::TcpListener::bind(config.listen)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("echocast".into())
        .spawn(move || {
            let mut server = match Server::from_std(listener, config) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let _ = tx.send(Ok(server.stopper()));
            server.run()
        })?;
    let (stop, waker) = rx
        .recv()
        .map_err(|_| io::Error::other("server thread ended early"))??;
    Ok(ServerHandle {
        addr,
        stop,
        waker,
        thread: Some(thread),
    })
}
