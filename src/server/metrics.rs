//! `GET /metrics`: the counters of [`Stats`] and the gauges of a [`View`]
//! in the Prometheus text exposition format (0.0.4), names `echocast_*`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::stats::{Stats, View};

impl Stats {
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
