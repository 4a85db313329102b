//! Message assembly: one growing buffer per message, a byte cap across all of its
//! fragments, and incremental UTF-8 validation that fails at the first invalid
//! byte even in the middle of a frame (RFC 6455 §5.4, §5.6, §8.1).

use super::error::ProtocolError;
use super::mask::apply_mask;
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
}

impl MessageBuffer {
    pub fn new(kind: MessageKind, data: Vec<u8>) -> MessageBuffer {
        debug_assert!(data.is_empty());
        MessageBuffer {
            kind,
            data,
            utf8_pending: 0,
            delivered: 0,
        }
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
        // Copy and unmask in 4 KiB blocks: the unmasking pass then reads what
        // was just written from L1, instead of a second trip through memory.
        self.data.reserve(masked.len());
        let mut off = offset;
        for block in masked.chunks(4096) {
            let at = self.data.len();
            self.data.extend_from_slice(block);
            apply_mask(&mut self.data[at..], key, off);
            off += block.len();
        }
        if self.kind == MessageKind::Text {
            let from = start - usize::from(self.utf8_pending);
            let valid = validate_utf8_prefix(&self.data[from..])?;
            // An incomplete code point is at most 3 bytes long.
            self.utf8_pending = (self.data.len() - from - valid) as u8;
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
