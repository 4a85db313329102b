//! The outbound byte queue of one connection.
//!
//! Frames are queued as chunks that are written in order with vectored I/O.
//! Small frames (at most [`COALESCE_MAX`] bytes) are copied into one growing
//! buffer at the tail, so sixteen pipelined echoes become one contiguous write,
//! not 32 iovecs; the buffer is kept and reused once written, and emptied
//! message buffers go to a small pool the next messages are assembled in, so
//! steady traffic does not allocate. Large frames are queued without a copy: the header inline,
//! an echoed payload as the very buffer it was received into, a broadcast frame
//! as one `Rc<[u8]>` shared by every recipient.

use std::io::IoSlice;
use std::rc::Rc;

use super::frame::MAX_HEADER_LEN;

mod queue;

use queue::Queue;

/// Frames up to this size (header + payload) are copied into the tail buffer.
pub const COALESCE_MAX: usize = 4096;
/// A tail buffer takes frames until it holds this much, then a new one starts.
const TAIL_CAPACITY: usize = 64 * 1024;
/// Buffers up to this capacity are kept for reuse once written.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Message buffers kept for reuse, in all (a pipelined burst of small messages
/// needs one each; a streamed message a couple of pieces).
const SPARE_BYTES: usize = 64 * 1024;
const SPARE_COUNT: usize = 64;

/// A piece of queued output.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Up to 14 bytes stored inline, for frame headers.
    Inline([u8; MAX_HEADER_LEN], u8),
    /// Bytes owned by this queue alone.
    Owned(Vec<u8>),
    /// Bytes shared with other queues (an encode-once broadcast frame).
    Shared(Rc<[u8]>),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Inline(b, n) => &b[..usize::from(*n)],
            Chunk::Owned(v) => v,
            Chunk::Shared(r) => r,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Chunk {
        Chunk::Owned(v)
    }
}

impl From<Rc<[u8]>> for Chunk {
    fn from(r: Rc<[u8]>) -> Chunk {
        Chunk::Shared(r)
    }
}

/// The outbound queue of one connection: [`Queue`] behind a box that exists
/// only once something was queued, and can be released when empty. An idle
/// connection then holds 8 bytes for its output, not a queue.
#[derive(Debug, Default)]
pub struct OutQueue {
    q: Option<Box<Queue>>,
}

impl OutQueue {
    /// Frees the queue's storage if it is empty.
    /// Not while a streamed echo is open: its mark lives in the queue.
    pub fn release(&mut self) {
        if self.is_empty() && !self.in_stream() {
            self.q = None;
        }
    }

    /// Queues a whole unit (a complete frame, or an HTTP response).
    pub fn push(&mut self, chunk: Chunk) {
        self.q.get_or_insert_with(Box::default).push(chunk);
    }

    /// Queues a shared buffer of whole frames as its own chunk, never copied
    /// (however small: it is one iovec among the turn's writes, and copying
    /// it into every recipient's tail is what sharing avoids).
    pub fn push_shared(&mut self, frames: Rc<[u8]>) {
        self.q
            .get_or_insert_with(Box::default)
            .push_part(Chunk::Shared(frames), false);
    }

    /// An empty buffer to assemble the next message in (reused storage when
    /// there is some).
    pub fn take_spare(&mut self) -> Vec<u8> {
        self.q
            .as_mut()
            .and_then(|q| q.take_spare())
            .unwrap_or_default()
    }

    /// Keeps `buf` (emptied) for a next message, within the spare budget.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if let Some(q) = self.q.as_mut() {
            q.keep_spare(buf);
        }
    }

    /// Queues a frame as its header and its payload.
    pub fn push_frame(&mut self, header: Chunk, payload: Chunk) {
        self.q
            .get_or_insert_with(Box::default)
            .push_frame(header, payload);
    }

    /// Queues a frame as its header and a copy of `payload` (copied into the
    /// tail buffer when small, else into a buffer of its own).
    pub fn push_frame_copy(&mut self, header: Chunk, payload: &[u8]) {
        let q = self.q.get_or_insert_with(Box::default);
        if header.len() + payload.len() <= COALESCE_MAX && q.stream_mark.is_none() {
            q.append(&[header.as_slice(), payload]);
        } else {
            let mut buf = q.take_spare().unwrap_or_default();
            buf.extend_from_slice(payload);
            q.push_frame(header, Chunk::Owned(buf));
        }
    }

    /// Drops every frame not yet started; the one being written is kept whole.
    pub fn discard_unstarted(&mut self) {
        if let Some(q) = self.q.as_mut() {
            q.discard_unstarted();
        }
    }

    /// A streamed echo starts with the next frame: remember where, so that
    /// [`OutQueue::discard_stream`] can drop its unsent frames if the message
    /// fails before its end. Frames queued before it are never affected, and
    /// until [`OutQueue::end_stream`] every frame is its own chunk (not copied
    /// into a shared tail buffer), so unsent ones can be dropped one by one.
    pub fn begin_stream(&mut self) {
        let q = self.q.get_or_insert_with(Box::default);
        q.open_tail = false;
        q.stream_mark = Some(q.popped + q.chunks.len() as u64);
    }

    /// Whether a streamed echo is open (begun, its last frame not queued):
    /// no other data frame may be queued before it ends.
    pub fn in_stream(&self) -> bool {
        self.q.as_ref().is_some_and(|q| q.stream_mark.is_some())
    }

    /// The streamed echo was queued to its last frame.
    pub fn end_stream(&mut self) {
        if let Some(q) = self.q.as_mut() {
            q.stream_mark = None;
        }
    }

    /// Drops the unsent frames of an unfinished streamed echo (and whatever
    /// was queued after its first frame), keeping the frame being written
    /// whole and everything queued before the stream began.
    pub fn discard_stream(&mut self) {
        if let Some(q) = self.q.as_mut() {
            q.discard_stream();
        }
    }

    /// Frees the buffers kept for reuse.
    pub fn release_spares(&mut self) {
        if let Some(q) = self.q.as_mut() {
            q.spare_tail = Vec::new();
            q.spares = Vec::new();
            q.spare_bytes = 0;
        }
    }

    /// Heap bytes held: queued buffers (an owned buffer by its capacity, a
    /// shared frame by its length, as if this queue alone held it), buffers
    /// kept for reuse, and the queue's own storage. O(1).
    pub fn memory(&self) -> usize {
        self.q.as_ref().map_or(0, |q| {
            q.chunk_bytes
                + q.spare_tail.capacity()
                + q.spare_bytes
                + q.spares.capacity() * std::mem::size_of::<Vec<u8>>()
                + q.chunks.capacity() * std::mem::size_of::<(Chunk, bool)>()
        })
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.q.as_ref().map_or(0, |q| q.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `slices` with the unsent bytes in order; returns how many were filled.
    pub fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        self.q.as_ref().map_or(0, |q| q.fill(slices))
    }

    /// The first unsent bytes (the rest of the first chunk).
    pub fn front(&self) -> &[u8] {
        self.q.as_ref().map_or(&[], |q| q.front())
    }

    /// Marks `n` bytes as written.
    pub fn consume(&mut self, n: usize) {
        match self.q.as_mut() {
            Some(q) => q.consume(n),
            None => assert!(n == 0, "consumed more than was queued"),
        }
    }

    /// Drops everything unsent.
    pub fn clear(&mut self) {
        if let Some(q) = self.q.as_mut() {
            q.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = COALESCE_MAX + 1;

    fn drain(q: &mut OutQueue) -> Vec<u8> {
        let mut got = Vec::new();
        while !q.is_empty() {
            let b = q.front()[0];
            got.push(b);
            q.consume(1);
        }
        got
    }

    #[test]
    fn partial_consumption_keeps_order() {
        let mut q = OutQueue::default();
        q.push(Chunk::Inline([1; 14], 3));
        q.push(Chunk::Owned(vec![2; BIG]));
        q.push(Chunk::Shared(Rc::from(vec![3u8; BIG])));
        q.push(Chunk::Owned(vec![4, 4]));
        assert_eq!(q.len(), 3 + 2 * BIG + 2);
        let mut want = vec![1; 3];
        want.extend(vec![2; BIG]);
        want.extend(vec![3; BIG]);
        want.extend([4, 4]);
        assert_eq!(drain(&mut q), want);

        let mut q2 = OutQueue::default();
        q2.push(Chunk::Owned(vec![9; BIG]));
        q2.push(Chunk::Owned(vec![6; BIG]));
        q2.consume(BIG - 1);
        let mut slices = [IoSlice::new(&[]); 4];
        let n = q2.fill(&mut slices);
        assert_eq!(n, 2);
        assert_eq!(&*slices[0], &[9]);
        assert_eq!(slices[1].len(), BIG);
    }

    #[test]
    fn small_frames_become_one_contiguous_write() {
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        for i in 0..16u8 {
            q.push_frame(
                Chunk::Inline([0x82, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2),
                Chunk::Owned(vec![i]),
            );
            want.extend([0x82, 1, i]);
        }
        q.push(Chunk::Shared(Rc::from(vec![7u8; 5])));
        want.extend([7; 5]);
        {
            let mut slices = [IoSlice::new(&[]); 8];
            assert_eq!(q.fill(&mut slices), 1, "one iovec for 17 small frames");
            assert_eq!(&*slices[0], &want[..]);
        }
        // A large frame is queued without a copy, and small ones after it
        // start a new tail.
        q.push_frame(Chunk::Inline([0x82; 14], 4), Chunk::Owned(vec![8; BIG]));
        q.push(Chunk::Owned(vec![5, 5]));
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(q.fill(&mut slices), 4);
        want.extend([0x82; 4]);
        want.extend(vec![8; BIG]);
        want.extend([5, 5]);
        assert_eq!(drain(&mut q), want);
    }

    #[test]
    fn buffers_are_reused_not_reallocated() {
        // Ping-pong echo: receive into the spare, echo (copied into the tail,
        // the message buffer comes back), write, repeat. After the first round
        // the same two buffers circulate.
        let mut q = OutQueue::default();
        let mut seen = Vec::new();
        for round in 0..4u8 {
            let mut msg = q.take_spare();
            msg.extend_from_slice(&[round; 20]);
            let msg_ptr = msg.as_ptr();
            q.push_frame(
                Chunk::Inline([0x82, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2),
                Chunk::Owned(msg),
            );
            let tail_ptr = q.front().as_ptr();
            if round > 0 {
                seen.push((msg_ptr, tail_ptr));
            }
            let n = q.len();
            q.consume(n);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        // Large buffers are not kept.
        let _ = q.take_spare();
        q.recycle(Vec::with_capacity(KEEP_CAPACITY + 1));
        assert_eq!(q.take_spare().capacity(), 0);
        q.recycle(Vec::with_capacity(100));
        assert!(q.take_spare().capacity() >= 100);
    }

    #[test]
    fn a_burst_of_small_messages_reuses_a_buffer_each() {
        // 16 pipelined echoes: 16 message buffers out at once. After one
        // burst, the next takes 16 kept buffers, allocating none.
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(vec![0; 1])); // the queue exists once used
        for _ in 0..2 {
            let bufs: Vec<Vec<u8>> = (0..16).map(|_| q.take_spare()).collect();
            for mut b in bufs {
                b.extend_from_slice(&[1; 20]);
                q.push_frame(
                    Chunk::Inline([0x82, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2),
                    Chunk::Owned(b),
                );
            }
            let n = q.len();
            q.consume(n);
        }
        let reused = (0..16).filter(|_| q.take_spare().capacity() >= 20).count();
        assert_eq!(reused, 16);
    }

    #[test]
    fn discard_keeps_the_frame_being_written() {
        let mut q = OutQueue::default();
        q.push_frame(Chunk::Inline([1; 14], 2), Chunk::Owned(vec![2; BIG]));
        q.push(Chunk::Owned(vec![3; BIG]));
        q.consume(3); // header written, payload started
        q.discard_unstarted();
        assert_eq!(q.len(), BIG - 1);
        q.consume(BIG - 1);
        assert!(q.is_empty());

        let mut q = OutQueue::default();
        q.push_frame(Chunk::Inline([1; 14], 2), Chunk::Owned(vec![2; BIG]));
        q.push(Chunk::Owned(vec![3; BIG]));
        q.consume(2); // header written exactly: the payload must follow
        q.discard_unstarted();
        assert_eq!(q.len(), BIG);

        let mut q = OutQueue::default();
        q.push(Chunk::Owned(vec![3; BIG]));
        q.push(Chunk::Owned(vec![4; BIG]));
        q.discard_unstarted(); // nothing started
        assert!(q.is_empty());
        q.push(Chunk::Owned(vec![5; 2]));
        assert_eq!(q.front(), &[5, 5]);
    }

    #[test]
    fn discard_keeps_a_started_tail_of_whole_frames() {
        // A tail buffer holds whole frames only: once started it is kept
        // whole, so what the peer receives stays a valid frame sequence.
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(vec![1; 10]));
        q.push(Chunk::Owned(vec![2; 10]));
        q.push(Chunk::Owned(vec![3; BIG]));
        q.consume(5);
        q.discard_unstarted();
        assert_eq!(q.len(), 15);
        q.push(Chunk::Owned(vec![9; 2]));
        let mut want = vec![1; 5];
        want.extend([2; 10]);
        want.extend([9, 9]);
        assert_eq!(drain(&mut q), want);
    }

    #[test]
    fn memory_follows_pushes_and_writes() {
        let mut q = OutQueue::default();
        assert_eq!(q.memory(), 0);
        q.push_frame(Chunk::Inline([0x82; 14], 4), Chunk::Owned(vec![1; 100_000]));
        q.push(Chunk::Shared(Rc::from(vec![2u8; 50_000])));
        q.push(Chunk::Owned(vec![3; 10]));
        let held = q.memory();
        assert!(held >= 150_010, "{held}");
        // Written: the big buffer is freed, the tail kept for reuse.
        let n = q.len();
        q.consume(n);
        assert!(q.memory() < 4096, "{} bytes after writing", q.memory());
        q.release_spares();
        assert!(q.memory() < 1024, "{} bytes after release", q.memory());
        q.push(Chunk::Owned(vec![4; BIG]));
        q.discard_unstarted();
        assert!(q.memory() < 1024, "{} bytes after discard", q.memory());
    }

    #[test]
    fn discard_stream_keeps_earlier_frames_and_the_one_being_written() {
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(vec![1; 10])); // an earlier echo, in the tail
        q.begin_stream();
        q.push_frame(Chunk::Inline([2; 14], 2), Chunk::Owned(vec![2; BIG]));
        q.push(Chunk::Owned(vec![9; 3])); // a pong between pieces
        q.push_frame(Chunk::Inline([3; 14], 2), Chunk::Owned(vec![3; BIG]));
        q.consume(10 + 2 + 5); // the earlier frame, then into the first piece
        q.discard_stream();
        assert_eq!(q.len(), BIG - 5, "the rest of the piece being written");
        q.push(Chunk::Owned(vec![8; 4])); // the close frame
        let mut want = vec![2; BIG - 5];
        want.extend([8; 4]);
        assert_eq!(drain(&mut q), want);

        // Nothing written yet: everything before the mark stays.
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(vec![1; BIG]));
        q.push(Chunk::Owned(vec![4; 4]));
        q.begin_stream();
        q.push(Chunk::Owned(vec![2; 6]));
        q.discard_stream();
        let mut want = vec![1; BIG];
        want.extend([4; 4]);
        assert_eq!(drain(&mut q), want);

        // A finished stream is not discarded.
        let mut q = OutQueue::default();
        q.begin_stream();
        q.push(Chunk::Owned(vec![5; 6]));
        q.end_stream();
        q.discard_stream();
        assert_eq!(q.len(), 6);
    }
}
