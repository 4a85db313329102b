//! Embedding: [`spawn`] binds in the caller's thread (so the address is
//! known and bind errors are returned), runs the loop on a new thread, and
//! returns a [`ServerHandle`] whose `stop` (or drop) closes every connection
//! with 1001 and joins the thread. Touches the loop only through its stop flag
//! and waker.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use super::Server;
use crate::config::Config;

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
