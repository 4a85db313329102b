//! The queue behind [`super::OutQueue`]: ordered chunks, the tail buffer
//! small frames are coalesced into, stream marks, and spare buffers.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::{Chunk, COALESCE_MAX, KEEP_CAPACITY, SPARE_BYTES, SPARE_COUNT, TAIL_CAPACITY};

/// Ordered outbound chunks, the position inside the first one, and the total of
/// unsent bytes. Each chunk knows whether it continues the frame of the chunk
/// before it, so unsent whole frames can be dropped without cutting one in half.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) chunks: VecDeque<(Chunk, bool)>,
    /// Bytes of `chunks[0]` already written.
    pub(super) head_pos: usize,
    /// Unsent bytes in total.
    pub(super) len: usize,
    /// Heap bytes the chunks refer to ([`footprint`]), kept up to date on
    /// every push and pop so that [`OutQueue::memory`] costs nothing.
    pub(super) chunk_bytes: usize,
    /// Chunks popped from the front so far: `chunks[i]` is chunk number
    /// `popped + i` of all this queue ever held (what a stream mark names).
    pub(super) popped: u64,
    /// The number of the first chunk of a streamed echo still being sent
    /// (see [`OutQueue::begin_stream`]).
    pub(super) stream_mark: Option<u64>,
    /// `chunks.back()` is a tail buffer (whole frames only) that takes more.
    pub(super) open_tail: bool,
    /// A written tail buffer, emptied, kept for the next tail.
    pub(super) spare_tail: Vec<u8>,
    /// Emptied message buffers (payloads copied into a tail, or written): the
    /// next received messages are assembled in them. At most `SPARE_COUNT`
    /// buffers and `SPARE_BYTES` of capacity.
    pub(super) spares: Vec<Vec<u8>>,
    pub(super) spare_bytes: usize,
}

/// The heap bytes a chunk refers to: an owned buffer's capacity, a shared
/// frame's length (counted in full by every queue that holds it).
pub(super) fn footprint(chunk: &Chunk) -> usize {
    match chunk {
        Chunk::Inline(..) => 0,
        Chunk::Owned(v) => v.capacity(),
        Chunk::Shared(r) => r.len(),
    }
}

impl Queue {
    /// Queues a whole unit (a complete frame, or an HTTP response).
    pub(super) fn push(&mut self, chunk: Chunk) {
        if chunk.len() <= COALESCE_MAX && self.stream_mark.is_none() {
            self.append(&[chunk.as_slice()]);
        } else {
            self.push_part(chunk, false);
        }
    }

    /// Queues a frame as its header and its payload.
    pub(super) fn push_frame(&mut self, header: Chunk, payload: Chunk) {
        // While a stream is marked, frames are not coalesced: each stays its
        // own chunk, so the unsent ones can be dropped frame by frame.
        if header.len() + payload.len() <= COALESCE_MAX && self.stream_mark.is_none() {
            self.append(&[header.as_slice(), payload.as_slice()]);
            if let Chunk::Owned(v) = payload {
                self.keep_spare(v);
            }
        } else {
            self.push_part(header, false);
            self.push_part(payload, true);
        }
    }

    pub(super) fn take_spare(&mut self) -> Option<Vec<u8>> {
        let v = self.spares.pop()?;
        self.spare_bytes -= v.capacity();
        Some(v)
    }

    pub(super) fn keep_spare(&mut self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if cap > 0 && self.spares.len() < SPARE_COUNT && self.spare_bytes + cap <= SPARE_BYTES {
            v.clear();
            self.spare_bytes += cap;
            self.spares.push(v);
        }
    }

    /// Copies one small frame (or response) into the tail buffer.
    pub(super) fn append(&mut self, parts: &[&[u8]]) {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if n == 0 {
            return;
        }
        let fits = self.open_tail
            && matches!(self.chunks.back(), Some((Chunk::Owned(v), _)) if v.len() + n <= TAIL_CAPACITY);
        if !fits {
            let mut buf = std::mem::take(&mut self.spare_tail);
            if buf.capacity() == 0 {
                buf.reserve(n.max(512));
            }
            self.chunk_bytes += buf.capacity();
            self.chunks.push_back((Chunk::Owned(buf), false));
            self.open_tail = true;
        }
        let Some((Chunk::Owned(tail), _)) = self.chunks.back_mut() else {
            unreachable!("the tail buffer was just ensured");
        };
        let before = tail.capacity();
        for p in parts {
            tail.extend_from_slice(p);
        }
        self.chunk_bytes += tail.capacity() - before;
        self.len += n;
    }

    pub(super) fn push_part(&mut self, chunk: Chunk, continues: bool) {
        let n = chunk.len();
        if n == 0 {
            return;
        }
        self.len += n;
        self.chunk_bytes += footprint(&chunk);
        self.chunks.push_back((chunk, continues));
        self.open_tail = false;
    }

    /// How many leading chunks make up the frame being written (0 if none is
    /// started).
    pub(super) fn started_chunks(&self) -> usize {
        match self.chunks.front() {
            Some((_, continues)) if self.head_pos > 0 || *continues => {
                1 + self.chunks.iter().skip(1).take_while(|(_, c)| *c).count()
            }
            _ => 0,
        }
    }

    /// Drops every chunk from `keep` on.
    pub(super) fn truncate_chunks(&mut self, keep: usize) {
        if keep >= self.chunks.len() {
            return;
        }
        let dropped: usize = self
            .chunks
            .iter()
            .skip(keep)
            .map(|(c, _)| footprint(c))
            .sum();
        self.chunk_bytes -= dropped;
        self.chunks.truncate(keep);
        self.open_tail = false;
        let whole: usize = self.chunks.iter().map(|(c, _)| c.len()).sum();
        if keep == 0 {
            self.head_pos = 0;
        }
        self.len = whole - self.head_pos;
    }

    /// Drops every frame not yet started; the one being written is kept whole.
    pub(super) fn discard_unstarted(&mut self) {
        self.stream_mark = None;
        self.truncate_chunks(self.started_chunks());
    }

    /// Drops what was queued from the stream mark on, but the frame being
    /// written.
    pub(super) fn discard_stream(&mut self) {
        if let Some(mark) = self.stream_mark.take() {
            let before = usize::try_from(mark.saturating_sub(self.popped)).unwrap_or(usize::MAX);
            self.truncate_chunks(before.max(self.started_chunks()));
        }
    }

    /// Fills `slices` with the unsent bytes in order; returns how many were filled.
    pub(super) fn fill<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
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
    pub(super) fn front(&self) -> &[u8] {
        match self.chunks.front() {
            Some((c, _)) => &c.as_slice()[self.head_pos..],
            None => &[],
        }
    }

    /// Marks `n` bytes as written.
    pub(super) fn consume(&mut self, mut n: usize) {
        assert!(n <= self.len, "consumed more than was queued");
        self.len -= n;
        while n > 0 {
            let front_left = self.chunks[0].0.len() - self.head_pos;
            if n >= front_left {
                n -= front_left;
                let popped = self.chunks.pop_front();
                self.popped += 1;
                if let Some((c, _)) = &popped {
                    self.chunk_bytes -= footprint(c);
                }
                self.head_pos = 0;
                if self.chunks.is_empty() {
                    self.open_tail = false;
                }
                // Keep a written buffer's storage (an echoed payload, a tail)
                // for the next message or the next tail.
                if let Some((Chunk::Owned(mut v), _)) = popped {
                    if self.spare_tail.capacity() == 0 && v.capacity() <= KEEP_CAPACITY {
                        v.clear();
                        self.spare_tail = v;
                    } else {
                        self.keep_spare(v);
                    }
                }
            } else {
                self.head_pos += n;
                n = 0;
            }
        }
    }

    /// Drops everything unsent.
    pub(super) fn clear(&mut self) {
        self.stream_mark = None;
        self.truncate_chunks(0);
    }
}
