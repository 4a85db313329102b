//! echocast: a WebSocket echo and broadcast server on raw RFC 6455 framing.
//!
//! ```text
//!   proto  (sans-IO: bytes + time in, bytes + events out; no sockets, no clock)
//!     ▲
//!   handler (echo / broadcast: decides what to send)
//!     ▲
//!   server (the mio driver: one thread, one Poll, write queues, timers)
//!     ▲
//!   main   (the command line)
//! ```
//!
//! Embedding in a test:
//!
//! ```
//! let server = echocast::spawn(echocast::Config::local()).unwrap();
//! let addr = server.local_addr(); // 127.0.0.1:<free port>
//! // ... point a WebSocket client at ws://{addr}/ ...
//! server.stop().unwrap();
//! ```

pub mod cluster;
pub mod config;
pub mod handler;
pub mod health;
mod inspector;
pub mod proto;
pub mod proxy;
pub mod rooms;
pub mod server;
pub mod stubs;
pub mod tls;

pub use config::Config;
pub use server::{spawn, Server, ServerHandle};

/// The README's Rust examples, compiled and run by `cargo test --doc`
/// (`tests/docs.sh` runs the shell and browser ones).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
