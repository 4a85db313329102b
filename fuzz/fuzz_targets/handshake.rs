//! The request parser: never panics, never reads past the head it reports, and
//! every response it builds is a well-formed HTTP/1.1 response.
#![no_main]
use echocast::proto::handshake::{accept_response, error_response, parse_request, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Some((parsed, n))) => {
            assert!(n <= data.len());
            assert!(n <= echocast::proto::handshake::MAX_REQUEST_HEAD);
            if let Parsed::Upgrade(req) = parsed {
                let r = accept_response(&req, None, None);
                assert!(r.starts_with(b"HTTP/1.1 101 ") && r.ends_with(b"\r\n\r\n"));
            }
        }
        Ok(None) => assert!(data.len() <= echocast::proto::handshake::MAX_REQUEST_HEAD),
        Err(e) => {
            let r = error_response(e);
            assert!(r.starts_with(b"HTTP/1.1 "));
        }
    }
});
