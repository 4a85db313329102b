//! The server's counters and their two renderings: `GET /stats` (JSON) and
//! `GET /metrics` (the Prometheus text exposition format, names
//! `echocast_*`). Counted where each event happens: the core counts frames
//! (`Limits::counters`), the loop the rest (io.rs, rooms.rs, http.rs, and
//! [`Stats::count_ended`] for closes and HTTP answers, counted when the
//! connection ends). Plain integers: one thread, nothing is locked. Read,
//! not pushed: a request gets a [`View`] of the gauges (the loop walks the
//! connections and asks the rooms and the inspector) rendered with the
//! counters.

use std::collections::BTreeMap;

use serde::Serialize;
use std::fmt::Write as _;
use std::time::Instant;

use crate::proto::Connection;

/// Counters kept by the driver.
pub(super) struct Stats {
    pub(super) started: Instant,
    pub(super) accepted: u64,
    /// Refused with 503 at `--max-connections`.
    pub(super) refused: u64,
    pub(super) messages_in: u64,
    pub(super) bytes_in: u64,
    pub(super) messages_out: u64,
    pub(super) bytes_out: u64,
    pub(super) slow_consumers: u64,
    pub(super) closes_sent: BTreeMap<u16, u64>,
    pub(super) closes_received: BTreeMap<u16, u64>,
    /// Close frames decided but not written when the connection ended.
    pub(super) closes_not_delivered: BTreeMap<u16, u64>,
    pub(super) http: BTreeMap<u16, u64>,
    pub(super) handshake_failures: BTreeMap<&'static str, u64>,
    /// Messages published with a `POST`.
    pub(super) http_publishes: u64,
    /// Of those, answered as a duplicate of an earlier `POST` with the same
    /// `Idempotency-Key` (not published again).
    pub(super) http_duplicates: u64,
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            started: Instant::now(),
            accepted: 0,
            refused: 0,
            messages_in: 0,
            bytes_in: 0,
            messages_out: 0,
            bytes_out: 0,
            slow_consumers: 0,
            closes_sent: BTreeMap::new(),
            closes_received: BTreeMap::new(),
            closes_not_delivered: BTreeMap::new(),
            http: BTreeMap::new(),
            handshake_failures: BTreeMap::new(),
            http_publishes: 0,
            http_duplicates: 0,
        }
    }

    /// A connection ended: its HTTP answer or refusal, or its closes.
    pub(super) fn count_ended(&mut self, c: &Connection) {
        if !c.was_opened() {
            match c.http_answer() {
                Some((status, refused)) => {
                    count(&mut self.http, status);
                    if let Some(e) = refused {
                        count(&mut self.handshake_failures, e.label());
                    }
                }
                // Waiting for another request on a kept connection.
                None if c.served_keep_alive() => {}
                // Timed out, or gone, before a complete request.
                None => count(&mut self.handshake_failures, "incomplete"),
            }
            return;
        }
        if let Some(sent) = c.close_sent() {
            count(&mut self.closes_sent, sent.0);
        }
        if let Some(received) = c.close_received() {
            count(&mut self.closes_received, received.0);
        }
        if let Some(unsent) = c.close_unsent() {
            count(&mut self.closes_not_delivered, unsent.0);
        }
    }
}

pub(super) fn count<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

#[derive(Serialize)]
struct StatsJson<'a> {
    uptime_seconds: f64,
    connections: ConnectionsJson,
    rooms: RoomsJson<'a>,
    messages: InOut,
    bytes: InOut,
    frames: InOut,
    closes: ClosesJson<'a>,
    http_answers: &'a BTreeMap<u16, u64>,
    slow_consumer_closes: u64,
    handshake_failures: &'a BTreeMap<&'static str, u64>,
    /// Messages published with a `POST` to a room.
    http_publishes: u64,
    /// Of those, duplicates of an earlier `Idempotency-Key` (not published
    /// again).
    http_publish_duplicates: u64,
    /// `null` with `--inspect off`.
    inspector: Option<InspectorJson>,
    /// `null` without `--cluster`.
    cluster: Option<ClusterJson>,
    /// `null` without `--proxy`.
    proxy: Option<ProxyJson<'a>>,
}

/// `--proxy`: what the upstream legs did (kept by `proxying.rs`).
#[derive(Serialize, Clone, Default)]
pub(super) struct ProxyCounts {
    /// Upstream connections opened (a socket made, our request queued).
    pub(super) upstream_connects: u64,
    /// Upstreams that did not open, by why: `connect` (a socket error:
    /// refused, unreachable), `closed` (ended before an answer), `invalid`
    /// (an answer that is not HTTP, or a 101 breaking RFC 6455 §4.1),
    /// `timeout` (no answer in time; the client got 504).
    pub(super) upstream_failures: BTreeMap<&'static str, u64>,
    /// Upstream answers other than 101, passed to the client, by status.
    pub(super) upstream_refusals: BTreeMap<u16, u64>,
    pub(super) messages_to_upstream: u64,
    pub(super) messages_from_upstream: u64,
    pub(super) bytes_to_upstream: u64,
    pub(super) bytes_from_upstream: u64,
}

#[derive(Serialize)]
struct ProxyJson<'a> {
    /// Proxied pairs now (a client and its upstream).
    pairs: usize,
    #[serde(flatten)]
    counts: &'a ProxyCounts,
}

/// `--cluster`: the link to Redis and what waits for it.
#[derive(Serialize, Clone, Copy, Default)]
pub(super) struct ClusterJson {
    /// `connected`, `connecting` (not yet, refused or closed) or `not
    /// answering` (a reply overdue by `--cluster-timeout`).
    pub(super) state: &'static str,
    pub(super) reconnects: u64,
    /// Of the reconnects, those because Redis stopped answering.
    pub(super) timeouts: u64,
    /// Members' messages (and POSTs) waiting for Redis or for its answer.
    pub(super) appends_pending: usize,
    pub(super) appends_pending_bytes: usize,
    pub(super) appended: u64,
    /// Messages of the cluster delivered here, and catch-ups (a room new
    /// here, a reconnect, an id skipped) and gaps announced.
    pub(super) delivered: u64,
    pub(super) catch_ups: u64,
    pub(super) gaps: u64,
    /// Rooms this instance watches (has members in), and of those caught up.
    pub(super) rooms_watched: usize,
    pub(super) rooms_live: usize,
    /// From an append of this instance to its delivery here, the last and
    /// the largest, in milliseconds (sampled: one append timed at a time).
    pub(super) delay_ms_last: f64,
    pub(super) delay_ms_max: f64,
}

#[derive(Serialize)]
struct ConnectionsJson {
    echo: usize,
    broadcast: usize,
    handshaking: usize,
    /// Event-stream (SSE) subscribers.
    events: usize,
    /// Legs of proxied pairs, open (`--proxy`): the client's and the
    /// upstream's of each.
    proxied: usize,
    accepted: u64,
    refused_max_connections: u64,
}

#[derive(Serialize)]
struct RoomsJson<'a> {
    count: usize,
    largest: Vec<RoomJson<'a>>,
    history: HistoryJson<'a>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    /// Payload bytes all rooms retain.
    bytes: usize,
    /// Retained messages dropped to keep `--max-memory`.
    shed: u64,
    /// The 100 rooms retaining the most, largest first.
    largest: Vec<RoomHistoryJson<'a>>,
}

#[derive(Serialize)]
struct RoomHistoryJson<'a> {
    name: &'a str,
    bytes: usize,
}

#[derive(Serialize)]
struct RoomJson<'a> {
    name: &'a str,
    members: usize,
}

#[derive(Serialize)]
struct InOut {
    r#in: u64,
    out: u64,
}

#[derive(Serialize)]
struct ClosesJson<'a> {
    sent: &'a BTreeMap<u16, u64>,
    received: &'a BTreeMap<u16, u64>,
    not_delivered: &'a BTreeMap<u16, u64>,
}

#[derive(Serialize)]
pub(super) struct InspectorJson {
    pub(super) records: usize,
    pub(super) bytes: usize,
    pub(super) evicted: u64,
    pub(super) subscribers: usize,
}

/// The gauges at the moment of a request.
#[derive(Default)]
pub(super) struct View<'a> {
    pub(super) frames_in: u64,
    pub(super) frames_out: u64,
    pub(super) echo: usize,
    pub(super) broadcast: usize,
    pub(super) handshaking: usize,
    pub(super) events: usize,
    /// The 100 largest rooms, largest first, and how many there are.
    pub(super) rooms: Vec<(&'a str, usize)>,
    pub(super) room_count: usize,
    /// Bytes all histories hold, retained messages shed, and the 100 rooms
    /// retaining the most.
    pub(super) history_bytes: usize,
    pub(super) history_shed: u64,
    pub(super) history_top: Vec<(&'a str, usize)>,
    /// `None` with `--inspect off`.
    pub(super) inspector: Option<InspectorJson>,
    /// `None` without `--cluster`.
    pub(super) cluster: Option<ClusterJson>,
    /// Proxied legs open now (both legs of each pair).
    pub(super) proxied: usize,
    /// `None` without `--proxy`: the pairs, and the counters.
    pub(super) proxy: Option<(usize, &'a ProxyCounts)>,
}

impl Stats {
    /// The body of `GET /stats` (JSON, through serde).
    pub(super) fn json(&self, s: View) -> String {
        let st = self;
        let json = StatsJson {
            uptime_seconds: st.started.elapsed().as_secs_f64(),
            connections: ConnectionsJson {
                echo: s.echo,
                broadcast: s.broadcast,
                handshaking: s.handshaking,
                events: s.events,
                proxied: s.proxied,
                accepted: st.accepted,
                refused_max_connections: st.refused,
            },
            rooms: RoomsJson {
                count: s.room_count,
                largest: s
                    .rooms
                    .iter()
                    .map(|&(name, members)| RoomJson { name, members })
                    .collect(),
                history: HistoryJson {
                    bytes: s.history_bytes,
                    shed: s.history_shed,
                    largest: s
                        .history_top
                        .iter()
                        .copied()
                        .map(|(name, bytes)| RoomHistoryJson { name, bytes })
                        .collect(),
                },
            },
            messages: InOut {
                r#in: st.messages_in,
                out: st.messages_out,
            },
            bytes: InOut {
                r#in: st.bytes_in,
                out: st.bytes_out,
            },
            frames: InOut {
                r#in: s.frames_in,
                out: s.frames_out,
            },
            closes: ClosesJson {
                sent: &st.closes_sent,
                received: &st.closes_received,
                not_delivered: &st.closes_not_delivered,
            },
            http_answers: &st.http,
            slow_consumer_closes: st.slow_consumers,
            handshake_failures: &st.handshake_failures,
            http_publishes: st.http_publishes,
            http_publish_duplicates: st.http_duplicates,
            inspector: s.inspector,
            cluster: s.cluster,
            proxy: s.proxy.map(|(pairs, counts)| ProxyJson { pairs, counts }),
        };
        let mut text = serde_json::to_string(&json).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The body of `GET /metrics` (Prometheus text format 0.0.4).
    pub(super) fn metrics(&self, s: View) -> String {
        let st = self;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP echocast_{name} {help}");
            let _ = writeln!(out, "# TYPE echocast_{name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "echocast_{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            &[(String::new(), st.started.elapsed().as_secs_f64())],
        );
        metric(
            "connections",
            "gauge",
            "Connections open now, by kind.",
            &[
                ("{kind=\"echo\"}".into(), s.echo as f64),
                ("{kind=\"broadcast\"}".into(), s.broadcast as f64),
                ("{kind=\"handshaking\"}".into(), s.handshaking as f64),
                ("{kind=\"events\"}".into(), s.events as f64),
                ("{kind=\"proxied\"}".into(), s.proxied as f64),
            ],
        );
        metric(
            "connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &one(st.accepted),
        );
        metric(
            "connections_refused_total",
            "counter",
            "Connections refused with 503 at --max-connections.",
            &one(st.refused),
        );
        metric(
            "rooms",
            "gauge",
            "Broadcast rooms: with members, or lingering after the last left (--room-linger).",
            &one(s.room_count as u64),
        );
        metric(
            "room_members",
            "gauge",
            "Members of the 100 largest rooms.",
            &s.rooms
                .iter()
                .map(|(name, n)| (format!("{{room={}}}", label_value(name)), *n as f64))
                .collect::<Vec<_>>(),
        );
        metric(
            "room_history_bytes",
            "gauge",
            "Payload bytes retained by the 100 rooms retaining the most (--room-history).",
            &s.history_top
                .iter()
                .map(|(name, n)| (format!("{{room={}}}", label_value(name)), *n as f64))
                .collect::<Vec<_>>(),
        );
        metric(
            "room_history_shed_total",
            "counter",
            "Retained room messages dropped to keep --max-memory.",
            &one(s.history_shed),
        );
        if let Some(c) = s.cluster {
            metric(
                "cluster_connected",
                "gauge",
                "1 when both connections to the cluster's Redis are up (--cluster).",
                &one(u64::from(c.state == "connected")),
            );
            metric(
                "cluster_reconnects_total",
                "counter",
                "Times the connection to Redis was lost.",
                &one(c.reconnects),
            );
            metric(
                "cluster_timeouts_total",
                "counter",
                "Times the connection to Redis was dropped because a reply was overdue by --cluster-timeout.",
                &one(c.timeouts),
            );
            metric(
                "cluster_appends_pending",
                "gauge",
                "Messages waiting for Redis (held while it is away) or for its answer.",
                &one(c.appends_pending as u64),
            );
            metric(
                "cluster_delivered_total",
                "counter",
                "Room messages of the cluster delivered on this instance.",
                &one(c.delivered),
            );
            metric(
                "cluster_delay_seconds",
                "gauge",
                "From an append of this instance to its delivery here: the last one.",
                &[(String::new(), c.delay_ms_last / 1000.0)],
            );
        }
        if let Some((pairs, p)) = s.proxy {
            metric(
                "proxy_pairs",
                "gauge",
                "Proxied pairs open now: a client and its upstream (--proxy).",
                &one(pairs as u64),
            );
            metric(
                "proxy_upstream_connects_total",
                "counter",
                "Upstream connections opened.",
                &one(p.upstream_connects),
            );
            metric(
                "proxy_upstream_failures_total",
                "counter",
                "Upstreams that did not open, by reason (connect, closed, invalid, timeout).",
                &p.upstream_failures
                    .iter()
                    .map(|(k, v)| (format!("{{reason=\"{k}\"}}"), *v as f64))
                    .collect::<Vec<_>>(),
            );
            metric(
                "proxy_upstream_refusals_total",
                "counter",
                "Upstream answers other than 101 passed to the client, by status.",
                &p.upstream_refusals
                    .iter()
                    .map(|(k, v)| (format!("{{status=\"{k}\"}}"), *v as f64))
                    .collect::<Vec<_>>(),
            );
            let dirs = |to: u64, from: u64| {
                vec![
                    ("{direction=\"to_upstream\"}".to_string(), to as f64),
                    ("{direction=\"from_upstream\"}".to_string(), from as f64),
                ]
            };
            metric(
                "proxy_messages_total",
                "counter",
                "Messages passed through, by direction.",
                &dirs(p.messages_to_upstream, p.messages_from_upstream),
            );
            metric(
                "proxy_message_bytes_total",
                "counter",
                "Payload bytes of the messages passed through (inflated), by direction.",
                &dirs(p.bytes_to_upstream, p.bytes_from_upstream),
            );
        }
        metric(
            "http_publishes_total",
            "counter",
            "Messages published to rooms with a POST.",
            &one(st.http_publishes),
        );
        metric(
            "http_publish_duplicates_total",
            "counter",
            "POSTs answered as a duplicate of an earlier Idempotency-Key (not published again).",
            &one(st.http_duplicates),
        );
        metric(
            "messages_received_total",
            "counter",
            "Data messages received.",
            &one(st.messages_in),
        );
        metric(
            "messages_sent_total",
            "counter",
            "Data messages sent (each broadcast delivery counts).",
            &one(st.messages_out),
        );
        metric(
            "message_bytes_received_total",
            "counter",
            "Payload bytes of the data messages received (after inflating).",
            &one(st.bytes_in),
        );
        metric(
            "message_bytes_sent_total",
            "counter",
            "Payload bytes of the data messages sent (before compressing).",
            &one(st.bytes_out),
        );
        metric(
            "frames_received_total",
            "counter",
            "Frames received, control frames included.",
            &one(s.frames_in),
        );
        metric(
            "frames_sent_total",
            "counter",
            "Frames sent, control frames included.",
            &one(s.frames_out),
        );
        let codes = |m: &BTreeMap<u16, u64>| {
            m.iter()
                .map(|(k, v)| (format!("{{code=\"{k}\"}}"), *v as f64))
                .collect::<Vec<_>>()
        };
        metric(
            "closes_sent_total",
            "counter",
            "Close frames sent (their last byte written), by code.",
            &codes(&st.closes_sent),
        );
        metric(
            "closes_not_delivered_total",
            "counter",
            "Close frames decided but not written before the connection ended, by code.",
            &codes(&st.closes_not_delivered),
        );
        metric(
            "closes_received_total",
            "counter",
            "Close frames received, by code (0: no code).",
            &codes(&st.closes_received),
        );
        metric(
            "http_responses_total",
            "counter",
            "HTTP answers, by status (101 for each upgrade).",
            &st.http
                .iter()
                .map(|(k, v)| (format!("{{status=\"{k}\"}}"), *v as f64))
                .collect::<Vec<_>>(),
        );
        metric(
            "slow_consumer_closes_total",
            "counter",
            "Broadcast members closed with 1008 for not keeping up.",
            &one(st.slow_consumers),
        );
        metric(
            "handshake_failures_total",
            "counter",
            "Opening requests that did not become a WebSocket, by reason.",
            &st.handshake_failures
                .iter()
                .map(|(k, v)| (format!("{{reason=\"{k}\"}}"), *v as f64))
                .collect::<Vec<_>>(),
        );
        out
    }
}

/// A Prometheus label value: quoted, with `\`, `"` and newlines escaped.
fn label_value(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
