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

/// What a stream may receive before its session reads it
/// (`SETTINGS_INITIAL_WINDOW_SIZE`, left at its default).
pub const STREAM_WINDOW: i64 = DEFAULT_WINDOW;
/// The connection's receive window, raised from 65,535 at the start.
pub const CONNECTION_WINDOW: i64 = 1 << 20;
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
    /// Received bytes short of a whole frame.
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    decoder: Decoder<'static>,
    streams: HashMap<u32, Stream>,
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
    /// We sent GOAWAY: streams above `last_stream` are refused.
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
            going_away: false,
            peer_gone_away: false,
            eof: false,
        }
    }

    /// Bytes read from the transport.
    pub fn receive(&mut self, mut bytes: &[u8], _now: Instant) {
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
        self.pump();
    }

    /// The transport reached EOF or failed: every stream ends.
    pub fn receive_eof(&mut self) {
        self.eof = true;
        self.reset_all(ErrorCode::Cancel, "the connection ended");
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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
        self.deadline
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            self.fail(
                ErrorCode::SettingsTimeout,
                "no preface and SETTINGS within --handshake-timeout",
            );
        }
    }

    /// Stops taking new streams (a graceful shutdown): GOAWAY with the last
    /// stream we opened. The transport closes once the streams end.
    pub fn go_away(&mut self) {
        if !self.going_away && self.failed.is_none() {
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

    // ---- the streams' side ----

    /// Bytes for the stream's session; window is given back once a
    /// stream's received bytes are all read.
    pub fn read(&mut self, id: u32, buf: &mut [u8]) -> Read {
        let Some(s) = self.streams.get_mut(&id) else {
            return Read::Eof;
        };
        let left = s.inbound.len() - s.pos;
        if left > 0 {
            let n = left.min(buf.len());
            buf[..n].copy_from_slice(&s.inbound[s.pos..s.pos + n]);
            s.pos += n;
            if s.pos == s.inbound.len() {
                s.inbound.clear();
                s.pos = 0;
                let credit = std::mem::take(&mut s.inbound_data) as i64;
                if credit > 0 && !s.recv_ended {
                    s.recv_window += credit;
                    frame::put_window_update(&mut self.out, id, credit as u32);
                }
                if s.inbound.capacity() > 16 * 1024 {
                    s.inbound = Vec::new();
                }
            }
            return Read::Data(n);
        }
        if s.recv_ended && s.tunnel && !s.eof_given {
            s.eof_given = true;
            return Read::Eof;
        }
        Read::Empty
    }

    /// The stream's session's output (HTTP/1.1 bytes): returns how much was
    /// taken (less when the stream's queue is full; [`Event::Writable`]
    /// follows when it has room).
    pub fn write(&mut self, id: u32, bytes: &[u8]) -> usize {
        let Some(s) = self.streams.get_mut(&id) else {
            return bytes.len(); // reset: the bytes have nowhere to go
        };
        if s.sent_end || s.end_pending {
            return bytes.len();
        }
        let room = PENDING_CAP.saturating_sub(s.unsent());
        let take = bytes.len().min(room);
        if take < bytes.len() {
            s.starved = true;
        }
        if take == 0 {
            return 0;
        }
        let mut t = Translated::default();
        if let Err(why) = s.answer.push(&bytes[..take], &mut t) {
            self.reset(id, ErrorCode::InternalError, &why);
            return bytes.len();
        }
        for (status, fields) in &t.heads {
            let block = encode_head(*status, fields);
            frame::put_headers(&mut self.out, id, &block, false, self.peer_max_frame);
        }
        let s = self.streams.get_mut(&id).expect("present above");
        if s.sent > 0 && s.sent * 2 >= s.pending.len() {
            s.pending.drain(..s.sent);
            s.sent = 0;
        }
        s.pending.extend_from_slice(&t.data);
        s.end_pending |= t.done;
        self.queue(id);
        self.pump();
        take
    }

    /// Whether the stream's answer is complete and is not a tunnel (its
    /// session can go).
    pub fn is_answered(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_none_or(|s| s.answer.is_done() || (s.end_pending && !s.tunnel))
    }

    /// Whether the stream's WebSocket was accepted (a `200` sent).
    pub fn is_tunnel(&self, id: u32) -> bool {
        self.streams
            .get(&id)
            .is_some_and(|s| s.answer.is_open_tunnel())
    }

    /// The stream's session shut its write half: END_STREAM once its
    /// answer is out (or a reset when it never answered).
    pub fn end(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.answer.is_unanswered() {
            return self.reset(
                id,
                ErrorCode::InternalError,
                "the stream's session ended unanswered",
            );
        }
        s.end_pending = true;
        self.queue(id);
        self.pump();
    }

    /// Resets the stream (RST_STREAM `code`) and forgets it.
    pub fn reset(&mut self, id: u32, code: ErrorCode, why: &str) {
        if self.streams.remove(&id).is_some() {
            frame::put_rst_stream(&mut self.out, id, code);
            self.events.push_back(Event::Reset {
                stream: id,
                code,
                by_peer: false,
                why: why.to_string(),
            });
        }
    }

    /// The stream's session is gone. An answer not ended is cancelled; an
    /// ended one is still sent, and the stream then goes.
    pub fn forget(&mut self, id: u32, code: ErrorCode) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !(s.end_pending || s.sent_end) {
            self.streams.remove(&id);
            frame::put_rst_stream(&mut self.out, id, code);
            return;
        }
        s.detached = true;
        self.retire(id);
    }

    // ---- the transport's side ----

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
            if self.out.capacity() > 4 * OUT_CAP {
                self.out = Vec::new();
            }
        }
        self.pump();
    }

    // ---- frames ----

    fn on_frame(&mut self, head: Head, payload: &[u8]) {
        if !self.settings_seen && head.kind != frame::SETTINGS {
            return self.fail(
                ErrorCode::ProtocolError,
                "the first frame is not SETTINGS (RFC 9113 §3.4)",
            );
        }
        if let Some((stream, _, _)) = &self.continuation {
            if head.kind != frame::CONTINUATION || head.stream != *stream {
                return self.fail(
                    ErrorCode::ProtocolError,
                    "a frame inside a header block (RFC 9113 §6.10)",
                );
            }
        }
        match head.kind {
            frame::DATA => self.on_data(head, payload),
            frame::HEADERS => self.on_headers(head, payload),
            frame::PRIORITY => {
                if head.stream == 0 {
                    self.fail(ErrorCode::ProtocolError, "PRIORITY on stream 0");
                } else if payload.len() != 5 {
                    self.reset(
                        head.stream,
                        ErrorCode::FrameSizeError,
                        "PRIORITY not 5 bytes",
                    );
                }
            }
            frame::RST_STREAM => self.on_rst_stream(head, payload),
            frame::SETTINGS => self.on_settings(head, payload),
            frame::PUSH_PROMISE => {
                self.fail(ErrorCode::ProtocolError, "PUSH_PROMISE from a client")
            }
            frame::PING => {
                if head.stream != 0 {
                    self.fail(ErrorCode::ProtocolError, "PING on a stream");
                } else if payload.len() != 8 {
                    self.fail(ErrorCode::FrameSizeError, "PING not 8 bytes");
                } else if !head.has(frame::ACK) {
                    frame::put_ping_ack(&mut self.out, payload);
                }
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    self.fail(ErrorCode::ProtocolError, "GOAWAY on a stream");
                } else {
                    self.peer_gone_away = true;
                }
            }
            frame::WINDOW_UPDATE => self.on_window_update(head, payload),
            frame::CONTINUATION => self.on_continuation(head, payload),
            _ => {} // unknown types are ignored (RFC 9113 §4.1)
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) {
        if head.stream != 0 {
            return self.fail(ErrorCode::ProtocolError, "SETTINGS on a stream");
        }
        if head.has(frame::ACK) {
            if !payload.is_empty() {
                self.fail(ErrorCode::FrameSizeError, "a SETTINGS ACK with a payload");
            }
            return;
        }
        if payload.len() % 6 != 0 {
            return self.fail(
                ErrorCode::FrameSizeError,
                "SETTINGS not a multiple of 6 bytes",
            );
        }
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH | frame::SETTINGS_ENABLE_CONNECT_PROTOCOL
                    if value > 1 =>
                {
                    return self.fail(ErrorCode::ProtocolError, "a boolean setting above 1");
                }
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > MAX_WINDOW {
                        return self.fail(
                            ErrorCode::FlowControlError,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        );
                    }
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    let mut over = false;
                    for (id, s) in self.streams.iter_mut() {
                        s.send_window += delta;
                        over |= s.send_window > MAX_WINDOW;
                        if s.send_window > 0 && s.unsent() > 0 && !s.queued {
                            s.queued = true;
                            self.sendable.push_back(*id);
                        }
                    }
                    if over {
                        return self
                            .fail(ErrorCode::FlowControlError, "a stream window over 2^31-1");
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return self.fail(
                            ErrorCode::ProtocolError,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        );
                    }
                    self.peer_max_frame = value as usize;
                }
                _ => {} // table size (our encoder keeps no table), limits we do not exceed
            }
        }
        frame::put_settings(&mut self.out, &[], true);
        if !self.settings_seen {
            self.settings_seen = true;
            self.deadline = None;
        }
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) {
        if payload.len() != 4 {
            return self.fail(ErrorCode::FrameSizeError, "WINDOW_UPDATE not 4 bytes");
        }
        let inc = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if inc == 0 {
                return self.fail(ErrorCode::ProtocolError, "a WINDOW_UPDATE of 0");
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return self.fail(
                    ErrorCode::FlowControlError,
                    "the connection window over 2^31-1",
                );
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&head.stream) else {
            if head.stream > self.last_stream {
                self.fail(ErrorCode::ProtocolError, "WINDOW_UPDATE on an idle stream");
            }
            return;
        };
        if inc == 0 {
            return self.reset(
                head.stream,
                ErrorCode::ProtocolError,
                "a WINDOW_UPDATE of 0",
            );
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            return self.reset(
                head.stream,
                ErrorCode::FlowControlError,
                "a stream window over 2^31-1",
            );
        }
        self.queue(head.stream);
    }

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.fail(ErrorCode::ProtocolError, "RST_STREAM on stream 0");
        }
        if payload.len() != 4 {
            return self.fail(ErrorCode::FrameSizeError, "RST_STREAM not 4 bytes");
        }
        if head.stream > self.last_stream {
            return self.fail(ErrorCode::ProtocolError, "RST_STREAM on an idle stream");
        }
        let code = ErrorCode::from_code(u32::from_be_bytes([
            payload[0], payload[1], payload[2], payload[3],
        ]));
        if self.streams.remove(&head.stream).is_some() {
            self.events.push_back(Event::Reset {
                stream: head.stream,
                code,
                by_peer: true,
                why: format!("the client reset the stream ({code})"),
            });
        }
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.fail(ErrorCode::ProtocolError, "DATA on stream 0");
        }
        let Some(data) = unpad(head, payload) else {
            return self.fail(ErrorCode::ProtocolError, "padding longer than the frame");
        };
        let len = payload.len() as i64;
        self.recv_window -= len;
        if self.recv_window < 0 {
            return self.fail(
                ErrorCode::FlowControlError,
                "DATA over the connection window",
            );
        }
        // The connection window is given back on receipt: what a stream
        // holds is bounded by its own window.
        self.recv_unacked += len;
        if self.recv_unacked >= CONNECTION_WINDOW / 2 {
            frame::put_window_update(&mut self.out, 0, self.recv_unacked as u32);
            self.recv_window += self.recv_unacked;
            self.recv_unacked = 0;
        }
        let id = head.stream;
        let Some(s) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return self.fail(ErrorCode::ProtocolError, "DATA on an idle stream");
            }
            frame::put_rst_stream(&mut self.out, id, ErrorCode::StreamClosed);
            return;
        };
        if s.recv_ended {
            return self.reset(id, ErrorCode::StreamClosed, "DATA after END_STREAM");
        }
        s.recv_window -= len;
        if s.recv_window < 0 {
            return self.reset(
                id,
                ErrorCode::FlowControlError,
                "DATA over the stream window",
            );
        }
        s.received += data.len() as u64;
        if s.content_length.is_some_and(|n| s.received > n) {
            return self.reset(
                id,
                ErrorCode::ProtocolError,
                "DATA beyond content-length (RFC 9113 §8.1.1)",
            );
        }
        // Padding is given back with the data it came with.
        s.inbound_data += payload.len();
        if s.chunked && !data.is_empty() {
            s.inbound
                .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            s.inbound.extend_from_slice(data);
            s.inbound.extend_from_slice(b"\r\n");
        } else {
            s.inbound.extend_from_slice(data);
        }
        if head.has(frame::END_STREAM) {
            self.end_of_request(id);
        }
        self.events.push_back(Event::Readable(id));
    }

    /// The peer's END_STREAM.
    fn end_of_request(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_ended = true;
        if s.content_length.is_some_and(|n| s.received != n) {
            return self.reset(
                id,
                ErrorCode::ProtocolError,
                "DATA short of content-length (RFC 9113 §8.1.1)",
            );
        }
        if s.chunked {
            s.inbound.extend_from_slice(b"0\r\n\r\n");
        }
        self.retire(id);
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) {
        if head.stream == 0 {
            return self.fail(ErrorCode::ProtocolError, "HEADERS on stream 0");
        }
        let Some(mut block) = unpad(head, payload) else {
            return self.fail(ErrorCode::ProtocolError, "padding longer than the frame");
        };
        if head.has(frame::PRIORITY_FLAG) {
            let Some(rest) = block.get(5..) else {
                return self.fail(
                    ErrorCode::FrameSizeError,
                    "HEADERS too short for its priority",
                );
            };
            block = rest;
        }
        let end_stream = head.has(frame::END_STREAM);
        if head.has(frame::END_HEADERS) {
            self.on_block(head.stream, end_stream, block.to_vec());
        } else {
            self.continuation = Some((head.stream, end_stream, block.to_vec()));
        }
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) {
        let Some((stream, end_stream, mut block)) = self.continuation.take() else {
            return self.fail(ErrorCode::ProtocolError, "CONTINUATION without HEADERS");
        };
        block.extend_from_slice(payload);
        if block.len() > self.config.max_header_list {
            return self.fail(
                ErrorCode::EnhanceYourCalm,
                "a header block over the header list size",
            );
        }
        if head.has(frame::END_HEADERS) {
            self.on_block(stream, end_stream, block);
        } else {
            self.continuation = Some((stream, end_stream, block));
        }
    }

    /// A complete header block: a request, or a request's trailers.
    fn on_block(&mut self, id: u32, end_stream: bool, block: Vec<u8>) {
        let mut list = Vec::new();
        let mut size = 0;
        let decoded = self.decoder.decode_with_cb(&block, |n, v| {
            size += n.len() + v.len() + 32;
            list.push((n.into_owned(), v.into_owned()));
        });
        if let Err(e) = decoded {
            return self.fail(ErrorCode::CompressionError, &format!("HPACK: {e}"));
        }
        if self.streams.contains_key(&id) {
            // Trailers: they end the request; their fields are not used.
            if !end_stream {
                return self.reset(id, ErrorCode::ProtocolError, "trailers without END_STREAM");
            }
            self.end_of_request(id);
            self.events.push_back(Event::Readable(id));
            return;
        }
        if id % 2 == 0 || id <= self.last_stream {
            return self.fail(
                if id % 2 == 0 {
                    ErrorCode::ProtocolError
                } else {
                    ErrorCode::StreamClosed
                },
                "HEADERS on a stream id not new and odd (RFC 9113 §5.1.1)",
            );
        }
        self.last_stream = id;
        if self.going_away || self.streams.len() >= self.config.max_streams as usize {
            frame::put_rst_stream(&mut self.out, id, ErrorCode::RefusedStream);
            return;
        }
        if size > self.config.max_header_list {
            return self.answer_directly(id, end_stream, 431, "the header list is over 64 KiB\n");
        }
        let req = match Request::parse(list) {
            Ok(r) => r,
            Err(why) => {
                frame::put_rst_stream(&mut self.out, id, ErrorCode::ProtocolError);
                self.events.push_back(Event::Reset {
                    stream: id,
                    code: ErrorCode::ProtocolError,
                    by_peer: false,
                    why: format!("a malformed request: {why}"),
                });
                return;
            }
        };
        let websocket = match (&req.kind, self.config.websockets) {
            (Kind::WebSocket, WebSockets::Offered) => true,
            (Kind::WebSocket, WebSockets::Refused) => {
                return self.answer_directly(
                    id,
                    end_stream,
                    501,
                    "WebSockets over HTTP/2 are refused here (--http2 refuse-websockets)\n",
                );
            }
            (Kind::WebSocket, WebSockets::NotOffered) => {
                frame::put_rst_stream(&mut self.out, id, ErrorCode::ProtocolError);
                self.events.push_back(Event::Reset {
                    stream: id,
                    code: ErrorCode::ProtocolError,
                    by_peer: false,
                    why: "extended CONNECT without SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3)"
                        .into(),
                });
                return;
            }
            (Kind::OtherProtocol(p), _) => {
                let text = format!("no protocol {p:?} here: only websocket\n");
                return self.answer_directly(id, end_stream, 501, &text);
            }
            (Kind::Connect, _) => {
                return self.answer_directly(
                    id,
                    end_stream,
                    405,
                    "CONNECT to another host is not served here\n",
                );
            }
            (Kind::Plain, _) => false,
        };
        let chunked = !end_stream && !websocket && req.content_length.is_none();
        let stream = Stream {
            inbound: req.http1_head(chunked),
            pos: 0,
            inbound_data: 0,
            chunked,
            tunnel: websocket,
            recv_ended: false,
            eof_given: false,
            received: 0,
            content_length: req.content_length.filter(|_| !websocket),
            recv_window: STREAM_WINDOW,
            send_window: self.peer_initial_window,
            pending: Vec::new(),
            sent: 0,
            end_pending: false,
            sent_end: false,
            starved: false,
            queued: false,
            detached: false,
            answer: Answer::new(websocket, req.method == "HEAD"),
        };
        self.streams.insert(id, stream);
        self.events.push_back(Event::Request {
            stream: id,
            websocket,
        });
        if end_stream {
            self.end_of_request(id);
        }
    }

    /// An answer the session gives itself (no session for the stream).
    fn answer_directly(&mut self, id: u32, end_stream: bool, status: u16, text: &str) {
        let fields = vec![
            (
                b"content-type".to_vec(),
                b"text/plain; charset=utf-8".to_vec(),
            ),
            (
                b"content-length".to_vec(),
                text.len().to_string().into_bytes(),
            ),
        ];
        let block = encode_head(status, &fields);
        frame::put_headers(&mut self.out, id, &block, false, self.peer_max_frame);
        // Small, and ahead of any DATA of this stream: sent whatever the
        // window (a few bytes over it is what RFC 9113 forbids; stay in it).
        let n = text
            .len()
            .min(self.send_window.max(0) as usize)
            .min(self.peer_initial_window.max(0) as usize);
        if n == text.len() {
            frame::put_data(&mut self.out, id, text.as_bytes(), true);
            self.send_window -= n as i64;
        } else {
            frame::put_data(&mut self.out, id, &[], true);
        }
        if !end_stream {
            frame::put_rst_stream(&mut self.out, id, ErrorCode::NoError);
        }
    }

    // ---- sending ----

    fn queue(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            let ready = (s.unsent() > 0 && s.send_window > 0) || (s.end_pending && !s.sent_end);
            if ready && !s.queued {
                s.queued = true;
                self.sendable.push_back(id);
            }
        }
    }

    /// Frames DATA from the streams in turn while the windows and the
    /// output cap allow.
    fn pump(&mut self) {
        while self.output_len() < OUT_CAP {
            let Some(id) = self.sendable.pop_front() else {
                return;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            let unsent = s.unsent();
            let n = unsent
                .min(self.peer_max_frame)
                .min(self.send_window.max(0) as usize)
                .min(s.send_window.max(0) as usize);
            if n == 0 && unsent > 0 {
                if self.send_window <= 0 {
                    // The connection window: every stream waits for it.
                    s.queued = true;
                    self.sendable.push_front(id);
                    return;
                }
                continue; // the stream's own window: its WINDOW_UPDATE requeues it
            }
            let end = s.end_pending && n == unsent && !s.sent_end;
            frame::put_data(&mut self.out, id, &s.pending[s.sent..s.sent + n], end);
            s.sent += n;
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            if s.sent == s.pending.len() {
                s.pending.clear();
                s.sent = 0;
                if s.pending.capacity() > PENDING_CAP {
                    s.pending = Vec::new();
                }
            }
            if end {
                s.sent_end = true;
            }
            if s.starved && s.unsent() < PENDING_CAP / 2 {
                s.starved = false;
                self.events.push_back(Event::Writable(id));
            }
            if end {
                self.retire(id);
            } else {
                self.queue(id);
            }
        }
    }

    /// A stream both sides ended (and whose session is gone) leaves the table.
    fn retire(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.sent_end && s.detached {
            if !s.recv_ended {
                // The answer is complete: the client need not send the rest
                // (RFC 9113 §8.1).
                frame::put_rst_stream(&mut self.out, id, ErrorCode::NoError);
            }
            self.streams.remove(&id);
        }
    }

    /// A connection error: GOAWAY with the code, every stream ends.
    fn fail(&mut self, code: ErrorCode, why: &str) {
        if self.failed.is_some() {
            return;
        }
        frame::put_goaway(&mut self.out, self.last_stream, code, why);
        self.failed = Some(format!("{code}: {why}"));
        self.continuation = None;
        self.reset_all(code, why);
    }

    fn reset_all(&mut self, code: ErrorCode, why: &str) {
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
