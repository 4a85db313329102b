//! Durations and sizes as people write them, one parser for the command line
//! and the URL knobs: `250ms`, `10s`, `2m`, `1h` (a bare number is seconds);
//! `1048576`, `64KiB`, `64MiB`, `1GiB`, `500MB` (a bare number is bytes).

use std::time::Duration;

/// `250ms`, `1.5s`, `2m`, `1h`; a bare number is seconds. `None` for anything
/// else (a negative or non-finite number, an unknown unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Bytes written as hex digits in pairs (`ff00`, either case). `None` for
/// an odd count or a non-hex digit (a sign included).
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    b.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// What [`parse_duration`] accepts, for error messages.
pub const DURATION_FORMS: &str = "a duration like 500ms, 10s, 2m or 1h";

/// `1048576`, `64k`, `64KiB`, `1GiB`, `500MB`, `2 KiB`: KiB, MiB, GiB, TiB
/// and bare k, m, g, t are powers of 1024; kB, MB, GB, TB powers of 1000;
/// case does not matter. `None` for anything else or a size past `usize`.
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    usize::try_from(n.checked_mul(mult)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_write() {
        let d = |s| parse_duration(s);
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("10"), Some(Duration::from_secs(10)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("2m"), Some(Duration::from_secs(120)));
        // docs: `ping=DUR` from 10 ms to 1 h; `1h` must parse (issue 21 #4).
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("60m"), d("1h"));
        assert_eq!(d("1d"), None);
        assert_eq!(d("-1s"), None);
        assert_eq!(d("ms"), None);
    }

    #[test]
    fn sizes_people_write() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1gib"), Some(1 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("2 KiB"), Some(2048));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999TiB"), None);
    }
}
