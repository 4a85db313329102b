//! The outbound byte queue of one connection.
//!
//! Frames are queued as chunks that are written in order with vectored I/O:
//! a frame header sits inline (no allocation), an echoed payload is the very
//! buffer it was received into, and a broadcast frame is one `Rc<[u8]>` shared by
//! every recipient.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

use super::frame::MAX_HEADER_LEN;

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

/// Ordered outbound chunks, the position inside the first one, and the total of
/// unsent bytes. Each chunk knows whether it continues the frame of the chunk
/// before it, so unsent whole frames can be dropped without cutting one in half.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<(Chunk, bool)>,
    /// Bytes of `chunks[0]` already written.
    head_pos: usize,
    /// Unsent bytes in total.
    len: usize,
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
    pub fn release(&mut self) {
        if self.is_empty() {
            self.q = None;
        }
    }

    /// Queues a whole unit (a complete frame, or an HTTP response).
    pub fn push(&mut self, chunk: Chunk) {
        self.q.get_or_insert_with(Box::default).push(chunk);
    }

    /// Queues a frame as its header and its payload.
    pub fn push_frame(&mut self, header: Chunk, payload: Chunk) {
        self.q
            .get_or_insert_with(Box::default)
            .push_frame(header, payload);
    }

    /// Drops every frame not yet started; the one being written is kept whole.
    pub fn discard_unstarted(&mut self) {
        if let Some(q) = self.q.as_mut() {
            q.discard_unstarted();
        }
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

impl Queue {
    /// Queues a whole unit (a complete frame, or an HTTP response).
    pub fn push(&mut self, chunk: Chunk) {
        self.push_part(chunk, false);
    }

    /// Queues a frame as its header and its payload.
    pub fn push_frame(&mut self, header: Chunk, payload: Chunk) {
        self.push_part(header, false);
        self.push_part(payload, true);
    }

    fn push_part(&mut self, chunk: Chunk, continues: bool) {
        let n = chunk.len();
        if n == 0 {
            return;
        }
        self.len += n;
        self.chunks.push_back((chunk, continues));
    }

    /// Drops every frame not yet started; the one being written is kept whole.
    pub fn discard_unstarted(&mut self) {
        let started = match self.chunks.front() {
            Some((_, continues)) => self.head_pos > 0 || *continues,
            None => return,
        };
        let keep = if started {
            1 + self.chunks.iter().skip(1).take_while(|(_, c)| *c).count()
        } else {
            0
        };
        self.chunks.truncate(keep);
        let whole: usize = self.chunks.iter().map(|(c, _)| c.len()).sum();
        self.len = whole - self.head_pos;
        if keep == 0 {
            self.head_pos = 0;
        }
    }

    /// Fills `slices` with the unsent bytes in order; returns how many were filled.
    pub fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, (chunk, _)) in self.chunks.iter().enumerate() {
            if n == slices.len() {
                break;
            }
            let bytes = chunk.as_slice();
            let bytes = if i == 0 {
                &bytes[self.head_pos..]
            } else {
                bytes
            };
            slices[n] = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// The first unsent bytes (the rest of the first chunk).
    pub fn front(&self) -> &[u8] {
        match self.chunks.front() {
            Some((c, _)) => &c.as_slice()[self.head_pos..],
            None => &[],
        }
    }

    /// Marks `n` bytes as written.
    pub fn consume(&mut self, mut n: usize) {
        assert!(n <= self.len, "consumed more than was queued");
        self.len -= n;
        while n > 0 {
            let front_left = self.chunks[0].0.len() - self.head_pos;
            if n >= front_left {
                n -= front_left;
                self.chunks.pop_front();
                self.head_pos = 0;
            } else {
                self.head_pos += n;
                n = 0;
            }
        }
    }

    /// Drops everything unsent.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.head_pos = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_consumption_keeps_order() {
        let mut q = OutQueue::default();
        q.push(Chunk::Inline([1; 14], 3));
        q.push(Chunk::Owned(vec![2, 2]));
        q.push(Chunk::Shared(Rc::from(vec![3u8, 3, 3])));
        assert_eq!(q.len(), 8);
        let mut got = Vec::new();
        while !q.is_empty() {
            let b = q.front()[0];
            got.push(b);
            q.consume(1);
        }
        assert_eq!(got, [1, 1, 1, 2, 2, 3, 3, 3]);
        let mut q2 = OutQueue::default();
        q2.push(Chunk::Owned(vec![9, 8, 7]));
        q2.push(Chunk::Owned(vec![6]));
        q2.consume(2);
        let mut slices = [IoSlice::new(&[]); 4];
        let n = q2.fill(&mut slices);
        assert_eq!(n, 2);
        assert_eq!(&*slices[0], &[7]);
        assert_eq!(&*slices[1], &[6]);
    }

    #[test]
    fn discard_keeps_the_frame_being_written() {
        let mut q = OutQueue::default();
        q.push_frame(Chunk::Inline([1; 14], 2), Chunk::Owned(vec![2; 4]));
        q.push(Chunk::Owned(vec![3; 5]));
        q.consume(3); // header written, payload started
        q.discard_unstarted();
        assert_eq!(q.len(), 3);
        q.consume(3);
        assert!(q.is_empty());

        let mut q = OutQueue::default();
        q.push_frame(Chunk::Inline([1; 14], 2), Chunk::Owned(vec![2; 4]));
        q.push(Chunk::Owned(vec![3; 5]));
        q.consume(2); // header written exactly: the payload must follow
        q.discard_unstarted();
        assert_eq!(q.len(), 4);

        let mut q = OutQueue::default();
        q.push(Chunk::Owned(vec![3; 5]));
        q.push(Chunk::Owned(vec![4; 5]));
        q.discard_unstarted(); // nothing started
        assert!(q.is_empty());
        q.push(Chunk::Owned(vec![5; 2]));
        assert_eq!(q.front(), &[5, 5]);
    }
}
