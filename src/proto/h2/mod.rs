//! HTTP/2 (RFC 9113) and WebSockets over it (RFC 8441), server side,
//! sans-IO like the rest of the core: a [`Session`] turns one transport's
//! bytes into streams' bytes and back, with flow control as its own state.
//!
//! - `frame.rs`: the frame header, types, flags, error codes, writers.
//! - `session.rs`: the connection: preface, SETTINGS, streams and their
//!   states, flow control both ways, the connection errors of §5.4.
//! - `request.rs`: a stream's header list checked (§8.2–§8.3) and written
//!   as the HTTP/1.1 request the server's one parser reads.
//! - `response.rs`: the HTTP/1.1 answer read back as HEADERS and DATA.
//!
//! HPACK (RFC 7541) is `loona-hpack`'s: the decoder keeps the dynamic table
//! the peer drives; we encode with a fresh table per block.

pub mod frame;
pub mod request;
pub mod response;
pub mod session;

pub use frame::{ErrorCode, PREFACE};
pub use session::{Config, Event, Read, Session, WebSockets};
