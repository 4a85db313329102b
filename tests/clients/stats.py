"""/stats and /metrics against a known amount of traffic (a fresh server):
/metrics parsed with prometheus_client's own text parser, as a scraper would,
and /stats as JSON; both checked against what this script did. Then
subprotocol selection as Python websockets sees it.

    python stats.py HOST:PORT      (server started with --subprotocol chat.v1)
"""
import json
import socket
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

addr = sys.argv[1]
host, port = addr.rsplit(":", 1)

# Traffic: 10 echoes of 100 bytes (text), one room of two members with 3
# broadcasts of 50 bytes, closes with 1000 and 4000, one malformed request
# (400), one plain GET (426).
with connect(f"ws://{addr}/", compression=None) as ws:
    for _ in range(10):
        ws.send("x" * 100)
        assert ws.recv() == "x" * 100
    ws.close(1000)
with connect(f"ws://{addr}/broadcast/r", compression=None) as a, connect(
    f"ws://{addr}/broadcast/r", compression=None
) as b:
    time.sleep(0.1)
    for _ in range(3):
        a.send(b"y" * 50)
        assert a.recv() == b"y" * 50 and b.recv() == b"y" * 50
    b.close(4000, "bye")
    a.close(1000)
for raw in (b"garbage\r\n\r\n", b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"):
    s = socket.create_connection((host, int(port)))
    s.sendall(raw)
    while s.recv(4096):
        pass
    s.close()
# The server counts a connection's closes and HTTP answer when it ends.
time.sleep(0.5)

# Subprotocols: the client's order, none when nothing matches.
with connect(f"ws://{addr}/", subprotocols=["mqtt", "chat.v1"]) as ws:
    assert ws.subprotocol == "chat.v1", ws.subprotocol
# Nothing in common: the upgrade succeeds and names none (RFC 6455 §4.2.2).
with connect(f"ws://{addr}/", subprotocols=["graphql-ws"]) as ws:
    assert ws.subprotocol is None, ws.subprotocol
time.sleep(0.3)

metrics = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
samples = {}
for fam in text_string_to_metric_families(metrics):
    for s in fam.samples:
        samples[(s.name, tuple(sorted(s.labels.items())))] = s.value


def m(name, **labels):
    return samples.get(("echocast_" + name, tuple(sorted(labels.items()))), 0)


assert m("closes_sent_total", code="1000") == 4
# 10 echoes + 3 broadcasts received; 10 echoes + 3 x 2 deliveries sent.
assert m("messages_received_total") == 13, metrics
assert m("messages_sent_total") == 16, metrics
assert m("message_bytes_received_total") == 10 * 100 + 3 * 50
assert m("message_bytes_sent_total") == 10 * 100 + 6 * 50
assert m("closes_received_total", code="1000") == 4
assert m("closes_received_total", code="4000") == 1
assert m("closes_sent_total", code="4000") == 1  # echoed back
assert m("http_responses_total", status="101") == 5
assert m("http_responses_total", status="400") == 1
assert m("http_responses_total", status="426") == 1
assert m("handshake_failures_total", reason="malformed") == 1
assert m("handshake_failures_total", reason="not_websocket") == 1
# Frames: 13 data + 5 closes in; 16 data + 5 closes out.
assert m("frames_received_total") == 18, metrics
assert m("frames_sent_total") == 21, metrics
assert m("connections", kind="echo") == 0
assert m("connections", kind="handshaking") == 1  # this very request

stats = json.loads(urllib.request.urlopen(f"http://{addr}/stats").read())
assert stats["messages"] == {"in": 13, "out": 16}, stats
assert stats["bytes"] == {"in": 1150, "out": 1300}, stats
# Two more 1000s: the two subprotocol clients.
assert stats["closes"]["received"] == {"1000": 4, "4000": 1}, stats
assert stats["closes"]["sent"] == {"1000": 4, "4000": 1}, stats
assert stats["http_answers"]["101"] == 5, stats
assert stats["handshake_failures"]["malformed"] == 1, stats
assert stats["frames"]["in"] == m("frames_received_total")
print(f"stats.py: /metrics ({len(samples)} samples) and /stats match the traffic; subprotocols selected")
