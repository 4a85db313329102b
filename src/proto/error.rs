//! Why a connection fails, and what the peer is told.
//!
//! Every variant quotes the RFC 6455 sentence it enforces. After the upgrade a
//! [`ProtocolError`] becomes a close code; before it a [`HandshakeError`] becomes
//! an HTTP status.

use super::close::CloseCode;
use std::fmt;

/// A violation of RFC 6455 by the peer after the opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// §5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated that
    /// defines meanings for non-zero values."
    ReservedBits,
    /// §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail
    /// the WebSocket Connection_."
    ReservedOpcode(u8),
    /// §5.1: "The server MUST close the connection upon receiving a frame that is
    /// not masked."
    UnmaskedFrame,
    /// §5.1: "A client MUST close a connection if it detects a masked frame."
    /// (the client role: a proxy's upstream leg)
    MaskedFrame,
    /// §5.5: "All control frames MUST have a payload length of 125 bytes or less."
    ControlFrameTooLong,
    /// §5.5: "All control frames ... MUST NOT be fragmented."
    FragmentedControlFrame,
    /// §5.2: "the most significant bit MUST be 0" of a 64-bit payload length.
    LengthMsbSet,
    /// §5.4: a continuation frame arrived with no fragmented message open.
    UnexpectedContinuation,
    /// §5.4: a new Text or Binary frame arrived while a fragmented message was open
    /// ("fragments of one message MUST NOT be interleaved").
    ExpectedContinuation,
    /// §7.4.1, 1009: the message (across all its fragments) exceeds `max_message_size`.
    MessageTooBig,
    /// §8.1: "When an endpoint is to interpret a byte stream as UTF-8 but finds that
    /// the byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST
    /// _Fail the WebSocket Connection_." (close code 1007)
    InvalidUtf8,
    /// §5.5.1: a Close body, if present, starts with a two-byte code, so a one-byte
    /// body is malformed.
    CloseBodyTooShort,
    /// §7.4: the peer sent a code that must not appear on the wire (1005, 1006, 1015,
    /// reserved ranges).
    InvalidCloseCode(u16),
    /// §5.5.1: the Close reason "is not guaranteed to be human readable" but it
    /// MUST be UTF-8 (close code 1007).
    InvalidCloseReason,
    /// RFC 7692 §6: "An endpoint MUST NOT set the "Per-Message Compressed" bit
    /// of control frames and non-first fragments of a data message" (1002).
    CompressedControlOrContinuation,
    /// RFC 7692 §6.2: the payload of a compressed message does not inflate
    /// (close code 1007: the data is not consistent with the message).
    BadCompressedData,
}

impl ProtocolError {
    /// The close code we send when failing the connection for this reason.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCloseReason
            | ProtocolError::BadCompressedData => CloseCode::INVALID_PAYLOAD,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// The rule the peer broke: the RFC sentence this variant enforces, with
    /// its section (for the frame inspector and the log).
    pub fn rule(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => {
                "RFC 6455 §5.2: \"RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated that defines meanings for non-zero values.\""
            }
            ProtocolError::ReservedOpcode(_) => {
                "RFC 6455 §5.2: \"If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket Connection_.\""
            }
            ProtocolError::UnmaskedFrame => {
                "RFC 6455 §5.1: \"The server MUST close the connection upon receiving a frame that is not masked.\""
            }
            ProtocolError::MaskedFrame => {
                "RFC 6455 §5.1: \"A client MUST close a connection if it detects a masked frame.\""
            }
            ProtocolError::ControlFrameTooLong => {
                "RFC 6455 §5.5: \"All control frames MUST have a payload length of 125 bytes or less and MUST NOT be fragmented.\""
            }
            ProtocolError::FragmentedControlFrame => {
                "RFC 6455 §5.5: \"All control frames MUST have a payload length of 125 bytes or less and MUST NOT be fragmented.\""
            }
            ProtocolError::LengthMsbSet => {
                "RFC 6455 §5.2: \"the most significant bit MUST be 0\" (of a 64-bit payload length)"
            }
            ProtocolError::UnexpectedContinuation => {
                "RFC 6455 §5.4: a continuation frame (opcode 0) may only follow the first frame of a fragmented message"
            }
            ProtocolError::ExpectedContinuation => {
                "RFC 6455 §5.4: \"The fragments of one message MUST NOT be interleaved between the fragments of another message\""
            }
            ProtocolError::MessageTooBig => {
                "RFC 6455 §7.4.1: 1009 \"indicates that an endpoint is terminating the connection because it has received a message that is too big for it to process\" (--max-message-size)"
            }
            ProtocolError::InvalidUtf8 => {
                "RFC 6455 §8.1: \"When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket Connection_.\""
            }
            ProtocolError::CloseBodyTooShort => {
                "RFC 6455 §5.5.1: \"If there is a body, the first two bytes of the body MUST be a 2-byte unsigned integer\" (a one-byte body has no code)"
            }
            ProtocolError::InvalidCloseCode(_) => {
                "RFC 6455 §7.4.1: 1005, 1006 and 1015 \"MUST NOT be set as a status code in a Close control frame by an endpoint\"; codes below 1000 and 1016-2999 are not defined"
            }
            ProtocolError::InvalidCloseReason => {
                "RFC 6455 §5.5.1: the Close body's reason \"MUST\" be UTF-8 (\"the data ... is not guaranteed to be human readable\" but is UTF-8 encoded)"
            }
            ProtocolError::CompressedControlOrContinuation => {
                "RFC 7692 §6: \"An endpoint MUST NOT set the \\\"Per-Message Compressed\\\" bit of control frames and non-first fragments of a data message.\""
            }
            ProtocolError::BadCompressedData => {
                "RFC 7692 §6.2: the payload of a message with RSV1 set must be DEFLATE data (RFC 1951) ending in an empty block; this one does not inflate"
            }
        }
    }

    /// A short reason, safe to put in a Close frame (ASCII, under 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set without an extension",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::UnmaskedFrame => "client frame not masked",
            ProtocolError::MaskedFrame => "server frame masked",
            ProtocolError::ControlFrameTooLong => "control frame over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::LengthMsbSet => "64-bit length with most significant bit set",
            ProtocolError::UnexpectedContinuation => "continuation frame without a message",
            ProtocolError::ExpectedContinuation => "new message before the previous one ended",
            ProtocolError::MessageTooBig => "message too big",
            ProtocolError::InvalidUtf8 => "invalid UTF-8 in text message",
            ProtocolError::CloseBodyTooShort => "close frame body of one byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidCloseReason => "close reason is not UTF-8",
            ProtocolError::CompressedControlOrContinuation => {
                "RSV1 on a control frame or a continuation frame"
            }
            ProtocolError::BadCompressedData => "compressed data does not inflate",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why an opening handshake was refused (RFC 6455 §4.2.1, §4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The bytes are not an HTTP/1.x request (400).
    Malformed,
    /// The request head exceeds the 8 KiB limit or has too many headers (431).
    TooLarge,
    /// A plain HTTP request with no `Upgrade: websocket` (426, with a body that
    /// says how to connect).
    NotWebSocket,
    /// §4.2.1 item 1: "An HTTP/1.1 or higher GET request" (405 for another method).
    MethodNotAllowed,
    /// §4.2.1 item 1: HTTP/1.0 cannot be upgraded (400).
    HttpVersion,
    /// §4.2.1 item 2: "A |Host| header field" (400).
    MissingHost,
    /// §4.2.1 item 4: "A |Connection| header field that includes the token
    /// "Upgrade"" (400).
    MissingConnectionUpgrade,
    /// §4.2.1 item 6 and §4.4: any version but 13 gets 426 with
    /// `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// §4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded
    /// value that, when decoded, is 16 bytes in length" (400).
    BadKey,
    /// The request's `Origin` is not in the allowlist (403).
    ForbiddenOrigin,
    /// The server is at `--max-connections` (503).
    Overloaded,
}

impl HandshakeError {
    /// A short name, for counters and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed",
            HandshakeError::TooLarge => "too_large",
            HandshakeError::NotWebSocket => "not_websocket",
            HandshakeError::MethodNotAllowed => "method_not_allowed",
            HandshakeError::HttpVersion => "http_version",
            HandshakeError::MissingHost => "missing_host",
            HandshakeError::MissingConnectionUpgrade => "missing_connection_upgrade",
            HandshakeError::UnsupportedVersion => "unsupported_version",
            HandshakeError::BadKey => "bad_key",
            HandshakeError::ForbiddenOrigin => "forbidden_origin",
            HandshakeError::Overloaded => "overloaded",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            HandshakeError::Malformed
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::BadKey => 400,
            HandshakeError::ForbiddenOrigin => 403,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::NotWebSocket | HandshakeError::UnsupportedVersion => 426,
            HandshakeError::TooLarge => 431,
            HandshakeError::Overloaded => 503,
        }
    }

    pub fn reason_phrase(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            403 => "Forbidden",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Service Unavailable",
        }
    }

    /// The plain-text body of the response (the driver may add a line:
    /// [`crate::proto::Connection::reject_with`]).
    pub fn message(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::TooLarge => "request head over 8 KiB or over 64 header fields",
            HandshakeError::NotWebSocket => {
                "echocast is a WebSocket echo and broadcast server.\n\
                 Connect with a WebSocket client, e.g. new WebSocket(\"ws://HOST:PORT/\") \
                 or `websocat ws://HOST:PORT/`."
            }
            HandshakeError::MethodNotAllowed => "a WebSocket upgrade must use GET",
            HandshakeError::HttpVersion => "a WebSocket upgrade needs HTTP/1.1",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingConnectionUpgrade => {
                "the Connection header must contain the token \"upgrade\""
            }
            HandshakeError::UnsupportedVersion => "only Sec-WebSocket-Version 13 is supported",
            HandshakeError::BadKey => {
                "Sec-WebSocket-Key must be present once and decode from base64 to 16 bytes"
            }
            HandshakeError::ForbiddenOrigin => "origin not allowed",
            HandshakeError::Overloaded => "too many connections, try again later",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status(),
            self.reason_phrase(),
            self.message()
        )
    }
}

impl std::error::Error for HandshakeError {}
