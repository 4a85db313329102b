//! The two connections to Redis as the core sees them: each says who we
//! are first (AUTH, SELECT, the scripts; the subscriber a PING) and is up
//! only once Redis answered that; replies are read in order and matched to
//! what was asked; `tick` (time passed in) asks `liveness` whether Redis
//! still answers and PINGs a quiet link. A lost link drops both: what was
//! in flight is resent after the reconnect.

use std::time::Instant;

use redis_protocol::resp2::types::OwnedFrame;

use super::{liveness, resp, Awaiting, Cluster, Event, Link, Watch};

impl Cluster {
    /// The driver opens the two sockets: the attempt must be answered
    /// within the timeout.
    pub fn connecting(&mut self) {
        self.liveness.connecting();
    }

    /// Checks that Redis answers (time passed in): `PING`s a quiet link,
    /// and says `Err` (why) when a reply is overdue by the timeout or an
    /// attempt was not answered in time. The driver then drops both links
    /// (`disconnected`) and reconnects.
    pub fn tick(&mut self, now: Instant) -> Result<(), String> {
        let awaited = [self.awaiting.len(), self.sub_awaiting];
        match self.liveness.tick(now, awaited, self.up) {
            liveness::Verdict::Lost(why) => {
                self.stats.timeouts += 1;
                Err(why)
            }
            liveness::Verdict::Fine(ping) => {
                if ping[0] {
                    resp::command(&mut self.out[0], &[b"PING"]);
                    self.awaiting.push_back(Awaiting::Ping);
                    self.liveness.pinged(0, now);
                }
                if ping[1] {
                    resp::command(&mut self.out[1], &[b"PING"]);
                    self.sub_awaiting += 1;
                    self.liveness.pinged(1, now);
                }
                Ok(())
            }
        }
    }

    /// When `tick` must run next.
    pub fn next_tick(&self) -> Option<Instant> {
        self.liveness.next()
    }

    /// A connection was established: it says who we are first.
    pub fn connected(&mut self, link: Link) {
        let i = Cluster::idx(link);
        self.out[i].clear();
        self.input[i].clear();
        let mut hello: Vec<Vec<u8>> = Vec::new();
        if let Some(p) = &self.url.password {
            hello.push(b"AUTH".to_vec());
            if let Some(u) = &self.url.user {
                hello.push(u.clone().into_bytes());
            }
            hello.push(p.clone().into_bytes());
        }
        if !hello.is_empty() {
            let args: Vec<&[u8]> = hello.iter().map(Vec::as_slice).collect();
            resp::command(&mut self.out[i], &args);
            if link == Link::Commands {
                self.awaiting.push_back(Awaiting::Hello);
            }
        }
        match link {
            Link::Commands => {
                let db = self.url.db.to_string();
                resp::command(&mut self.out[i], &[b"SELECT", db.as_bytes()]);
                self.awaiting.push_back(Awaiting::Hello);
                for script in [resp::APPEND, resp::CATCH_UP] {
                    resp::command(&mut self.out[i], &[b"SCRIPT", b"LOAD", script.as_bytes()]);
                    self.awaiting.push_back(Awaiting::Hello);
                }
                // The last one's reply makes the link ready.
                if let Some(last) = self.awaiting.back_mut() {
                    *last = Awaiting::Ready;
                }
            }
            Link::Subscriber => {
                // AUTH's reply, then PING's: ready (`publication`).
                self.sub_awaiting = hello.len().min(1);
                resp::command(&mut self.out[i], &[b"PING"]);
                self.sub_awaiting += 1;
            }
        }
        self.linked[i] = true;
    }

    /// Link `i` answered its hello.
    pub(super) fn ready(&mut self, i: usize) {
        if self.up[i] || !self.linked[i] {
            return;
        }
        self.up[i] = true;
        if self.is_up() {
            self.came_up();
        }
    }

    /// Both links are up: resubscribe, catch up, send what waited.
    fn came_up(&mut self) {
        self.events.push_back(Event::Up);
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.subscribe(&name);
        }
        // Unanswered appends go first, under the keys they had.
        while let Some(a) = self.in_flight.pop_back() {
            self.held.push_front(a);
        }
        self.send_held();
    }

    /// A connection failed or closed: both are dropped (the driver
    /// reconnects with backoff). Appends in flight wait to be resent.
    pub fn disconnected(&mut self) {
        if self.up != [false; 2] || !self.awaiting.is_empty() {
            self.stats.reconnects += 1;
        }
        self.up = [false; 2];
        self.linked = [false; 2];
        self.sub_awaiting = 0;
        self.liveness.reset();
        self.out = [Vec::new(), Vec::new()];
        self.input = [Vec::new(), Vec::new()];
        self.awaiting.clear();
        for w in self.rooms.values_mut() {
            w.state = Watch::Subscribing;
            w.held.clear();
        }
    }

    /// Bytes to write on `link`.
    pub fn output(&self, link: Link) -> &[u8] {
        &self.out[Cluster::idx(link)]
    }

    /// `n` bytes of `link`'s output were written.
    pub fn consume(&mut self, link: Link, n: usize) {
        self.out[Cluster::idx(link)].drain(..n);
    }

    /// Bytes read from `link`. An error means the connection is not
    /// speaking RESP or refused us (drop both and reconnect).
    pub fn receive(&mut self, link: Link, bytes: &[u8]) -> Result<(), String> {
        let i = Cluster::idx(link);
        if !bytes.is_empty() {
            self.liveness.heard(i);
        }
        self.input[i].extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            match resp::reply(&self.input[i][at..]) {
                Ok(Some((frame, n))) => {
                    at += n;
                    let r = match link {
                        Link::Commands => self.command_reply(frame),
                        Link::Subscriber => self.publication(frame),
                    };
                    if let Err(e) = r {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.input[i].drain(..at);
        result
    }

    fn command_reply(&mut self, frame: OwnedFrame) -> Result<(), String> {
        let Some(what) = self.awaiting.pop_front() else {
            return Err("a reply nobody asked for".into());
        };
        match what {
            Awaiting::Hello | Awaiting::Ready | Awaiting::Ping => {
                if let Some(e) = resp::error(&frame) {
                    return Err(format!("Redis refused us: {e}"));
                }
                if matches!(what, Awaiting::Ready) {
                    self.ready(0);
                }
                Ok(())
            }
            Awaiting::Append(ticket) => {
                // A reply of the wrong shape is a broken link, not an
                // answer: the append stays in flight and is resent after
                // the reconnect (under its ticket), never dropped.
                let (id, duplicate) = match &frame {
                    OwnedFrame::Array(v) => (v.first().and_then(resp::int), v.len() > 2),
                    _ => (None, false),
                };
                let refused = resp::error(&frame);
                if id.is_none() && refused.is_none() {
                    return Err("an append reply without an id".into());
                }
                let Some(a) = self.in_flight.pop_front() else {
                    return Err("an append reply with nothing in flight".into());
                };
                self.pending_bytes -= a.data.len();
                debug_assert_eq!(a.ticket, ticket);
                if let Some(e) = refused {
                    self.events.push_back(Event::Refused {
                        ticket,
                        why: e.to_owned(),
                    });
                    return Ok(());
                }
                let id = id.unwrap_or_default();
                if duplicate {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.appended += 1;
                }
                self.events.push_back(Event::Appended {
                    ticket,
                    id,
                    duplicate,
                });
                Ok(())
            }
            Awaiting::CatchUp(room) => {
                if let Some(e) = resp::error(&frame) {
                    return Err(format!("catching up {room}: {e}"));
                }
                self.caught_up(&room, frame)
            }
        }
    }
}
