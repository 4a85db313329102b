//! The command line's value types and parsers (the binary's; `main.rs`
//! holds the flags and builds the `Config`).

use std::net::SocketAddr;
use std::time::Duration;

use echocast::proto::units;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum DeflateArg {
    /// No context takeover either way: one loop-wide compressor, a broadcast
    /// compressed once, no zlib state kept by idle connections
    Shared,
    /// Context takeover where the client allows it: a compressor and an
    /// inflater per connection, better ratio on small repetitive messages
    Dedicated,
    /// Decline permessage-deflate
    Off,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum InspectArg {
    /// The frame inspector runs (/connections, /frames, /.inspect, the page's view)
    On,
    /// No ring at all; the inspector's endpoints answer 404
    Off,
    /// On when the listen address is loopback, off otherwise
    Local,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Http2Arg {
    /// HTTP/2 with WebSockets over it (RFC 8441): ALPN h2 with TLS, h2c by prior knowledge
    On,
    /// HTTP/1.1 only
    Off,
    /// HTTP/2 without SETTINGS_ENABLE_CONNECT_PROTOCOL: browsers open WebSockets over HTTP/1.1
    NoWebsockets,
    /// The setting sent, then every extended CONNECT answered 501
    RefuseWebsockets,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum ModeArg {
    /// Every path echoes, except paths under /broadcast (rooms)
    Echo,
    /// Every path is a broadcast room (path = room)
    Broadcast,
}

/// A parsed `--listen`: the address, and whether it was the `:PORT`
/// shorthand, which binds every interface without saying so (so it is
/// warned about; an explicit `0.0.0.0:PORT` is a deliberate choice).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listen {
    pub(crate) addr: SocketAddr,
    pub(crate) shorthand_every_interface: bool,
}

pub(crate) fn parse_listen(s: &str) -> Result<Listen, String> {
    let shorthand_every_interface = s.trim().starts_with(':');
    echocast::config::parse_addr(s).map(|addr| Listen {
        addr,
        shorthand_every_interface,
    })
}

pub(crate) fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n == 0.0 || (0.01..=1000.0).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: 0, or a number from 0.01 to 1000")),
    }
}

pub(crate) fn parse_cluster_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
        return Err(format!("{s:?}: between 100ms and 60s"));
    }
    Ok(d)
}

pub(crate) fn parse_cluster(s: &str) -> Result<echocast::cluster::Url, String> {
    echocast::cluster::Url::parse(s)
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).ok_or_else(|| format!("{s:?} is not {}", units::DURATION_FORMS))
}

/// A size flag: `1048576`, `64MiB`, `1GiB`, `500MB`, `64k`.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    units::parse_size(s).ok_or_else(|| {
        format!("{s:?} is not a size like 1048576, 64KiB, 64MiB, 1GiB or 500MB (or is too large)")
    })
}
