//! The frame inspector's output of the core: a small record for each frame
//! as it is parsed or queued, and for what fails a connection or a knob
//! does. Sans-IO like events: the core pushes records into a [`Tap`] shared
//! by every connection (one `Rc<Limits>`), the driver drains it once per
//! loop turn and stamps the time. When the tap is off, recording costs one
//! branch.

use std::cell::{Cell, RefCell};

use super::frame::FrameHeader;

/// Payload bytes kept per frame (a close frame's code and the first 62
/// bytes of its reason).
pub const PREVIEW: usize = 64;

/// The payload bytes kept of a frame, inline (no allocation per record, and
/// small to copy): the first [`PREVIEW`].
#[derive(Clone, PartialEq, Eq)]
pub struct Preview {
    len: u8,
    bytes: [u8; PREVIEW],
}

impl Preview {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends what fits of `data` (at most `limit` bytes in all); returns
    /// the appended bytes, to unmask in place.
    pub(crate) fn extend(&mut self, data: &[u8], limit: usize) -> &mut [u8] {
        let start = usize::from(self.len);
        let n = limit
            .min(self.bytes.len())
            .saturating_sub(start)
            .min(data.len());
        self.bytes[start..start + n].copy_from_slice(&data[..n]);
        self.len = (start + n) as u8;
        &mut self.bytes[start..start + n]
    }
}

impl Default for Preview {
    fn default() -> Preview {
        Preview {
            len: 0,
            bytes: [0; PREVIEW],
        }
    }
}

impl From<&[u8]> for Preview {
    fn from(data: &[u8]) -> Preview {
        let mut p = Preview::default();
        p.extend(data, PREVIEW);
        p
    }
}

impl std::fmt::Debug for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    In,
    Out,
}

/// A frame as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    pub dir: Dir,
    pub opcode: u8,
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub masked: bool,
    /// Payload length on the wire.
    pub len: u64,
    /// The first payload bytes, unmasked ([`PREVIEW`]).
    pub preview: Preview,
    /// Sent as the inspector's caller described it (never validated).
    pub raw: bool,
}

impl FrameInfo {
    pub(crate) fn incoming(h: &FrameHeader) -> FrameInfo {
        FrameInfo {
            dir: Dir::In,
            opcode: h.opcode,
            fin: h.fin,
            rsv: h.rsv,
            masked: h.mask.is_some(),
            len: h.payload_len,
            preview: Preview::default(),
            raw: false,
        }
    }

    pub(crate) fn outgoing(opcode: u8, fin: bool, rsv: u8, payload: &[u8]) -> FrameInfo {
        let mut preview = Preview::default();
        preview.extend(payload, PREVIEW);
        FrameInfo {
            dir: Dir::Out,
            opcode,
            fin,
            rsv,
            masked: false,
            len: payload.len() as u64,
            preview,
            raw: false,
        }
    }

    /// The code and reason of a close frame's body, if it has a code (the
    /// reason's first 62 bytes).
    pub fn close(&self) -> Option<(u16, String)> {
        let body = self.preview.as_slice();
        (self.opcode == 8 && body.len() >= 2).then(|| {
            (
                u16::from_be_bytes([body[0], body[1]]),
                String::from_utf8_lossy(&body[2..]).into_owned(),
            )
        })
    }
}

/// Message content kept per record by default (`--inspect-preview`).
pub const MESSAGE_PREVIEW: usize = 4096;

/// A complete message, in or out: after reassembly and inflate (in), before
/// compression and fragmentation (out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    pub dir: Dir,
    /// Text (true) or binary.
    pub text: bool,
    /// The message's size.
    pub len: u64,
    /// Payload bytes its frames had on the wire.
    pub wire_len: u64,
    /// How many frames carried it.
    pub frames: u32,
    pub compressed: bool,
    /// Its first bytes (at most the tap's preview).
    pub content: Content,
    /// The one frame that carried it has no record of its own: the message
    /// went uncompressed in a single frame whose first [`PREVIEW`] bytes
    /// `content` holds, so that frame is [`MessageInfo::frame`]. Half the
    /// records for the common case, same answers (see docs/inspector.md).
    pub folded: bool,
}

/// Bytes kept inline up to this many (no allocation for a small message).
const INLINE: usize = 38;

/// A message record's content: small ones inline, larger ones boxed.
#[derive(Clone)]
pub struct Content(Repr);

#[derive(Clone)]
enum Repr {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Content {
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(n, b) => &b[..usize::from(*n)],
            Repr::Heap(b) => b,
        }
    }
}

impl std::ops::Deref for Content {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<&[u8]> for Content {
    fn from(data: &[u8]) -> Content {
        if data.len() <= INLINE {
            let mut b = [0; INLINE];
            b[..data.len()].copy_from_slice(data);
            Content(Repr::Inline(data.len() as u8, b))
        } else {
            Content(Repr::Heap(data.into()))
        }
    }
}

impl From<Vec<u8>> for Content {
    fn from(data: Vec<u8>) -> Content {
        if data.len() <= INLINE {
            Content::from(&data[..])
        } else {
            Content(Repr::Heap(data.into_boxed_slice()))
        }
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Content {}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl MessageInfo {
    /// Whether `content` is cut short of the message.
    pub fn truncated(&self) -> bool {
        (self.content.len() as u64) < self.len
    }

    /// Whether the frame of a message in one uncompressed frame can be told
    /// from this record (`content` holds the frame's preview).
    pub(crate) fn can_fold(&self) -> bool {
        self.frames == 1
            && !self.compressed
            && self.content.len() as u64 >= self.len.min(PREVIEW as u64)
    }

    /// The frame folded into this record, if any.
    pub fn frame(&self) -> Option<FrameInfo> {
        self.folded.then(|| FrameInfo {
            dir: self.dir,
            opcode: if self.text { 1 } else { 2 },
            fin: true,
            rsv: 0,
            // A client's frames are masked (else the connection failed
            // before the message was whole), ours never are.
            masked: self.dir == Dir::In,
            len: self.wire_len,
            preview: Preview::from(&self.content[..]),
            raw: false,
        })
    }
}

/// What the core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Frame(FrameInfo),
    /// A complete message (a data frame's record stays as it is).
    Message(MessageInfo),
    /// The peer broke a rule: the close code we answer with, and the rule
    /// (the RFC sentence, see [`super::ProtocolError::rule`]).
    Error {
        close_code: u16,
        rule: &'static str,
    },
    /// A URL knob did something (`drop=3 fired`).
    Knob(String),
}

/// One record, tagged with the connection's id ([`super::Connection::set_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub conn: u32,
    pub what: What,
}

/// Where the core's records go: off until the driver turns it on.
#[derive(Debug)]
pub struct Tap {
    on: Cell<bool>,
    /// Message content kept per record (0: none).
    preview: Cell<usize>,
    records: RefCell<Vec<Record>>,
}

impl Default for Tap {
    fn default() -> Tap {
        Tap {
            on: Cell::new(false),
            preview: Cell::new(MESSAGE_PREVIEW),
            records: RefCell::default(),
        }
    }
}

impl Clone for Tap {
    /// A copy of the setting only (records belong to the tap they went to).
    fn clone(&self) -> Tap {
        Tap {
            on: Cell::new(self.on.get()),
            preview: Cell::new(self.preview.get()),
            records: RefCell::default(),
        }
    }
}

impl Tap {
    pub fn set_on(&self, on: bool) {
        self.on.set(on);
    }

    pub fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Message content kept per record (`--inspect-preview`; 0: none).
    pub fn set_preview(&self, bytes: usize) {
        self.preview.set(bytes);
    }

    pub fn preview(&self) -> usize {
        self.preview.get()
    }

    pub(crate) fn push(&self, conn: u32, what: What) {
        self.records.borrow_mut().push(Record { conn, what });
    }

    /// Takes every record pushed since the last call, oldest first.
    pub fn drain(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.borrow_mut())
    }

    /// Swaps the records pushed since the last call into `out` (which must
    /// be empty), so the two buffers' storage is reused turn after turn.
    pub fn swap_into(&self, out: &mut Vec<Record>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut *self.records.borrow_mut(), out);
    }

    pub fn is_empty(&self) -> bool {
        self.records.borrow().is_empty()
    }
}
