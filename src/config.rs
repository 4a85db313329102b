//! Server configuration: every limit and timeout as plain data, with documented
//! defaults (docs/limits.md).

use std::net::SocketAddr;

use crate::proto::Limits;

/// Everything the server needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Protocol limits and timeouts.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            limits: Limits::default(),
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
