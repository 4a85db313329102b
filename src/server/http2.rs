//! HTTP/2 in the driver: a socket whose first bytes (or ALPN) chose HTTP/2
//! carries an `h2::Session` in its transport, and each of its streams is a
//! slot of its own whose transport is a [`StreamLink`] to it. A stream's
//! slot holds an ordinary `Connection`, fed the HTTP/1.1 bytes the session
//! translates, so routes, knobs, stubs, rooms and the inspector serve
//! streams as they serve sockets. This file owns the streams' table and
//! moves bytes between a stream's slot and its connection's session;
//! io.rs calls it where a socket would be read or written.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use log::{debug, info};
use mio::Token;

use super::conns::{Client, Connections, Id};
use super::transport::{StreamLink, Transport};
use crate::proto::h2::{ErrorCode, Event, Read};
use crate::proto::{Connection, Limits};

/// The streams of every HTTP/2 connection.
#[derive(Default)]
pub(super) struct Http2 {
    /// A stream's slot, by its connection's slot and the stream's id.
    streams: HashMap<(Token, u32), Token>,
}

/// What the loop does after a connection's events.
#[derive(Default)]
pub(super) struct Turn {
    /// Stream slots with bytes (or their end) to read.
    pub(super) read: Vec<Token>,
    /// Stream slots that can write more.
    pub(super) write: Vec<Token>,
    /// Stream slots whose stream ended abnormally: they go.
    pub(super) gone: Vec<Token>,
}

impl Http2 {
    /// The connection's session events: a request opens a stream slot.
    pub(super) fn events(
        &mut self,
        conns: &mut Connections,
        parent: Token,
        limits: &Rc<Limits>,
        now: Instant,
    ) -> Turn {
        let mut turn = Turn::default();
        loop {
            let Some(p) = conns.get_mut(parent) else {
                return turn;
            };
            let (tls, pid) = (p.io.is_tls(), p.id());
            let Some(event) = p.io.h2_mut().and_then(|h| h.poll_event()) else {
                return turn;
            };
            match event {
                Event::Request { stream, websocket } => {
                    let peer = p.io.peer_addr();
                    let t = conns.vacant();
                    let id = conns.next_id();
                    let mut proto = Connection::with_limits(limits.clone(), now);
                    proto.set_id(id.0);
                    let io = Transport::stream(parent, stream, tls, peer);
                    conns.insert(t, Client::new(io, proto, false));
                    self.streams.insert((parent, stream), t);
                    let what = if websocket {
                        "a WebSocket"
                    } else {
                        "a request"
                    };
                    debug!("{id}: stream {stream} of {pid}, {what}");
                    turn.read.push(t);
                }
                Event::Readable(stream) => turn.read.extend(self.streams.get(&(parent, stream))),
                Event::Writable(stream) => turn.write.extend(self.streams.get(&(parent, stream))),
                Event::Reset {
                    stream,
                    code,
                    by_peer,
                    why,
                } => {
                    if by_peer {
                        info!("{pid}: stream {stream}: reset by the client ({code})");
                    } else {
                        info!("{pid}: stream {stream}: reset with {code}: {why}");
                    }
                    if let Some(t) = self.streams.remove(&(parent, stream)) {
                        turn.gone.push(t);
                    }
                }
            }
        }
    }

    /// Reads what waits for a stream's slot from its connection's session
    /// (into `buf`), giving window back as it goes.
    pub(super) fn read(conns: &mut Connections, link: StreamLink, buf: &mut [u8]) -> Read {
        let read = conns
            .get_mut(link.parent)
            .and_then(|p| p.io.h2_mut())
            .map_or(Read::Eof, |h| h.read(link.id, buf));
        conns.mark_dirty(link.parent);
        read
    }

    /// Moves a stream slot's output into its connection's session, as far
    /// as the stream's queue takes it. `false`: the connection is gone.
    pub(super) fn write(conns: &mut Connections, t: Token, link: StreamLink) -> bool {
        let Some((c, p)) = conns.pair_mut(t, link.parent) else {
            return false;
        };
        let Some(h2) = p.io.h2_mut() else {
            return false;
        };
        loop {
            let front = c.proto.output_front();
            if front.is_empty() {
                break;
            }
            let n = h2.write(link.id, front);
            if n == 0 {
                break;
            }
            c.proto.consume_output(n);
        }
        conns.mark_dirty(link.parent);
        true
    }

    /// Whether the stream's answer is complete (a request, not a
    /// WebSocket): its slot can go.
    pub(super) fn answered(conns: &Connections, link: StreamLink) -> bool {
        conns
            .get(link.parent)
            .and_then(|p| p.io.h2())
            .is_none_or(|h| h.is_answered(link.id))
    }

    /// The stream slot shut its write half: END_STREAM.
    pub(super) fn end(conns: &mut Connections, link: StreamLink) {
        if let Some(h2) = conns.get_mut(link.parent).and_then(|p| p.io.h2_mut()) {
            h2.end(link.id);
        }
        conns.mark_dirty(link.parent);
    }

    /// A stream slot goes: its stream is cancelled unless its answer
    /// ended (then the stream goes once the answer is out).
    pub(super) fn removed(&mut self, conns: &mut Connections, link: StreamLink) {
        self.streams.remove(&(link.parent, link.id));
        if let Some(h2) = conns.get_mut(link.parent).and_then(|p| p.io.h2_mut()) {
            h2.forget(link.id, ErrorCode::Cancel);
        }
        conns.mark_dirty(link.parent);
    }

    /// The `drop=N` knob on a stream: RST_STREAM CANCEL where a socket
    /// gets a FIN, INTERNAL_ERROR with `reset=1` where it gets a TCP reset.
    pub(super) fn reset(conns: &mut Connections, link: StreamLink, code: ErrorCode) {
        if let Some(h2) = conns.get_mut(link.parent).and_then(|p| p.io.h2_mut()) {
            h2.reset(link.id, code, "the drop=N knob");
        }
        conns.mark_dirty(link.parent);
    }

    /// An HTTP/2 connection goes: the slots of its streams, to remove.
    pub(super) fn connection_removed(&mut self, parent: Token) -> Vec<Token> {
        let mut children = Vec::new();
        self.streams.retain(|&(p, _), &mut t| {
            if p == parent {
                children.push(t);
            }
            p != parent
        });
        children
    }
}

/// The log line of an HTTP/2 connection that ended.
pub(super) fn log_closed(id: Id, error: Option<&str>) {
    match error {
        Some(e) => info!("{id}: HTTP/2 connection closed: {e}"),
        None => debug!("{id}: HTTP/2 connection closed"),
    }
}
