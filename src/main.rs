use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// jemalloc, with a background thread that gives freed memory back while the
/// loop idles (Cargo.toml, .cargo/config.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use echocast::config::InspectMode;
use echocast::handler::Mode;
use echocast::proto::deflate::{DeflateConfig, DeflateMode};
use echocast::proto::Limits;
use echocast::{Config, Server};

mod cli;
use cli::*;

/// A WebSocket echo and broadcast server on raw RFC 6455 framing.
///
/// Every path echoes each message back to its sender, except paths under
/// /broadcast, which are broadcast rooms. A plain GET / serves a page to try it.
/// After binding, prints
/// exactly one line to stdout: `listening on ws://HOST:PORT` (`wss://` with
/// TLS, plain ws:// still served on the same port). Logs go to stderr
/// (RUST_LOG=debug for more, RUST_LOG=warn for less).
#[derive(Parser, Debug)]
#[command(
    name = "echocast",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Address to listen on: 127.0.0.1:9001, [::1]:9001, localhost:9001, a
    /// bare port (9001: loopback), :9001 (every interface, with a warning),
    /// 0.0.0.0:9001 (every interface, as in a container) or a host name;
    /// port 0 picks a free port and prints it
    #[arg(long, default_value = "127.0.0.1:9001", value_parser = parse_listen)]
    listen: Listen,

    /// Largest message (64MiB, 1KiB, 1MB or bytes), summed over its
    /// fragments; larger fails with close 1009
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    max_message_size: usize,

    /// Routing of paths to handlers
    #[arg(long, value_enum, default_value = "echo")]
    mode: ModeArg,

    /// Unsent bytes per connection before backpressure: an echo client is no
    /// longer read until its queue drains; a broadcast recipient is closed with
    /// 1008 "slow consumer"
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    max_backpressure: usize,

    /// The process's memory (64MiB, 1GiB, 500MB or plain bytes): what
    /// connections hold in message buffers and output queues, and past half
    /// of it the process's resident set. When a read could take the total
    /// over it, the connection holding the most is closed: 1009 if that is
    /// mostly an incoming message, 1008 "memory budget" if output
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    max_memory: usize,

    /// permessage-deflate (RFC 7692), offered by every browser
    #[arg(long, value_enum, default_value = "shared")]
    deflate: DeflateArg,

    /// Largest compression window (9-15 bits): what we compress with, and
    /// what we ask of a client that offers client_max_window_bits
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_window_bits: u8,

    /// Messages shorter than this are sent uncompressed (default 0: every
    /// message is compressed, so a client's inflate path is always exercised)
    #[arg(long, default_value = "0", value_parser = parse_size)]
    deflate_threshold: usize,

    /// Do not serve the built-in page on GET / (answer 426 like any other path)
    #[arg(long)]
    no_page: bool,

    /// Echo every message only once complete, as one frame (default: a binary
    /// message still arriving after 16 KiB is echoed in pieces, as a fragmented
    /// message, while the rest comes)
    #[arg(long)]
    no_streaming: bool,

    /// Time allowed to send a complete request head (e.g. 10s, 500ms)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,

    /// After our close frame (or an HTTP error answer), time the peer has to close
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    close_timeout: Duration,

    /// Send a ping when nothing arrived for this long (off by default)
    #[arg(long, value_parser = parse_duration)]
    ping_interval: Option<Duration>,

    /// Close with 1001 when nothing, not even a pong, arrived for this long (off by default)
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,

    /// Connections at once; over it new connections get HTTP 503 (default: no limit)
    #[arg(long)]
    max_connections: Option<usize>,

    /// Allow only this Origin (repeatable; default: any). Others get 403;
    /// requests without Origin (non-browser clients) are allowed
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,

    /// TLS certificate chain (PEM): serve wss:// (and the page over https://)
    /// on the same port as ws://; each connection's first byte decides
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<String>,

    /// TLS private key (PEM: PKCS#8, RSA or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<String>,

    /// TLS with a certificate made at start for localhost, 127.0.0.1 and ::1
    /// (its SHA-256 fingerprint is logged)
    #[arg(long)]
    tls_self_signed: bool,

    /// With --tls-self-signed: write the certificate as PEM to FILE, for
    /// clients to trust
    #[arg(long, value_name = "FILE", requires = "tls_self_signed")]
    tls_cert_out: Option<String>,

    /// HTTP/2 on the same port (docs/http2.md)
    #[arg(long, value_enum, default_value = "on")]
    http2: Http2Arg,

    /// A subprotocol the server speaks (repeatable): the first one in the
    /// client's Sec-WebSocket-Protocol list that is supported is named in the
    /// 101; '*' selects the client's first offer. None: none is named
    #[arg(long = "subprotocol", value_name = "NAME")]
    subprotocols: Vec<String>,

    /// A text message sent to every connection first, before anything is
    /// echoed; '{id}' becomes the connection's id. A request's greeting=
    /// knob replaces it for that connection
    #[arg(long, value_name = "TEXT")]
    greeting: Option<String>,

    /// Scripted answers to your client's protocol on echo paths: a JSON file
    /// of stubs (docs/stubs.md), or a browser's HAR file (its WebSocket
    /// conversations replayed); a bad file stops the server (exit 2) naming
    /// its line and column
    #[arg(long, value_name = "FILE")]
    stubs: Option<std::path::PathBuf>,

    /// The stubs' delays (after, every) divided by N: 1 as written or
    /// recorded, 2 twice as fast, 0 no delays (fast tests of a recording).
    /// 0, or 0.01 to 1000
    #[arg(long, value_name = "N", default_value_t = 1.0, value_parser = parse_speed)]
    stubs_speed: f64,

    /// The frame inspector (docs/inspector.md): on, off, or local (on when
    /// listening on loopback; it shows other people's traffic)
    #[arg(long, value_enum, default_value = "local")]
    inspect: InspectArg,

    /// Records (frames and events) the inspector keeps for the whole server
    #[arg(long, value_name = "N", default_value_t = echocast::server::DEFAULT_INSPECT_FRAMES,
          value_parser = clap::value_parser!(usize))]
    inspect_frames: usize,

    /// Content the inspector keeps of each message (4KiB, 1MiB or bytes);
    /// 0: none
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = parse_size)]
    inspect_preview: usize,

    /// Show Authorization, Proxy-Authorization and Cookie values in
    /// /connections/ID instead of redacting them
    #[arg(long)]
    inspect_secrets: bool,

    /// Messages each room keeps (at most 1 MiB of them) for clients that
    /// join or come back: ?history=N, Last-Event-ID. 0: none
    #[arg(long, value_name = "N", default_value_t = 100)]
    room_history: usize,

    /// How long a room is kept after its last member left (its history and
    /// message ids), so a client can resume
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    room_linger: Duration,

    /// A comment line on an event stream (SSE) quiet for this long, so
    /// proxies keep it open; 0 turns it off
    #[arg(long, value_name = "DUR", default_value = "15s", value_parser = parse_duration)]
    sse_keepalive: Duration,

    /// Share rooms with other echocast processes through Redis
    /// (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss:// over TLS): one
    /// order, ids and history per room on every instance
    #[arg(long, value_name = "URL", value_parser = parse_cluster)]
    cluster: Option<echocast::cluster::Url>,

    /// With a rediss:// --cluster: the PEM bundle of the certificates to
    /// trust for Redis (default: the system's)
    #[arg(long, value_name = "FILE", requires = "cluster")]
    cluster_ca: Option<String>,

    /// With --cluster: a reply from Redis overdue by this long (it stopped
    /// answering) drops the link and reconnects; a POST waits this long for
    /// its id at most (then 503 or 504). 100ms to 60s, shorter than
    /// --handshake-timeout
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = parse_cluster_timeout)]
    cluster_timeout: Duration,

    /// SO_REUSEPORT: several processes listen on one port and the kernel
    /// spreads connections across them (one process per core)
    #[arg(long)]
    reuse_port: bool,

    /// WebSockets on PATH go to a real server (repeatable; docs/proxy.md):
    /// PATH is exact or a prefix ending in /* (/ alone: every path not
    /// otherwise routed); a URL ending in * gets the rest of the path. The
    /// host is resolved at start
    #[arg(long = "proxy", value_name = "PATH=URL", value_parser = echocast::proxy::parse_route)]
    proxy: Vec<echocast::proxy::Route>,

    /// With a wss:// --proxy: the PEM bundle of the certificates to trust
    /// for the upstream (default: the system's)
    #[arg(long, value_name = "FILE")]
    proxy_ca: Option<String>,

    /// With a wss:// --proxy: accept any certificate from the upstream (a
    /// self-signed staging server); logged as a warning
    #[arg(long)]
    proxy_insecure: bool,

    /// Record every proxied conversation into FILE, as a stubs file
    /// (rewritten as each ends): --stubs FILE replays it
    #[arg(long, value_name = "FILE", requires = "proxy")]
    record: Option<std::path::PathBuf>,

    /// A header field added to every upstream request (repeatable)
    #[arg(long = "proxy-header", value_name = "NAME: VALUE", value_parser = echocast::proxy::parse_header)]
    proxy_headers: Vec<(String, String)>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Ask a running server's GET /healthz: exit 0 when it answers 200, else
    /// 1 with one line saying why (a container's HEALTHCHECK: no shell or
    /// curl needed)
    Health {
        /// The server's address, written as for --listen (0.0.0.0 and :PORT
        /// are asked on 127.0.0.1)
        #[arg(default_value = "127.0.0.1:9001", value_parser = parse_listen)]
        addr: Listen,
        /// How long to wait for the connection and for the answer
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Print the stubs file a browser's HAR file makes (its WebSocket
    /// conversations, as --stubs FILE.har loads them), to edit and commit
    StubsFromHar {
        /// A HAR file saved by Chrome's or Edge's DevTools ("Save all as HAR
        /// with content")
        file: std::path::PathBuf,
    },
}

/// jemalloc's purge of the dirty pages it keeps, for the memory budget
/// (setting an arena's decay time again purges its dirty pages at once).
#[cfg(feature = "jemalloc")]
fn purge() -> Option<fn()> {
    use tikv_jemalloc_ctl::{arenas, Access, AsName};
    fn jemalloc_purge() {
        let n = arenas::narenas::read().unwrap_or(0);
        for i in 0..n {
            let name = format!("arena.{i}.dirty_decay_ms\0");
            // Arenas never used answer an error: nothing to purge there.
            if let Ok(ms) = Access::<isize>::read(name.as_str().name()) {
                let _ = name.as_str().name().write(ms);
            }
        }
    }
    Some(jemalloc_purge)
}

#[cfg(not(feature = "jemalloc"))]
fn purge() -> Option<fn()> {
    None
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if let Some(Command::StubsFromHar { file }) = &args.command {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string());
        return match text.and_then(|t| echocast::stubs::stubs_from_har(&t)) {
            Ok(stubs) => {
                print!("{stubs}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("echocast: {}: {e}", file.display());
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::Health { addr, timeout }) = args.command {
        return match echocast::health::check(addr.addr, timeout) {
            Ok(line) => {
                println!("healthy: {line}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("unhealthy: {why}");
                ExitCode::FAILURE
            }
        };
    }
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        log::warn!("jemalloc: no background purge thread ({e}): freed memory is given back only as the server allocates");
    }
    let tls = match echocast::tls::from_flags(
        args.tls_cert.as_deref().zip(args.tls_key.as_deref()),
        args.tls_self_signed,
        args.tls_cert_out.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("echocast: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A bad stubs file stops the server before it listens (exit 2).
    if let Some(path) = &args.stubs {
        if let Err(e) = echocast::stubs::read(path, args.max_message_size) {
            eprintln!("echocast: {e}");
            return ExitCode::from(2);
        }
    }
    if args.cluster.is_some() && args.cluster_timeout >= args.handshake_timeout {
        eprintln!(
            "echocast: --cluster-timeout must be shorter than --handshake-timeout \
             (a POST waits for Redis on its connection, which that timeout closes)"
        );
        return ExitCode::from(2);
    }
    let cluster_tls = match &args.cluster {
        Some(url) if url.tls => match echocast::tls::client_config(args.cluster_ca.as_deref()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("echocast: --cluster: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let proxy = echocast::proxy::Routes::new(args.proxy.clone());
    let (ca, insecure) = (args.proxy_ca.as_deref(), args.proxy_insecure);
    let wss = proxy.has_tls();
    let proxy_tls = match wss.then(|| echocast::tls::proxy_client_config(ca, insecure)) {
        Some(Err(e)) => {
            eprintln!("echocast: --proxy: {e}");
            return ExitCode::FAILURE;
        }
        ok => ok.and_then(Result::ok),
    };
    let stubs = args.stubs.clone();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let config = Config {
        listen: args.listen.addr,
        limits: Limits {
            max_message_size: args.max_message_size,
            handshake_timeout: args.handshake_timeout,
            close_timeout: args.close_timeout,
            ping_interval: args.ping_interval,
            idle_timeout: args.idle_timeout,
            sse_keepalive: Some(args.sse_keepalive),
            ..Limits::default()
        },
        mode: match args.mode {
            ModeArg::Echo => Mode::Echo,
            ModeArg::Broadcast => Mode::Broadcast,
        },
        max_backpressure: args.max_backpressure,
        max_memory: args.max_memory,
        deflate: DeflateConfig {
            mode: match args.deflate {
                DeflateArg::Shared => DeflateMode::Shared,
                DeflateArg::Dedicated => DeflateMode::Dedicated,
                DeflateArg::Off => DeflateMode::Off,
            },
            window_bits: args.deflate_window_bits,
            threshold: args.deflate_threshold,
        },
        page: !args.no_page,
        streaming: !args.no_streaming,
        max_connections: args.max_connections,
        allow_origins: args.allow_origins,
        tls,
        http2: {
            use echocast::proto::h2::{Config as H2, WebSockets as W};
            let ws = match args.http2 {
                Http2Arg::Off => None,
                Http2Arg::On => Some(W::Offered),
                Http2Arg::NoWebsockets => Some(W::NotOffered),
                Http2Arg::RefuseWebsockets => Some(W::Refused),
            };
            ws.map(|websockets| H2 {
                websockets,
                handshake_timeout: args.handshake_timeout,
                ..H2::default()
            })
        },
        subprotocols: args.subprotocols,
        greeting: args.greeting,
        stubs,
        stubs_speed: args.stubs_speed,
        inspect: match args.inspect {
            InspectArg::On => InspectMode::On,
            InspectArg::Off => InspectMode::Off,
            InspectArg::Local => InspectMode::Local,
        },
        inspect_frames: args.inspect_frames.max(1),
        inspect_preview: args.inspect_preview,
        inspect_secrets: args.inspect_secrets,
        room_history: args.room_history,
        room_linger: args.room_linger,
        proxy,
        proxy_headers: args.proxy_headers,
        proxy_tls,
        record: args.record,
        cluster: args.cluster,
        cluster_tls,
        cluster_timeout: args.cluster_timeout,
        reuse_port: args.reuse_port,
        process: Some(echocast::config::Process { purge: purge() }),
    };
    let mut server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echocast: cannot listen on {}: {e}", args.listen.addr);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("echocast: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let addr = match server.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echocast: {e}");
            return ExitCode::FAILURE;
        }
    };
    if addr.ip().is_unspecified() {
        // `:9001` may not mean "the network" to whoever typed it; an explicit
        // 0.0.0.0 (a container's) does, and gets no warning noise.
        if args.listen.shorthand_every_interface {
            log::warn!("listening on every interface ({addr}): reachable from the network");
        } else {
            log::info!("listening on every interface ({addr})");
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {scheme}://{addr}");
    let _ = out.flush();
    drop(out);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => ExitCode::from(130),
        Err(e) => {
            eprintln!("echocast: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_listen, parse_size};
    use std::time::Duration;

    #[test]
    fn flags_use_the_shared_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert!(parse_size("12 parsecs").unwrap_err().contains("not a size"));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").unwrap_err().contains("1h"));
    }

    #[test]
    fn addresses_people_write() {
        let a = |s: &str| parse_listen(s).map(|a| a.addr.to_string());
        assert!(parse_listen(":9001").unwrap().shorthand_every_interface);
        assert!(
            !parse_listen("0.0.0.0:9001")
                .unwrap()
                .shorthand_every_interface
        );
        assert_eq!(a("127.0.0.1:9001"), Ok("127.0.0.1:9001".into()));
        assert_eq!(a("[::1]:9001"), Ok("[::1]:9001".into()));
        assert_eq!(a("localhost:9001"), Ok("127.0.0.1:9001".into()));
        assert_eq!(a("LOCALHOST:0"), Ok("127.0.0.1:0".into()));
        assert_eq!(a("9001"), Ok("127.0.0.1:9001".into()));
        assert_eq!(a(":9001"), Ok("0.0.0.0:9001".into()));
        assert!(a("localhost:99999").unwrap_err().contains("not a port"));
        assert!(a("no-such-host.invalid:9001")
            .unwrap_err()
            .contains("does not resolve"));
        assert!(a("nonsense").unwrap_err().contains("not an address"));
    }
}
