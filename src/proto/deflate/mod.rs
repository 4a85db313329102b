//! permessage-deflate (RFC 7692): negotiation, and the compression state a
//! server needs. No I/O, no clock.
//!
//! Negotiation (§5, §7.1) reads every offer of every `Sec-WebSocket-Extensions`
//! header in order and accepts the first one it can honour; an offer with an
//! unknown parameter, a duplicate parameter or an invalid value is declined
//! (the handshake goes on without it). What the server answers depends on the
//! mode:
//! - `shared`: the server always answers `server_no_context_takeover`
//!   (§7.1.1.1 lets it) and `client_no_context_takeover` (§7.1.1.2 lets it):
//!   every message is compressed and inflated on its own, so one loop-wide
//!   compressor per window size serves every connection, a broadcast frame is
//!   compressed once, and an idle connection keeps no zlib state at all;
//! - `dedicated`: context takeover both ways where the client allows it, a
//!   compressor and an inflater per connection (better ratio on small
//!   repetitive messages, ~tens of KiB per connection);
//! - `off`: every offer is declined.

mod codec;

pub use codec::*;

/// What `--deflate` chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeflateMode {
    /// Decline every offer.
    Off,
    /// No context takeover either way; one compressor for the whole loop.
    #[default]
    Shared,
    /// Context takeover where the client allows it; state per connection.
    Dedicated,
}

/// The server's permessage-deflate settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    pub mode: DeflateMode,
    /// The largest window the server compresses with, and the largest it asks
    /// a client to use when the client offered `client_max_window_bits` (9–15).
    pub window_bits: u8,
    /// Messages shorter than this are sent uncompressed (RSV1 clear).
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> DeflateConfig {
        DeflateConfig {
            mode: DeflateMode::Shared,
            window_bits: 15,
            threshold: 0,
        }
    }
}

/// The parameters agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// We compress each message on its own.
    pub server_no_context_takeover: bool,
    /// The client compresses each message on its own.
    pub client_no_context_takeover: bool,
    /// The window we compress with (9–15).
    pub server_max_window_bits: u8,
    /// Whether the answer names `server_max_window_bits`: always when the
    /// client offered it (§7.1.2.1: an offer with it is accepted by naming
    /// it), and when our cap is below 15.
    pub name_server_window: bool,
    /// Named in the answer only if the client offered the parameter.
    pub client_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101: exactly what was agreed.
    pub fn response(&self) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.name_server_window {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// One parameter of an offer: name and optional value (quotes removed).
type Param<'a> = (&'a str, Option<String>);

/// Splits a header value at `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parses one offer (`name; p1; p2=v`); `None` if it is malformed.
fn parse_offer(offer: &str) -> Option<(&str, Vec<Param<'_>>)> {
    let mut items = split_unquoted(offer, ';').into_iter().map(str::trim);
    let name = items.next().filter(|n| is_token(n))?;
    let mut params = Vec::new();
    for item in items {
        let (key, value) = match item.split_once('=') {
            None => (item, None),
            Some((k, v)) => {
                let v = v.trim();
                let v = match v.strip_prefix('"') {
                    // §7.1: a quoted value is unquoted before it is checked.
                    Some(q) => q.strip_suffix('"')?.replace('\\', ""),
                    None => v.to_owned(),
                };
                (k.trim(), Some(v))
            }
        };
        if !is_token(key) {
            return None;
        }
        params.push((key, value));
    }
    Some((name, params))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// §7.1.2: a window size is 8–15 written as `1*DIGIT` (no sign, no leading zero).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Accepts the first offer of `permessage-deflate` among the header values
/// that can be honoured (see the module documentation), or none.
pub fn negotiate(header_values: &[&str], config: &DeflateConfig) -> Option<Agreed> {
    if config.mode == DeflateMode::Off {
        return None;
    }
    header_values
        .iter()
        .flat_map(|v| split_unquoted(v, ','))
        .filter_map(parse_offer)
        .filter(|(name, _)| name.eq_ignore_ascii_case("permessage-deflate"))
        .find_map(|(_, params)| accept_offer(&params, config))
}

/// What a client (a proxy's upstream leg) offers: first without context
/// takeover either way (so inflaters are pooled as on the server side),
/// then without it on our side only. We never offer
/// `client_max_window_bits`, so we always compress with a window of 15,
/// and never take context over: a server cannot object to either.
pub const CLIENT_OFFER: &str = "permessage-deflate; server_no_context_takeover; \
     client_no_context_takeover, permessage-deflate; client_no_context_takeover";

/// Checks a server's answer to [`CLIENT_OFFER`] (RFC 7692 §5.1, §7.1: the
/// client side): exactly one `permessage-deflate` element, each parameter
/// at most once with a valid value, and no `client_max_window_bits`, which
/// we did not offer (§7.1.2.2: "the client MUST _Fail the WebSocket
/// Connection_"). The result is from our side, like a server's: the
/// `server_*` fields are what *we* send (each message alone, window 15),
/// the `client_*` fields what the peer sends.
pub fn check_answer(header_values: &[&str]) -> Result<Option<Agreed>, String> {
    let elements: Vec<&str> = header_values
        .iter()
        .flat_map(|v| split_unquoted(v, ','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let [element] = elements.as_slice() else {
        return Err("101 names more than one extension".into());
    };
    let (name, params) = parse_offer(element)
        .ok_or_else(|| format!("101 names a malformed extension: {element}"))?;
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return Err(format!(
            "101 names an extension that was not offered: {name}"
        ));
    }
    let mut peer_no_context = false;
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in &params {
        let key = key.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("permessage-deflate answer repeats {key}"));
        }
        match (key.as_str(), value) {
            ("server_no_context_takeover", None) => peer_no_context = true,
            ("client_no_context_takeover", None) => {}
            // Any window up to 15: our inflater has the largest.
            ("server_max_window_bits", Some(v)) if window_bits(v).is_some() => {}
            ("client_max_window_bits", _) => {
                return Err(
                    "permessage-deflate answer names client_max_window_bits, which was not offered"
                        .into(),
                )
            }
            _ => {
                return Err(format!(
                    "permessage-deflate answer has a bad parameter: {key}"
                ))
            }
        }
        seen.push(key);
    }
    Ok(Some(Agreed {
        server_no_context_takeover: true,
        client_no_context_takeover: peer_no_context,
        server_max_window_bits: 15,
        name_server_window: false,
        client_max_window_bits: None,
    }))
}

/// The answer to one offer, or `None` to decline it.
fn accept_offer(params: &[Param<'_>], config: &DeflateConfig) -> Option<Agreed> {
    let cap = config.window_bits.clamp(9, 15);
    let (mut snct, mut cnct) = (false, false);
    let mut smwb: Option<u8> = None;
    let mut cmwb: Option<Option<u8>> = None;
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in params {
        // §7.1: "An extension negotiation offer ... MUST NOT include ... the
        // same parameter more than once" -> decline.
        if seen.iter().any(|s| s.eq_ignore_ascii_case(key)) {
            return None;
        }
        seen.push(key);
        match (key.to_ascii_lowercase().as_str(), value) {
            // §7.1.1.1/§7.1.1.2: these parameters have no value.
            ("server_no_context_takeover", None) => snct = true,
            ("client_no_context_takeover", None) => cnct = true,
            // §7.1.2.1: server_max_window_bits has a value 8..15.
            ("server_max_window_bits", Some(v)) => smwb = Some(window_bits(v)?),
            // §7.1.2.2: client_max_window_bits may come without a value.
            ("client_max_window_bits", None) => cmwb = Some(None),
            ("client_max_window_bits", Some(v)) => cmwb = Some(Some(window_bits(v)?)),
            // §7.1: an unknown parameter or a wrong value form: decline.
            _ => return None,
        }
    }
    // zlib's raw deflate cannot compress with a 256-byte window: an offer that
    // demands server_max_window_bits=8 cannot be honoured (docs/protocol.md).
    if smwb == Some(8) {
        return None;
    }
    let shared = config.mode == DeflateMode::Shared;
    Some(Agreed {
        // §7.1.1.1: a server MAY answer server_no_context_takeover unasked.
        server_no_context_takeover: snct || shared,
        // §7.1.1.2: and client_no_context_takeover unasked.
        client_no_context_takeover: cnct || shared,
        server_max_window_bits: smwb.unwrap_or(15).min(cap),
        name_server_window: smwb.is_some() || cap < 15,
        // §7.1.2.2: named in the answer only if offered; never larger than
        // what the client offered, nor than our cap.
        client_max_window_bits: cmwb.map(|v| v.unwrap_or(15).min(cap).max(9)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(offer: &str, config: DeflateConfig) -> Option<Agreed> {
        negotiate(&[offer], &config)
    }

    fn dedicated() -> DeflateConfig {
        DeflateConfig {
            mode: DeflateMode::Dedicated,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn the_first_offer_that_can_be_honoured_is_accepted() {
        // §5.1: the client lists offers in its order of preference; the
        // server accepts one (or none). A bad first offer is skipped.
        let a = negotiate(
            &[
                "x-webkit-deflate-frame",
                "permessage-deflate; unknown_param, permessage-deflate; client_max_window_bits",
            ],
            &dedicated(),
        )
        .unwrap();
        assert_eq!(a.client_max_window_bits, Some(15));
        assert_eq!(
            a.response(),
            "permessage-deflate; client_max_window_bits=15"
        );
        assert_eq!(negotiate(&["x-foo, bar"], &dedicated()), None);
        assert_eq!(
            negotiate(
                &["permessage-deflate"],
                &DeflateConfig {
                    mode: DeflateMode::Off,
                    ..dedicated()
                }
            ),
            None
        );
    }

    #[test]
    fn offers_with_unknown_duplicate_or_invalid_parameters_are_declined() {
        // §7.1: "the server MUST decline an extension negotiation offer" with
        // an unknown parameter, a duplicated one, or an invalid value.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; client_max_window_bits=\"16\"",
        ] {
            assert_eq!(agreed(bad, dedicated()), None, "{bad}");
        }
    }

    #[test]
    fn server_max_window_bits_8_is_declined_zlib_cannot_compress_with_it() {
        assert_eq!(
            agreed("permessage-deflate; server_max_window_bits=8", dedicated()),
            None
        );
        // The next offer, without it, is taken.
        let a = negotiate(
            &["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
            &dedicated(),
        );
        assert_eq!(a.unwrap().server_max_window_bits, 15);
    }

    #[test]
    fn window_bits_are_answered_within_the_offer_and_the_cap() {
        // §7.1.2.1: the answer's server_max_window_bits is at most the offer's.
        let a = agreed("permessage-deflate; server_max_window_bits=10", dedicated()).unwrap();
        assert_eq!(a.server_max_window_bits, 10);
        assert!(a.response().contains("server_max_window_bits=10"));
        // A quoted value is the same value (§7.1: "after the quoting is removed").
        let a = agreed(
            "permessage-deflate; server_max_window_bits=\"12\"",
            dedicated(),
        )
        .unwrap();
        assert_eq!(a.server_max_window_bits, 12);
        // §7.1.2.2: client_max_window_bits is answered only if offered, never
        // above the offered value; our cap (--deflate-window-bits) applies.
        let capped = DeflateConfig {
            window_bits: 10,
            ..dedicated()
        };
        let a = agreed("permessage-deflate; client_max_window_bits", capped).unwrap();
        assert_eq!(a.client_max_window_bits, Some(10));
        assert_eq!(a.server_max_window_bits, 10);
        // §7.1.2.1: an offer with server_max_window_bits is accepted by naming
        // it, even at 15.
        let a = agreed("permessage-deflate; server_max_window_bits=15", dedicated()).unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; server_max_window_bits=15"
        );
        let a = agreed("permessage-deflate; client_max_window_bits=9", capped).unwrap();
        assert_eq!(a.client_max_window_bits, Some(9));
        let a = agreed("permessage-deflate", capped).unwrap();
        assert_eq!(
            a.client_max_window_bits, None,
            "not offered: not in the answer"
        );
        assert!(!a.response().contains("client_max_window_bits"));
    }

    #[test]
    fn context_takeover_follows_the_offer_and_the_mode() {
        // §7.1.1.1: server_no_context_takeover offered -> answered.
        let a = agreed(
            "permessage-deflate; server_no_context_takeover",
            dedicated(),
        )
        .unwrap();
        assert!(a.server_no_context_takeover && !a.client_no_context_takeover);
        let a = agreed(
            "permessage-deflate; client_no_context_takeover",
            dedicated(),
        )
        .unwrap();
        assert!(a.client_no_context_takeover && !a.server_no_context_takeover);
        // Shared mode answers both, offered or not (§7.1.1.1 and §7.1.1.2
        // let a server include them unasked).
        let a = agreed("permessage-deflate", DeflateConfig::default()).unwrap();
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }
}
