//! Rooms in the loop: the adapters between connections and the sans-IO
//! rooms (`crate::rooms`). A member's message or a `POST` body is published
//! (the rooms give it its id and say who gets it), encoded once per form
//! (`Forms`) and queued on every member, which is written once at the end
//! of the turn (marked dirty); a member still over `--max-backpressure`
//! after a write attempt is closed with 1008 `slow consumer` (a subscriber:
//! a last `event: error`). The HTTP side: a `POST` to a room path publishes
//! its body, a `GET` with `Accept: text/event-stream` subscribes (resuming
//! after `Last-Event-ID` with an `event: gap` for what was already
//! evicted), an `OPTIONS` preflight is answered; the rules of it are
//! room_http.rs (docs/rooms.md).

use std::time::Instant;

use log::{debug, info, warn};
use mio::Token;

use super::clustering::{Post, Waiting};
use super::room_http::{self, PendingPublish};
use super::{stats, Server};
use crate::cluster::Event as ClusterEvent;
use crate::handler;
use crate::proto::body::BodyError;
use crate::proto::handshake::{keep_alive_response, PlainRequest};
use crate::proto::output::Chunk;
use crate::proto::{knobs, CloseCode, MessageKind};
use crate::rooms::forms::{self, Forms};
use crate::rooms::{RoomId, Run};

impl Server {
    /// A member's message to its room: published here (into the run its
    /// read's messages are gathered in: `gather`), or (`--cluster`)
    /// appended in Redis and delivered when it comes back in the room's
    /// order. With Redis away it is held, in order; a member whose held
    /// message would take the memory budget over is closed with 1013.
    pub(super) fn publish_member(
        &mut self,
        t: Token,
        from: u32,
        room: RoomId,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) {
        let Some(up) = self.publishing.cluster.as_ref().map(|c| c.core.is_up()) else {
            self.gather(from, room, None, kind, data, now);
            return;
        };
        if !up && !self.budget.fits(self.fixed_memory() + data.len()) {
            if let Some(c) = self.conns.get_mut(t) {
                info!(
                    "{}: Redis is away and holding its message would pass --max-memory: \
                     closing 1013",
                    c.id()
                );
                c.proto
                    .close_discarding(CloseCode::TRY_AGAIN_LATER, "cluster unavailable", now);
                self.conns.mark_dirty(t);
            }
            return;
        }
        let Some(cl) = self.publishing.cluster.as_mut() else {
            return;
        };
        let name = self.rooms.name(room);
        let ticket = cl.core.append(name, kind, data, None);
        cl.sent(ticket, name, now);
    }

    /// Publishes a message from connection `from` to a room and delivers
    /// it at once (a `POST`: its answer says how many members it went to).
    /// Returns its id and that count.
    fn publish(
        &mut self,
        from: u32,
        room: RoomId,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> (u64, usize) {
        let id = self.gather(from, room, None, kind, data, now);
        (id, self.deliver_run(now))
    }

    /// Publishes a message to a room (`id`: the one the cluster gave it)
    /// into the run being gathered, which is delivered first if it is for
    /// another room or other members. The run is delivered when the input
    /// that published it is handled (the end of `handle_events`, of the
    /// cluster's events); until then nothing else is queued on its members.
    fn gather(
        &mut self,
        from: u32,
        room: RoomId,
        id: Option<u64>,
        kind: MessageKind,
        data: &[u8],
        now: Instant,
    ) -> u64 {
        if !self.rooms.continues(&self.bufs.run, room) {
            self.deliver_run(now);
        }
        let run = &mut self.bufs.run;
        match id {
            None => self.rooms.publish(room, from, kind, data, run),
            Some(id) => {
                self.rooms.publish_as(room, from, id, kind, data, run);
                id
            }
        }
    }

    /// Delivers the run gathered (see `gather`), records each of its
    /// messages once in the inspector, and empties it. Returns how many
    /// members it went to.
    pub(super) fn deliver_run(&mut self, now: Instant) -> usize {
        if self.bufs.run.is_empty() {
            return 0;
        }
        let mut run = std::mem::take(&mut self.bufs.run);
        let sent = self.deliver(&run, now);
        if let Some(room) = run.room() {
            for (e, data) in run.messages() {
                self.inspect_broadcast(e.from, room, e.kind, data, sent, now);
            }
        }
        run.clear();
        self.bufs.run = run;
        sent
    }

    /// Queues a run on every member, as one chunk encoded once per form
    /// and shared (a member that compresses with its own context, asked
    /// for `fragment`, or ends its event stream after N events is sent the
    /// messages one by one). A member over the backpressure budget is
    /// written to first; still over, it is closed (or its stream ended) and
    /// gets none of the run: what a member receives is always a gap-free
    /// prefix of the room's order.
    fn deliver(&mut self, run: &Run<Token>, now: Instant) -> usize {
        let mut forms = Forms::new(run);
        let budget = self.config.max_backpressure;
        let threshold = self.config.deflate.threshold;
        let (count, bytes) = (run.len() as u64, run.payload_bytes() as u64);
        let mut sent = 0;
        for &m in run.members() {
            let Some(c) = self.conns.get_mut(m) else {
                continue;
            };
            if c.proto.output_len() > budget {
                // The write frees what went out: accounted now, whether or
                // not the run is queued on it after.
                self.flush(m);
                self.account(m);
                if !self.keeps_up(m, budget, now) {
                    continue;
                }
            }
            let Some(c) = self.conns.get_mut(m) else {
                continue;
            };
            let codec = (threshold, &*self.deflate_codec);
            let ok = handler::broadcast(&mut c.proto, run, &mut forms, codec, now);
            if ok {
                sent += 1;
                self.stats.messages_out += count;
                self.stats.bytes_out += bytes;
                self.account(m);
                self.conns.mark_dirty(m);
            }
        }
        sent
    }

    /// Whether a member that was over the budget caught up once written to;
    /// if not, it is closed with 1008 `slow consumer` (a subscriber's
    /// stream ends with `event: error`).
    fn keeps_up(&mut self, m: Token, budget: usize, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(m) else {
            return false;
        };
        let unsent = c.proto.output_len();
        if unsent <= budget {
            return true;
        }
        if c.proto.is_event_stream() {
            info!(
                "{}: slow subscriber ({unsent} bytes unsent), ending its stream",
                c.id()
            );
            c.proto.end_events(room_http::SLOW_EVENT, true, now);
        } else {
            info!("{}: slow consumer ({unsent} bytes unsent), closing", c.id());
            c.proto
                .close_discarding(CloseCode::POLICY_VIOLATION, "slow consumer", now);
        }
        self.stats.slow_consumers += 1;
        self.account(m);
        self.conns.mark_dirty(m);
        false
    }

    /// Once per turn (and after each cluster event): reconnect when due,
    /// act on what the cluster said, write what it has to say.
    pub(super) fn cluster_turn(&mut self, now: Instant) {
        let Some(cl) = self.publishing.cluster.as_mut() else {
            return;
        };
        cl.tick(self.poll.registry(), now);
        for (p, status, why) in cl.overdue_posts(now) {
            if let Some(c) = self.conns.get(p.token) {
                info!("{}: POST {}: {}, {why}", c.id(), p.room, status.0);
            }
            let headers = format!("Retry-After: 1\r\n{}", p.cors);
            self.answer_line(p.token, status, &why, &headers, now);
            self.conns.mark_dirty(p.token);
        }
        while let Some(event) = self
            .publishing
            .cluster
            .as_mut()
            .and_then(|c| c.core.poll_event())
        {
            self.cluster_event(event, now);
        }
        // Consecutive messages of a room from Redis went into one run.
        self.deliver_run(now);
        if let Some(cl) = self.publishing.cluster.as_mut() {
            cl.flush(self.poll.registry(), now);
        }
    }

    fn cluster_event(&mut self, event: ClusterEvent, now: Instant) {
        if !matches!(event, ClusterEvent::Deliver { .. }) {
            // What was delivered before it goes out before it.
            self.deliver_run(now);
        }
        let Some(cl) = self.publishing.cluster.as_mut() else {
            return;
        };
        match event {
            ClusterEvent::Up => cl.came_up(),
            ClusterEvent::Appended {
                ticket,
                id,
                duplicate,
            } => {
                cl.appended(ticket, id);
                if let Some(p) = cl.posts.remove(&ticket) {
                    let members = match duplicate {
                        true => 0,
                        false => self
                            .rooms
                            .find(&p.room)
                            .map_or(0, |r| self.rooms.members(r).len()),
                    };
                    self.published(p.token, &p.room, (id, duplicate), members, &p.cors, now);
                }
            }
            ClusterEvent::Refused { ticket, why } => {
                warn!("cluster: Redis refused an append: {why}");
                if let Some(p) = cl.posts.remove(&ticket) {
                    let why = format!("the cluster's Redis refused the message: {why}");
                    let what = format!("POST {}", p.room);
                    self.refuse(
                        p.token,
                        &what,
                        (503, "Service Unavailable"),
                        &why,
                        &p.cors,
                        now,
                    );
                }
            }
            ClusterEvent::Deliver {
                room,
                id,
                kind,
                data,
            } => {
                cl.delivered(&room, id, now);
                if let Some(r) = self.rooms.find(&room) {
                    self.gather(0, r, Some(id), kind, &data, now);
                }
            }
            ClusterEvent::Gap { room, from, to } => {
                let Some(r) = self.rooms.find(&room) else {
                    return;
                };
                let gap: std::rc::Rc<[u8]> = room_http::gap_event((from, to)).into();
                for &m in self.rooms.members(r) {
                    let Some(c) = self.conns.get_mut(m).filter(|c| c.proto.is_event_stream())
                    else {
                        continue;
                    };
                    c.proto.send_event(Chunk::Shared(gap.clone()), false, now);
                    self.conns.mark_dirty(m);
                }
            }
            ClusterEvent::Restore {
                room,
                last,
                messages,
            } => {
                if let Some(r) = self.rooms.find(&room) {
                    self.rooms.restore(r, last, &messages);
                }
            }
            ClusterEvent::Live { room } => {
                debug!("cluster: {room} caught up");
                for (t, r, wait) in cl.waiting.remove(&room).unwrap_or_default() {
                    match wait {
                        Waiting::Events(last, history) => {
                            self.replay_events(t, r, last, history, now)
                        }
                        Waiting::History(n) => {
                            if self.conns.get(t).is_some_and(|c| c.room() == Some(r)) {
                                self.replay_history(t, r, n);
                                self.conns.mark_dirty(t);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A plain request on a room path: `POST` publishes, `OPTIONS` is a
    /// preflight, `GET` with `Accept: text/event-stream` subscribes.
    /// Returns false if it is none of these (the caller answers it).
    pub(super) fn answer_room(
        &mut self,
        t: Token,
        req: &PlainRequest,
        room: &str,
        now: Instant,
    ) -> bool {
        let preflight = room_http::is_preflight(req);
        let subscribe = req.method == "GET" && room_http::wants_events(req);
        if req.method != "POST" && !preflight && !subscribe {
            return false;
        }
        let cors = match room_http::cors(req.origin.as_deref(), &self.config.allow_origins) {
            Ok(c) => c,
            Err(()) => {
                let what = format!(
                    "{} {} from origin {:?}",
                    req.method,
                    req.path,
                    req.origin.as_deref().unwrap_or_default()
                );
                let why = "origin not allowed (--allow-origin)";
                self.refuse(t, &what, (403, "Forbidden"), why, "", now);
                return true;
            }
        };
        if preflight {
            let Some(c) = self.conns.get_mut(t) else {
                return true;
            };
            debug!("{}: OPTIONS {}: 204 (preflight)", c.id(), req.path);
            if c.proto.respond_keep_alive(room_http::preflight(&cors), now) {
                stats::count(&mut self.stats.http, 204);
            }
        } else if subscribe {
            self.subscribe(t, req, room, cors, now);
        } else {
            self.start_publish(t, req, room, cors, now);
        }
        true
    }

    /// A `POST` to a room: its body is read by the core; `body_read` (on
    /// `Event::Body`) publishes it.
    fn start_publish(
        &mut self,
        t: Token,
        req: &PlainRequest,
        room: &str,
        cors: String,
        now: Instant,
    ) {
        let kind = room_http::body_kind(req.header("content-type"));
        let key = match room_http::idempotency_key(req) {
            Ok(key) => key,
            Err(why) => {
                let what = format!("POST {}", req.path);
                return self.refuse(t, &what, (400, "Bad Request"), &why, &cors, now);
            }
        };
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        match c.proto.read_body(now) {
            // The body may be complete already: `body_read` follows.
            Ok(()) => {
                let room = room.to_owned();
                let pending = PendingPublish {
                    room,
                    kind,
                    cors,
                    key,
                };
                self.publishing.reading.insert(t, pending);
            }
            Err(e) => {
                let what = format!("POST {}", req.path);
                self.refuse(t, &what, e.status(), e.message(), &cors, now);
            }
        }
    }

    /// The body of a `POST` to a room arrived (or could not be read).
    pub(super) fn body_read(&mut self, t: Token, body: Result<Vec<u8>, BodyError>, now: Instant) {
        let Some(p) = self.publishing.reading.remove(&t) else {
            // Not ours to read: nothing asked for it.
            if let Some(c) = self.conns.get_mut(t) {
                c.proto.abort();
            }
            return;
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                let what = format!("POST {}", p.room);
                return self.refuse(t, &what, e.status(), e.message(), &p.cors, now);
            }
        };
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if p.kind == MessageKind::Text && std::str::from_utf8(&body).is_err() {
            info!(
                "{}: POST {}: 400, the text body is not UTF-8",
                c.id(),
                p.room
            );
            let why = "the body is not valid UTF-8, and its Content-Type says text \
                       (send binary as application/octet-stream)";
            return self.answer_line(t, (400, "Bad Request"), why, &p.cors, now);
        }
        let from = c.id().0;
        let down = self.publishing.cluster.as_ref();
        if let Some(down) = down.filter(|cl| !cl.core.is_up()).map(|cl| cl.down) {
            let (id, room, what) = (c.id(), &p.room, down.what());
            info!("{id}: POST {room}: 503, Redis is {what} (--cluster)");
            let why = format!("the cluster's Redis is {what}; nothing was published, try again");
            let why = why.as_str();
            let headers = format!("Retry-After: 1\r\n{}", p.cors);
            return self.answer_line(t, (503, "Service Unavailable"), why, &headers, now);
        }
        self.stats.messages_in += 1;
        self.stats.bytes_in += body.len() as u64;
        self.stats.http_publishes += 1;
        if let Some(cl) = self.publishing.cluster.as_mut() {
            // Answered on its id (`Appended`) or by its deadline.
            let ticket = cl.core.append(&p.room, p.kind, &body, p.key.as_deref());
            cl.sent(ticket, &p.room, now);
            let (token, room, cors) = (t, p.room, p.cors);
            cl.wait_for(ticket, Post { token, room, cors }, now);
            return;
        }
        let keys = &mut self.publishing.keys;
        if let Some(first) = p.key.as_deref().and_then(|k| keys.seen(&p.room, k, now)) {
            return self.published(t, &p.room, (first, true), 0, &p.cors, now);
        }
        let room = self.rooms.open(&p.room, now);
        let (id, members) = self.publish(from, room, p.kind, &body, now);
        if let Some(key) = &p.key {
            self.publishing.keys.remember(&p.room, key, id, now);
        }
        self.published(t, &p.room, (id, false), members, &p.cors, now);
    }

    /// A `POST`'s message has its id: 200 with the room, the id and how
    /// many members (of this instance) it went to.
    fn published(
        &mut self,
        t: Token,
        room: &str,
        (id, duplicate): (u64, bool),
        members: usize,
        cors: &str,
        now: Instant,
    ) {
        let json = room_http::published_json(room, id, members, duplicate);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if duplicate {
            self.stats.http_duplicates += 1;
            debug!("{}: POST {room}: 200, a duplicate of id {id}", c.id());
        } else {
            debug!("{}: POST {room}: 200, id {id} to {members} members", c.id());
        }
        let answer = keep_alive_response(
            200,
            "OK",
            "application/json",
            &format!("Cache-Control: no-store\r\n{cors}"),
            json.as_bytes(),
        );
        if c.proto.respond_keep_alive(answer, now) {
            stats::count(&mut self.stats.http, 200);
        }
        self.conns.mark_dirty(t);
    }

    /// A `GET` with `Accept: text/event-stream` on a room: the stream's
    /// head, the greeting, what the client missed (after `Last-Event-ID`),
    /// then live messages.
    fn subscribe(&mut self, t: Token, req: &PlainRequest, room: &str, cors: String, now: Instant) {
        let what = format!("GET {} (events)", req.path);
        let bad = (400, "Bad Request");
        let knobs = knobs::parse(&req.path)
            .and_then(|k| k.check_events().map(|()| k))
            .map_err(|e| e.to_string())
            .and_then(|k| self.rooms.check_history(k.history).map(|()| k));
        let mut knobs = match knobs {
            Ok(k) => k,
            Err(e) => return self.refuse(t, &what, bad, &e, &cors, now),
        };
        let last = match room_http::last_event_id(req) {
            Ok(last) => last,
            Err(why) => return self.refuse(t, &what, bad, &why, &cors, now),
        };
        if knobs.greeting.is_none() {
            knobs.greeting.clone_from(&self.config.greeting);
        }
        let drop_after = knobs.drop.map(|(n, _)| n);
        let id = self.rooms.join(room, t, now);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let greeting = knobs
            .greeting
            .map(|g| g.replace("{id}", &c.id().0.to_string()));
        c.set_room(id);
        let head = room_http::stream_head(&cors, greeting.as_deref());
        c.proto.start_events(head, drop_after, now);
        info!("{}: subscribed to {} ({})", c.id(), room, c.http_scheme());
        self.conns.mark_dirty(t);
        if let Some(cl) = self.publishing.cluster.as_mut() {
            if !cl.core.watch(room) {
                // Replayed once the room is caught up with the cluster.
                let wait = Waiting::Events(last, knobs.history);
                cl.waiting
                    .entry(room.to_owned())
                    .or_default()
                    .push((t, id, wait));
                return;
            }
        }
        self.replay_events(t, id, last, knobs.history, now);
    }

    /// What an event-stream subscriber missed (after `last`) or asked for
    /// (`history`): the gap, then the retained messages.
    fn replay_events(
        &mut self,
        t: Token,
        id: RoomId,
        last: Option<u64>,
        history: Option<usize>,
        now: Instant,
    ) {
        let room = self.rooms.name(id);
        let Some(c) = self.conns.get_mut(t).filter(|c| c.room() == Some(id)) else {
            return;
        };
        // What the client missed, or asked for.
        let replay = self.rooms.resume(id, last, history);
        if let (Some(l), Some(last_id)) = (last, replay.ahead_of) {
            // Not an id of this room as it is now: it was forgotten
            // (`--room-linger`) or the server restarted.
            info!(
                "{}: Last-Event-ID {l} is ahead of {room} (last id {last_id}): \
                 resuming from its start",
                c.id()
            );
        }
        let gap = replay
            .gap
            .map(|g| (Chunk::Owned(room_http::gap_event(g)), false));
        let messages = replay
            .messages
            .iter()
            .map(|m| (Chunk::Shared(forms::event(m.id, m.kind, &m.data)), true));
        for (chunk, counted) in gap.into_iter().chain(messages) {
            if !c.proto.send_event(chunk, counted, now) {
                break;
            }
        }
        self.conns.mark_dirty(t);
    }
}
