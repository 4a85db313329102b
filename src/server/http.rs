//! What a request becomes: a refusal (403 for a foreign `Origin`), a
//! WebSocket routed to echo or to a room (`handler::route`), the inspector's
//! socket and endpoints, a room's `POST`, preflight or event stream
//! (rooms.rs), `/stats`, `/metrics`, `/healthz`, the built-in page on a
//! plain `GET /`, or 426 for any other plain request. Decides through the
//! core (`accept`, `reject`, `respond`).

use std::borrow::Cow;
use std::time::Instant;

use log::{debug, info};
use mio::Token;

use super::{clustering, room_http, stats, Server, PAGE};
use crate::handler::{self, Route};
use crate::inspector::endpoints as inspector_endpoints;
use crate::proto::handshake::{
    self, http_response, keep_alive_response, line_response, with_headers, PlainRequest, Request,
};
use crate::proto::knobs;
use crate::proto::HandshakeError;
use crate::rooms::RoomId;
use crate::stubs::Verdict;

impl Server {
    /// The last `n` retained messages of a room to a new WebSocket member
    /// (`?history=N`), before live ones.
    pub(super) fn replay_history(&mut self, t: Token, room: RoomId, n: usize) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        for m in self.rooms.last_messages(room, n) {
            c.proto.send(m.kind, m.data.to_vec());
        }
    }

    pub(super) fn open(&mut self, t: Token, req: Request, now: Instant) {
        if req.path.split('?').next() == Some("/.inspect") {
            if self.inspector.is_some() {
                return self.open_inspector(t, req, now);
            }
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            info!("{}: /.inspect: 404, the inspector is off", c.id());
            c.proto.respond(inspector_endpoints::off(), now);
            return;
        }
        let allowed = req
            .origin
            .as_deref()
            .is_none_or(|o| room_http::origin_allowed(o, &self.config.allow_origins));
        if !allowed {
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            info!(
                "{}: 403, origin {:?} not allowed",
                c.id(),
                req.origin.unwrap_or_default()
            );
            c.proto.reject(HandshakeError::ForbiddenOrigin, now);
            return;
        }
        let route = handler::route(self.config.mode, &req.path);
        // Rooms keep their paths; a proxied path goes to its upstream.
        if let (Route::Echo, Some(up)) = (&route, self.proxying.route(&req.path)) {
            let (limits, codec) = (&self.limits, &self.deflate_codec);
            let deflate = (&self.config.deflate, codec);
            let registry = self.poll.registry();
            let opened =
                self.proxying
                    .open(registry, &mut self.conns, t, &req, up, limits, deflate, now);
            if let Some(up_t) = opened {
                // Stubs match whole messages; a recording keeps them whole.
                if self.stubbing.covers(&req.path) || self.recording.is_some() {
                    self.proxying.pass_whole(t);
                }
                self.settle(up_t);
            }
            return;
        }
        let knobs = knobs::parse(&req.path).and_then(|k| match &route {
            Route::Room(_) => k.check_broadcast().map(|()| k),
            Route::Echo => k.check_echo().map(|()| k),
        });
        let knobs = knobs
            .map_err(|e| e.to_string())
            .and_then(|k| self.rooms.check_history(k.history).map(|()| k));
        let mut knobs = match knobs {
            Ok(k) => k,
            Err(e) => {
                let Some(c) = self.conns.get_mut(t) else {
                    return;
                };
                info!("{}: 400, {e}", c.id());
                c.proto
                    .respond(line_response(400, "Bad Request", &e.to_string()), now);
                return;
            }
        };
        let (streaming, budget) = (self.config.streaming, self.config.max_backpressure);
        // Stubs: the upgrade rules first (a refusal ends it here); a stubbed
        // connection answers whole messages: it does not stream.
        let echo = matches!(route, Route::Echo);
        let stubbed = echo && self.stubbing.covers(&req.path);
        // Parsed only where something reads them: an upgrade rule, or a
        // stub session's `{{header.NAME}}`.
        let headers = if echo && (stubbed || self.stubbing.has_upgrades()) {
            crate::stubs::head_headers(req.head.as_deref())
        } else {
            Vec::new()
        };
        let (stub_protocol, stub_headers) = match echo
            .then(|| self.stubbing.verdict(&req.path, &headers))
            .flatten()
        {
            None => (None, String::new()),
            Some(Verdict::Accept {
                subprotocol,
                headers,
            }) => (subprotocol.filter(|p| req.protocols.contains(p)), headers),
            Some(Verdict::Refuse {
                status,
                headers,
                body,
            }) => {
                let Some(c) = self.conns.get_mut(t) else {
                    return;
                };
                info!("{}: {status}, refused by a stub's upgrade rule", c.id());
                let reason = crate::stubs::reason(status);
                c.proto.respond(
                    http_response(status, reason, "text/plain", &headers, body.as_bytes()),
                    now,
                );
                return;
            }
        };
        let (deflate, codec) = (self.config.deflate, self.deflate_codec.clone());
        let room = match route {
            Route::Echo => None,
            Route::Room(name) => Some(self.rooms.join(&name, t, now)),
        };
        let history = knobs.history;
        let protocol = stub_protocol
            .as_deref()
            .or_else(|| handshake::select_protocol(&req.protocols, &self.config.subprotocols));
        if protocol.is_none() && !req.protocols.is_empty() && log::log_enabled!(log::Level::Debug) {
            let id = self
                .conns
                .get_mut(t)
                .map(|c| c.id().to_string())
                .unwrap_or_default();
            debug!(
                "{id}: no subprotocol in common (offered {:?}, supported {:?})",
                req.protocols, self.config.subprotocols
            );
        }
        if knobs.greeting.is_none() {
            knobs.greeting.clone_from(&self.config.greeting);
        }
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        if let Some(g) = knobs.greeting.as_mut().filter(|g| g.contains("{id}")) {
            *g = g.replace("{id}", &c.id().0.to_string());
        }
        if let Some(room) = room {
            c.set_room(room);
        }
        c.proto.set_knobs(knobs);
        // Set before `accept`, which reads the frames that came with the request.
        let stream = c.may_stream(streaming, budget) && !stubbed;
        c.proto.set_streaming(stream);
        c.proto
            .accept_upgrade_with(now, Some((&deflate, &codec)), protocol, &stub_headers);
        if let Some(room) = room {
            let mut replay = history;
            // With --cluster, a room not caught up yet replays later.
            if let Some(cl) = self.publishing.cluster.as_mut() {
                let name = self.rooms.name(room);
                if !cl.core.watch(name) {
                    if let Some(n) = replay.take() {
                        let wait = (t, room, clustering::Waiting::History(n));
                        cl.waiting.entry(name.to_owned()).or_default().push(wait);
                    }
                }
            }
            if let Some(n) = replay {
                self.replay_history(t, room, n);
            }
        }
        if stubbed {
            let id = self.conns.get(t).map_or(0, |c| c.id().0);
            let out = self.stubbing.open(t, id, &req.path, headers, now);
            self.apply_stub(t, out, None, now);
        }
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        // A plain echo: the core echoes small whole frames itself.
        c.proto.set_fast_echo(room.is_none() && !stubbed);
        // The peer address is not kept per connection: one syscall per open,
        // and only when the line is logged.
        if log::log_enabled!(log::Level::Info) {
            let peer =
                c.io.peer_addr()
                    .map_or_else(|| "?".to_string(), |a| a.to_string());
            info!("{} {peer}: open {} {}", c.id(), c.scheme(), req.path);
        }
        stats::count(&mut self.stats.http, 101);
        self.inspect_open(t, &req, protocol, now);
    }

    pub(super) fn answer_http(&mut self, t: Token, req: &PlainRequest, now: Instant) {
        let (method, path) = (req.method.as_str(), req.path.as_str());
        let (origin, host) = (req.origin.as_deref(), req.host.as_deref());
        let bare = path.split('?').next().unwrap_or("");
        // The inspector's actions and the stubs API, whatever the mode
        // routes the path to.
        if method == "POST" {
            if let Some(target) = crate::inspector::actions::target(bare) {
                return self.start_action(t, req, target, now);
            }
        }
        if bare == "/stubs" || bare.starts_with("/stubs/") || bare == "/recording" {
            return self.answer_stubs(t, req, bare, now);
        }
        match handler::route(self.config.mode, path) {
            Route::Room(room) => {
                if self.answer_room(t, req, &room, now) {
                    return;
                }
            }
            Route::Echo if method == "POST" => {
                let Some(c) = self.conns.get_mut(t) else {
                    return;
                };
                info!("{}: POST {path}: 405, not a room", c.id());
                let answer = line_response(
                    405,
                    "Method Not Allowed",
                    "this path echoes; publish with POST to a room: a path under /broadcast \
                     (or any path with --mode broadcast)",
                );
                c.proto.respond(with_headers(answer, "Allow: GET\r\n"), now);
                return;
            }
            Route::Echo => {}
        }
        let get = method == "GET" || method == "HEAD";
        if get && inspector_endpoints::is_endpoint(bare) {
            if self.inspector.is_none() {
                let Some(c) = self.conns.get_mut(t) else {
                    return;
                };
                c.proto.respond(inspector_endpoints::off(), now);
                return;
            }
            // The inspector's own requests are neither listed nor recorded.
            if let Some(c) = self.conns.get_mut(t) {
                c.inspecting = true;
            }
            let answer = self.inspector_answer(path, origin, host);
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            let response = match answer {
                Ok(json) => http_response(
                    200,
                    "OK",
                    "application/json",
                    "Cache-Control: no-store\r\n",
                    json.as_bytes(),
                ),
                Err((status, reason, why)) => {
                    info!("{}: {method} {path}: {status}, {why}", c.id());
                    line_response(status, reason, &why)
                }
            };
            c.proto.respond(response, now);
            return;
        }
        let cluster_down = self
            .publishing
            .cluster
            .as_ref()
            .filter(|c| !c.core.is_up())
            .map(|c| c.down.as_str());
        if let (true, "/healthz", Some(down)) = (get, bare, cluster_down) {
            let Some(c) = self.conns.get_mut(t) else {
                return;
            };
            debug!("{}: {method} {path}: 503 (cluster: {down})", c.id());
            let why = format!("cluster: {down}");
            let answer = line_response(503, "Service Unavailable", &why);
            c.proto
                .respond(with_headers(answer, "Retry-After: 1\r\n"), now);
            return;
        }
        // What a GET is answered with (the numbers are computed only when asked).
        if matches!(bare, "/stats" | "/metrics") {
            self.stats.count_echoed(&self.limits.counters);
        }
        let ok: Option<(&str, Cow<'static, [u8]>)> = match bare {
            _ if !get => None,
            "/stats" => Some((
                "application/json",
                self.stats.json(self.stats_view()).into_bytes().into(),
            )),
            "/metrics" => Some((
                "text/plain; version=0.0.4; charset=utf-8",
                self.stats.metrics(self.stats_view()).into_bytes().into(),
            )),
            // Readiness probes: answered whatever --no-page says.
            "/healthz" => Some(("text/plain", Cow::Borrowed(b"ok\n"))),
            "/" if self.config.page => Some(("text/html; charset=utf-8", PAGE.as_bytes().into())),
            _ => None,
        };
        let mode = self.config.mode;
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let Some((content_type, body)) = ok else {
            info!(
                "{}: {method} {path} over {}: 426 (not a WebSocket upgrade)",
                c.id(),
                c.http_scheme()
            );
            c.proto
                .reject_with(HandshakeError::NotWebSocket, Some(mode.describe()), now);
            return;
        };
        if bare == "/" {
            info!(
                "{}: {method} {path} over {}: 200 (page)",
                c.id(),
                c.http_scheme()
            );
        } else {
            debug!("{}: {method} {path}: 200", c.id());
        }
        let mut response = http_response(
            200,
            "OK",
            content_type,
            "Cache-Control: no-store\r\n",
            &body,
        );
        if method == "HEAD" {
            response.truncate(response.len() - body.len());
        }
        c.proto.respond(response, now);
    }

    /// The gauges of `/stats` and `/metrics`, read now.
    fn stats_view(&self) -> stats::View<'_> {
        let mut v = stats::View {
            frames_in: self.limits.counters.frames_in.get(),
            frames_out: self.limits.counters.frames_out.get(),
            rooms: self.rooms.largest(100),
            room_count: self.rooms.count(),
            history_bytes: self.rooms.history_bytes(),
            history_shed: self.rooms.shed_count(),
            history_top: self.rooms.largest_history(100),
            inspector: self.inspector.as_ref().map(|i| stats::InspectorJson {
                records: i.len(),
                bytes: i.memory(),
                evicted: i.evicted,
                subscribers: i.subscribers.len(),
            }),
            cluster: self.publishing.cluster.as_ref().map(|c| {
                let st = c.core.stats;
                stats::ClusterJson {
                    state: if c.core.is_up() {
                        "connected"
                    } else {
                        c.down.as_str()
                    },
                    reconnects: st.reconnects,
                    timeouts: st.timeouts,
                    appends_pending: c.core.pending_appends(),
                    appends_pending_bytes: c.core.held_bytes(),
                    appended: st.appended,
                    delivered: st.delivered,
                    catch_ups: st.catch_ups,
                    gaps: st.gaps,
                    rooms_watched: c.core.watched(),
                    rooms_live: c.core.live(),
                    delay_ms_last: c.delay_last.as_secs_f64() * 1000.0,
                    delay_ms_max: c.delay_max.as_secs_f64() * 1000.0,
                }
            }),
            ..stats::View::default()
        };
        v.proxy = self.proxying.stats();
        for (_, c) in self.conns.iter() {
            if c.proto.is_event_stream() {
                v.events += 1;
            } else if c.proto.is_handshaking() {
                v.handshaking += 1;
            } else if c.proto.is_open() && c.proxied {
                v.proxied += 1;
            } else if c.proto.is_open() {
                if c.room().is_some() {
                    v.broadcast += 1;
                } else {
                    v.echo += 1;
                }
            }
        }
        v
    }
}

impl Server {
    /// The stubs API (docs/stubs.md): `GET /stubs`, `GET /stubs/unmatched`,
    /// `POST /stubs` (its body read first: `stubs_body`), `POST
    /// /stubs/reset`, `DELETE /stubs`, `DELETE /stubs/ID`. Under the
    /// inspector's rules; with the inspector off, 404.
    fn answer_stubs(&mut self, t: Token, req: &PlainRequest, bare: &str, now: Instant) {
        let Some(ins) = self.inspector.as_ref() else {
            if let Some(c) = self.conns.get_mut(t) {
                c.proto.respond(
                    line_response(
                        404,
                        "Not Found",
                        "not found (the stubs API goes with the inspector: --inspect)",
                    ),
                    now,
                );
            }
            return;
        };
        let allowed = ins.allowed(req.origin.as_deref(), req.host.as_deref());
        if let Some(c) = self.conns.get_mut(t) {
            // Not listed, not recorded, as the inspector's own requests.
            c.inspecting = true;
        }
        let has_body = req
            .header("content-length")
            .is_some_and(|v| v.trim() != "0")
            || req.header("transfer-encoding").is_some();
        let answer = allowed.and_then(|()| match (req.method.as_str(), bare) {
            ("GET" | "HEAD", "/stubs") => Ok((200, "OK", self.stubbing.list())),
            ("GET" | "HEAD", "/stubs/unmatched") => Ok((200, "OK", self.stubbing.unmatched())),
            ("POST", "/stubs/reset") => Ok((200, "OK", self.stubbing.reset())),
            (m, "/recording") => match (m, self.recording.as_mut()) {
                ("GET" | "HEAD", Some(rec)) => Ok((200, "OK", rec.json())),
                ("DELETE", Some(rec)) => Ok((200, "OK", rec.reset(now))),
                (_, None) => Err((404, "Not Found", "not recording (--record FILE)".into())),
                _ => Err((405, "Method Not Allowed", "GET or DELETE /recording".into())),
            },
            ("POST", "/stubs") if has_body => Err((0, "", String::new())),
            ("POST", "/stubs") => Err((400, "Bad Request", "a stub (JSON) in the body".into())),
            ("DELETE", "/stubs") => self.stubbing.delete(None).map(|b| (200, "OK", b)),
            ("DELETE", path) => {
                let id = path.strip_prefix("/stubs/").unwrap_or(path);
                let id = id
                    .parse()
                    .map_err(|_| (400, "Bad Request", format!("bad stub id {id:?}")))?;
                self.stubbing.delete(Some(id)).map(|b| (200, "OK", b))
            }
            (m, p) => Err((
                405,
                "Method Not Allowed",
                format!("{m} {p}: GET /stubs, GET /stubs/unmatched, POST /stubs, POST /stubs/reset, DELETE /stubs[/ID]"),
            )),
        });
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        match answer {
            Ok((status, reason, json)) => {
                let head = "Cache-Control: no-store\r\n";
                c.proto.respond(
                    http_response(status, reason, "application/json", head, json.as_bytes()),
                    now,
                );
            }
            // POST /stubs: the body first.
            Err((0, _, _)) => match c.proto.read_body(now) {
                Ok(()) => self.stubbing.expect_body(t),
                Err(e) => {
                    let (status, reason) = e.status();
                    c.proto
                        .respond(line_response(status, reason, e.message()), now);
                }
            },
            Err((status, reason, why)) => {
                info!("{}: {} {bare}: {status}, {why}", c.id(), req.method);
                c.proto.respond(line_response(status, reason, &why), now);
            }
        }
    }

    /// The body of a `POST /stubs` arrived (or could not be read).
    pub(super) fn stubs_body(
        &mut self,
        t: Token,
        body: Result<Vec<u8>, crate::proto::body::BodyError>,
        now: Instant,
    ) {
        let answer = match body {
            Ok(b) => self.stubbing.add(&b),
            Err(e) => {
                let (status, reason) = e.status();
                Err((status, reason, e.message().to_string()))
            }
        };
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        match answer {
            Ok(json) => {
                info!("{}: POST /stubs: 201 {json}", c.id());
                let head = "Cache-Control: no-store\r\n";
                c.proto.respond(
                    http_response(201, "Created", "application/json", head, json.as_bytes()),
                    now,
                );
            }
            Err((status, reason, why)) => {
                info!("{}: POST /stubs: {status}, {why}", c.id());
                c.proto.respond(line_response(status, reason, &why), now);
            }
        }
    }

    /// Answers a room request with `status` and one line saying why,
    /// keeping the connection (`headers`: CORS and the like).
    pub(super) fn answer_line(
        &mut self,
        t: Token,
        (status, reason): (u16, &str),
        why: &str,
        headers: &str,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        let body = format!("{why}\n");
        let answer = keep_alive_response(
            status,
            reason,
            "text/plain; charset=utf-8",
            headers,
            body.as_bytes(),
        );
        if c.proto.respond_keep_alive(answer, now) {
            stats::count(&mut self.stats.http, status);
        }
    }

    /// Refuses a room request with `status` and a one-line body saying why
    /// (with the CORS headers, so a page can read it), logged; then closes.
    pub(super) fn refuse(
        &mut self,
        t: Token,
        what: &str,
        (status, reason): (u16, &str),
        why: &str,
        cors: &str,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(t) else {
            return;
        };
        info!("{}: {what}: {status}, {why}", c.id());
        let answer = with_headers(line_response(status, reason, why), cors);
        c.proto.respond(answer, now);
    }
}
