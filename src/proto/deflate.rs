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

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

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
