//! `Recording`: with `--record FILE`, what every proxied pair said, kept as
//! the conversations `stubs::record` turns into a stubs file (docs/stubs.md,
//! "Record and replay"): the opening (the subprotocol the upstream chose, or
//! its refusal), then each message with who sent it and when. The file is
//! rewritten (a temporary file renamed over it) whenever a conversation
//! ends, so a graceful shutdown, which ends every connection, leaves it
//! whole. Only what the two real sides said is recorded: a message a stub
//! answered did not reach the upstream. Bounded by `MAX_MESSAGES` and
//! `MAX_BYTES` (what is over is not recorded, logged once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use log::{info, warn};
use mio::Token;

use crate::proto::MessageKind;
use crate::stubs::record::{self, Conversation, Data, Message, Opening};

/// Messages a recording keeps at most, all conversations together.
pub(super) const MAX_MESSAGES: usize = 100_000;
/// Payload bytes a recording keeps at most.
pub(super) const MAX_BYTES: usize = 64 << 20;

pub(super) struct Recording {
    file: PathBuf,
    /// Ended conversations, in the order they began.
    done: Vec<(u64, Conversation)>,
    /// Those still going, by their client leg, with when they opened and
    /// their place in the order.
    live: HashMap<Token, (Instant, u64, Conversation)>,
    next: u64,
    messages: usize,
    bytes: usize,
    /// Over a bound: told once.
    full: bool,
}

impl Recording {
    pub(super) fn new(file: PathBuf) -> Recording {
        Recording {
            file,
            done: Vec::new(),
            live: HashMap::new(),
            next: 0,
            messages: 0,
            bytes: 0,
            full: false,
        }
    }

    /// The upstream opened the pair whose client leg is `client`.
    pub(super) fn opened(
        &mut self,
        client: Token,
        target: &str,
        subprotocol: Option<String>,
        now: Instant,
    ) {
        let path = target.split('?').next().unwrap_or(target).to_string();
        let conv = Conversation {
            path,
            opening: Opening::Accepted { subprotocol },
            messages: Vec::new(),
        };
        self.next += 1;
        self.live.insert(client, (now, self.next, conv));
    }

    /// The upstream refused the upgrade on `target`: a conversation of its
    /// own, ended at once.
    pub(super) fn refused(
        &mut self,
        target: &str,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) {
        let path = target.split('?').next().unwrap_or(target).to_string();
        let headers = crate::proxy::end_to_end(headers)
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("date") && !n.eq_ignore_ascii_case("server"))
            .collect();
        self.next += 1;
        self.done.push((
            self.next,
            Conversation {
                path,
                opening: Opening::Refused {
                    status,
                    headers,
                    body: String::from_utf8_lossy(body).into_owned(),
                },
                messages: Vec::new(),
            },
        ));
        self.write();
    }

    /// A message of the pair whose client leg is `client`, on its way.
    pub(super) fn message(
        &mut self,
        client: Token,
        from_client: bool,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) {
        let Some((opened, _, conv)) = self.live.get_mut(&client) else {
            return;
        };
        if self.messages >= MAX_MESSAGES || self.bytes + data.len() > MAX_BYTES {
            if !std::mem::replace(&mut self.full, true) {
                warn!(
                    "--record: the recording holds {} messages, {} bytes: what comes next is \
                     not recorded (DELETE /recording starts afresh)",
                    self.messages, self.bytes
                );
            }
            return;
        }
        self.messages += 1;
        self.bytes += data.len();
        let data = match kind {
            MessageKind::Text => Data::Text(String::from_utf8_lossy(data).into_owned()),
            MessageKind::Binary => Data::Binary(data.to_vec()),
        };
        conv.messages.push(Message {
            at_ms: now.saturating_duration_since(*opened).as_millis() as u64,
            from_client,
            data,
        });
    }

    /// A connection ended: if it was a recorded client leg, its
    /// conversation is done and the file rewritten.
    pub(super) fn ended(&mut self, t: Token) {
        if self.live.is_empty() {
            return;
        }
        if let Some((_, n, conv)) = self.live.remove(&t) {
            self.done.push((n, conv));
            self.write();
        }
    }

    /// The recording as it stands: a stubs file (ended conversations and
    /// those still going).
    pub(super) fn json(&self) -> String {
        let mut all: Vec<(u64, &Conversation)> = self
            .done
            .iter()
            .map(|(n, c)| (*n, c))
            .chain(self.live.values().map(|(_, n, c)| (*n, c)))
            .collect();
        all.sort_by_key(|(n, _)| *n);
        let convs: Vec<Conversation> = all.into_iter().map(|(_, c)| c.clone()).collect();
        let mut text = serde_json::to_string_pretty(&record::stubs_file(&convs, Some("ignore")))
            .unwrap_or_default();
        text.push('\n');
        text
    }

    /// Starts afresh: the ended conversations are forgotten, and those
    /// going on are recorded from now (their opening kept).
    pub(super) fn reset(&mut self, now: Instant) -> String {
        self.done.clear();
        for (opened, _, conv) in self.live.values_mut() {
            *opened = now;
            conv.messages.clear();
        }
        self.messages = 0;
        self.bytes = 0;
        self.full = false;
        self.write();
        "{\"reset\":true}\n".into()
    }

    /// Writes the file: a temporary file beside it, renamed over it, so a
    /// reader never sees half of one.
    fn write(&self) {
        let text = self.json();
        let tmp = self.file.with_extension("recording.tmp");
        let done = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file));
        match done {
            Ok(()) => info!(
                "--record: {} written ({} conversations)",
                self.file.display(),
                self.done.len()
            ),
            Err(e) => warn!("--record: {}: {e}", self.file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/limits.md: "Recording (`--record`)"
    #[test]
    fn a_recording_keeps_its_bounds_and_says_so_once() {
        let dir = std::env::temp_dir().join(format!("echocast-rec-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Recording::new(dir.join("r.json"));
        let now = Instant::now();
        let t = Token(1);
        r.opened(t, "/p?x=1", None, now);
        for i in 0..MAX_MESSAGES + 10 {
            r.message(t, i % 2 == 0, MessageKind::Text, b"m", now);
        }
        assert_eq!(r.messages, MAX_MESSAGES);
        assert!(r.full);
        let big = vec![0u8; MAX_BYTES];
        r.reset(now);
        r.message(t, true, MessageKind::Binary, &big, now);
        r.message(t, true, MessageKind::Binary, b"x", now);
        assert_eq!((r.messages, r.bytes), (1, MAX_BYTES), "the byte bound too");
        r.reset(now);
        r.message(t, true, MessageKind::Text, b"last", now);
        r.ended(t);
        assert!(dir.join("r.json").exists(), "written when it ended");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
