//! echocast-bench: a single-threaded load generator for WebSocket servers.
//!
//! Scenarios: `echo` (C connections, P messages in flight
//! each; messages/s, MB/s, latency; every echo is checked byte for byte),
//! `broadcast` (1 publisher + C subscribers of a room, deliveries/s, fails on
//! any missed or reordered message) and `idle` (hold C idle connections, report
//! the server's RSS per connection) and `connect` (handshakes per second with
//! C concurrent clients, each closing cleanly). With
//! `--server-pid` it also reports the server's CPU time per operation, read from
//! /proc (on a 2-core loopback box that is the figure that compares servers).
//! Prints a human table, then one JSON line.
//!
//! One file per scenario (`echo.rs`, `broadcast.rs`, `connect.rs`,
//! `idle.rs`, `h2.rs` for WebSockets over HTTP/2; `deflate.rs` for `--deflate`, `tls.rs` for `--tls`), the WebSocket client plumbing they share (`conn.rs`: blocking
//! handshake with the accept key checked, registration with mio, masked
//! frames) and the server figures read from /proc (`report.rs`).

mod broadcast;
mod conn;
mod connect;
mod deflate;
mod echo;
mod h2;
mod idle;
mod report;
mod rooms_http;
mod tls;

use std::net::SocketAddr;

use clap::{Args as ClapArgs, Parser, Subcommand};

use broadcast::broadcast;
use connect::connect;
use echo::echo;
use idle::idle;

#[derive(Parser)]
#[command(
    name = "echocast-bench",
    about = "Load generator for WebSocket servers"
)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

/// `wss://`: TLS with rustls, trusting `--tls-ca`, to `localhost` at `--addr`.
#[derive(ClapArgs, Clone)]
struct TlsArgs {
    /// Connect over TLS (full handshakes, no session resumption)
    #[arg(long, requires = "tls_ca")]
    tls: bool,
    /// The server's certificate (PEM) to trust; the name checked is localhost
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<String>,
}

impl TlsArgs {
    /// The client configuration for `--tls` (clap makes `--tls` require `--tls-ca`).
    fn config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
        tls::client_config(self.tls_ca.as_deref().ok_or("--tls needs --tls-ca")?)
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// One publisher and C subscribers of one room; the publisher keeps at most
    /// WINDOW messages not yet received by every subscriber.
    Broadcast {
        /// Server address and room path
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/broadcast/bench")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 1000)]
        subscribers: usize,
        /// Payload bytes per message (at least 8: a sequence number)
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Every member offers permessage-deflate; the publisher sends
        /// JSON-like text compressed, every member inflates and checks it
        #[arg(long)]
        deflate: bool,
        /// Seconds to measure
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// C connections each keeping P messages in flight (P = 1: ping-pong);
    /// every echo is compared with what was sent.
    /// Event-stream subscribers of one room, a WebSocket member publishing.
    Sse {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/broadcast/bench")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// HTTP POSTs on kept connections to a room of WebSocket members.
    Publish {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/broadcast/bench")]
        path: String,
        /// WebSocket members of the room.
        #[arg(long, short = 'c', default_value_t = 100)]
        members: usize,
        /// Kept HTTP connections publishing, one request in flight each.
        #[arg(long, short = 'p', default_value_t = 4)]
        publishers: usize,
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 100)]
        connections: usize,
        /// Payload bytes per message
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        /// Messages in flight per connection
        #[arg(long, short = 'p', default_value_t = 1)]
        pipeline: usize,
        /// Text messages instead of binary
        #[arg(long)]
        text: bool,
        /// Text messages that are JSON objects,
        /// {"pad":"eee…","seq":"DIGITS","type":"bench"} (for stubs that
        /// match JSON and rebuild it: bench/stubs.sh)
        #[arg(long)]
        json: bool,
        /// Offer permessage-deflate, send JSON-like text compressed, inflate
        /// and compare every echo (ping-pong only)
        #[arg(long)]
        deflate: bool,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// C concurrent clients each looping: connect, upgrade (101 with the right
    /// accept key), send close 1000, wait for the server's close frame and its
    /// FIN. Handshakes per second, and server CPU per handshake.
    Connect {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 50)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// WebSockets over HTTP/2 (h2c): C WebSocket streams on one connection,
    /// each keeping P binary messages in flight; every echo checked.
    H2Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 100)]
        streams: usize,
        #[arg(long, short = 's', default_value_t = 20)]
        size: usize,
        #[arg(long, short = 'p', default_value_t = 1)]
        pipeline: usize,
        /// Text messages instead of binary
        #[arg(long)]
        text: bool,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Hold C idle WebSocket streams over HTTP/2 (h2c; 1,000 per
    /// connection) and report the server's RSS per stream.
    H2Idle {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 1000)]
        streams: usize,
        #[arg(long)]
        server_pid: u32,
    },
    /// Hold C idle connections and report the server's RSS per connection.
    Idle {
        #[arg(long, default_value = "127.0.0.1:9001")]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, short = 'c', default_value_t = 10_000)]
        connections: usize,
        /// Each connection offers permessage-deflate (as Node ws and browsers
        /// do) and sends one compressed message (echo checked) before idling
        #[arg(long)]
        deflate: bool,
        #[arg(long)]
        server_pid: u32,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let r = match args.scenario {
        Scenario::Echo {
            addr,
            path,
            connections,
            size,
            duration,
            server_pid,
            tls,
            ..
        } if tls.tls => tls
            .config()
            .and_then(|c| tls::echo_tls(addr, &path, &c, connections, size, duration, server_pid)),
        Scenario::Connect {
            addr,
            path,
            concurrency,
            duration,
            server_pid,
            tls,
        } if tls.tls => tls
            .config()
            .and_then(|c| tls::connect_tls(addr, &path, &c, concurrency, duration, server_pid)),
        Scenario::Idle {
            addr,
            path,
            connections,
            server_pid,
            tls,
            ..
        } if tls.tls => tls
            .config()
            .and_then(|c| tls::idle_tls(addr, &path, &c, connections, server_pid)),
        Scenario::H2Echo {
            addr,
            path,
            streams,
            size,
            pipeline,
            text,
            duration,
            server_pid,
        } => h2::h2_echo(
            addr, &path, streams, size, pipeline, text, duration, server_pid,
        ),
        Scenario::H2Idle {
            addr,
            path,
            streams,
            server_pid,
        } => h2::h2_idle(addr, &path, streams, server_pid),
        Scenario::Broadcast {
            addr,
            path,
            subscribers,
            size,
            window,
            deflate: true,
            duration,
            server_pid,
        } => {
            deflate::broadcast_deflate(addr, &path, subscribers, size, window, duration, server_pid)
        }
        Scenario::Broadcast {
            addr,
            path,
            subscribers,
            size,
            window,
            duration,
            server_pid,
            ..
        } => broadcast(addr, &path, subscribers, size, window, duration, server_pid),
        Scenario::Sse {
            addr,
            path,
            subscribers,
            size,
            window,
            duration,
            server_pid,
        } => rooms_http::sse(addr, &path, subscribers, size, window, duration, server_pid),
        Scenario::Publish {
            addr,
            path,
            members,
            publishers,
            size,
            window,
            duration,
            server_pid,
        } => rooms_http::publish(
            addr, &path, members, publishers, size, window, duration, server_pid,
        ),
        Scenario::Connect {
            addr,
            path,
            concurrency,
            duration,
            server_pid,
            ..
        } => connect(addr, &path, concurrency, duration, server_pid),
        Scenario::Idle {
            addr,
            path,
            connections,
            deflate,
            server_pid,
            ..
        } => idle(addr, &path, connections, deflate, server_pid),
        Scenario::Echo {
            addr,
            path,
            connections,
            size,
            deflate: true,
            duration,
            server_pid,
            ..
        } => deflate::echo_deflate(addr, &path, connections, size, duration, server_pid),
        Scenario::Echo {
            addr,
            path,
            connections,
            size,
            pipeline,
            text,
            json,
            duration,
            server_pid,
            ..
        } => echo(
            addr,
            &path,
            connections,
            size,
            pipeline,
            text,
            json,
            duration,
            server_pid,
        ),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echocast-bench: FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
