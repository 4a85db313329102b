//! Message assembly: one growing buffer per message, a byte cap across all of its
//! fragments, and incremental UTF-8 validation that fails at the first invalid
//! byte even in the middle of a frame (RFC 6455 §5.4, §5.6, §8.1).

use super::deflate;
use super::error::ProtocolError;
use super::mask::{apply_mask, extend_unmasked};
use super::opcode::OpCode;

/// The type of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A message being received, possibly across several frames.
#[derive(Debug)]
pub struct MessageBuffer {
    kind: MessageKind,
    data: Vec<u8>,
    /// The last `utf8_pending` bytes (at most 3) are an incomplete, so far valid,
    /// code point; everything before them is known to be valid UTF-8.
    utf8_pending: u8,
    /// Bytes already handed out as pieces ([`MessageBuffer::take_piece`]).
    delivered: u64,
    /// The payload is permessage-deflate data (RSV1 on the first frame):
    /// what is buffered is the inflated message.
    compressed: bool,
}

impl MessageBuffer {
    pub fn new(kind: MessageKind, data: Vec<u8>) -> MessageBuffer {
        debug_assert!(data.is_empty());
        MessageBuffer {
            kind,
            data,
            utf8_pending: 0,
            delivered: 0,
            compressed: false,
        }
    }

    /// A message whose payload is compressed (RFC 7692): its bytes go through
    /// [`MessageBuffer::inflate`].
    pub fn new_compressed(kind: MessageKind, data: Vec<u8>) -> MessageBuffer {
        MessageBuffer {
            compressed: true,
            ..MessageBuffer::new(kind, data)
        }
    }

    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Inflates masked payload bytes sitting `offset` bytes into their frame
    /// into the message, failing with 1009 as soon as the inflated message
    /// passes `max_len` (checked every [`deflate::INFLATE_STEP`] bytes, so a
    /// bomb costs at most the cap plus one step) and, for text, at the first
    /// invalid UTF-8 byte of the inflated data.
    pub fn inflate(
        &mut self,
        masked: &[u8],
        key: [u8; 4],
        offset: usize,
        d: &mut flate2::Decompress,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        let mut block = [0u8; 4096];
        let mut off = offset;
        for piece in masked.chunks(block.len()) {
            let plain = &mut block[..piece.len()];
            plain.copy_from_slice(piece);
            apply_mask(plain, key, off);
            off += piece.len();
            self.inflate_plain(plain, d, max_len)?;
        }
        Ok(())
    }

    /// Inflates unmasked compressed bytes (the `00 00 ff ff` tail at the end).
    pub fn inflate_plain(
        &mut self,
        input: &[u8],
        d: &mut flate2::Decompress,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        let text = self.kind == MessageKind::Text;
        let pending = &mut self.utf8_pending;
        deflate::inflate_into(d, input, &mut self.data, max_len, |data, from| {
            if text {
                check_utf8(data, from, pending)
            } else {
                Ok(())
            }
        })
        .map_err(|e| match e {
            Ok(deflate::InflateError::TooBig) => ProtocolError::MessageTooBig,
            Ok(deflate::InflateError::Corrupt) => ProtocolError::BadCompressedData,
            Err(e) => e,
        })
    }

    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Heap bytes the buffer holds (its capacity).
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Bytes buffered now (not counting pieces already handed out).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The message's size so far, pieces handed out included (what the size
    /// cap is checked against).
    pub fn total_len(&self) -> u64 {
        self.delivered + self.data.len() as u64
    }

    /// Whether a piece was handed out already (the message is being streamed).
    pub fn is_streaming(&self) -> bool {
        self.delivered > 0
    }

    /// Hands out the buffered bytes of a binary message as one piece and goes
    /// on in `fresh` (an empty buffer).
    pub fn take_piece(&mut self, fresh: Vec<u8>) -> Vec<u8> {
        debug_assert!(self.kind == MessageKind::Binary && fresh.is_empty());
        self.delivered += self.data.len() as u64;
        std::mem::replace(&mut self.data, fresh)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends masked payload bytes that sit `offset` bytes into their frame.
    /// The buffer grows by exactly what arrived, never by a declared length.
    pub fn push(
        &mut self,
        masked: &[u8],
        key: [u8; 4],
        offset: usize,
    ) -> Result<(), ProtocolError> {
        let start = self.data.len();
        extend_unmasked(&mut self.data, masked, key, offset);
        if self.kind == MessageKind::Text {
            check_utf8(&self.data, start, &mut self.utf8_pending)?;
        }
        Ok(())
    }

    /// Ends the message: a text message must not stop inside a code point.
    pub fn finish(self) -> Result<(MessageKind, Vec<u8>), ProtocolError> {
        if self.kind == MessageKind::Text && self.utf8_pending != 0 {
            return Err(ProtocolError::InvalidUtf8);
        }
        Ok((self.kind, self.data))
    }
}

/// Validates the bytes of `data` from `start` on, together with the `pending`
/// bytes before it that were an incomplete code point; leaves in `pending` the
/// length of the incomplete code point now at the end.
fn check_utf8(data: &[u8], start: usize, pending: &mut u8) -> Result<(), ProtocolError> {
    let from = start - usize::from(*pending);
    let valid = validate_utf8_prefix(&data[from..])?;
    // An incomplete code point is at most 3 bytes long.
    *pending = (data.len() - from - valid) as u8;
    Ok(())
}

/// Returns how many leading bytes of `bytes` are complete, valid UTF-8, provided
/// that whatever follows them is the valid beginning of a code point (so it may
/// still be completed by bytes yet to come). Any byte that can never be part of
/// valid UTF-8 is an error at once.
pub fn validate_utf8_prefix(bytes: &[u8]) -> Result<usize, ProtocolError> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(bytes.len()),
        // `error_len() == None`: the input ends inside a code point whose bytes so
        // far are valid.
        Err(e) if e.error_len().is_none() => Ok(e.valid_up_to()),
        Err(_) => Err(ProtocolError::InvalidUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_plain(m: &mut MessageBuffer, bytes: &[u8]) -> Result<(), ProtocolError> {
        m.push(bytes, [0; 4], 0)
    }

    #[test]
    fn utf8_split_anywhere_is_fine() {
        let text = "κόσμε – ε ∀ 𝄞 ok".as_bytes();
        for split in 0..=text.len() {
            let mut m = MessageBuffer::new(MessageKind::Text, Vec::new());
            push_plain(&mut m, &text[..split]).unwrap();
            push_plain(&mut m, &text[split..]).unwrap();
            assert_eq!(m.finish().unwrap().1, text);
        }
    }

    #[test]
    fn utf8_fails_at_first_invalid_byte() {
        // "κόσμε" then 0xED 0xA0 0x80 (a UTF-16 surrogate): the 0xA0 is the error.
        let mut m = MessageBuffer::new(MessageKind::Text, Vec::new());
        push_plain(&mut m, "κόσμε".as_bytes()).unwrap();
        push_plain(&mut m, &[0xed]).unwrap();
        assert_eq!(push_plain(&mut m, &[0xa0]), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn utf8_truncated_code_point_fails_at_end() {
        let mut m = MessageBuffer::new(MessageKind::Text, Vec::new());
        push_plain(&mut m, &[0xf0, 0x9d]).unwrap();
        assert_eq!(m.finish().unwrap_err(), ProtocolError::InvalidUtf8);
    }

    #[test]
    fn binary_is_not_validated() {
        let mut m = MessageBuffer::new(MessageKind::Binary, Vec::new());
        push_plain(&mut m, &[0xff, 0xfe]).unwrap();
        assert_eq!(m.finish().unwrap().1, vec![0xff, 0xfe]);
    }

    #[test]
    fn prefix_validation_examples() {
        assert_eq!(validate_utf8_prefix(b"abc"), Ok(3));
        assert_eq!(validate_utf8_prefix(&[b'a', 0xe2, 0x82]), Ok(1));
        assert_eq!(
            validate_utf8_prefix(&[0xc0]),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(
            validate_utf8_prefix(&[0xf4, 0x90]),
            Err(ProtocolError::InvalidUtf8)
        );
    }
}
