//! Acting on a connection from outside its conversation (the inspector's
//! actions, issue 26): a message sent in frames of a chosen size, a ping,
//! a close with or without a code, a hang-up without a close frame, and
//! frames of the caller's making, sent exactly as described and never
//! checked against the protocol. Each acts only on an open WebSocket and
//! says how many bytes it queued.

use std::time::Instant;

use super::super::frame::FrameHeader;
use super::super::inspect::{Dir, Preview, PREVIEW};
use super::super::mask::apply_mask;
use super::super::message::MessageKind;
use super::{Chunk, CloseCode, Connection, FrameInfo, OpCode, What};

/// A frame as the caller described it: any opcode (0–15), FIN and RSV bits
/// as given, masked with `mask` if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub opcode: u8,
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub mask: Option<[u8; 4]>,
    /// The payload as it is meant (masked on the way out if `mask`).
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Appends the frame's bytes as they go on the wire.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let header = FrameHeader {
            fin: self.fin,
            rsv: self.rsv & 7,
            opcode: self.opcode & 15,
            mask: self.mask,
            payload_len: self.payload.len() as u64,
        };
        let (bytes, n) = header.encode();
        out.extend_from_slice(&bytes[..n]);
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(key) = self.mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }
}

/// Why an action was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNow {
    /// Not an open WebSocket: handshaking, a plain request, closing.
    NotOpen,
    /// A streamed echo is being sent: a message now would split it.
    Streaming,
}

impl NotNow {
    pub fn message(self) -> &'static str {
        match self {
            NotNow::NotOpen => "the connection is not an open WebSocket (handshaking, plain HTTP, an event stream, or closing)",
            NotNow::Streaming => "a streamed echo is being sent on this connection: a message now would go inside it; try again",
        }
    }
}

impl Connection {
    fn open_for_action(&self) -> Result<(), NotNow> {
        if self.state.is_open() {
            Ok(())
        } else {
            Err(NotNow::NotOpen)
        }
    }

    /// Sends a message (compressed like any other when deflate is agreed),
    /// in frames of `frame_size` payload bytes if given. Returns the bytes
    /// queued.
    pub fn send_message(
        &mut self,
        kind: MessageKind,
        data: Vec<u8>,
        frame_size: Option<usize>,
    ) -> Result<usize, NotNow> {
        self.open_for_action()?;
        if self.out.in_stream() {
            return Err(NotNow::Streaming);
        }
        let before = self.out.len();
        self.send_frame_split(kind, Chunk::Owned(data), frame_size);
        Ok(self.out.len() - before)
    }

    /// Sends a ping with `payload` (at most 125 bytes: the caller checks).
    pub fn send_ping(&mut self, payload: Vec<u8>) -> Result<usize, NotNow> {
        self.open_for_action()?;
        let before = self.out.len();
        self.queue_frame(OpCode::Ping, Chunk::Owned(payload));
        Ok(self.out.len() - before)
    }

    /// Starts the closing handshake: with `code` and `reason`, or with an
    /// empty close frame. Returns the bytes queued (0 while our close waits
    /// behind answers or held echoes).
    pub fn close_now(
        &mut self,
        code: Option<CloseCode>,
        reason: &str,
        now: Instant,
    ) -> Result<usize, NotNow> {
        self.open_for_action()?;
        let before = self.out.len();
        match code {
            Some(code) => self.close(code, reason, now),
            None => self.close_without_code(now),
        }
        Ok(self.out.len().saturating_sub(before))
    }

    /// Ends the connection without a close frame: what is queued is still
    /// written, then the socket is shut (FIN), or reset with `reset`.
    pub fn hang_up(&mut self, reset: bool, now: Instant) -> Result<(), NotNow> {
        self.open_for_action()?;
        self.ctl.get_or_insert_with(Box::default).dropping = Some(reset);
        self.enter_flushing(now);
        Ok(())
    }

    /// Whether the connection is ending without a close frame
    /// ([`Connection::hang_up`], the `drop=N` knob): a transport that can
    /// say so (an HTTP/2 stream's RST_STREAM) does.
    pub fn is_hanging_up(&self) -> bool {
        self.ctl.as_ref().is_some_and(|c| c.dropping.is_some())
    }

    /// Queues frames exactly as described, after whatever is queued (never
    /// inside a frame), each recorded with `raw: true`. Our own state does
    /// not change: a raw close frame does not start our closing handshake.
    /// Returns the bytes queued.
    pub fn send_raw(&mut self, frames: &[RawFrame]) -> Result<usize, NotNow> {
        self.open_for_action()?;
        let mut bytes = Vec::new();
        for f in frames {
            f.encode(&mut bytes);
            self.count_frame_out();
            if self.tapping() {
                let mut preview = Preview::default();
                preview.extend(&f.payload, PREVIEW);
                self.record(What::Frame(FrameInfo {
                    dir: Dir::Out,
                    opcode: f.opcode & 15,
                    fin: f.fin,
                    rsv: f.rsv & 7,
                    masked: f.mask.is_some(),
                    len: f.payload.len() as u64,
                    preview,
                    raw: true,
                }));
            }
        }
        let n = bytes.len();
        if n > 0 {
            self.out.push(Chunk::Owned(bytes));
        }
        Ok(n)
    }
}
