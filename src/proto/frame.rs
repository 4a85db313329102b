//! Frame header encoding and decoding (RFC 6455 §5.2).
//!
//! Only the header is parsed here; payload bytes are streamed by the connection
//! as they arrive, so nothing is ever allocated from a declared length.

use super::error::ProtocolError;
use super::opcode::OpCode;

/// The largest possible header: 2 fixed bytes, 8 bytes of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header. The opcode is kept raw so that the caller decides how
/// a reserved opcode is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed. `Ok(Some((header, n)))`: the header is the
    /// first `n` bytes. The only error a header alone can carry is a 64-bit length
    /// with its most significant bit set.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let b0 = buf[0];
        let b1 = buf[1];
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7f {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthMsbSet);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let key = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
            pos += 4;
            Some(key)
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin: b0 & 0x80 != 0,
                rsv: (b0 >> 4) & 0x7,
                opcode: b0 & 0x0f,
                mask,
                payload_len,
            },
            pos,
        )))
    }

    /// Encodes this header with the minimal length form; returns the bytes and how
    /// many of them are used.
    pub fn encode(&self) -> ([u8; MAX_HEADER_LEN], usize) {
        let mut out = [0u8; MAX_HEADER_LEN];
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0x0f);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        (out, pos)
    }

    /// The header of an unmasked, final server frame.
    pub fn server(opcode: OpCode, payload_len: usize) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: opcode.as_u8(),
            mask: None,
            payload_len: payload_len as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(h: FrameHeader) -> usize {
        let (bytes, n) = h.encode();
        for cut in 0..n {
            assert_eq!(FrameHeader::decode(&bytes[..cut]), Ok(None), "cut {cut}");
        }
        let (d, used) = FrameHeader::decode(&bytes[..n]).unwrap().unwrap();
        assert_eq!(d, h);
        assert_eq!(used, n);
        n
    }

    #[test]
    fn length_boundaries() {
        for (len, unmasked, masked) in [
            (0u64, 2, 6),
            (125, 2, 6),
            (126, 4, 8),
            (65535, 4, 8),
            (65536, 10, 14),
            ((1 << 63) - 1, 10, 14),
        ] {
            let mut h = FrameHeader::server(OpCode::Binary, 0);
            h.payload_len = len;
            assert_eq!(roundtrip(h), unmasked, "len {len}");
            h.mask = Some([1, 2, 3, 4]);
            assert_eq!(roundtrip(h), masked, "len {len}");
        }
    }

    #[test]
    fn rfc_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        let (h, n) = FrameHeader::decode(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, 1, None, 5, 2)
        );
        // A single-frame masked text message "Hello".
        let (h, n) = FrameHeader::decode(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f])
            .unwrap()
            .unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!((h.payload_len, n), (5, 6));
        // A fragmented unmasked text message: "Hel" then "lo".
        let (h, _) = FrameHeader::decode(&[0x01, 0x03]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, 1));
        let (h, _) = FrameHeader::decode(&[0x80, 0x02]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, 0));
        // 256 bytes binary message in a single unmasked frame.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (2, 256, 4));
        // 64KiB binary message in a single unmasked frame.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (2, 65536, 10));
        // Unmasked Ping "Hello" and masked Pong "Hello".
        let (h, _) = FrameHeader::decode(&[0x89, 0x05]).unwrap().unwrap();
        assert_eq!(h.opcode, 9);
        let (h, _) = FrameHeader::decode(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len), (0xA, 5));
    }

    #[test]
    fn msb_of_64_bit_length_is_an_error() {
        let mut b = [0x82u8, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::decode(&b), Err(ProtocolError::LengthMsbSet));
        b[2] = 0x40; // 2^62: legal to declare
        assert!(FrameHeader::decode(&b).unwrap().is_none()); // mask key still missing
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (h, _) = FrameHeader::decode(&[0xf1, 0x80, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(h.rsv, 7);
    }
}
