//! Sending: messages, pieces and shared frames into the output queue (with
//! compression and the `fragment` knob applied where every frame is queued),
//! the pongs we owe, and the bytes the driver takes out.

use std::io::IoSlice;
use std::rc::Rc;

use super::super::frame::FrameHeader;
use super::super::inspect::{Dir, MessageInfo};
use super::super::message::MessageKind;
use super::{bump_by, Chunk, Connection, FrameInfo, OpCode, What, PONG_COALESCE_BYTES};

/// The encoded header of a frame: a server's (unmasked), or with `mask` a
/// client's.
pub(super) fn header(
    opcode: OpCode,
    len: usize,
    fin: bool,
    rsv: u8,
    mask: Option<[u8; 4]>,
) -> Chunk {
    let mut hdr = FrameHeader::server(opcode, len);
    hdr.fin = fin;
    hdr.rsv = rsv;
    hdr.mask = mask;
    let (bytes, n) = hdr.encode();
    Chunk::Inline(bytes, n as u8)
}

impl Connection {
    /// Queues a message. Returns false (and queues nothing) unless the connection
    /// is open.
    ///
    /// With permessage-deflate, a message at least `--deflate-threshold`
    /// bytes long goes out compressed (RSV1 set), and an owned buffer is
    /// recycled.
    pub fn send(&mut self, kind: MessageKind, payload: impl Into<Chunk>) -> bool {
        if !self.can_send() {
            return false;
        }
        self.send_frame(kind, payload.into());
        true
    }

    /// Queues a message (compressed if agreed and long enough).
    pub(super) fn send_frame(&mut self, kind: MessageKind, payload: Chunk) {
        self.send_frame_split(kind, payload, None);
    }

    /// [`Connection::send_frame`] in frames of `split` payload bytes if
    /// given (else as the `fragment` knob says).
    pub(super) fn send_frame_split(
        &mut self,
        kind: MessageKind,
        payload: Chunk,
        split: Option<usize>,
    ) {
        let deflate = self.deflate_mut().filter(|d| payload.len() >= d.threshold);
        if let Some(d) = deflate {
            let compressed = d.compress(payload.as_slice());
            if self.tapping() {
                self.record_message_out(kind, payload.as_slice(), compressed.len(), true, split);
            }
            if let Chunk::Owned(buf) = payload {
                self.out.recycle(buf);
            }
            let record = self.tapping();
            self.queue_frame_as(
                kind.opcode(),
                true,
                4,
                Chunk::Owned(compressed),
                record,
                split,
            );
            return;
        }
        // Its frame's record may be folded into the message's.
        let tapping = self.tapping();
        let folded = tapping
            && self.record_message_out(kind, payload.as_slice(), payload.len(), false, split);
        self.queue_frame_as(kind.opcode(), true, 0, payload, tapping && !folded, split);
    }

    /// The inspector's record of a message we send, before its frames.
    /// Returns whether its one frame is folded into it (no record of its own).
    pub(super) fn record_message_out(
        &self,
        kind: MessageKind,
        data: &[u8],
        wire: usize,
        compressed: bool,
        split: Option<usize>,
    ) -> bool {
        let frames = match split.or_else(|| self.fragment_size()) {
            Some(n) if n > 0 && wire > n => wire.div_ceil(n),
            _ => 1,
        };
        let preview = self.limits.tap.preview();
        let mut info = MessageInfo {
            dir: Dir::Out,
            text: kind == MessageKind::Text,
            len: data.len() as u64,
            wire_len: wire as u64,
            frames: frames as u32,
            compressed,
            content: data[..data.len().min(preview)].into(),
            folded: false,
        };
        info.folded = info.can_fold();
        let folded = info.folded;
        self.record(What::Message(info));
        folded
    }

    /// Queues one piece of a fragmented binary message: the first piece opens
    /// the message, the one with `fin` ends it (RFC 6455 §5.4: an intermediary
    /// may change fragmentation, so an echo may be split differently from what
    /// arrived). Control frames may go out between pieces. Returns false
    /// (queues nothing) unless the connection can send.
    pub fn send_fragment(&mut self, data: Vec<u8>, first: bool, fin: bool) -> bool {
        if !self.can_send() {
            return false;
        }
        let opcode = if first {
            self.out.begin_stream();
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        self.queue_frame_rsv(opcode, fin, 0, Chunk::Owned(data));
        if fin {
            self.out.end_stream();
        }
        true
    }

    /// Queues `count` already encoded server frames, one after the other
    /// (a run of room messages encoded once and shared by every member),
    /// as one chunk: never copied, written with whatever else is queued.
    pub fn send_encoded(&mut self, frames: Rc<[u8]>, count: usize) -> bool {
        // Shared frames are a server's (unmasked).
        if !self.can_send() || self.is_client() {
            return false;
        }
        self.count_frames_out(count as u64);
        self.out.push_shared(frames);
        true
    }

    /// Gives back a message's buffer once the application is done with it, so
    /// the next message is assembled in it (steady traffic then allocates
    /// nothing). Optional: a buffer not given back is simply freed.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.out.recycle(buf);
    }

    /// Fills `slices` with unsent bytes, in order; returns the number filled.
    pub fn fill_output<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.out.fill(slices)
    }

    /// The first unsent bytes.
    pub fn output_front(&self) -> &[u8] {
        self.out.front()
    }

    /// Unsent bytes.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Marks `n` bytes as written to the transport.
    pub fn consume_output(&mut self, n: usize) {
        self.out.consume(n);
        if self.out.is_empty() {
            self.close.drained();
            if std::mem::take(&mut self.release_out) {
                self.out.release();
            }
        }
        if self.out.len() <= PONG_COALESCE_BYTES {
            if let Some(p) = self.take_pending_pong() {
                self.queue_pong(p);
            }
        }
        if self.mis().is_some() {
            self.refill_push();
        }
    }

    /// Messages may be queued while open, and after a close or an error until our
    /// close frame is queued.
    pub(super) fn can_send(&self) -> bool {
        self.state.is_open() || self.close.is_pending()
    }

    /// Output queued, or echoes held back by `delay` still to go out.
    pub(super) fn has_unsent(&self) -> bool {
        !self.out.is_empty() || self.mis().is_some_and(|m| m.has_held())
    }

    /// The one path of a pong: queued while less than
    /// [`PONG_COALESCE_BYTES`] is unsent, else kept as the one pong owed
    /// (replacing an older one) until the queue drains.
    pub(super) fn queue_pong(&mut self, payload: Vec<u8>) {
        if self.out.len() > PONG_COALESCE_BYTES {
            self.ctl.get_or_insert_with(Box::default).pending_pong = Some(payload);
        } else if self.can_send() {
            self.queue_frame(OpCode::Pong, Chunk::Owned(payload));
        }
    }

    pub(super) fn take_pending_pong(&mut self) -> Option<Vec<u8>> {
        self.ctl.as_mut()?.pending_pong.take()
    }

    pub(super) fn queue_frame(&mut self, opcode: OpCode, payload: Chunk) {
        self.queue_frame_rsv(opcode, true, 0, payload);
    }

    pub(super) fn queue_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Chunk) {
        let record = self.tapping();
        self.queue_frame_as(opcode, fin, rsv, payload, record, None);
    }

    /// [`Connection::queue_frame_rsv`], with the frame's own record or
    /// without it (folded into its message's).
    /// `split`: frames of that many payload bytes (else the `fragment`
    /// knob's, for a data frame).
    fn queue_frame_as(
        &mut self,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        payload: Chunk,
        record: bool,
        split: Option<usize>,
    ) {
        let split = split.or_else(|| {
            (!opcode.is_control() && self.ctl.is_some())
                .then(|| self.fragment_size())
                .flatten()
        });
        if let Some(n) = split.filter(|&n| n > 0 && payload.len() > n) {
            return self.queue_fragmented(opcode, fin, rsv, &payload, n);
        }
        self.count_frame_out();
        if record {
            let info = FrameInfo::outgoing(opcode.as_u8(), fin, rsv, payload.as_slice());
            self.record(What::Frame(info));
        }
        if let Some(key) = self.mask_key() {
            return self.push_masked(opcode, fin, rsv, payload, key);
        }
        self.out
            .push_frame(header(opcode, payload.len(), fin, rsv, None), payload);
    }

    /// The client role (§5.3): the frame's header names `key` and its
    /// payload goes out masked with it: in place when the buffer is ours
    /// (`Chunk::Owned`), else copied first.
    fn push_masked(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Chunk, key: [u8; 4]) {
        let hdr = header(opcode, payload.len(), fin, rsv, Some(key));
        let mut payload = match payload {
            Chunk::Owned(v) => v,
            other => other.as_slice().to_vec(),
        };
        super::super::mask::apply_mask(&mut payload, key, 0);
        self.out.push_frame(hdr, Chunk::Owned(payload));
    }

    /// The `fragment` knob: a data frame's payload goes out in frames of `n`
    /// bytes (the last one shorter), as one message: the first frame keeps
    /// the opcode and RSV1, the rest are continuations, FIN on the last one
    /// only if the frame asked for it.
    fn queue_fragmented(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: &Chunk, n: usize) {
        let data = payload.as_slice();
        let last = data.len().div_ceil(n) - 1;
        for (i, piece) in data.chunks(n).enumerate() {
            let (op, rsv) = if i == 0 {
                (opcode, rsv)
            } else {
                (OpCode::Continuation, 0)
            };
            self.count_frame_out();
            if self.tapping() {
                let info = FrameInfo::outgoing(op.as_u8(), fin && i == last, rsv, piece);
                self.record(What::Frame(info));
            }
            if let Some(key) = self.mask_key() {
                self.push_masked(op, fin && i == last, rsv, Chunk::Owned(piece.to_vec()), key);
                continue;
            }
            self.out
                .push_frame_copy(header(op, piece.len(), fin && i == last, rsv, None), piece);
        }
    }

    /// Every frame we queue is counted once and marks the connection busy.
    pub(super) fn count_frame_out(&mut self) {
        self.count_frames_out(1);
    }

    pub(super) fn count_frames_out(&mut self, n: u64) {
        self.recent = true;
        bump_by(&self.limits.counters.frames_out, n);
    }
}
