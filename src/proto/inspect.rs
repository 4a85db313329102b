//! The frame inspector's output of the core: a small record for each frame
//! as it is parsed or queued, and for what fails a connection or a knob
//! does. Sans-IO like events: the core pushes records into a [`Tap`] shared
//! by every connection (one `Rc<Limits>`), the driver drains it once per
//! loop turn and stamps the time. When the tap is off, recording costs one
//! branch.

use std::cell::{Cell, RefCell};

use super::frame::FrameHeader;

/// Payload bytes kept per frame (a close frame keeps its whole body, at most
/// 125 bytes, for its code and reason).
pub const PREVIEW: usize = 64;

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
    /// The first payload bytes, unmasked ([`PREVIEW`]; a close frame's whole
    /// body).
    pub preview: Vec<u8>,
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
            preview: Vec::new(),
        }
    }

    pub(crate) fn outgoing(opcode: u8, fin: bool, rsv: u8, payload: &[u8]) -> FrameInfo {
        let keep = payload.len().min(Self::limit(opcode));
        FrameInfo {
            dir: Dir::Out,
            opcode,
            fin,
            rsv,
            masked: false,
            len: payload.len() as u64,
            preview: payload[..keep].to_vec(),
        }
    }

    /// Payload bytes kept for a frame of this opcode.
    pub(crate) fn limit(opcode: u8) -> usize {
        if opcode == 8 {
            125
        } else {
            PREVIEW
        }
    }

    /// The code and reason of a close frame's body, if it has a code.
    pub fn close(&self) -> Option<(u16, String)> {
        (self.opcode == 8 && self.preview.len() >= 2).then(|| {
            (
                u16::from_be_bytes([self.preview[0], self.preview[1]]),
                String::from_utf8_lossy(&self.preview[2..]).into_owned(),
            )
        })
    }
}

/// What the core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Frame(FrameInfo),
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
#[derive(Debug, Default)]
pub struct Tap {
    on: Cell<bool>,
    records: RefCell<Vec<Record>>,
}

impl Clone for Tap {
    /// A copy of the setting only (records belong to the tap they went to).
    fn clone(&self) -> Tap {
        Tap {
            on: Cell::new(self.on.get()),
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

    pub(crate) fn push(&self, conn: u32, what: What) {
        self.records.borrow_mut().push(Record { conn, what });
    }

    /// Takes every record pushed since the last call, oldest first.
    pub fn drain(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.borrow_mut())
    }

    pub fn is_empty(&self) -> bool {
        self.records.borrow().is_empty()
    }
}
