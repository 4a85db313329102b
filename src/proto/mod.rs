//! The sans-IO protocol core.
//!
//! Nothing in this module touches a socket or reads a clock: bytes and the current
//! time go in ([`Connection::receive`], [`Connection::handle_timeout`]), bytes and
//! events come out ([`Connection::fill_output`], [`Connection::poll_event`]). That makes
//! the whole protocol testable without sockets and fuzzable from the first byte of
//! the handshake to the last byte of the close.

pub mod body;
pub mod client;
pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod h2;
pub mod handshake;
pub mod inspect;
pub mod knobs;
pub mod mask;
pub mod message;
pub mod opcode;
pub mod output;
pub mod sse;
pub mod stamp;
pub mod units;

pub use close::CloseCode;
pub use connection::{Connection, Event, Limits, TransportAction};
pub use error::{HandshakeError, ProtocolError};
pub use frame::FrameHeader;
pub use message::MessageKind;
pub use opcode::OpCode;
pub use output::Chunk;
