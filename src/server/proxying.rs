//! `Proxying`: with `--proxy`, the upstream legs (docs/proxy.md). A proxied
//! conversation is two slots of the connection table linked as a pair: the
//! client's socket with its server-role `Connection`, and a socket we opened
//! with a client-role one. Each is read, written, timed and counted in the
//! memory budget like any connection; this component only knows which token
//! is whose peer, and moves what one leg says to the other: the upstream's
//! 101 or refusal to the waiting client, messages both ways (each leg's own
//! deflate, so every message is plain in the middle), closes with their code
//! and reason, and a leg that ended without a close (1014 to the client,
//! 1001 to the upstream). The loop calls it at the upgrade, per event, after
//! a leg's events, and when a leg is removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::conns::{Client, Connections};
use super::stats::{count, ProxyCounts};
use super::transport;
use crate::proto::client::MaskKeys;
use crate::proto::connection::{Refusal, RefusalKind};
use crate::proto::deflate::{DeflateConfig, SharedCodec};
use crate::proto::handshake::{http_response, Request};
use crate::proto::knobs;
use crate::proto::{CloseCode, Connection, Event, Limits};
use crate::proxy::{self, Failure, Routes, Upstream};

/// One leg of a pair.
struct Leg {
    peer: Token,
    /// The socket we opened (client role).
    upstream: bool,
    /// The upstream's URL (for answers and logs).
    url: Rc<str>,
    /// Why the upstream socket failed before it answered.
    failure: Option<Failure>,
    /// A close (or an end) was passed on to the peer already.
    passed: bool,
    /// Messages pass whole, never in pieces (stubs cover the pair's path:
    /// they match whole messages).
    whole: bool,
    /// The client leg's upgrade request, until the upstream opened (the
    /// inspector then records it); on the upstream leg, the path asked for.
    request: Option<Box<Request>>,
}

/// How a pair's legs are linked, for the inspector.
pub(super) struct Link<'a> {
    pub(super) peer: Token,
    pub(super) upstream: bool,
    pub(super) url: &'a str,
}

pub(super) struct Proxying {
    routes: Routes,
    /// `--proxy-header` lines, added to every upstream request.
    headers: Vec<(String, String)>,
    legs: HashMap<Token, Leg>,
    counts: ProxyCounts,
    /// The TLS client settings for `wss://` upstreams.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Proxying {
    pub(super) fn new(
        routes: Routes,
        headers: Vec<(String, String)>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Proxying {
        Proxying {
            routes,
            headers,
            tls,
            legs: HashMap::new(),
            counts: ProxyCounts::default(),
        }
    }

    /// The pairs open and the counters, for `/stats` and `/metrics`
    /// (`None` without `--proxy`).
    pub(super) fn stats(&self) -> Option<(usize, &ProxyCounts)> {
        (!self.routes.is_empty()).then_some((self.legs.len() / 2, &self.counts))
    }

    /// The upstream did not open: the waiting client `c` is answered with
    /// its refusal, or a `502`/`504` saying why, and it is counted.
    fn answer_refusal(
        &mut self,
        c: &mut Client,
        r: &Refusal,
        failure: Option<&Failure>,
        url: &str,
        now: Instant,
    ) {
        let counts = &mut self.counts;
        match (failure, r.kind) {
            (Some(_), _) => count(&mut counts.upstream_failures, "connect"),
            (None, RefusalKind::Answered) => count(&mut counts.upstream_refusals, r.status),
            (None, RefusalKind::Closed) => count(&mut counts.upstream_failures, "closed"),
            (None, RefusalKind::Invalid) => count(&mut counts.upstream_failures, "invalid"),
            (None, RefusalKind::TimedOut) => count(&mut counts.upstream_failures, "timeout"),
        }
        let (status, answer) = proxy::refusal_answer(r, failure, url);
        if r.kind == RefusalKind::Answered {
            info!("{}: {status} from upstream {url}", c.id());
        } else {
            warn!("{}: {status}, upstream {url}: {}", c.id(), r.why);
        }
        c.proto.respond(answer, now);
    }

    /// The upstream of a request target, if it is proxied.
    pub(super) fn route(&self, target: &str) -> Option<(Upstream, String)> {
        if self.routes.is_empty() {
            return None;
        }
        self.routes.find(target).map(|(u, p)| (u.clone(), p))
    }

    /// How `t` is linked to its peer, if it is a leg.
    pub(super) fn link(&self, t: Token) -> Option<Link<'_>> {
        let l = self.legs.get(&t)?;
        Some(Link {
            peer: l.peer,
            upstream: l.upstream,
            url: &l.url,
        })
    }

    /// The requests of both legs of the pair whose upstream `t` just
    /// opened: (client leg, its request), (upstream leg, what it asked for).
    pub(super) fn take_requests(&mut self, t: Token) -> Option<[(Token, Request); 2]> {
        let peer = self.legs.get(&t)?.peer;
        let up = *self.legs.get_mut(&t)?.request.take()?;
        let client = *self.legs.get_mut(&peer)?.request.take()?;
        Some([(peer, client), (t, up)])
    }

    /// Whose stub session a message on leg `t` goes through (the client
    /// leg's), and who sent it.
    pub(super) fn stub_side(&self, t: Token) -> Option<(Token, crate::stubs::Sender)> {
        let l = self.legs.get(&t)?;
        Some(if l.upstream {
            (l.peer, crate::stubs::Sender::Upstream)
        } else {
            (t, crate::stubs::Sender::Client)
        })
    }

    /// Makes the messages of `t`'s pair pass whole (stubs match them).
    pub(super) fn pass_whole(&mut self, t: Token) {
        let peer = self.legs.get_mut(&t).map(|l| {
            l.whole = true;
            l.peer
        });
        if let Some(l) = peer.and_then(|p| self.legs.get_mut(&p)) {
            l.whole = true;
        }
    }

    /// The other leg of `t`'s pair, and whether messages must pass whole
    /// (else a large binary message streams through in pieces).
    pub(super) fn streams_to(&self, t: Token) -> Option<(Token, bool)> {
        if self.legs.is_empty() {
            return None;
        }
        self.legs.get(&t).map(|l| (l.peer, l.whole))
    }

    /// The client's request target of the pair whose upstream leg is `t`,
    /// while the upstream has not opened.
    pub(super) fn client_target(&self, t: Token) -> Option<String> {
        let peer = self.legs.get(&t)?.peer;
        Some(self.legs.get(&peer)?.request.as_ref()?.path.clone())
    }

    /// The other leg of `t`'s pair.
    pub(super) fn peer(&self, t: Token) -> Option<Token> {
        if self.legs.is_empty() {
            return None;
        }
        self.legs.get(&t).map(|l| l.peer)
    }

    /// A proxied upgrade: the client's knobs set (they shape what it is sent,
    /// the upstream's messages; a bad one is a `400`), then its upstream leg
    /// opened, or a `502` at once when no socket could be made. Returns the
    /// upstream leg, to be settled (its request written).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        registry: &Registry,
        conns: &mut Connections,
        t: Token,
        req: &Request,
        up: (Upstream, String),
        limits: &Rc<Limits>,
        deflate: (&DeflateConfig, &Rc<SharedCodec>),
        now: Instant,
    ) -> Option<Token> {
        let knobs = knobs::parse(&req.path).and_then(|k| k.check_echo().map(|()| k));
        let c = conns.get_mut(t)?;
        match knobs {
            Ok(k) => {
                c.proto.set_knobs(k);
                c.proto.count_relayed();
            }
            Err(e) => {
                info!("{}: 400, {e}", c.id());
                let body = format!("{e}\n");
                let answer = http_response(400, "Bad Request", "text/plain", "", body.as_bytes());
                c.proto.respond(answer, now);
                return None;
            }
        }
        match self.connect(registry, conns, t, req, up, limits, deflate, now) {
            Ok(up_t) => {
                self.counts.upstream_connects += 1;
                Some(up_t)
            }
            Err(e) => {
                count(&mut self.counts.upstream_failures, "connect");
                let c = conns.get_mut(t)?;
                warn!("{}: 502, {e}", c.id());
                let body = format!("{e}\n");
                let answer = http_response(502, "Bad Gateway", "text/plain", "", body.as_bytes());
                c.proto.respond(answer, now);
                None
            }
        }
    }

    /// Opens the upstream leg for the client `t` whose upgrade `req` is
    /// waiting: a socket to the upstream with our request queued on a
    /// client-role connection, given until shortly before the client's own
    /// handshake deadline to answer (so the client hears a `504` rather
    /// than nothing). `Err`: the socket could not even be made (answered 502
    /// by the caller).
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &mut self,
        registry: &Registry,
        conns: &mut Connections,
        t: Token,
        req: &Request,
        (up, path): (Upstream, String),
        limits: &Rc<Limits>,
        deflate: (&DeflateConfig, &Rc<SharedCodec>),
        now: Instant,
    ) -> Result<Token, String> {
        let url: Rc<str> = up.url(&path).into();
        let tls = match (&self.tls, up.tls) {
            (Some(config), true) => Some(
                transport::client(config.clone(), &up.host)
                    .map_err(|e| format!("upstream {url}: TLS: {e}"))?,
            ),
            (None, true) => return Err(format!("upstream {url}: no TLS client settings")),
            (_, false) => None,
        };
        let client = conns.get(t).ok_or("the client is gone")?;
        let client_ip = client.io.peer_addr().map(|a| a.ip());
        let deadline = client.proto.deadline();
        let headers = crate::stubs::head_headers(req.head.as_deref());
        let up_path = path.clone();
        let request = proxy::upstream_request(
            &up,
            path,
            &headers,
            &req.protocols,
            client_ip,
            &self.headers,
        );
        let addr: SocketAddr = *up.addrs.first().ok_or("no address")?;
        let mut stream =
            TcpStream::connect(addr).map_err(|e| format!("upstream {url}: cannot connect: {e}"))?;
        let up_t = conns.vacant();
        registry
            .register(&mut stream, up_t, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("upstream {url}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut proto = Connection::client(
            limits.clone(),
            now,
            request,
            Some(deflate),
            MaskKeys::random(),
        );
        // Each leg's own closes wait for the other side's closing handshake.
        proto.hold_closes();
        if let Some(d) = deadline {
            // A margin for the answer to reach the client.
            let margin = Duration::from_millis(250).min(limits.handshake_timeout / 4);
            proto.shorten_deadline(d.checked_sub(margin).unwrap_or(d));
        }
        let id = conns.next_id();
        proto.set_id(id.0);
        let io = match tls {
            Some(tls) => transport::Transport::with_tls(stream, tls),
            None => transport::Transport::new(stream),
        };
        let mut leg = Client::new(io, proto, false);
        leg.proxied = true;
        conns.insert(up_t, leg);
        if let Some(c) = conns.get_mut(t) {
            c.proxied = true;
            c.proto.hold_closes();
            info!("{} proxied to {url} as {id}", c.id());
        }
        let pair = |peer, upstream, request| Leg {
            peer,
            upstream,
            url: url.clone(),
            failure: None,
            passed: false,
            whole: false,
            request,
        };
        let asked = Request {
            path: up_path,
            head: None,
            ..req.clone()
        };
        self.legs
            .insert(t, pair(up_t, false, Some(Box::new(req.clone()))));
        self.legs.insert(up_t, pair(t, true, Some(Box::new(asked))));
        Ok(up_t)
    }

    /// An event of leg `t`: the upstream's answer goes to the waiting
    /// client; a message to the other leg. Returns the token that has new
    /// output (to be written this turn), if any.
    pub(super) fn event(
        &mut self,
        conns: &mut Connections,
        t: Token,
        event: Event,
        deflate: (&DeflateConfig, &Rc<SharedCodec>),
        now: Instant,
    ) -> Option<Token> {
        let leg = self.legs.get(&t)?;
        let peer = leg.peer;
        match event {
            Event::Opened(opened) => {
                let c = conns.get_mut(peer)?;
                let headers = proxy::accept_headers(&opened);
                debug!("{}: upstream {} opened", c.id(), leg.url);
                c.proto.accept_upgrade_with(
                    now,
                    Some(deflate),
                    opened.protocol.as_deref(),
                    &headers,
                );
            }
            Event::Refused(r) => self.refused(conns, t, &r, now),
            Event::Message { kind, data } => {
                self.counts.passed(leg.upstream, true, data.len());
                let c = conns.get_mut(peer)?;
                // To the client through its knobs; to the upstream as is.
                let sent = if leg.upstream {
                    c.proto.relay(kind, data, now)
                } else {
                    c.proto.send(kind, data)
                };
                if !sent {
                    debug!("{}: a message arrived after the peer closed", c.id());
                }
            }
            Event::Fragment { data, first, fin } => {
                self.counts.passed(leg.upstream, fin, data.len());
                let c = conns.get_mut(peer)?;
                if !c.proto.send_fragment(data, first, fin) {
                    debug!("{}: a piece arrived after the peer closed", c.id());
                }
            }
            Event::Upgrade(_) | Event::HttpRequest(_) | Event::Body(_) => return None,
        }
        Some(peer)
    }

    /// The upstream did not open: the client is answered with its refusal,
    /// or a `502`/`504` saying why.
    fn refused(&mut self, conns: &mut Connections, t: Token, r: &Refusal, now: Instant) {
        let Some(leg) = self.legs.get_mut(&t) else {
            return;
        };
        leg.passed = true;
        let (peer, url, failure) = (leg.peer, leg.url.clone(), leg.failure.clone());
        if let Some(c) = conns.get_mut(peer) {
            self.answer_refusal(c, r, failure.as_ref(), &url, now);
        }
    }

    /// After leg `t`'s events: a close it received, or its failure, is
    /// passed to the other leg (once); once `t`'s closing handshake is over,
    /// the other leg's own close, held until then (`hold_closes`: whatever
    /// `t`'s side sent before its close has gone out ahead of it), goes.
    /// Returns the peer if it has output.
    pub(super) fn pass_close(
        &mut self,
        conns: &mut Connections,
        t: Token,
        now: Instant,
    ) -> Option<Token> {
        if self.legs.is_empty() {
            return None;
        }
        let leg = self.legs.get(&t)?;
        let peer = leg.peer;
        let c = conns.get(t)?;
        let over = !c.proto.is_open() && c.proto.close_received().is_some();
        let mut dirty = None;
        if over {
            if let Some(p) = conns.get_mut(peer) {
                p.proto.release_close();
                dirty = Some(peer);
            }
        }
        self.forward_close(conns, t, now).or(dirty)
    }

    fn forward_close(&mut self, conns: &mut Connections, t: Token, now: Instant) -> Option<Token> {
        let leg = self.legs.get(&t).filter(|l| !l.passed)?;
        let c = conns.get(t)?;
        let (code, reason) = match (c.proto.close_received(), c.proto.error()) {
            (Some(code), _) => (code, c.proto.close_reason().unwrap_or("").to_string()),
            (None, Some(e)) if leg.upstream => {
                (CloseCode(1014), format!("upstream broke the protocol: {e}"))
            }
            (None, Some(_)) => (CloseCode::GOING_AWAY, "client went away".to_string()),
            (None, None) => return None,
        };
        let peer = leg.peer;
        self.mark_passed(t);
        let p = conns.get_mut(peer)?;
        if code == CloseCode::NO_STATUS {
            let _ = p.proto.close_now(None, "", now);
        } else {
            p.proto.close(code, &reason, now);
        }
        Some(peer)
    }

    fn mark_passed(&mut self, t: Token) {
        let peer = self.legs.get_mut(&t).map(|l| {
            l.passed = true;
            l.peer
        });
        if let Some(p) = peer.and_then(|p| self.legs.get_mut(&p)) {
            p.passed = true;
        }
    }

    /// A socket error on leg `t` (read or write): kept for the `502` when
    /// the upstream had not answered.
    pub(super) fn socket_error(&mut self, t: Token, e: &std::io::Error) {
        if let Some(l) = self.legs.get_mut(&t).filter(|l| l.upstream && !l.passed) {
            l.failure.get_or_insert(Failure::Connect(e.to_string()));
        }
    }

    /// A TLS error on leg `t` (a certificate rustls refused, an alert):
    /// kept for the `502` when the upstream had not answered.
    pub(super) fn tls_error(&mut self, t: Token, e: String) {
        if let Some(l) = self.legs.get_mut(&t).filter(|l| l.upstream && !l.passed) {
            l.failure.get_or_insert(Failure::Tls(e));
        }
    }

    /// Leg `t` was removed (`c`, its slot): the other leg hears of it: a
    /// client still waiting gets the upstream's refusal (or a `502`), an
    /// open one a close (1014 when the upstream went, 1001 to the upstream
    /// when the client went); an upstream still connecting for a client
    /// that went is dropped. Returns the peer if it has output.
    pub(super) fn removed(
        &mut self,
        conns: &mut Connections,
        t: Token,
        c: &mut Client,
        now: Instant,
    ) -> Option<Token> {
        let leg = self.legs.remove(&t)?;
        self.legs.remove(&leg.peer);
        let p = conns.get_mut(leg.peer)?;
        p.proto.release_close();
        if leg.passed {
            return Some(leg.peer);
        }
        if leg.upstream && p.proto.is_handshaking() {
            // Its refusal may still be among its events (a read error
            // ends a connection before its events are taken).
            let mut refusal = None;
            while let Some(e) = c.proto.poll_event() {
                if let Event::Refused(r) = e {
                    refusal = Some(r);
                }
            }
            let r = refusal.unwrap_or(Refusal {
                kind: RefusalKind::Closed,
                status: 0,
                why: "the connection ended before an answer".into(),
                headers: Vec::new(),
                body: Vec::new(),
            });
            self.answer_refusal(p, &r, leg.failure.as_ref(), &leg.url, now);
        } else if leg.upstream {
            info!("{}: upstream {} went away: 1014", p.id(), leg.url);
            p.proto
                .close(CloseCode(1014), "upstream went away without a close", now);
        } else if p.proto.is_handshaking() {
            p.proto.abort();
        } else {
            p.proto
                .close(CloseCode::GOING_AWAY, "client went away", now);
        }
        Some(leg.peer)
    }
}
