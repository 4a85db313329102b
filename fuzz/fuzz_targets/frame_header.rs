//! The frame header decoder: never panics, and what it decodes re-encodes to a
//! header that decodes to the same thing.
#![no_main]
use echocast::proto::FrameHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((h, n))) = FrameHeader::decode(data) {
        assert!(n <= data.len() && n <= 14);
        assert!(h.payload_len >> 63 == 0);
        let (bytes, m) = h.encode();
        let (h2, m2) = FrameHeader::decode(&bytes[..m]).unwrap().unwrap();
        assert_eq!(h, h2);
        assert_eq!(m, m2);
        assert!(m <= n, "minimal encoding is never longer");
    }
});
