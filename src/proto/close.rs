//! Close status codes (RFC 6455 §7.4 and the IANA "WebSocket Close Code Number" registry).

/// A close status code as carried in the first two bytes of a Close frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013 Try Again Later (IANA registry): the server is temporarily
    /// unable to take the message (a `--cluster` Redis away).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// "No status received" (RFC 6455 §7.4.1): what a close frame with an
    /// empty body is reported as. Never put on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);

    /// Whether a peer may put this code on the wire.
    ///
    /// RFC 6455 §7.4.1/§7.4.2: 1004 is reserved, 1005, 1006 and 1015 "MUST NOT be
    /// set as a status code in a Close control frame by an endpoint", codes below
    /// 1000 are unused, 1016–2999 are reserved for future RFCs, 3000–4999 are for
    /// libraries, frameworks and applications. 1012–1014 were registered with IANA
    /// after the RFC (service restart, try again later, bad gateway) and are accepted.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autobahn_valid_codes_are_allowed() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(c).is_allowed_on_wire(), "{c}");
        }
    }

    #[test]
    fn autobahn_invalid_codes_are_refused() {
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_allowed_on_wire(), "{c}");
        }
    }
}
