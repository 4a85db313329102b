//! The server's counters and `GET /stats` (JSON); `GET /metrics` renders
//! the same in metrics.rs. Counted where each event happens: the core counts frames
//! (`Limits::counters`), the loop the rest (io.rs, rooms.rs, http.rs, and
//! [`Stats::count_ended`] for closes and HTTP answers, counted when the
//! connection ends). Plain integers: one thread, nothing is locked. Read,
//! not pushed: a request gets a [`View`] of the gauges (the loop walks the
//! connections and asks the rooms and the inspector) rendered with the
//! counters.

use std::collections::BTreeMap;

use serde::Serialize;
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
    /// Adds the messages the core echoed itself (`Connection::set_fast_echo`:
    /// each one in and one out) since the last call.
    pub(super) fn count_echoed(&mut self, c: &crate::proto::connection::Counters) {
        let (messages, bytes) = (c.echoed_messages.take(), c.echoed_bytes.take());
        self.messages_in += messages;
        self.messages_out += messages;
        self.bytes_in += bytes;
        self.bytes_out += bytes;
    }

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

impl ProxyCounts {
    /// A message (or, with `fin` false, a piece of one) of `len` bytes
    /// passed through, from the upstream or to it.
    pub(super) fn passed(&mut self, from_upstream: bool, fin: bool, len: usize) {
        let (messages, bytes) = if from_upstream {
            (
                &mut self.messages_from_upstream,
                &mut self.bytes_from_upstream,
            )
        } else {
            (&mut self.messages_to_upstream, &mut self.bytes_to_upstream)
        };
        *messages += u64::from(fin);
        *bytes += len as u64;
    }
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
}
