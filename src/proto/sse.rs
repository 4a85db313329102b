//! Server-sent events (WHATWG HTML §9.2), sans-IO: how a room message becomes
//! an event on a `text/event-stream` (rooms over HTTP, `server/sse.rs`).

/// Appends one event: `id:`, `event:` (if any), then the data, one `data:`
/// line per line of it. Every line break form (CRLF, LF, CR) ends a line, as
/// the parser in the browser splits them, so `EventSource` gives back the
/// data with its breaks as `\n` (the data of an event is its `data:` lines
/// joined by `\n`).
pub fn event(out: &mut Vec<u8>, id: Option<u64>, kind: Option<&str>, data: &str) {
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    if let Some(kind) = kind {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
    }
    let mut rest = data;
    loop {
        let cut = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..cut]);
        out.push(b'\n');
        if cut == rest.len() {
            break;
        }
        let skip = if rest[cut..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[cut + skip..];
    }
    out.push(b'\n');
}

/// A comment line (keeps proxies from timing out an idle stream).
pub fn comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    out.extend_from_slice(text.replace(['\r', '\n'], " ").as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The reconnection time the client should use, in milliseconds.
pub fn retry(out: &mut Vec<u8>, ms: u64) {
    out.extend_from_slice(format!("retry: {ms}\n\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The browser's parser (WHATWG HTML §9.2.6), enough to read back what
    /// `event` wrote: lines split at CRLF, LF or CR; `data` lines joined by
    /// LF; an empty line dispatches.
    fn parse(stream: &str) -> Vec<(Option<String>, Option<String>, String)> {
        let mut events = Vec::new();
        let (mut id, mut kind, mut data): (Option<String>, Option<String>, Vec<String>) =
            (None, None, Vec::new());
        let normalized = stream.replace("\r\n", "\n").replace('\r', "\n");
        for line in normalized.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    events.push((id.clone(), kind.take(), data.join("\n")));
                    data.clear();
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_string()),
                "event" => kind = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
        events
    }

    #[test]
    fn data_with_line_breaks_comes_back_equal() {
        let mut out = Vec::new();
        retry(&mut out, 1000);
        event(&mut out, Some(1), None, "one line");
        comment(&mut out, "keepalive");
        event(&mut out, Some(2), None, "two\nlines");
        event(&mut out, Some(3), Some("binary"), "AAEC");
        event(&mut out, Some(4), None, "crlf\r\nand\rcr");
        event(&mut out, Some(5), None, "");
        let text = String::from_utf8(out).unwrap();
        let got = parse(&text);
        assert_eq!(got[0], (Some("1".into()), None, "one line".into()));
        assert_eq!(got[1].2, "two\nlines");
        assert_eq!(
            got[2],
            (Some("3".into()), Some("binary".into()), "AAEC".into())
        );
        // CR and CRLF come back as LF, as EventSource gives them.
        assert_eq!(got[3].2, "crlf\nand\ncr");
        assert_eq!(got[4], (Some("5".into()), None, String::new()));
    }
}
