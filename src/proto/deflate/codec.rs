//! permessage-deflate's codec (RFC 7692 §7.2): compressing a message we
//! send, inflating one we receive in bounded steps, and the loop-wide
//! compressors and inflater pool of the `shared` mode.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The four bytes every flushed deflate block ends with (§7.2.1), stripped
/// from what we send and appended to what we inflate.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Inflated bytes are produced in steps of at most this many, so that the
/// message size cap is checked before more is produced (inflate bombs).
pub const INFLATE_STEP: usize = 16 * 1024;

/// An inflater for raw deflate data (every window size: inflating with the
/// largest window accepts data compressed with any smaller one).
pub fn new_inflater() -> Decompress {
    Decompress::new_with_window_bits(false, 15)
}

/// A compressor for raw deflate data with a window of `bits` (9–15).
pub fn new_compressor(bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::fast(), false, bits.clamp(9, 15))
}

/// Compresses `data` as one message with a sync flush and strips the
/// `00 00 ff ff` tail (§7.2.1). With `reset`, the compressor starts from an
/// empty window (no context takeover). (A reset clears zlib's hash table,
/// most of the cost of compressing a small message: it is done once, here,
/// not again after.)
pub fn compress_message(c: &mut Compress, data: &[u8], reset: bool) -> Vec<u8> {
    if reset {
        c.reset();
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let start_in = c.total_in();
    loop {
        let consumed = (c.total_in() - start_in) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate of in-memory data does not fail");
        let consumed = (c.total_in() - start_in) as usize;
        // Done when all input is in and the flush left room to spare (a
        // full output buffer may mean more flush output is pending).
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
        if status == Status::StreamEnd {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    if out.is_empty() {
        // Nothing new since the last flush (an empty message with context
        // takeover): zlib emits no second flush marker, but the receiver
        // appends `00 00 ff ff` to whatever we send, so send the header
        // byte of an empty stored block, as §7.2.3.6 shows.
        out.push(0x00);
    }
    out
}

/// Compressors the whole loop shares (shared mode: no context takeover, so
/// any connection may use any compressor of its window size), created on
/// first use. Messages are compressed whole, one at a time, so sharing needs
/// no more than a `RefCell`.
#[derive(Default)]
pub struct SharedCodec {
    compressors: RefCell<[Option<Box<Compress>>; 7]>,
    /// Inflaters not in use: a connection whose client does not keep its
    /// context takes one for each compressed message and gives it back at the
    /// message's end, so idle connections hold none. (Boxed: they move
    /// between the pool and connections as one pointer.)
    #[allow(clippy::vec_box)]
    inflaters: RefCell<Vec<Box<Decompress>>>,
}

/// Inflaters kept in the pool at most.
const POOLED_INFLATERS: usize = 16;

impl std::fmt::Debug for SharedCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCodec")
    }
}

impl SharedCodec {
    /// An inflater for one message (from the pool when there is one).
    pub fn take_inflater(&self) -> Box<Decompress> {
        self.inflaters
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Box::new(new_inflater()))
    }

    /// Gives back an inflater at the end of a message (reset for the next).
    pub fn give_inflater(&self, mut d: Box<Decompress>) {
        let mut pool = self.inflaters.borrow_mut();
        if pool.len() < POOLED_INFLATERS {
            d.reset(false);
            pool.push(d);
        }
    }

    /// Compresses one message on its own with a window of `bits`.
    pub fn compress(&self, bits: u8, data: &[u8]) -> Vec<u8> {
        let bits = bits.clamp(9, 15);
        let mut all = self.compressors.borrow_mut();
        let c = all[usize::from(bits - 9)].get_or_insert_with(|| Box::new(new_compressor(bits)));
        compress_message(c, data, true)
    }
}

/// Why inflating stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The output passed `max_len` (an inflate bomb, or just too big).
    TooBig,
    /// The data is not valid raw deflate.
    Corrupt,
}

/// Inflates all of `input` into `out` (appending), in steps of at most
/// [`INFLATE_STEP`] bytes of output, failing as soon as `out` passes
/// `max_len`. `out`'s capacity never grows past `max_len + INFLATE_STEP`, so
/// a bomb costs at most the cap plus one step. `on_step(out, from)` sees the
/// bytes each step added (for incremental UTF-8 validation).
pub fn inflate_into<E>(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max_len: usize,
    mut on_step: impl FnMut(&[u8], usize) -> Result<(), E>,
) -> Result<(), Result<InflateError, E>> {
    loop {
        if out.len() > max_len {
            return Err(Ok(InflateError::TooBig));
        }
        // Room for the next step: the capacity doubles (from 1 KiB, so a
        // small message does not leave a 16 KiB buffer behind for reuse), at
        // most one step at a time and never past the cap plus one step.
        let step = out.capacity().clamp(1024, INFLATE_STEP);
        if out.capacity() - out.len() < step {
            let want = (out.len() + step).min(max_len.saturating_add(INFLATE_STEP));
            out.reserve_exact(want.saturating_sub(out.len()).max(1));
        }
        let from = out.len();
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| Ok(InflateError::Corrupt))?;
        let consumed = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        input = &input[consumed..];
        if produced > 0 {
            on_step(out, from).map_err(Err)?;
        }
        if status == Status::StreamEnd {
            // A final block ends this deflate stream; whatever follows (the
            // appended tail at least) starts a new one.
            d.reset(false);
        }
        let room_left = out.capacity() > out.len();
        if input.is_empty() && room_left {
            if out.len() > max_len {
                return Err(Ok(InflateError::TooBig));
            }
            return Ok(());
        }
        if consumed == 0 && produced == 0 && status != Status::StreamEnd {
            // No progress with room to spare: truncated or corrupt input.
            if room_left {
                return Err(Ok(InflateError::Corrupt));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_messages_inflate_back_and_lose_their_tail() {
        let c = SharedCodec::default();
        let data = b"{\"id\": 1, \"name\": \"echocast\", \"tags\": [\"a\", \"b\"]}".repeat(20);
        for bits in [9, 12, 15] {
            let z = c.compress(bits, &data);
            assert!(z.len() < data.len() / 4, "{} of {}", z.len(), data.len());
            assert!(!z.ends_with(&TAIL));
            let mut d = new_inflater();
            let mut out = Vec::new();
            let mut input = z.clone();
            input.extend_from_slice(&TAIL);
            inflate_into::<()>(&mut d, &input, &mut out, 1 << 20, |_, _| Ok(())).unwrap();
            assert_eq!(out, data);
        }
        // An empty message compresses to something that inflates to nothing.
        let z = c.compress(15, b"");
        let mut out = Vec::new();
        let mut input = z;
        input.extend_from_slice(&TAIL);
        inflate_into::<()>(&mut new_inflater(), &input, &mut out, 10, |_, _| Ok(())).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn messages_with_context_takeover_inflate_in_sequence_empty_ones_included() {
        // One compressor and one inflater for the whole conversation
        // (dedicated mode): each message is one flushed piece of one stream.
        let mut c = new_compressor(10);
        let mut d = Decompress::new_with_window_bits(false, 10);
        let big = vec![b'x'; 300_000];
        let msgs: [&[u8]; 6] = [b"hello", b"", b"", b"hello again", &big, b""];
        for m in msgs {
            let mut z = compress_message(&mut c, m, false);
            assert!(!z.is_empty());
            z.extend_from_slice(&TAIL);
            let mut out = Vec::new();
            inflate_into::<()>(&mut d, &z, &mut out, 1 << 20, |_, _| Ok(())).unwrap();
            assert_eq!(out, m);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_cap_plus_one_step() {
        let zeros = vec![0u8; 16 << 20];
        let z = SharedCodec::default().compress(15, &zeros);
        assert!(z.len() < 1 << 20, "{}", z.len());
        let mut out = Vec::new();
        let r = inflate_into::<()>(&mut new_inflater(), &z, &mut out, 1 << 20, |_, _| Ok(()));
        assert_eq!(r, Err(Ok(InflateError::TooBig)));
        assert!(
            out.capacity() <= (1 << 20) + INFLATE_STEP,
            "{}",
            out.capacity()
        );
    }

    #[test]
    fn garbage_does_not_inflate() {
        let mut out = Vec::new();
        let r = inflate_into::<()>(
            &mut new_inflater(),
            &[0xff; 64],
            &mut out,
            1 << 20,
            |_, _| Ok(()),
        );
        assert_eq!(r, Err(Ok(InflateError::Corrupt)));
    }
}
