//! Per-connection I/O, the heart of the driver's contract: `read` until
//! `WouldBlock` or the per-turn budget (feeding each read to the core, handing
//! its events to `handle_events`), `flush` with vectored writes, and `settle`
//! after any input (write, obey the transport action, re-arm the timer,
//! account memory). Echo backpressure lives here: a connection over its budget
//! is not read until `flush` brings it back under. Calls the handler (echo),
//! rooms.rs (broadcast), upgrade.rs (opening requests), memory.rs and timers.rs.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::Token;

use super::{split, transport, Client, Server};
use crate::handler;
use crate::proto::{Event, TransportAction};

/// Reads per connection per loop turn before others get their turn.
const READS_PER_TURN: usize = 16;
/// Slices per vectored write.
const MAX_IOV: usize = 64;

impl Client {
    /// The socket reached EOF or failed.
    fn receive_eof(&mut self, now: Instant) {
        match self.tls.as_mut() {
            Some(tls) => tls.receive_eof(&mut self.proto, now),
            None => self.proto.receive_eof(now),
        }
    }
}

impl Server {
    /// Reads until `WouldBlock` or the per-turn budget, handling events as they come.
    ///
    /// A read that fills less than the buffer has emptied the socket's receive
    /// queue, so unless the peer's FIN (or an error) was reported with this event
    /// and still has to be read, we stop there: data that arrives later raises a
    /// new edge. That saves the `EAGAIN` read per wakeup (tokio does the same with
    /// mio). `drain`: read until `WouldBlock` or EOF regardless.
    pub(super) fn read(&mut self, t: Token, now: Instant, drain: bool) {
        let (index, gen) = split(t);
        for _ in 0..READS_PER_TURN {
            self.account(t);
            self.keep_memory_budget(now);
            // `read_buf` is a field beside `slots`: both can be borrowed at once.
            let Some(client) = self
                .slots
                .get_mut(index)
                .filter(|s| s.gen == gen)
                .and_then(|s| s.client.as_mut())
            else {
                return;
            };
            if !client.proto.wants_read() {
                return;
            }
            let budget = self.config.max_backpressure;
            let stream = client.may_stream(self.config.streaming, budget);
            client.proto.set_streaming(stream);
            // A message already streaming is read to its end even over the
            // budget (see `is_streaming_message`).
            if client.proto.backlog() > budget && !client.proto.is_streaming_message() {
                // Echo backpressure: stop reading until the queue drains; TCP then
                // pushes back on the client. `flush` resumes.
                client.read_paused = true;
                return;
            }
            match client.stream.read(&mut self.read_buf) {
                Ok(0) => return client.receive_eof(now),
                Ok(n) => {
                    let bytes = &self.read_buf[..n];
                    // With TLS on, the first bytes choose the transport.
                    let undecided = client.tls.is_none() && client.proto.is_untouched();
                    if let Some(config) = self.config.tls.as_ref().filter(|_| undecided) {
                        match transport::sniff(bytes, config) {
                            Ok(tls) => client.tls = tls,
                            Err(e) => {
                                info!("{}: TLS: {e}", client.id);
                                client.proto.abort();
                                return;
                            }
                        }
                        debug!("{}: {}", client.id, client.scheme());
                    }
                    match client.tls.as_mut() {
                        None => client.proto.receive(bytes, now),
                        Some(tls) => {
                            if let Err(e) =
                                tls.receive(bytes, &mut self.plain_buf, &mut client.proto, now)
                            {
                                // rustls queued its alert; settle writes it, then drops us.
                                info!("{}: TLS: {e}", client.id);
                                client.proto.abort();
                                return;
                            }
                        }
                    }
                    if n < self.read_buf.len() && !drain {
                        return self.handle_events(t, now);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: read: {e}", client.id);
                    return client.receive_eof(now);
                }
            }
            self.handle_events(t, now);
        }
        if let Some(c) = self.client_mut(t) {
            c.read_pending = true;
            self.ready.push(t);
        }
    }

    pub(super) fn handle_events(&mut self, t: Token, now: Instant) {
        loop {
            let Some(c) = self.client_mut(t) else { return };
            let Some(event) = c.proto.poll_event() else {
                return;
            };
            match event {
                Event::Upgrade(req) => self.open(t, req, now),
                Event::HttpRequest(req) => self.answer_http(t, &req, now),
                Event::Body(body) => self.published(t, body, now),
                // A live inspector's own messages mean nothing.
                Event::Message { data, .. } if c.inspecting => c.proto.recycle(data),
                Event::Message { kind, data } => match c.room() {
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
                        let from = c.id.0;
                        self.stats.messages_in += 1;
                        self.stats.bytes_in += data.len() as u64;
                        let (_, members) = self.publish(room, kind, &data, now);
                        self.inspect_broadcast(from, room, kind, &data, members, now);
                        if let Some(c) = self.client_mut(t) {
                            c.proto.recycle(data);
                        }
                    }
                },
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

    /// Writes queued output until empty or `WouldBlock`; resumes reading a
    /// connection paused by backpressure once its queue is back under budget.
    pub(super) fn flush(&mut self, t: Token) {
        let budget = self.config.max_backpressure;
        let Some(c) = self.client_mut(t) else { return };
        if let Some(tls) = c.tls.as_mut() {
            if let Err(e) = tls.flush(&mut c.stream, &mut c.proto) {
                debug!("{}: write: {e}", c.id);
                c.proto.abort();
                return;
            }
        } else {
            loop {
                let written = {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = c.proto.fill_output(&mut slices);
                    if n == 0 {
                        break;
                    }
                    c.stream.write_vectored(&slices[..n])
                };
                match written {
                    Ok(0) => {
                        c.proto.abort();
                        return;
                    }
                    Ok(n) => c.proto.consume_output(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!("{}: write: {e}", c.id);
                        c.proto.abort();
                        return;
                    }
                }
            }
        }
        if c.read_paused && c.proto.backlog() <= budget {
            c.read_paused = false;
            if !c.read_pending {
                c.read_pending = true;
                self.ready.push(t);
            }
        }
    }

    /// After any input: write what is queued, apply the transport action, re-arm
    /// the timer.
    pub(super) fn settle(&mut self, t: Token) {
        self.flush(t);
        self.account(t);
        let Some(c) = self.client_mut(t) else { return };
        match c.proto.poll_transport() {
            TransportAction::None => {}
            TransportAction::ShutdownWrite => match c.tls.as_mut() {
                Some(tls) => tls.shutdown(&mut c.stream, &mut c.proto),
                None => {
                    let _ = c.stream.shutdown(Shutdown::Write);
                }
            },
            TransportAction::Close => return self.remove(t),
            TransportAction::Reset => {
                // The `drop=N&reset=1` knob: SO_LINGER 0 makes the close an RST.
                if let Err(e) = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO)) {
                    debug!("{}: SO_LINGER: {e}", c.id);
                }
                return self.remove(t);
            }
        }
        self.arm_timer(t);
    }
}
