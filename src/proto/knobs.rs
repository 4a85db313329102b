//! Misbehaviour on request (issue 11): the knobs a client puts in the query
//! string of its upgrade request to shape its own connection, parsed and
//! checked here (no I/O). A knob given a bad value is refused before the
//! upgrade with `400 Bad Request` and a one-line body naming the knob and
//! what it accepts ([`KnobError`]); unknown parameters are ignored, so
//! Autobahn's `?case=&agent=` and the page's `?room=` keep working.
//! What each knob does is `connection/misbehave.rs`; the table is in README.md
//! and the bounds in docs/limits.md.

use super::units::{parse_duration, parse_size};
use std::time::Duration;

/// What a connection asked for. `Default`: a polite echo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Knobs {
    /// Every message we send goes out in fragments of this many payload bytes.
    pub fragment: Option<usize>,
    /// Each echo is sent this long after its message arrived (≤ 60 s).
    pub delay: Option<Duration>,
    /// Each message is echoed this many times (1–1000).
    pub repeat: Option<u16>,
    /// A ping every interval, its payload a counter.
    pub ping: Option<Duration>,
    /// We start the close handshake with this code and reason once `after`
    /// messages were received and answered.
    pub close: Option<(u16, String)>,
    /// The TCP connection is closed without a close frame (`reset`: with an
    /// RST) once `after` messages were received and answered.
    pub drop: Option<(u64, bool)>,
    /// Messages received and answered before `close` applies (default 0).
    pub after: u64,
    /// A text message sent first, before anything is echoed.
    pub greeting: Option<String>,
    /// After the handshake, COUNT messages of SIZE bytes, as fast as the
    /// client reads them.
    pub push: Option<Push>,
    /// On a room: the last N retained messages first (N at most the
    /// server's `--room-history`, checked by the server).
    pub history: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push {
    pub count: u64,
    pub size: usize,
    pub binary: bool,
}

/// A knob with a bad value: its name and what it accepts, for the 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobError {
    pub knob: &'static str,
    pub accepts: &'static str,
}

impl Knobs {
    /// On a broadcast path, `delay` and `repeat` (which shape echoes) have
    /// nothing to act on: refused, rather than ignored.
    pub fn check_broadcast(&self) -> Result<(), KnobError> {
        let only_echo = "only on echo paths (this path is a broadcast room)";
        if self.delay.is_some() {
            return Err(KnobError {
                knob: "delay",
                accepts: only_echo,
            });
        }
        if self.repeat.is_some() {
            return Err(KnobError {
                knob: "repeat",
                accepts: only_echo,
            });
        }
        Ok(())
    }

    /// On an echo path, `history` (a room's) has nothing to act on.
    pub fn check_echo(&self) -> Result<(), KnobError> {
        match self.history {
            Some(_) => Err(KnobError {
                knob: "history",
                accepts: "only on broadcast rooms (this path echoes)",
            }),
            None => Ok(()),
        }
    }

    /// On an event stream (a room subscription over HTTP) only `drop`,
    /// `greeting` and `history` mean something: the others are refused.
    pub fn check_events(&self) -> Result<(), KnobError> {
        let not_events = "not on an event stream (only drop, greeting and history are)";
        let refused = [
            ("fragment", self.fragment.is_some()),
            ("delay", self.delay.is_some()),
            ("repeat", self.repeat.is_some()),
            ("ping", self.ping.is_some()),
            ("close", self.close.is_some()),
            ("reset", self.drop.is_some_and(|(_, reset)| reset)),
            ("push", self.push.is_some()),
        ];
        match refused.iter().find(|(_, given)| *given) {
            Some((knob, _)) => Err(KnobError {
                knob,
                accepts: not_events,
            }),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for KnobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad value for {}: {}", self.knob, self.accepts)
    }
}

/// Largest `delay` (and the bound on `ping`'s interval from below: 10 ms).
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Largest `size` of a pushed message.
pub const MAX_PUSH_SIZE: usize = 64 << 20;

/// Decodes `%XX` and `+` in a query component (invalid escapes are kept as
/// they are).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A close code a server may send (RFC 6455 §7.4): 1000–1003, 1007–1011,
/// 3000–4999.
pub fn sendable_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Every knob [`parse`] knows, main knobs and the ones that qualify them
/// (README's knobs table lists the same; `tests/docs.rs` compares them).
pub const NAMES: &[&str] = &[
    "fragment", "delay", "repeat", "ping", "close", "reason", "after", "drop", "reset", "greeting",
    "push", "size", "type", "history",
];

/// Parses the knobs of a request target (`/path?fragment=10&delay=250ms`).
pub fn parse(target: &str) -> Result<Knobs, KnobError> {
    let mut k = Knobs::default();
    let Some((_, query)) = target.split_once('?') else {
        return Ok(k);
    };
    let bad = |knob, accepts| KnobError { knob, accepts };
    let (mut code, mut reason, mut drop_after, mut reset) = (None, None, None, None);
    let mut after = None;
    let (mut count, mut psize, mut binary) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = unescape(value);
        let v = value.as_str();
        match unescape(key).as_str() {
            "fragment" => {
                k.fragment = Some(parse_size(v).filter(|&n| n >= 1).ok_or(bad(
                    "fragment",
                    "a payload size per fragment, at least 1 (e.g. 10, 1KiB)",
                ))?)
            }
            "delay" => {
                k.delay = Some(
                    parse_duration(v)
                        .filter(|d| *d <= MAX_DELAY)
                        .ok_or(bad("delay", "a duration up to 60s (e.g. 250ms, 2s)"))?,
                )
            }
            "repeat" => {
                k.repeat = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or(bad("repeat", "a count from 1 to 1000"))?,
                )
            }
            "ping" => {
                k.ping = Some(
                    parse_duration(v)
                        .filter(|d| {
                            *d >= Duration::from_millis(10) && *d <= Duration::from_secs(3600)
                        })
                        .ok_or(bad("ping", "an interval from 10ms to 1h (e.g. 500ms, 5s)"))?,
                )
            }
            "close" => {
                code = Some(v.parse().ok().filter(|&c| sendable_code(c)).ok_or(bad(
                    "close",
                    "a close code we may send: 1000-1003, 1007-1011 or 3000-4999",
                ))?)
            }
            "reason" => {
                if value.len() > 123 {
                    return Err(bad("reason", "text of at most 123 bytes (UTF-8)"));
                }
                reason = Some(value.clone());
            }
            "after" => {
                after = Some(
                    v.parse()
                        .map_err(|_| bad("after", "a number of messages, 0 or more"))?,
                )
            }
            "drop" => {
                drop_after = Some(
                    v.parse()
                        .map_err(|_| bad("drop", "a number of messages, 0 or more"))?,
                )
            }
            "reset" => {
                reset = Some(match v {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("reset", "1 or 0")),
                })
            }
            "greeting" => k.greeting = Some(value.clone()),
            "history" => {
                k.history = Some(
                    v.parse()
                        .map_err(|_| bad("history", "a number of retained messages, 0 or more"))?,
                )
            }
            "push" => {
                count = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or(bad("push", "a number of messages, at least 1"))?,
                )
            }
            "size" => {
                psize = Some(
                    parse_size(v)
                        .filter(|&n| n <= MAX_PUSH_SIZE)
                        .ok_or(bad("size", "a message size up to 64MiB (e.g. 100, 64KiB)"))?,
                )
            }
            "type" => {
                binary = Some(match v {
                    "text" => false,
                    "binary" => true,
                    _ => return Err(bad("type", "text or binary")),
                })
            }
            _ => {} // unknown parameters are ignored (?room=, ?case=&agent=)
        }
    }
    // A knob that only qualifies another is refused without it, whatever
    // its value (`reset=0` alone would otherwise pass silently).
    if let Some(code) = code {
        k.close = Some((code, reason.unwrap_or_default()));
        k.after = after.unwrap_or(0);
    } else if reason.is_some() {
        return Err(bad("reason", "only with close=CODE"));
    } else if after.is_some() {
        return Err(bad("after", "only with close=CODE"));
    }
    if let Some(n) = drop_after {
        k.drop = Some((n, reset.unwrap_or(false)));
    } else if reset.is_some() {
        return Err(bad("reset", "only with drop=N"));
    }
    match count {
        Some(count) => {
            k.push = Some(Push {
                count,
                size: psize.unwrap_or(1024),
                binary: binary.unwrap_or(false),
            })
        }
        None if psize.is_some() => return Err(bad("size", "only with push=COUNT")),
        None if binary.is_some() => return Err(bad("type", "only with push=COUNT")),
        None => {}
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_query_or_unknown_parameters_mean_no_knobs() {
        assert_eq!(parse("/"), Ok(Knobs::default()));
        assert_eq!(parse("/?room=lobby"), Ok(Knobs::default()));
        assert_eq!(parse("/runCase?case=3&agent=kosoku"), Ok(Knobs::default()));
    }

    #[test]
    // docs/limits.md: "`greeting=TEXT`"
    fn every_knob_parses() {
        let k = parse(
            "/?fragment=10&delay=250ms&repeat=3&ping=2s&close=4000&reason=bye+now&after=2\
             &drop=5&reset=1&greeting=hi%20%7Bid%7D&push=100&size=1KiB&type=binary",
        )
        .unwrap();
        assert_eq!(k.fragment, Some(10));
        assert_eq!(k.delay, Some(Duration::from_millis(250)));
        assert_eq!(k.repeat, Some(3));
        assert_eq!(k.ping, Some(Duration::from_secs(2)));
        assert_eq!(k.close, Some((4000, "bye now".into())));
        assert_eq!(k.after, 2);
        assert_eq!(k.drop, Some((5, true)));
        assert_eq!(k.greeting.as_deref(), Some("hi {id}"));
        assert_eq!(
            k.push,
            Some(Push {
                count: 100,
                size: 1024,
                binary: true
            })
        );
    }

    #[test]
    // docs/limits.md: "`fragment=N`"
    // docs/limits.md: "`delay=DUR`"
    // docs/limits.md: "`repeat=N`"
    // docs/limits.md: "`ping=DUR`"
    // docs/limits.md: "`close=CODE`"
    // docs/limits.md: "`drop=N`"
    // docs/limits.md: "`push=COUNT`"
    // docs/limits.md: "`size=SIZE`"
    // docs/limits.md: "`type=`"
    fn bad_values_name_the_knob_and_what_it_accepts() {
        for (target, knob) in [
            ("/?fragment=0", "fragment"),
            ("/?delay=61s", "delay"),
            ("/?delay=soon", "delay"),
            ("/?repeat=0", "repeat"),
            ("/?repeat=1001", "repeat"),
            ("/?ping=1ms", "ping"),
            ("/?close=1005", "close"),
            ("/?close=1015", "close"),
            ("/?close=2999", "close"),
            ("/?reason=x", "reason"),
            ("/?drop=-1", "drop"),
            ("/?reset=1", "reset"),
            ("/?after=1", "after"),
            ("/?close=1000&after=x", "after"),
            ("/?push=0", "push"),
            ("/?push=1&size=65MiB", "size"),
            ("/?size=10", "size"),
            ("/?push=1&type=json", "type"),
            // A qualifier without its main knob, whatever its value (issue 21).
            ("/?reset=0", "reset"),
            ("/?type=binary", "type"),
            ("/?reason=", "reason"),
            // `1h` is a duration like any other; over it is refused.
            ("/?ping=61m", "ping"),
        ] {
            let e = parse(target).unwrap_err();
            assert_eq!(e.knob, knob, "{target}");
            assert!(e
                .to_string()
                .starts_with(&format!("bad value for {knob}: ")));
        }
        assert_eq!(
            parse("/?ping=1h").unwrap().ping,
            Some(Duration::from_secs(3600))
        );
        let long = format!("/?close=1000&reason={}", "x".repeat(124));
        assert_eq!(parse(&long).unwrap_err().knob, "reason");
    }
}
