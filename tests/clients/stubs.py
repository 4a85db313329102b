"""The ticker stubs (examples/stubs/ticker.json) from Python websockets:
refused without its token (401), then with it: the subprotocol agreed, the
greeting, subscribe and its stream, unsubscribe by state, and the goodbye
with close 4001; a stub added over HTTP answers a new connection.
Usage: stubs.py HOST:PORT"""
import json, sys, urllib.request
from websockets.sync.client import connect
from websockets.exceptions import InvalidStatus

addr = sys.argv[1]
try:
    connect(f"ws://{addr}/feed")
    raise AssertionError("the upgrade should be refused without the token")
except InvalidStatus as e:
    assert e.response.status_code == 401, e.response.status_code
    assert e.response.body == b"no token", e.response.body

auth = {"Authorization": "Bearer good"}
with connect(f"ws://{addr}/feed?user=py", subprotocols=["feed.v1"], additional_headers=auth) as ws:
    assert ws.subprotocol == "feed.v1", ws.subprotocol
    hello = json.loads(ws.recv(timeout=5))
    assert hello["type"] == "hello" and hello["user"] == "py", hello
    ws.send(json.dumps({"type": "subscribe", "id": "abc", "channel": "prices"}))
    assert json.loads(ws.recv(timeout=5)) == {"type": "subscribed", "id": "abc", "channel": "prices"}
    ticks = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
    assert [t["n"] for t in ticks] == [1, 2] and all(t["id"] == "abc" for t in ticks), ticks
    ws.send(json.dumps({"type": "unsubscribe"}))
    while (m := json.loads(ws.recv(timeout=5)))["type"] != "unsubscribed":
        assert m["type"] == "tick", m
    ws.send("bye py")
    assert ws.recv(timeout=5) == "goodbye py"
    try:
        ws.recv(timeout=5)
        raise AssertionError("the stub should close")
    except Exception:
        assert ws.close_code == 4001 and ws.close_reason == "bye", (ws.close_code, ws.close_reason)

stub = {"path": "/py", "on": {"text": "hi"}, "reply": [{"text": "hello {{query.name}}"}]}
req = urllib.request.Request(f"http://{addr}/stubs", data=json.dumps(stub).encode(), method="POST")
with urllib.request.urlopen(req, timeout=10) as r:
    assert r.status == 201, r.status
with connect(f"ws://{addr}/py?name=ann") as ws:
    ws.send("hi")
    assert ws.recv(timeout=5) == "hello ann"
print("stubs.py: the ticker refused without a token, then greeted, streamed, unsubscribed and closed 4001; "
      "a stub added over HTTP answered")
