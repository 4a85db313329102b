//! Server configuration: every limit and timeout as plain data, with documented
//! defaults (docs/limits.md).

use std::net::SocketAddr;
use std::time::Duration;

use crate::handler::Mode;
use crate::proto::deflate::DeflateConfig;
use crate::proto::Limits;
use crate::tls::TlsConfig;

/// Default byte budget of unsent output per connection (docs/limits.md).
pub const DEFAULT_MAX_BACKPRESSURE: usize = 1024 * 1024;

/// Default budget of bytes held in buffers by all connections together
/// (docs/limits.md).
pub const DEFAULT_MAX_MEMORY: usize = 1024 * 1024 * 1024;

/// Records the inspector's ring keeps by default (`--inspect-frames`).
pub const DEFAULT_INSPECT_FRAMES: usize = 10_000;

/// Whether the frame inspector runs (`--inspect`, docs/inspector.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InspectMode {
    On,
    Off,
    /// On when the listen address is loopback, off otherwise (an inspector
    /// shows other people's traffic).
    #[default]
    Local,
}

/// Everything the server needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Protocol limits and timeouts.
    pub limits: Limits,
    /// Routing: echo with `/broadcast…` rooms, or broadcast everywhere.
    pub mode: Mode,
    /// Unsent bytes per connection above which an echo client is no longer read
    /// and a broadcast recipient is closed with 1008.
    pub max_backpressure: usize,
    /// Bytes all connections together may hold in message buffers and output
    /// queues; when a read could take the total over it, the connection
    /// holding the most is closed (1009 or 1008 `memory budget`).
    pub max_memory: usize,
    /// permessage-deflate (RFC 7692): mode, window cap, threshold.
    pub deflate: DeflateConfig,
    /// Serve the built-in page on a plain `GET /`.
    pub page: bool,
    /// Echo connections stream large binary messages back as they arrive
    /// (see `Connection::set_streaming`).
    pub streaming: bool,
    /// Connections admitted at once; over it a new connection gets 503 and is
    /// closed. `None`: no limit but the process's file descriptors.
    pub max_connections: Option<usize>,
    /// Origins allowed to connect (exact, ASCII case-insensitive). Empty: any.
    /// Requests without an `Origin` header (non-browser clients) are allowed.
    pub allow_origins: Vec<String>,
    /// TLS (`wss://`, and the page over `https://`) on the same port as
    /// plain `ws://`: a connection's first byte decides. `None`: plain only.
    /// Build it with [`crate::tls::from_pem_files`] or
    /// [`crate::tls::self_signed`].
    pub tls: Option<TlsConfig>,
    /// HTTP/2 on the same port (`--http2`, docs/http2.md): with TLS, ALPN
    /// offers `h2` first; on plain TCP a connection that opens with the
    /// HTTP/2 preface is HTTP/2. Its `websockets` says whether WebSockets
    /// are offered over it (RFC 8441). `None`: HTTP/1.1 only.
    pub http2: Option<crate::proto::h2::Config>,
    /// Subprotocols the server speaks (`--subprotocol`): the first one the
    /// client offers that is listed here is named in the 101; `*` selects the
    /// client's first offer, whatever it is. Empty: none is ever named.
    pub subprotocols: Vec<String>,
    /// A text message sent to every connection first (`--greeting`), `{id}`
    /// replaced by the connection's id; a request's `greeting=` knob
    /// replaces it for that connection.
    pub greeting: Option<String>,
    /// Scripted answers on echo paths (`--stubs FILE`, docs/stubs.md): the
    /// file, read at start and again when it changes.
    pub stubs: Option<std::path::PathBuf>,
    /// `--stubs-speed`: stubs' delays divided by it (1 as written, 0 none).
    pub stubs_speed: f64,
    /// The frame inspector: on, off, or on when listening on loopback.
    pub inspect: InspectMode,
    /// Records the inspector's ring keeps for the whole server.
    pub inspect_frames: usize,
    /// Show `Authorization`, `Proxy-Authorization` and `Cookie` values in
    /// `/connections/ID` instead of redacting them.
    pub inspect_secrets: bool,
    /// Content the inspector keeps of each message (`--inspect-preview`; 0:
    /// none).
    pub inspect_preview: usize,
    /// Messages each room keeps for members that join or come back
    /// (`?history=N`, `Last-Event-ID`); at most 1 MiB of them. 0: none.
    pub room_history: usize,
    /// How long a room without members is kept (its history and ids).
    pub room_linger: Duration,
    /// Rooms shared through Redis with other instances (`--cluster`).
    pub cluster: Option<crate::cluster::Url>,
    /// The TLS client settings for a `rediss://` cluster (`--cluster-ca`).
    pub cluster_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// How long a reply from the cluster's Redis may be overdue before the
    /// link is declared lost, and how long a `POST` waits for its id
    /// (`--cluster-timeout`).
    pub cluster_timeout: Duration,
    /// `SO_REUSEPORT` on the listening socket (`--reuse-port`).
    pub reuse_port: bool,
    /// Set when the process is this server's own (the binary): under
    /// pressure `--max-memory` then weighs the process's resident memory,
    /// not only what connections hold. `None` in an application that
    /// embeds the server (its memory is not the server's).
    pub process: Option<Process>,
    /// Paths whose WebSockets go to a real server (`--proxy PATH=URL`,
    /// docs/proxy.md).
    pub proxy: crate::proxy::Routes,
    /// Header fields added to every upstream request (`--proxy-header`).
    pub proxy_headers: Vec<(String, String)>,
    /// The TLS client settings for `wss://` upstreams
    /// ([`crate::tls::proxy_client_config`]: `--proxy-ca`, `--proxy-insecure`);
    /// required when a route is `wss://`.
    pub proxy_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Where the proxied conversations are recorded as a stubs file
    /// (`--record`, docs/stubs.md "Record and replay").
    pub record: Option<std::path::PathBuf>,
}

/// The server's own process, as the binary describes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Process {
    /// The global allocator's purge of the freed pages it keeps (jemalloc),
    /// run before a connection is closed for the resident memory.
    pub purge: Option<fn()>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            limits: Limits::default(),
            mode: Mode::Echo,
            max_backpressure: DEFAULT_MAX_BACKPRESSURE,
            max_memory: DEFAULT_MAX_MEMORY,
            deflate: DeflateConfig::default(),
            page: true,
            streaming: true,
            max_connections: None,
            allow_origins: Vec::new(),
            tls: None,
            http2: Some(crate::proto::h2::Config::default()),
            subprotocols: Vec::new(),
            greeting: None,
            stubs: None,
            stubs_speed: 1.0,
            inspect: InspectMode::Local,
            inspect_frames: DEFAULT_INSPECT_FRAMES,
            inspect_secrets: false,
            inspect_preview: crate::proto::inspect::MESSAGE_PREVIEW,
            room_history: 100,
            room_linger: Duration::from_secs(60),
            cluster: None,
            cluster_tls: None,
            cluster_timeout: Duration::from_secs(3),
            reuse_port: false,
            process: None,
            proxy: crate::proxy::Routes::default(),
            proxy_headers: Vec::new(),
            proxy_tls: None,
            record: None,
        }
    }
}

impl Config {
    /// The defaults, listening on `127.0.0.1:0` (a free port): for tests.
    pub fn local() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        }
    }
}

/// What people type for an address: `127.0.0.1:9001`, `[::1]:9001`,
/// `localhost:9001` (127.0.0.1), a bare port (`9001`: 127.0.0.1), `:9001`
/// (every interface, `0.0.0.0`), or `NAME:PORT` resolved once.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{s:?}: {p:?} is not a port (0-65535)"))
    };
    if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port(t)?)));
    }
    let Some((host, p)) = t.rsplit_once(':') else {
        return Err(format!(
            "{s:?} is not an address like 127.0.0.1:9001, localhost:9001, 9001 or :9001"
        ));
    };
    let p = port(p)?;
    match host {
        "" => Ok(SocketAddr::from(([0, 0, 0, 0], p))),
        h if h.eq_ignore_ascii_case("localhost") => Ok(SocketAddr::from(([127, 0, 0, 1], p))),
        h => {
            use std::net::ToSocketAddrs;
            (h, p)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("{h:?} does not resolve to an address"))
        }
    }
}
