//! The loop's side of HTTP/2 streams: a connection's session events (a
//! request opens a stream's slot), and a stream's slot read, written and
//! settled through its connection's session where io.rs would use a socket
//! (`http2.rs` moves the bytes). One of the loop's own files: it sees
//! `Server`.

use std::time::Instant;

use mio::Token;

use super::http2::Http2;
use super::io::READS_PER_TURN;
use super::transport::StreamLink;
use super::Server;
use crate::proto::h2::{ErrorCode, Read};
use crate::proto::TransportAction;

/// HTTP/2: a connection's events, and its streams read, written and
/// settled through it (http2.rs moves the bytes).
impl Server {
    pub(super) fn h2_events(&mut self, parent: Token, now: Instant) {
        let turn = self
            .http2
            .events(&mut self.conns, parent, &self.limits, now);
        for t in turn.read {
            self.conns.mark_ready(t);
        }
        for t in turn.write {
            self.conns.mark_dirty(t);
        }
        for t in turn.gone {
            // A reset stream is an abnormal closure: nothing more is sent.
            if let Some(c) = self.conns.get_mut(t) {
                c.proto.abort();
            }
            self.remove(t);
        }
    }

    /// A stream's slot reads what its connection's session holds for it.
    pub(super) fn read_stream(&mut self, t: Token, link: StreamLink, now: Instant) {
        let budget = self.config.max_backpressure;
        for _ in 0..READS_PER_TURN {
            self.account(t);
            self.keep_memory_budget(now);
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            if !c.proto.wants_read() {
                return;
            }
            let stream = c.may_stream(self.config.streaming, budget);
            c.proto.set_streaming(stream);
            if c.proto.backlog() > budget && !c.proto.is_streaming_message() {
                // Not read: the stream's window is not given back, so the
                // client waits (flow control is the stream's backpressure).
                c.read_paused = true;
                return;
            }
            let read = Http2::read(&mut self.conns, link, &mut self.bufs.read);
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            match read {
                Read::Data(n) => c.proto.receive(&self.bufs.read[..n], now),
                Read::Eof => {
                    c.receive_eof(now);
                    return self.handle_events(t, now);
                }
                Read::Empty => return,
            }
            self.handle_events(t, now);
        }
        self.conns.mark_ready(t);
    }

    /// A stream's slot's output goes into its connection's session.
    pub(super) fn flush_stream(&mut self, t: Token, link: StreamLink) {
        if !Http2::write(&mut self.conns, t, link) {
            if let Some(c) = self.conns.get_mut(t) {
                c.proto.abort();
            }
            return;
        }
        let budget = self.config.max_backpressure;
        if let Some(c) = self.conns.get_mut(t) {
            if c.read_paused && c.proto.backlog() <= budget {
                c.read_paused = false;
                self.conns.mark_ready(t);
            }
        }
    }

    /// After a stream slot's input: its transport action, and a plain
    /// request's slot goes once its answer is complete.
    pub(super) fn settle_stream(&mut self, t: Token, link: StreamLink) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        match c.proto.poll_transport() {
            TransportAction::None => {}
            TransportAction::ShutdownWrite if c.proto.is_hanging_up() => {
                c.proto.abort();
                Http2::reset(&mut self.conns, link, ErrorCode::Cancel);
                return self.remove(t);
            }
            TransportAction::ShutdownWrite => Http2::end(&mut self.conns, link),
            TransportAction::Close => {
                // After a closing handshake the stream ends (END_STREAM),
                // as a socket would close; without one it is cancelled.
                if c.proto.close_sent().is_some() {
                    Http2::end(&mut self.conns, link);
                }
                return self.remove(t);
            }
            TransportAction::Reset => {
                Http2::reset(&mut self.conns, link, ErrorCode::InternalError);
                return self.remove(t);
            }
        }
        if Http2::answered(&self.conns, link) {
            return self.remove(t);
        }
        self.arm_timer(t);
    }

    /// An HTTP/2 connection went: its streams' slots go with it.
    pub(super) fn h2_connection_removed(&mut self, t: Token, c: &super::conns::Client) {
        for child in self.http2.connection_removed(t) {
            if let Some(cc) = self.conns.get_mut(child) {
                cc.proto.abort();
            }
            self.remove(child);
        }
        super::http2::log_closed(c.id(), c.io.h2().and_then(|h| h.error()));
    }
}
