//! The frame inspector in the loop: the core's tap drained once per turn,
//! the driver's own records (open, closed, HTTP answers, broadcasts), the
//! records delivered to live subscribers on `/.inspect`, and the answers of
//! `/connections`, `/connections/ID` and `/frames`. What to record, for
//! whom, and who may ask is the inspector's (`crate::inspector`); this file
//! carries it to and from the connections.

use std::time::Instant;

use log::info;
use mio::Token;

use super::conns::Client;
use super::Server;
use super::{room_http, stats};
use crate::inspector::actions::{self, Action};
use crate::inspector::endpoints::{self, ConnectionJson, Refusal};
use crate::inspector::{Body, Broadcast, ConnInfo, Inspector, Subscriber, SUBSCRIBER_BACKLOG};
use crate::proto::body::BodyError;
use crate::proto::connection::acting::NotNow;
use crate::proto::handshake::{keep_alive_response, line_response, PlainRequest, Request};
use crate::proto::inspect::{Dir, FrameInfo, MessageInfo};
use crate::proto::CloseCode;
use crate::proto::MessageKind;
use crate::rooms::RoomId;

/// The id a live inspector's core tags its records with: they are not
/// recorded.
const INSPECTOR_CONN: u32 = u32::MAX;

impl Server {
    /// Moves the core's records into the ring (the turn's time stamped on
    /// them), and to the live subscribers. An inspector's own frames are not
    /// recorded.
    pub(super) fn drain_tap(&mut self, now: Instant) {
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        if self.limits.tap.is_empty() {
            return;
        }
        let mut records = ins.take_records(&self.limits.tap);
        let at_us = ins.micros(now);
        for r in records.drain(..) {
            if r.conn != INSPECTOR_CONN {
                let conn = r.conn;
                if let Some(ins) = self.inspector.as_mut() {
                    ins.push_at(conn, Inspector::body_of(r), at_us);
                }
                self.deliver_live();
            }
        }
        if let Some(ins) = self.inspector.as_mut() {
            ins.return_records(records);
        }
    }

    /// Records an entry and sends it to the live subscribers that want it.
    fn inspect_push(&mut self, conn: u32, body: Body, now: Instant) {
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        ins.push(conn, body, now);
        self.deliver_live();
    }

    /// The newest record to the live subscribers that want it.
    fn deliver_live(&mut self) {
        let Some(ins) = self
            .inspector
            .as_ref()
            .filter(|i| !i.subscribers.is_empty())
        else {
            return;
        };
        let Some((parts, keys)) = ins.live() else {
            return;
        };
        for (text, part) in &parts {
            for &(key, only) in &keys {
                if only.passes(*part) {
                    self.send_to_subscriber(Token(key), text);
                }
            }
        }
    }

    /// One record to one live subscriber: dropped (and counted) while it is
    /// more than `SUBSCRIBER_BACKLOG` behind; once it caught up, it first
    /// learns how many it missed.
    fn send_to_subscriber(&mut self, t: Token, text: &str) {
        let (Some(c), Some(ins)) = (self.conns.get_mut(t), self.inspector.as_mut()) else {
            return;
        };
        let behind = c.proto.backlog() > SUBSCRIBER_BACKLOG;
        let Some(dropped) = ins.deliver_to(t.0, behind) else {
            return;
        };
        if dropped > 0 {
            let note = format!("{{\"event\":\"dropped\",\"count\":{dropped}}}");
            c.proto.send(MessageKind::Text, note.into_bytes());
        }
        c.proto.send(MessageKind::Text, text.as_bytes().to_vec());
        self.account(t);
        self.conns.mark_dirty(t);
    }

    /// A WebSocket opened (not an inspector): what is kept of it, and the
    /// `open` record.
    pub(super) fn inspect_open(
        &mut self,
        t: Token,
        req: &Request,
        protocol: Option<&str>,
        now: Instant,
    ) {
        let (Some(c), Some(ins)) = (self.conns.get(t), self.inspector.as_mut()) else {
            return;
        };
        let (id, peer) = (c.id().0, c.io.peer_addr());
        let opened_us = ins.micros(now);
        ins.infos.insert(
            id,
            Box::new(ConnInfo {
                path: req.path.as_str().into(),
                subprotocol: protocol.map(Into::into),
                head: req.head.clone(),
                opened_us,
                messages_in: 0,
                bytes_in: 0,
                messages_out: 0,
                bytes_out: 0,
                tainted: false,
            }),
        );
        let path = req.path.as_str().into();
        self.inspect_push(id, Body::Open { peer, path }, now);
    }

    /// A proxied pair opened (its upstream answered 101): both legs
    /// are recorded as opened, the client's with its request, the
    /// upstream's with the path it asked for.
    pub(super) fn inspect_proxied(
        &mut self,
        legs: [(Token, Request); 2],
        protocol: Option<&str>,
        now: Instant,
    ) {
        if self.inspector.is_none() {
            return;
        }
        for (leg, req) in legs {
            self.inspect_open(leg, &req, protocol, now);
        }
    }

    /// A connection ended: the `closed` record (or, for one that never
    /// opened, the HTTP answer it got), and what was kept of it goes.
    pub(super) fn inspect_closed(&mut self, t: Token, c: &Client) {
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        // The inspector's own requests and sockets are not recorded.
        if ins.ended(c.id().0, t.0) || c.inspecting {
            return;
        }
        let body = if c.proto.was_opened() {
            Body::Closed {
                sent: c.proto.close_sent().map(|c| c.0),
                received: c.proto.close_received().map(|c| c.0),
                not_delivered: c.proto.close_unsent().map(|c| c.0),
            }
        } else {
            match c.proto.http_answer() {
                Some((status, refused)) if status >= 400 => Body::Http {
                    status,
                    why: refused
                        .map_or("refused (see the answer's body)", |e| e.message())
                        .lines()
                        .next()
                        .unwrap_or("")
                        .into(),
                },
                _ => return,
            }
        };
        self.inspect_push(c.id().0, body, Instant::now());
    }

    /// A broadcast, recorded once per message (not once per member).
    pub(super) fn inspect_broadcast(
        &mut self,
        from: u32,
        room: RoomId,
        kind: MessageKind,
        data: &[u8],
        members: usize,
        now: Instant,
    ) {
        if self.inspector.is_none() {
            return;
        }
        let frame = FrameInfo::outgoing(kind.opcode().as_u8(), true, 0, data);
        let room: Box<str> = self.rooms.name(room).into();
        let preview = self.limits.tap.preview();
        let info = MessageInfo {
            dir: Dir::Out,
            text: kind == MessageKind::Text,
            len: data.len() as u64,
            wire_len: data.len() as u64,
            frames: 1,
            compressed: false,
            content: data[..data.len().min(preview)].into(),
            // A broadcast's frame is recorded with its room and members.
            folded: false,
        };
        let message = Body::Message {
            info,
            room: Some(Box::new((room.clone(), members))),
        };
        self.inspect_push(from, message, now);
        let body = Body::Broadcast(Box::new(Broadcast {
            frame,
            room,
            members,
        }));
        self.inspect_push(from, body, now);
    }

    /// The answer to an inspector endpoint: JSON, or a status and one line.
    pub(super) fn inspector_answer(
        &self,
        target: &str,
        origin: Option<&str>,
        host: Option<&str>,
    ) -> Result<String, Refusal> {
        let ins = self
            .inspector
            .as_ref()
            .expect("the caller checked the inspector is on");
        ins.allowed(origin, host)?;
        let (bare, query) = target.split_once('?').unwrap_or((target, ""));
        if bare == "/frames" || bare == "/messages" {
            return ins.records_answer(bare, query);
        }
        if bare == "/connections" {
            let list: Vec<ConnectionJson> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.inspecting)
                .map(|(t, c)| self.connection_json(ins, t, c, false))
                .collect();
            return Ok(serde_json::to_string(&list).unwrap_or_default());
        }
        let id = endpoints::connection_id(bare)?;
        let (t, c) = self
            .conns
            .iter()
            .find(|(_, c)| c.id().0 == id && !c.inspecting)
            .ok_or((404, "Not Found", format!("no open connection {id}")))?;
        Ok(serde_json::to_string(&self.connection_json(ins, t, c, true)).unwrap_or_default())
    }

    fn connection_json(
        &self,
        ins: &Inspector,
        t: Token,
        c: &Client,
        with_request: bool,
    ) -> ConnectionJson {
        let state = if c.io.h2().is_some() {
            "open"
        } else if c.proto.is_handshaking() {
            "handshaking"
        } else if c.proto.is_open() {
            "open"
        } else {
            "closing"
        };
        let mut json = ConnectionJson {
            id: c.id().0,
            peer: c.io.peer_addr().map(|a| a.to_string()),
            path: None,
            room: c.room().map(|r| self.rooms.name(r).to_string()),
            transport: c.scheme(),
            state,
            extensions: c.proto.deflate().map(|a| a.response()),
            subprotocol: None,
            knobs: None,
            opened_at: None,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            tainted: false,
            request: None,
            upstream: None,
            client: None,
            url: None,
            stream: c.io.link().map(|l| l.id),
            connection: c
                .io
                .link()
                .and_then(|l| self.conns.get(l.parent))
                .map(|p| p.id().0),
        };
        ins.describe(c.id().0, &mut json, with_request);
        if let Some(link) = self.proxying.link(t) {
            let peer = self.conns.get(link.peer).map(|p| p.id().0);
            if link.upstream {
                json.client = peer;
                json.url = Some(link.url.to_string());
            } else {
                json.upstream = peer;
            }
        }
        json
    }

    /// An upgrade on `/.inspect`: refused as the endpoints are, or accepted
    /// as a live subscriber (its messages are ignored; it is sent records).
    pub(super) fn open_inspector(&mut self, t: Token, req: Request, now: Instant) {
        let Some(ins) = self.inspector.as_mut() else {
            return;
        };
        let refusal = ins.allowed(req.origin.as_deref(), Some(&req.host));
        let (_, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let filter = endpoints::live_filter(query);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let (status, reason, why) = match (refusal, filter) {
            (Err(r), _) => r,
            (Ok(()), Err(why)) => (400, "Bad Request", why),
            (Ok(()), Ok((filter, only))) => {
                // Its own frames stay out of the ring under this id; the
                // log names it by the id it had.
                info!("{}: inspector subscribed ({filter:?}, {only:?})", c.id());
                c.proto.set_id(INSPECTOR_CONN);
                c.proto.accept(now);
                c.inspecting = true;
                ins.subscribers.push(Subscriber {
                    key: t.0,
                    filter,
                    only,
                    dropped: 0,
                });
                return;
            }
        };
        info!("{}: /.inspect: {status}, {why}", c.id());
        c.proto.respond(line_response(status, reason, &why), now);
    }
}

impl Server {
    /// `POST /connections/ID/ACTION`: refused at once when it cannot be
    /// taken (403, 400, 404, 409), else its body is read (the action follows
    /// on `Event::Body`, see [`Server::act`]) or, without one, taken now.
    pub(super) fn start_action(
        &mut self,
        t: Token,
        req: &PlainRequest,
        target: Result<(u32, &'static str), Refusal>,
        now: Instant,
    ) {
        let Some(ins) = self.inspector.as_ref() else {
            if let Some(c) = self.conns.get_mut(t) {
                c.proto.respond(endpoints::off(), now);
            }
            return;
        };
        // The inspector's own requests are neither listed nor recorded.
        if let Some(c) = self.conns.get_mut(t) {
            c.inspecting = true;
        }
        let checked = ins
            .allowed(req.origin.as_deref(), req.host.as_deref())
            .and(target)
            .and_then(|(id, name)| self.action_target(id).map(|_| (id, name)));
        let (id, name) = match checked {
            Ok(v) => v,
            Err(refusal) => return self.refuse_action(t, &req.path, refusal, now),
        };
        let query = req.path.split_once('?').map_or("", |(_, q)| q).to_owned();
        let pending = actions::Pending {
            id,
            name,
            query,
            kind: room_http::body_kind(req.header("content-type")),
        };
        let has_body =
            req.header("content-length").is_some() || req.header("transfer-encoding").is_some();
        if !has_body {
            return self.act(t, pending, Ok(Vec::new()), now);
        }
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        match c.proto.read_body(now) {
            // The body may be complete already: `act` follows.
            Ok(()) => {
                if let Some(ins) = self.inspector.as_mut() {
                    ins.pending.insert(t.0, pending);
                }
            }
            Err(e) => {
                let (status, reason) = e.status();
                self.refuse_action(t, &req.path, (status, reason, e.message().into()), now);
            }
        }
    }

    /// Whether `t`'s request body is an action's.
    pub(super) fn take_pending_action(&mut self, t: Token) -> Option<actions::Pending> {
        self.inspector.as_mut()?.pending.remove(&t.0)
    }

    /// The open WebSocket with id `id` (not the inspector's own), or why not.
    fn action_target(&self, id: u32) -> Result<Token, Refusal> {
        let (t, c) = self
            .conns
            .iter()
            .find(|(_, c)| c.id().0 == id && !c.inspecting)
            .ok_or((404, "Not Found", format!("no open connection {id}")))?;
        if !c.proto.is_open() {
            return Err((409, "Conflict", NotNow::NotOpen.message().into()));
        }
        Ok(t)
    }

    /// The action's body arrived (or could not be read): the action is
    /// taken on its connection, recorded there, and answered with the bytes
    /// it queued.
    pub(super) fn act(
        &mut self,
        t: Token,
        p: actions::Pending,
        body: Result<Vec<u8>, BodyError>,
        now: Instant,
    ) {
        let what = format!("POST /connections/{}/{}", p.id, p.name);
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                let (status, reason) = e.status();
                return self.refuse_action(t, &what, (status, reason, e.message().into()), now);
            }
        };
        let max = self.limits.max_message_size;
        let action = actions::parse(p.name, &p.query, p.kind, body, max);
        let done = action.and_then(|a| {
            let target = self.action_target(p.id)?;
            let queued = self.take_action(target, &a, now)?;
            Ok((target, a, queued))
        });
        let (target, action, queued) = match done {
            Ok(v) => v,
            Err(refusal) => return self.refuse_action(t, &what, refusal, now),
        };
        let described = action.describe();
        if let Some(ins) = self.inspector.as_mut() {
            if let (Action::Frames(_), Some(info)) = (&action, ins.infos.get_mut(&p.id)) {
                info.tainted = true;
            }
        }
        self.inspect_push(p.id, Body::Action(described.as_str().into()), now);
        self.account(target);
        self.conns.mark_dirty(target);
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        info!("{}: {what}: 200, {described}", c.id());
        let json = format!("{{\"conn\":{},\"queued\":{queued}}}", p.id);
        let answer = keep_alive_response(
            200,
            "OK",
            "application/json",
            "Cache-Control: no-store\r\n",
            json.as_bytes(),
        );
        if c.proto.respond_keep_alive(answer, now) {
            stats::count(&mut self.stats.http, 200);
        }
    }

    /// Takes `action` on connection `t`: the bytes it queued, or 409.
    fn take_action(&mut self, t: Token, action: &Action, now: Instant) -> Result<usize, Refusal> {
        let c = self.conns.get_mut(t).ok_or((
            404,
            "Not Found",
            "the connection is gone".to_string(),
        ))?;
        let done = match action {
            Action::Send {
                kind,
                data,
                frame_size,
            } => c.proto.send_message(*kind, data.clone(), *frame_size),
            Action::Ping(payload) => c.proto.send_ping(payload.clone()),
            Action::Close { code, reason } => c.proto.close_now(code.map(CloseCode), reason, now),
            Action::Drop { reset } => c.proto.hang_up(*reset, now).map(|()| 0),
            Action::Frames(frames) => c.proto.send_raw(frames),
        };
        done.map_err(|e| (409, "Conflict", e.message().to_string()))
    }

    fn refuse_action(&mut self, t: Token, what: &str, refusal: Refusal, now: Instant) {
        let (status, reason, why) = refusal;
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        info!("{}: {what}: {status}, {why}", c.id());
        c.proto.respond(line_response(status, reason, &why), now);
    }
}
