#!/usr/bin/env python3
"""Turns bench/compare.sh's raw JSON lines into docs/benchmarks.md and an SVG.

usage: report.py RAW.jsonl MACHINE.txt OUT.md OUT.svg
Standard library only. The hand-written analysis in bench/notes.md is appended
to the generated page, so regenerating never loses it.
"""

import json
import math
import os
import statistics
import sys

SERVERS = ["echocast", "echocast-dedicated", "echocast-inspect", "floor", "fastwebsockets", "tokio-tungstenite", "node-ws", "python-websockets", "nginx", "websocat", "mitmproxy"]
# Not peers: echocast itself in another mode, and ../shared/floor (a
# do-nothing server showing the loopback limit): results table and the
# floor section only.
VARIANTS = {"echocast-dedicated", "echocast-inspect", "floor"}
COLORS = {
    "fastwebsockets": "#e07b39",
    "tokio-tungstenite": "#3b7dd8",
    "node-ws": "#4caf50",
    "python-websockets": "#9c5bb5",
    "nginx": "#009639",
    "websocat": "#c2185b",
    "mitmproxy": "#795548",
}

# case: (title, metric, unit, scale, better, extra metric, extra unit, extra scale)
CASES = {
    "echo-20": ("Echo 20 B text, 100 conns, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "echo-20-p16": ("Echo 20 B text, 100 conns, 16 in flight", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "echo-1k": ("Echo 1 KiB, 100 conns, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "echo-64k": ("Echo 64 KiB, 10 conns", "mb_per_sec", "MB/s", 1, "higher", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3),
    "echo-16m": ("Echo 16 MiB, 1 conn", "mb_per_sec", "MB/s", 1, "higher", "server_cpu_ns_per_message", "ms CPU/msg", 1e-6),
    "latency": ("Latency, 1 conn, 20 B", "latency_p50_us", "µs p50", 1, "lower", "latency_p99_us", "µs p99", 1),
    "broadcast-1000": ("Broadcast 1000 subs, 20 B", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "deliveries_per_sec", "deliveries/s", 1),
    "broadcast-16k": ("Broadcast 100 subs, 16 KiB", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "deliveries_per_sec", "deliveries/s", 1),
    "connect-50": ("Handshakes, 50 concurrent", "server_cpu_ns_per_handshake", "µs CPU/handshake", 1e-3, "lower", "handshakes_per_sec", "handshakes/s", 1),
    "idle-10k": ("10,000 idle connections", "rss_bytes_per_connection", "B RSS/conn", 1, "lower", "rss_after_kib", "KiB RSS total", 1),
    "echo-deflate-1k": ("Echo 1 KiB JSON, deflate, 100 conns, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "server_ratio", "compressed/raw", 1),
    "broadcast-1k": ("Broadcast 1000 subs, 1 KiB", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "deliveries_per_sec", "deliveries/s", 1),
    "broadcast-100": ("Broadcast 100 subs, 20 B", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "deliveries_per_sec", "deliveries/s", 1),
    "sse-1000": ("SSE: 1000 event streams, 20 B", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "deliveries_per_sec", "deliveries/s", 1),
    "sse-1k": ("SSE: 1000 event streams, 1 KiB", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "deliveries_per_sec", "deliveries/s", 1),
    "publish-100": ("POST publish to 100 members, 20 B, 4 kept conns", "server_cpu_ns_per_publish", "µs CPU/publish", 1e-3, "lower", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1),
    "broadcast-deflate-1k": ("Broadcast 1000 subs, 1 KiB JSON, deflate", "server_cpu_ns_per_delivery", "ns CPU/delivery", 1, "lower", "server_ratio", "compressed/raw", 1),
    "echo-tls-1k": ("Echo 1 KiB over TLS, 100 conns, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "echo-tls-16m": ("Echo 16 MiB over TLS, 1 conn", "mb_per_sec", "MB/s", 1, "higher", "server_cpu_ns_per_message", "ms CPU/msg", 1e-6),
    "connect-tls-50": ("TLS handshakes (full, P-256), 50 concurrent", "server_cpu_ns_per_handshake", "µs CPU/handshake", 1e-3, "lower", "handshakes_per_sec", "handshakes/s", 1),
    "idle-tls-10k": ("10,000 idle wss:// connections", "rss_bytes_per_connection", "B RSS/conn", 1, "lower", "rss_after_kib", "KiB RSS total", 1),
    "idle-deflate-10k": ("10,000 idle deflate connections (one message each)", "rss_bytes_per_connection", "B RSS/conn", 1, "lower", "rss_after_kib", "KiB RSS total", 1),
    "proxy-20": ("Proxy: echo 20 B through, 100 conns, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "proxy-20-p16": ("Proxy: echo 20 B through, 100 conns, 16 in flight", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "proxy-1k": ("Proxy: echo 1 KiB through, 100 conns, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "proxy-1k-p16": ("Proxy: echo 1 KiB through, 100 conns, 16 in flight", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "h2-20": ("HTTP/2: echo 20 B, 100 WebSocket streams on 1 conn, ping-pong", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "h2-20-p16": ("HTTP/2: echo 20 B, 100 WebSocket streams on 1 conn, 16 in flight", "server_cpu_ns_per_message", "µs CPU/msg", 1e-3, "lower", "messages_per_sec", "msg/s", 1),
    "h2-idle-1k": ("HTTP/2: 1,000 idle WebSocket streams on 1 conn", "rss_bytes_per_stream", "B RSS/stream", 1, "lower", "rss_after_kib", "KiB RSS total", 1),
}
PROXY_CASES = [c for c in CASES if c.startswith("proxy-")]

# (case, peer or None for an absolute bound, bound on echocast/peer, text)
TARGETS = [
    ("echo-20", "fastwebsockets", 1.05, "CPU/msg ≤ 1.05 × fastwebsockets"),
    ("echo-1k", "fastwebsockets", 1.05, "CPU/msg ≤ 1.05 × fastwebsockets"),
    ("echo-20-p16", "fastwebsockets", 0.1, "CPU/msg ≤ 0.1 × fastwebsockets"),
    ("echo-64k", "fastwebsockets", 1.1, "throughput ≥ 1.1 × fastwebsockets"),
    ("echo-16m", "fastwebsockets", 1.3, "throughput ≥ 1.3 × fastwebsockets"),
    ("broadcast-1000", "tokio-tungstenite", 0.5, "CPU/delivery ≤ 0.5 × tokio-tungstenite"),
    ("broadcast-16k", "tokio-tungstenite", 0.7, "CPU/delivery ≤ 0.7 × tokio-tungstenite"),
    # Issue 29: fan-out at the loopback floor.
    ("broadcast-1000", "floor", 1.2, "CPU/delivery ≤ 1.2 × the floor"),
    ("broadcast-1k", "floor", 1.2, "CPU/delivery ≤ 1.2 × the floor"),
    ("broadcast-16k", "floor", 1.05, "CPU/delivery ≤ 1.05 × the floor"),
    ("connect-50", "tokio-tungstenite", 0.9, "CPU/handshake ≤ 0.9 × tokio-tungstenite"),
    ("idle-10k", None, 256, "≤ 256 B RSS per connection"),
    ("echo-deflate-1k", "node-ws", 0.5, "CPU/msg ≤ 0.5 × Node ws with deflate"),
    ("broadcast-deflate-1k", "node-ws", 0.05, "CPU/delivery ≤ 0.05 × Node ws with deflate"),
    ("broadcast-deflate-1k", "self:broadcast-1k", 2.0, "CPU/delivery ≤ 2 × echocast's own uncompressed 1 KiB broadcast"),
    ("idle-deflate-10k", None, 2048, "≤ 2 KiB RSS per connection"),
    ("echo-tls-1k", "tokio-tungstenite", 0.8, "CPU/msg ≤ 0.8 × tokio-tungstenite + rustls"),
    ("echo-tls-16m", "tokio-tungstenite", 1.2, "throughput ≥ 1.2 × tokio-tungstenite + rustls"),
    ("connect-tls-50", "*", 1.0, "CPU/handshake ≤ 1.0 × the best peer"),
    ("idle-tls-10k", "*", 0.5, "RSS/conn ≤ 0.5 × the best peer"),
    ("latency", "*", 1.0, "p50 not worse than any peer"),
    # Issue 35: the proxy decodes every message, and still costs at most
    # 1.5 × nginx's byte splice, and less than websocat and mitmproxy.
    # Issue 37: WebSockets over HTTP/2 against the same load on 100
    # HTTP/1.1 connections; an idle stream against an idle connection (RSS
    # only: the connection's kernel socket, about 4 KiB, is not in it).
    ("h2-20", "self:echo-20", 1.2, "CPU/msg ≤ 1.2 × echocast's echo-20 on 100 HTTP/1.1 connections"),
    ("h2-20-p16", "self:echo-20-p16", 1.2, "CPU/msg ≤ 1.2 × echocast's echo-20-p16"),
    ("h2-idle-1k", "self:idle-10k", 1.0, "RSS per idle stream ≤ RSS per idle HTTP/1.1 connection"),
] + [t for c in ["proxy-20", "proxy-20-p16", "proxy-1k", "proxy-1k-p16"] for t in (
    (c, "nginx", 1.5, "CPU/msg ≤ 1.5 × nginx (which splices bytes)"),
    (c, "websocat", 1.0, "CPU/msg ≤ websocat"),
    (c, "mitmproxy", 1.0, "CPU/msg ≤ mitmproxy"),
)]


def fmt(x):
    if x is None:
        return "–"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def load(raw):
    data = {}  # (case, server) -> list of result dicts
    errors = {}
    with open(raw) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            key = (r["case"], r["server"])
            if "error" in r:
                errors.setdefault(key, []).append(r["error"])
            else:
                data.setdefault(key, []).append(r["result"])
    return data, errors


def values(data, case, server, metric, scale):
    out = []
    for r in data.get((case, server), []):
        v = r.get(metric)
        if v is not None:
            out.append(v * scale)
    return out


def summary(vals):
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def main():
    raw, machine, out_md, out_svg = sys.argv[1:5]
    data, errors = load(raw)
    cases = [c for c in CASES if any((c, s) in data or (c, s) in errors for s in SERVERS)]
    servers = [s for s in SERVERS if any((c, s) in data or (c, s) in errors for c in CASES)]
    med = {}
    for c in cases:
        title, metric, unit, scale, better, *_ = CASES[c]
        for s in servers:
            sm = summary(values(data, c, s, metric, scale))
            if sm:
                med[(c, s)] = sm[0]

    md = []
    md.append("# Benchmarks\n")
    md.append("Generated by `bench/compare.sh` (do not edit by hand; the analysis at the end "
              "comes from `bench/notes.md`). Each server runs alone pinned to CPU 0, the load "
              "generator `echocast-bench` pinned to CPU 1, over loopback. Server CPU per "
              "operation is read from `/proc/PID/task/*/schedstat` (user + system, all threads): "
              "on two cores the client and the kernel cap throughput, so CPU per operation is "
              "the figure that compares servers.\n")
    md.append("## Machine\n")
    md.append("```")
    with open(machine) as f:
        md.append(f.read().strip())
    md.append("```\n")
    md.append("![Where echocast stands: how many times better than each peer, per case "
              "(log scale; right of 1 is better)](benchmarks.svg)\n")

    md.append("## Results\n")
    md.append("Median of the repetitions, with min–max below it. `FAILED` means the load "
              "generator rejected the server's answers (a missed, reordered or wrong message) "
              "or the server fell over.\n")
    md.append("| Case | Metric | " + " | ".join(servers) + " |")
    md.append("|---|---|" + "---|" * len(servers))
    for c in cases:
        title, metric, unit, scale, better, em, eunit, escale = CASES[c]
        for m, u, sc, label in ((metric, unit, scale, f"**{unit}** ({better} is better)"), (em, eunit, escale, eunit)):
            cells = []
            for s in servers:
                sm = summary(values(data, c, s, m, sc))
                if sm:
                    cell = f"{fmt(sm[0])}<br><sub>{fmt(sm[1])}–{fmt(sm[2])}</sub>"
                    if m == metric:
                        cell = "**" + fmt(sm[0]) + "**" + cell[len(fmt(sm[0])):]
                elif (c, s) in errors:
                    cell = "FAILED"
                else:
                    cell = "–"
                cells.append(cell)
            md.append(f"| {title if m == metric else ''} | {label} | " + " | ".join(cells) + " |")
    md.append("")

    peers = [s for s in servers if s != "echocast" and s not in VARIANTS]
    md.append("## Ratios echocast / peer\n")
    md.append("On each case's main metric. For CPU, latency and memory below 1 means echocast "
              "is better; for MB/s above 1 means echocast is better.\n")
    md.append("| Case | " + " | ".join(peers) + " |")
    md.append("|---|" + "---|" * len(peers))
    for c in [c for c in cases if any((c, p) in med for p in peers)]:
        e = med.get((c, "echocast"))
        row = []
        for p in peers:
            v = med.get((c, p))
            row.append(f"{e / v:.3f}" if e is not None and v else "–")
        md.append(f"| {CASES[c][0]} | " + " | ".join(row) + " |")
    md.append("")

    floor_cases = [c for c in cases if med.get((c, "floor")) and med.get((c, "echocast"))
                   and c not in PROXY_CASES]
    if floor_cases:
        md.append("## How far from the loopback limit (echocast / floor)\n")
        md.append("`floor` (`../shared/floor`) is a do-nothing server that answers with the right "
                  "bytes and nothing else: one read, frames unmasked in place, one write per turn, "
                  "no reassembly, UTF-8 check or close handshake. Against it a case shows what this "
                  "machine's kernel, loopback and load generator allow. 1.0 means nothing is left "
                  "to take on that case; for MB/s, below 1 is the share of the limit reached.\n")
        md.append("| Case | metric | echocast | floor | echocast / floor |")
        md.append("|---|---|---|---|---|")
        for c in floor_cases:
            e, f = med[(c, "echocast")], med[(c, "floor")]
            md.append(f"| {CASES[c][0]} | {CASES[c][2]} | {fmt(e)} | {fmt(f)} | {e / f:.2f} |")
        md.append("")

    pcases = [c for c in cases if c in PROXY_CASES]
    if pcases:
        md.append("## Through a proxy\n")
        md.append("The load generator talks to a proxy whose upstream is the floor (an echo at the "
                  "loopback limit, pinned to CPU 1 with the load generator); server CPU is the "
                  "proxy's, per message echoed through it (one message each way). `echocast` runs "
                  "`--proxy /=ws://UPSTREAM/* --inspect off` and decodes every message on both legs; "
                  "`echocast-inspect` is the same with the inspector on (its share is the "
                  "difference); nginx splices bytes after the upgrade and never parses a frame; "
                  "websocat and mitmproxy parse messages. `direct` is the floor alone under the same "
                  "load (no proxy): the cost of the extra hop is what a proxy adds to it.\n")
        cols = ["echocast", "echocast-inspect", "nginx", "websocat", "mitmproxy"]
        md.append("| Case | " + " | ".join(cols) + " | direct (floor) | echocast / nginx | inspector's share |")
        md.append("|---|" + "---|" * (len(cols) + 3))
        for c in pcases:
            cells = [fmt(med.get((c, s))) for s in cols]
            e, n, i = med.get((c, "echocast")), med.get((c, "nginx")), med.get((c, "echocast-inspect"))
            ratio = f"{e / n:.2f}" if e and n else "–"
            share = f"{(i - e) / i:.0%}" if e and i else "–"
            md.append(f"| {CASES[c][0]} | " + " | ".join(cells) +
                      f" | {fmt(med.get((c, 'floor')))} | {ratio} | {share} |")
        md.append("")

    # Rooms over HTTP beside the WebSocket fan-out of the same size.
    pairs = [("sse-1000", "broadcast-1000", "server_cpu_ns_per_delivery"),
             ("sse-1k", "broadcast-1k", "server_cpu_ns_per_delivery"),
             ("publish-100", "broadcast-100", "server_cpu_ns_per_delivery")]
    pairs = [p for p in pairs if p[0] in cases]
    if pairs:
        md.append("## Rooms over HTTP beside the WebSocket fan-out\n")
        md.append("echocast only (the peers have no Server-Sent Events or HTTP publish). `sse-*`: "
                  "event-stream subscribers of one room, messages published by a WebSocket member; "
                  "`publish-100`: `POST`s on 4 kept HTTP connections (one request in flight each) "
                  "to a room of 100 WebSocket members. Each beside the WebSocket broadcast of the "
                  "same room and message size (a WebSocket member publishing, 16 messages in "
                  "flight), and the floor's figure for that broadcast. Server CPU per delivery, "
                  "medians.\n")
        md.append("| Case | ns CPU/delivery | WebSocket fan-out | its ns CPU/delivery | floor | case / fan-out |")
        md.append("|---|---|---|---|---|---|")
        for c, base, m in pairs:
            v = summary(values(data, c, "echocast", m, 1))
            b = summary(values(data, base, "echocast", m, 1))
            f = summary(values(data, base, "floor", m, 1))
            ratio = f"{v[0] / b[0]:.2f}" if v and b else "–"
            md.append(f"| {CASES[c][0]} | {fmt(v[0]) if v else '–'} | {CASES[base][0]} | "
                      f"{fmt(b[0]) if b else '–'} | {fmt(f[0]) if f else '–'} | {ratio} |")
        md.append("")

    md.append("## Compression ratios (permessage-deflate)\n")
    md.append("Compressed bytes over raw bytes, server to client, on the JSON-like stream "
              "(lower is better). echocast's default `shared` mode compresses every message on "
              "its own (no context takeover) so a broadcast is compressed once; `dedicated` and "
              "the peers keep a context per connection.\n")
    rcases = [c for c in cases if "deflate" in c and c != "idle-deflate-10k"]
    if rcases:
        md.append("| Case | " + " | ".join(servers) + " |")
        md.append("|---|" + "---|" * len(servers))
        for c in rcases:
            cells = []
            for s in servers:
                sm = summary(values(data, c, s, "server_ratio", 1))
                cells.append(f"{sm[0]:.3f}" if sm else "–")
            md.append(f"| {CASES[c][0]} | " + " | ".join(cells) + " |")
        md.append("")

    md.append("## Targets (issues 5, 9, 10, 29 and 35)\n")
    md.append("| Case | Target | Measured | Met |")
    md.append("|---|---|---|---|")
    for c, peer, bound, text in TARGETS:
        if c not in cases:
            continue
        e = med.get((c, "echocast"))
        better = CASES[c][4]
        if e is None:
            md.append(f"| {CASES[c][0]} | {text} | echocast has no result | no |")
            continue
        if peer is None:
            ok = e <= bound
            md.append(f"| {CASES[c][0]} | {text} | {fmt(e)} {CASES[c][2]} | {'yes' if ok else 'no'} |")
        elif peer.startswith("self:"):
            base = peer[len("self:"):]
            v = med.get((base, "echocast"))
            if not v:
                md.append(f"| {CASES[c][0]} | {text} | no echocast {base} result | – |")
                continue
            r = e / v
            md.append(f"| {CASES[c][0]} | {text} | {r:.3f} × | {'yes' if r <= bound else '**no**'} |")
        elif peer == "*":
            best = min((med[(c, p)] for p in peers if (c, p) in med), default=None)
            ok = best is None or e <= best * bound
            md.append(f"| {CASES[c][0]} | {text} | echocast {fmt(e)}, best peer {fmt(best)} {CASES[c][2]} | {'yes' if ok else 'no'} |")
        else:
            v = med.get((c, peer))
            if not v:
                md.append(f"| {CASES[c][0]} | {text} | no {peer} result | – |")
                continue
            r = e / v
            ok = r >= bound if better == "higher" else r <= bound
            md.append(f"| {CASES[c][0]} | {text} | {r:.3f} × | {'yes' if ok else '**no**'} |")
    md.append("")
    if errors:
        md.append("## Failures\n")
        for (c, s), errs in sorted(errors.items()):
            md.append(f"- {s}, {c}: {len(errs)} run(s): `{errs[0]}`")
        md.append("")

    notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            md.append(f.read().strip() + "\n")
    with open(out_md, "w") as f:
        f.write("\n".join(md))

    # The picture compares peers: cases only echocast ran stay out of it.
    write_svg(out_svg, [c for c in cases if any((c, p) in med for p in peers)], peers, med)


def label(v):
    return f"{v:.0f}" if v >= 10 else f"{v:.2g}"


def write_svg(path, cases, peers, med):
    """Horizontal bars: per case and peer, how many times better echocast is
    (peer/echocast for lower-is-better, echocast/peer for higher-is-better),
    on a log scale centred on 1."""
    lo, hi = 0.25, 1000.0
    left, width, bar, gap = 300, 560, 11, 14
    rows = []
    for c in cases:
        e = med.get((c, "echocast"))
        for p in peers:
            v = med.get((c, p))
            if e is None or not v:
                rows.append((c, p, None))
                continue
            adv = v / e if CASES[c][4] == "lower" else e / v
            rows.append((c, p, adv))
    height = 70 + len(cases) * (len(peers) * bar + gap) + 40

    def x(v):
        v = min(max(v, lo), hi)
        return left + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * width

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">echocast vs peers: times better '
           f'per case (log scale; right of 1 = echocast better)</text>']
    for i, p in enumerate(peers):
        out.append(f'<rect x="{10 + i * 170}" y="32" width="12" height="12" fill="{COLORS.get(p, "#888")}"/>'
                   f'<text x="{26 + i * 170}" y="42">{p}</text>')
    top = 60
    for t in (0.25, 0.5, 1, 2, 5, 10, 100, 1000):
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{height - 30}" '
                   f'stroke="{"#000" if t == 1 else "#ddd"}" stroke-width="{1.5 if t == 1 else 1}"/>'
                   f'<text x="{xx:.1f}" y="{height - 15}" text-anchor="middle">{t:g}×</text>')
    y = top
    for c in cases:
        out.append(f'<text x="{left - 8}" y="{y + len(peers) * bar / 2 + 4:.1f}" text-anchor="end">'
                   f'{CASES[c][0]}</text>')
        for p in peers:
            adv = next(a for (cc, pp, a) in rows if cc == c and pp == p)
            if adv is not None:
                x0, x1 = sorted((x(1), x(adv)))
                out.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar - 2}" '
                           f'fill="{COLORS.get(p, "#888")}"/>')
                out.append(f'<text x="{x(max(adv, 1)) + 3:.1f}" y="{y + bar - 3}" font-size="9">{label(adv)}</text>')
            y += bar
        y += gap
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
