//! One HTTP/2 connection, server side: the multiplexer between a transport's
//! bytes and its streams' bytes. Bytes in ([`Session::receive`]) become
//! frames, frames become events and per-stream HTTP/1.1 bytes (read with
//! [`Session::read`]); each stream's answer ([`Session::write`]) becomes
//! HEADERS and DATA, sent as the peer's windows allow. Flow control is both
//! ways and per stream: a stream's received bytes are given back as window
//! only once its session read them, so a stream nobody reads is bounded by
//! its window and never stops the others (the connection window is given
//! back on receipt; what is buffered is bounded by streams × window).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use loona_hpack::{Decoder, Encoder};

use super::frame::{self, ErrorCode, Head, DEFAULT_WINDOW, MAX_WINDOW};
use super::request::{Kind, Request};
use super::response::{Answer, Translated};

mod inbound;
mod outbound;

/// What a stream may receive before its session reads it
/// (`SETTINGS_INITIAL_WINDOW_SIZE`, left at its default).
pub const STREAM_WINDOW: i64 = DEFAULT_WINDOW;
/// The connection's receive window, raised from 65,535 at the start.
pub const CONNECTION_WINDOW: i64 = 1 << 20;
/// Streams the client may reset before their answer began within one
/// `RESET_WINDOW` (a "rapid reset" flood, CVE-2023-44487: each such stream
/// costs a request's work and answers nothing).
pub const MAX_EARLY_RESETS: u32 = 200;
pub const RESET_WINDOW: Duration = Duration::from_secs(1);
/// Unsent frames past which no more DATA is framed until the transport
/// takes some.
const OUT_CAP: usize = 64 * 1024;
/// A stream's answer bytes waiting for window, past which its session's
/// output is left with the session (its backpressure).
const PENDING_CAP: usize = 64 * 1024;

/// Whether WebSockets are offered over HTTP/2 (`--http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSockets {
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` and extended CONNECT served.
    Offered,
    /// The setting is not sent: clients open WebSockets over HTTP/1.1.
    NotOffered,
    /// The setting is sent, then every extended CONNECT is answered 501.
    Refused,
}

/// A connection's limits.
#[derive(Debug, Clone)]
pub struct Config {
    pub websockets: WebSockets,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_streams: u32,
    /// The client's preface and first SETTINGS must arrive within this.
    pub handshake_timeout: Duration,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`, and the cap on a header block's
    /// encoded bytes.
    pub max_header_list: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            websockets: WebSockets::Offered,
            max_streams: 1000,
            handshake_timeout: Duration::from_secs(10),
            max_header_list: 64 * 1024,
        }
    }
}

/// What the driver hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new stream with a request: open a session for it and feed it what
    /// [`Session::read`] gives.
    Request { stream: u32, websocket: bool },
    /// More bytes (or the end) wait for the stream's session.
    Readable(u32),
    /// The stream can take more of its session's output.
    Writable(u32),
    /// The stream ended abnormally: reset by the peer (`by_peer`), by us
    /// for a rule it broke (`why`), or with the whole connection.
    Reset {
        stream: u32,
        code: ErrorCode,
        by_peer: bool,
        why: String,
    },
}

/// What [`Session::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Data(usize),
    /// Nothing now.
    Empty,
    /// The peer ended the stream (a tunnel's end, like a socket's EOF).
    Eof,
}

#[derive(Debug)]
struct Stream {
    /// HTTP/1.1 bytes for the stream's session, from `pos`.
    inbound: Vec<u8>,
    pos: usize,
    /// DATA payload bytes in `inbound`, given back as window once read.
    inbound_data: usize,
    /// The request body goes to the session as chunks.
    chunked: bool,
    tunnel: bool,
    recv_ended: bool,
    eof_given: bool,
    received: u64,
    content_length: Option<u64>,
    recv_window: i64,
    send_window: i64,
    /// Answer bytes for DATA frames, from `sent`.
    pending: Vec<u8>,
    sent: usize,
    end_pending: bool,
    sent_end: bool,
    /// The session's output was refused for want of room: tell it when
    /// there is some.
    starved: bool,
    queued: bool,
    /// The stream's session is gone; the stream goes once its answer is out.
    detached: bool,
    answer: Answer,
}

impl Stream {
    fn unsent(&self) -> usize {
        self.pending.len() - self.sent
    }
}

/// The server side of one HTTP/2 connection.
pub struct Session {
    config: Config,
    /// Bytes of the client preface still expected.
    preface_left: usize,
    settings_seen: bool,
    deadline: Option<Instant>,
    /// Streams reset by the client before their answer began, counted
    /// since `resets_since` (the flood guard, `MAX_EARLY_RESETS`).
    early_resets: u32,
    resets_since: Instant,
    /// The time of the bytes being received.
    now: Instant,
    /// With no stream open, the connection closes (GOAWAY) at this
    /// instant, as a kept HTTP/1.1 connection waits for its next request.
    idle_deadline: Option<Instant>,
    /// Received bytes short of a whole frame.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    decoder: Decoder<'static>,
    /// Boxed: the table is sized in powers of two, and idle streams are
    /// most of it (16 bytes a bucket instead of the whole state).
    streams: HashMap<u32, Box<Stream>>,
    /// The highest stream id the peer opened.
    last_stream: u32,
    /// A header block waiting for CONTINUATION: stream, END_STREAM, bytes.
    continuation: Option<(u32, bool, Vec<u8>)>,
    send_window: i64,
    recv_window: i64,
    recv_unacked: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    sendable: VecDeque<u32>,
    events: VecDeque<Event>,
    /// A connection error was sent in a GOAWAY: nothing more is read.
    failed: Option<String>,
    /// A graceful shutdown: new streams are refused, and GOAWAY goes once
    /// the open ones ended (their WebSockets closed with 1001 first).
    draining: bool,
    /// We sent GOAWAY.
    going_away: bool,
    peer_gone_away: bool,
    eof: bool,
}

impl Session {
    /// A connection whose first bytes are (or will be) the client preface:
    /// our SETTINGS and a connection WINDOW_UPDATE are queued at once.
    pub fn new(config: Config, now: Instant) -> Session {
        let mut out = Vec::with_capacity(64);
        let mut settings = vec![
            (frame::SETTINGS_MAX_CONCURRENT_STREAMS, config.max_streams),
            (
                frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                config.max_header_list as u32,
            ),
            (frame::SETTINGS_ENABLE_PUSH, 0),
        ];
        if config.websockets != WebSockets::NotOffered {
            settings.push((frame::SETTINGS_ENABLE_CONNECT_PROTOCOL, 1));
        }
        frame::put_settings(&mut out, &settings, false);
        frame::put_window_update(&mut out, 0, (CONNECTION_WINDOW - DEFAULT_WINDOW) as u32);
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(4096);
        Session {
            deadline: Some(now + config.handshake_timeout),
            idle_deadline: None,
            early_resets: 0,
            resets_since: now,
            now,
            config,
            preface_left: frame::PREFACE.len(),
            settings_seen: false,
            inbuf: Vec::new(),
            out,
            out_pos: 0,
            decoder,
            streams: HashMap::new(),
            last_stream: 0,
            continuation: None,
            send_window: DEFAULT_WINDOW,
            recv_window: CONNECTION_WINDOW,
            recv_unacked: 0,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            sendable: VecDeque::new(),
            events: VecDeque::new(),
            failed: None,
            draining: false,
            going_away: false,
            peer_gone_away: false,
            eof: false,
        }
    }

    /// Bytes read from the transport.
    pub fn receive(&mut self, mut bytes: &[u8], now: Instant) {
        self.now = now;
        if self.failed.is_some() || self.eof {
            return;
        }
        if self.preface_left > 0 {
            let at = frame::PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(bytes.len());
            if bytes[..n] != frame::PREFACE[at..at + n] {
                return self.fail(
                    ErrorCode::ProtocolError,
                    "not the HTTP/2 connection preface",
                );
            }
            self.preface_left -= n;
            bytes = &bytes[n..];
        }
        self.inbuf.extend_from_slice(bytes);
        let mut at = 0;
        while self.failed.is_none() {
            let Some(head) = Head::parse(&self.inbuf[at..]) else {
                break;
            };
            if head.len > frame::DEFAULT_MAX_FRAME {
                self.fail(
                    ErrorCode::FrameSizeError,
                    "a frame over SETTINGS_MAX_FRAME_SIZE (16384)",
                );
                break;
            }
            let end = at + frame::HEADER_LEN + head.len;
            if self.inbuf.len() < end {
                break;
            }
            let payload = self.inbuf[at + frame::HEADER_LEN..end].to_vec();
            at = end;
            self.on_frame(head, &payload);
        }
        self.inbuf.drain(..at.min(self.inbuf.len()));
        if self.inbuf.is_empty() && self.inbuf.capacity() > 16 * 1024 {
            self.inbuf = Vec::new(); // a burst's room is not kept
        }
        self.pump();
        self.check_drained();
    }

    /// The transport reached EOF or failed: every stream ends.
    /// (The client ends an HTTP/2 connection by closing it: nothing we
    /// still had to say matters, so the output is dropped and the
    /// transport can close at once.)
    pub fn receive_eof(&mut self) {
        self.eof = true;
        self.out = Vec::new();
        self.out_pos = 0;
        self.reset_all(ErrorCode::Cancel, "the connection ended");
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > 64 {
            // A burst of streams opened; an idle connection keeps no room for it.
            self.events = VecDeque::new();
        }
        event
    }

    /// A connection error we sent, for the logs.
    pub fn error(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the transport should close now: after a connection error or
    /// a GOAWAY either way with no stream left, once the output is written.
    pub fn is_done(&self) -> bool {
        let finished = self.failed.is_some()
            || self.eof
            || ((self.going_away || self.peer_gone_away) && self.streams.is_empty());
        finished && self.output_len() == 0
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.idle_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The driver says what time it is after the streams changed: a
    /// connection left without streams gets its idle deadline
    /// (`handshake_timeout`), one with streams loses it.
    pub fn note_time(&mut self, now: Instant) {
        if !self.streams.is_empty() || self.draining || self.failed.is_some() {
            self.idle_deadline = None;
        } else if self.idle_deadline.is_none() {
            self.idle_deadline = Some(now + self.config.handshake_timeout);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.idle_deadline.is_some_and(|d| now >= d) {
            self.idle_deadline = None;
            if self.streams.is_empty() && !self.draining {
                self.draining = true;
                self.going_away = true;
                frame::put_goaway(&mut self.out, self.last_stream, ErrorCode::NoError, "idle");
            }
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.fail(
                ErrorCode::SettingsTimeout,
                "no preface and SETTINGS within --handshake-timeout",
            );
        }
    }

    /// Stops taking new streams (a graceful shutdown); GOAWAY goes once
    /// the streams open now have ended, and the transport closes then.
    pub fn go_away(&mut self) {
        self.draining = true;
        self.check_drained();
    }

    pub(super) fn check_drained(&mut self) {
        if self.draining && !self.going_away && self.failed.is_none() && self.streams.is_empty() {
            self.going_away = true;
            frame::put_goaway(
                &mut self.out,
                self.last_stream,
                ErrorCode::NoError,
                "shutting down",
            );
        }
    }

    /// The streams open now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Heap bytes held, as counted against `--max-memory`.
    pub fn memory(&self) -> usize {
        let streams: usize = self
            .streams
            .values()
            .map(|s| std::mem::size_of::<Stream>() + s.inbound.capacity() + s.pending.capacity())
            .sum();
        streams + self.inbuf.capacity() + self.out.capacity() + 4096
    }

    pub fn output_front(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    pub fn output_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub fn consume_output(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > 16 * 1024 {
                self.out = Vec::new();
            }
        }
        self.pump();
        self.check_drained();
    }

    /// A connection error: GOAWAY with the code, every stream ends.
    pub(super) fn fail(&mut self, code: ErrorCode, why: &str) {
        if self.failed.is_some() {
            return;
        }
        frame::put_goaway(&mut self.out, self.last_stream, code, why);
        self.failed = Some(format!("{code}: {why}"));
        self.continuation = None;
        self.reset_all(code, why);
    }

    pub(super) fn reset_all(&mut self, code: ErrorCode, why: &str) {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.streams.remove(&id);
            self.events.push_back(Event::Reset {
                stream: id,
                code,
                by_peer: false,
                why: why.to_string(),
            });
        }
        self.sendable.clear();
    }
}

/// A frame's payload without its padding (DATA, HEADERS: RFC 9113 §6.1).
fn unpad(head: Head, payload: &[u8]) -> Option<&[u8]> {
    if !head.has(frame::PADDED) {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len().checked_sub(usize::from(pad)).map(|n| &rest[..n])
}

/// A header block for `:status` and `fields`: a fresh encoder each time, so
/// no block refers to an entry of an earlier one (the peer's table size
/// never matters).
fn encode_head(status: u16, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let status = status.to_string();
    let mut encoder = Encoder::new();
    let all = std::iter::once((&b":status"[..], status.as_bytes()))
        .chain(fields.iter().map(|(n, v)| (&n[..], &v[..])));
    encoder.encode(all)
}
