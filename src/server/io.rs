//! Per-connection I/O, the heart of the driver's contract: `accept` until
//! `WouldBlock` (admission decides who gets 503, and pauses accepting when
//! out of descriptors), `read` until `WouldBlock` or the per-turn budget
//! (feeding each read to the core, handing its events to `handle_events`),
//! `flush` with vectored writes, and `settle` after any input (write, obey
//! the transport action, re-arm the timer, account memory). Echo
//! backpressure lives here: a connection over its budget is not read until
//! `flush` brings it back under. Events go to the handler (echo), rooms.rs
//! (a member's message, a `POST` body) and http.rs (requests).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::conns::Client;
use super::{admission, transport, Server};
use crate::handler;
use crate::proto::{CloseCode, Connection, Event, HandshakeError, MessageKind, TransportAction};
use crate::stubs::session::Out;

/// Reads per connection per loop turn before others get their turn.
pub(super) const READS_PER_TURN: usize = 4;

impl Server {
    pub(super) fn accept(&mut self, now: Instant) {
        if self.control.stop_requested() || self.admission.is_paused() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.admission.accepted();
                    self.add(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if admission::is_transient(&e) => {
                    debug!("accept: {e}");
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) or memory: the
                    // pending connection stays in the backlog and the listener
                    // would report it again at once. Pause instead of spinning.
                    if self.admission.failed(now) {
                        warn!(
                            "accept failed: {e}; pausing accept, retrying every {} ms \
                             ({} connections open)",
                            admission::PAUSE.as_millis(),
                            self.conns.len()
                        );
                    }
                    return;
                }
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let t = self.conns.vacant();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, t, interest) {
            warn!("{peer}: register failed: {e}");
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = self.conns.next_id();
        let mut proto = Connection::with_limits(self.limits.clone(), now);
        proto.set_id(id.0);
        self.stats.accepted += 1;
        let admitted = self.admission.admit();
        if !admitted {
            self.stats.refused += 1;
            info!("{id} {peer}: 503, at --max-connections");
            proto.reject(HandshakeError::Overloaded, now);
        }
        let io = transport::Transport::new(stream);
        self.conns.insert(t, Client::new(io, proto, admitted));
        debug!("{id} {peer}: accepted");
        self.settle(t);
    }

    /// Reads until `WouldBlock` or the per-turn budget, handling events as they come.
    ///
    /// A read that fills less than the buffer has emptied the socket's receive
    /// queue, so unless the peer's FIN (or an error) was reported with this event
    /// and still has to be read, we stop there: data that arrives later raises a
    /// new edge. That saves the `EAGAIN` read per wakeup (tokio does the same with
    /// mio). `drain`: read until `WouldBlock` or EOF regardless.
    pub(super) fn read(&mut self, t: Token, now: Instant, drain: bool) {
        if let Some(link) = self.conns.get(t).and_then(|c| c.io.link()) {
            return self.read_stream(t, link, now);
        }
        for _ in 0..READS_PER_TURN {
            self.account(t);
            self.keep_memory_budget(now);
            // The buffers are a field beside the table: both can be borrowed at once.
            let Some(client) = self.conns.get_mut(t) else {
                return;
            };
            if !client.proto.wants_read() {
                return;
            }
            let budget = self.config.max_backpressure;
            // A proxied leg is not read while its peer cannot take more,
            // unless a message of it is streaming through (as an echo's is
            // read to its end: the two sides could otherwise wait on each
            // other); a new message streams only while the peer has room.
            let mut relay = None;
            if let Some((peer, whole)) = self.proxying.streams_to(t) {
                let (full, shapes) = self.conns.get(peer).map_or((false, false), |p| {
                    (p.proto.backlog() > budget, p.proto.shapes_relayed())
                });
                let mid = self
                    .conns
                    .get(t)
                    .is_some_and(|c| c.proto.is_streaming_message());
                if full && !mid {
                    if let Some(c) = self.conns.get_mut(t) {
                        c.read_paused = true;
                    }
                    return;
                }
                relay = Some(self.config.streaming && !whole && !shapes && !full);
            }
            let Some(client) = self.conns.get_mut(t) else {
                return;
            };
            let stream = relay.unwrap_or_else(|| client.may_stream(self.config.streaming, budget));
            client.proto.set_streaming(stream);
            // An HTTP/2 connection's backlog is its session's frames.
            let backlog = client
                .io
                .h2()
                .map_or(client.proto.backlog(), |h| h.output_len());
            // A message already streaming is read to its end even over the
            // budget (see `is_streaming_message`).
            if backlog > budget && !client.proto.is_streaming_message() {
                // Echo backpressure: stop reading until the queue drains; TCP then
                // pushes back on the client. `flush` resumes.
                client.read_paused = true;
                return;
            }
            match client.io.read(&mut self.bufs.read) {
                Ok(0) => return client.receive_eof(now),
                Ok(n) => {
                    let bytes = &self.bufs.read[..n];
                    // The first bytes choose the transport: TLS, HTTP/2.
                    let undecided =
                        !client.io.is_tls() && !client.io.is_h2() && client.proto.is_untouched();
                    let (tls, h2) = (self.config.tls.as_ref(), self.config.http2.as_ref());
                    if undecided && (tls.is_some() || h2.is_some()) {
                        if let Err(e) = client.io.sniff(bytes, tls, h2, now) {
                            info!("{}: TLS: {e}", client.id());
                            client.proto.abort();
                            return;
                        }
                        debug!("{}: {}", client.id(), client.io.name());
                    }
                    let h2 = h2.filter(|_| !client.proxied);
                    if let Err(e) = client.io.receive(bytes, &mut client.proto, h2, now) {
                        // rustls queued its alert; settle writes it, then drops us.
                        info!("{}: TLS: {e}", client.id());
                        client.proto.abort();
                        self.proxying.tls_error(t, e);
                        return;
                    }
                    if n < self.bufs.read.len() && !drain {
                        return self.handle_events(t, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: read: {e}", client.id());
                    client.receive_eof(now);
                    return self.proxying.socket_error(t, &e);
                }
            }
            self.handle_events(t, now);
        }
        self.conns.mark_ready(t);
    }

    /// The connection's events, then the room messages they published
    /// (gathered into one run: rooms.rs).
    pub(super) fn handle_events(&mut self, t: Token, now: Instant) {
        self.take_events(t, now);
        self.deliver_run(now);
    }

    fn take_events(&mut self, t: Token, now: Instant) {
        if self.conns.get(t).is_some_and(|c| c.io.h2().is_some()) {
            return self.h2_events(t, now);
        }
        loop {
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            let Some(event) = c.proto.poll_event() else {
                return self.pass_close(t, now);
            };
            if c.proxied {
                self.proxied_event(t, event, now);
                continue;
            }
            match event {
                Event::Upgrade(req) => self.open(t, req, now),
                Event::HttpRequest(req) => self.answer_http(t, &req, now),
                // To whoever asked for it: an inspector's action, a stub,
                // a room's `POST`.
                Event::Body(body) => match self.take_pending_action(t) {
                    Some(p) => self.act(t, p, body, now),
                    None if self.stubbing.take_pending(t) => self.stubs_body(t, body, now),
                    None => self.body_read(t, body, now),
                },
                // A live inspector's own messages mean nothing.
                Event::Message { data, .. } if c.inspecting => c.proto.recycle(data),
                Event::Message { kind, data } => match c.room() {
                    None if self.stubbing.is_stubbed(t) => {
                        self.stats.messages_in += 1;
                        self.stats.bytes_in += data.len() as u64;
                        let conn = c.id().0;
                        let out = self.stubbing.message(t, conn, kind, &data, now);
                        self.apply_stub(t, out, Some((kind, data)), now);
                    }
                    None => {
                        let n = data.len() as u64;
                        let echoed = handler::echo(&mut c.proto, kind, data);
                        let st = &mut self.stats;
                        st.messages_in += 1;
                        st.bytes_in += n;
                        if echoed {
                            st.messages_out += 1;
                            st.bytes_out += n;
                        }
                    }
                    Some(room) => {
                        let from = c.id().0;
                        self.stats.messages_in += 1;
                        self.stats.bytes_in += data.len() as u64;
                        self.publish_member(t, from, room, kind, &data, now);
                        if let Some(c) = self.conns.get_mut(t) {
                            c.proto.recycle(data);
                        }
                    }
                },
                // Client role only: a proxy's upstream leg (above).
                Event::Opened(_) | Event::Refused(_) => {}
                // Only echo connections stream (see `open`).
                Event::Fragment { data, first, fin } => {
                    let n = data.len() as u64;
                    let echoed = handler::echo_fragment(&mut c.proto, data, first, fin);
                    let st = &mut self.stats;
                    st.bytes_in += n;
                    st.messages_in += u64::from(fin);
                    if echoed {
                        st.bytes_out += n;
                        st.messages_out += u64::from(fin);
                    }
                }
            }
        }
    }

    /// An event of a proxied leg: a message a stub answers stops here (its
    /// replies go to the client); the rest is the proxy's to pass on. When
    /// the upstream opens, both legs are recorded and the client's stub
    /// session starts.
    fn proxied_event(&mut self, t: Token, event: Event, now: Instant) {
        if let Event::Message { kind, data } = &event {
            let side = self.proxying.stub_side(t);
            if let Some((client, from)) = side.filter(|(c, _)| self.stubbing.is_stubbed(*c)) {
                let conn = self.conns.get(client).map_or(0, |c| c.id().0);
                if let Some(out) = self.stubbing.relayed(client, conn, from, *kind, data, now) {
                    self.apply_stub(client, out, None, now);
                    self.conns.mark_dirty(client);
                    return;
                }
            }
            // What the two real sides said (a stub's answer is not).
            if let (Some(rec), Some((client, from))) = (self.recording.as_mut(), side) {
                let from_client = from == crate::stubs::Sender::Client;
                rec.message(client, from_client, *kind, data, now);
            }
        }
        if let (Event::Refused(r), Some(rec)) = (&event, self.recording.as_mut()) {
            if let Some(target) = self.proxying.client_target(t) {
                if r.kind == crate::proto::connection::RefusalKind::Answered {
                    rec.refused(&target, r.status, &r.headers, &r.body);
                }
            }
        }
        let opened = match &event {
            Event::Opened(o) => Some(o.protocol.clone()),
            _ => None,
        };
        let deflate = (&self.config.deflate, &self.deflate_codec);
        if let Some(peer) = self.proxying.event(&mut self.conns, t, event, deflate, now) {
            self.conns.mark_dirty(peer);
        }
        let Some(protocol) = opened else { return };
        let Some([(client, req), up]) = self.proxying.take_requests(t) else {
            return;
        };
        if let Some(rec) = self.recording.as_mut() {
            rec.opened(client, &req.path, protocol.clone(), now);
        }
        if self.stubbing.covers(&req.path) {
            let conn = self.conns.get(client).map_or(0, |c| c.id().0);
            let headers = crate::stubs::head_headers(req.head.as_deref());
            let out = self.stubbing.open(client, conn, &req.path, headers, now);
            self.apply_stub(client, out, None, now);
            self.conns.mark_dirty(client);
        }
        self.inspect_proxied([(client, req), up], protocol.as_deref(), now);
    }

    /// A proxied leg's close (or failure) goes to its peer, once.
    fn pass_close(&mut self, t: Token, now: Instant) {
        if let Some(peer) = self.proxying.pass_close(&mut self.conns, t, now) {
            self.conns.mark_dirty(peer);
        }
    }

    /// Writes queued output until empty or `WouldBlock`; resumes reading a
    /// connection paused by backpressure once its queue is back under budget.
    pub(super) fn flush(&mut self, t: Token) {
        let budget = self.config.max_backpressure;
        if let Some(link) = self.conns.get(t).and_then(|c| c.io.link()) {
            return self.flush_stream(t, link);
        }
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if let Err(e) = c.io.flush(&mut c.proto) {
            debug!("{}: write: {e}", c.id());
            c.proto.abort();
            if let Some(h2) = c.io.h2_mut() {
                h2.receive_eof();
            }
            return self.proxying.socket_error(t, &e);
        }
        let under = c.io.h2().map_or(c.proto.backlog(), |h| h.output_len()) <= budget;
        if c.read_paused && under {
            c.read_paused = false;
            self.conns.mark_ready(t);
        }
        // A proxied leg's peer waits for this one's queue to drain.
        if let Some(peer) = self.proxying.peer(t).filter(|_| under) {
            if let Some(p) = self.conns.get_mut(peer).filter(|p| p.read_paused) {
                p.read_paused = false;
                self.conns.mark_ready(peer);
            }
        }
    }

    /// After any input: write what is queued, apply the transport action, re-arm
    /// the timer.
    pub(super) fn settle(&mut self, t: Token) {
        self.flush(t);
        self.account(t);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if c.io.h2().is_some() {
            // Writing may have made room for streams waiting to write.
            let now = Instant::now();
            self.h2_events(t, now);
            if let Some(h2) = self.conns.get_mut(t).and_then(|c| c.io.h2_mut()) {
                h2.note_time(now);
            }
            // An HTTP/2 connection's own session is never used.
            if self
                .conns
                .get(t)
                .and_then(|c| c.io.h2())
                .is_some_and(|h| h.is_done())
            {
                return self.remove(t);
            }
            return self.arm_timer(t);
        }
        if let Some(link) = c.io.link() {
            return self.settle_stream(t, link);
        }
        match c.proto.poll_transport() {
            TransportAction::None => {}
            TransportAction::ShutdownWrite => c.io.shutdown(&mut c.proto),
            TransportAction::Close => return self.remove(t),
            TransportAction::Reset => {
                // The `drop=N&reset=1` knob: SO_LINGER 0 makes the close an RST.
                if let Err(e) = c.io.reset() {
                    debug!("{}: SO_LINGER: {e}", c.id());
                }
                return self.remove(t);
            }
        }
        self.arm_timer(t);
    }
}

impl Server {
    /// Sends what a stub session said: replies, the echo of `echo` (no stub
    /// matched and `otherwise` is `echo`), a close or a hang-up.
    pub(super) fn apply_stub(
        &mut self,
        t: Token,
        out: Vec<Out>,
        mut echo: Option<(MessageKind, Vec<u8>)>,
        now: Instant,
    ) {
        for o in out {
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            match o {
                Out::Send(kind, bytes) => {
                    let n = bytes.len() as u64;
                    if c.proto.send(kind, bytes) {
                        self.stats.messages_out += 1;
                        self.stats.bytes_out += n;
                    }
                }
                Out::Echo => {
                    if let Some((kind, data)) = echo.take() {
                        let n = data.len() as u64;
                        if handler::echo(&mut c.proto, kind, data) {
                            self.stats.messages_out += 1;
                            self.stats.bytes_out += n;
                        }
                    }
                }
                Out::Close(code, reason) => {
                    debug!("{}: a stub closes with {code}", c.id());
                    let _ = c.proto.close_now(Some(CloseCode(code)), &reason, now);
                }
                Out::Drop(reset) => {
                    debug!("{}: a stub drops the connection", c.id());
                    let _ = c.proto.hang_up(reset, now);
                }
            }
        }
        if let Some((_, data)) = echo {
            if let Some(c) = self.conns.get_mut(t) {
                c.proto.recycle(data);
            }
        }
        self.account(t);
    }
}

impl Server {
    pub(super) fn begin_shutdown(&mut self, now: Instant) -> std::io::Result<()> {
        info!(
            "stopping: closing {} connections with 1001",
            self.conns.len()
        );
        self.poll.registry().deregister(&mut self.listener)?;
        for t in self.conns.tokens() {
            if let Some(c) = self.conns.get_mut(t) {
                if let Some(h2) = c.io.h2_mut() {
                    // Its WebSocket streams close with 1001 (as slots of
                    // their own); GOAWAY stops new ones.
                    h2.go_away();
                } else if c.proto.is_event_stream() {
                    // Ends like `drop=N`: EventSource would come back.
                    c.proto.end_events(b"", false, now);
                } else {
                    c.proto
                        .close(CloseCode::GOING_AWAY, "server shutting down", now);
                }
            }
            self.settle(t);
        }
        Ok(())
    }
}
