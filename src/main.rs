use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use echocast::proto::Limits;
use echocast::{Config, Server};

/// A WebSocket echo and broadcast server on raw RFC 6455 framing.
///
/// Every path echoes each message back to its sender. After binding, prints
/// exactly one line to stdout: `listening on ws://HOST:PORT`. Logs go to stderr
/// (RUST_LOG=debug for more, RUST_LOG=warn for less).
#[derive(Parser, Debug)]
#[command(name = "echocast", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port and prints it)
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,

    /// Largest message in bytes, summed over its fragments; larger fails with close 1009
    #[arg(long, default_value_t = Limits::default().max_message_size)]
    max_message_size: usize,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = Config {
        listen: args.listen,
        limits: Limits {
            max_message_size: args.max_message_size,
            ..Limits::default()
        },
    };
    let mut server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echocast: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = match server.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echocast: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on ws://{addr}");
    let _ = out.flush();
    drop(out);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echocast: {e}");
            ExitCode::FAILURE
        }
    }
}
