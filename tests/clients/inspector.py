"""The frame inspector from a real client (issue 19): Python websockets with
a custom header and an Authorization header, seen in /connections and
/connections/ID (order and case kept, the credential redacted), its frames
in /frames after it is gone, and a live /.inspect subscriber filtered by
path. Usage: inspect.py HOST:PORT"""
import json, sys, time, urllib.error, urllib.request
from websockets.sync.client import connect

addr = sys.argv[1]
base = f"http://{addr}"


def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


with connect(f"ws://{addr}/.inspect?path=/py-inspect") as live, \
     connect(f"ws://{addr}/py-inspect?fragment=4", compression=None,
             additional_headers={"X-Request-Id": "Req-42", "Authorization": "Basic dXNlcjpwYXNz"}) as ws:
    ws.send("hello inspector")
    assert ws.recv(timeout=5) == "hello inspector"
    mine = [c for c in get("/connections") if c["path"] == "/py-inspect?fragment=4"]
    assert len(mine) == 1, mine
    c = mine[0]
    assert c["state"] == "open" and c["knobs"] == "fragment=4" and c["transport"] == "ws", c
    assert c["messages_in"] == 1 and c["messages_out"] == 1, c
    detail = get(f"/connections/{c['id']}")
    headers = detail["request"]["headers"]
    names = [h[0] for h in headers]
    assert "X-Request-Id" in names, names
    assert ["X-Request-Id", "Req-42"] in headers, headers
    assert ["Authorization", "<redacted, 18 bytes>"] in headers, headers
    assert names.index("Host") < names.index("X-Request-Id"), "order as received"
    # Live: open, the frame in and its message, the echo's message and its
    # frames of 4 bytes.
    seen = [json.loads(live.recv(timeout=5)) for _ in range(1 + 2 + 1 + 4)]
    assert seen[0]["event"] == "open" and seen[0]["path"] == "/py-inspect?fragment=4", seen
    assert seen[1]["dir"] == "in" and seen[1]["preview"] == "hello inspector" and seen[1]["masked"], seen
    assert seen[2]["event"] == "message" and seen[2]["text"] == "hello inspector", seen
    assert seen[3]["event"] == "message" and seen[3]["dir"] == "out" and seen[3]["frames"] == 4, seen
    outs = seen[4:]
    assert [o["opcode"] for o in outs] == ["text", "continuation", "continuation", "continuation"], outs
    assert "".join(o["preview"] for o in outs) == "hello inspector", outs
    conn = c["id"]

frames = get(f"/frames?conn={conn}&limit=1000")
assert frames[-1]["event"] == "closed" and frames[-1]["received"] == 1000, frames[-1]
assert any(f.get("opcode") == "close" and f["dir"] == "in" and f["close_code"] == 1000 for f in frames)
print(f"inspector.py: /connections, /connections/{conn} (redacted Authorization, custom header), "
      f"{len(frames)} records in /frames, live /.inspect?path= all checked")

# Issue 26: messages as the client meant them, and the inspector acting.


def post(path, body=b"", ctype="text/plain"):
    req = urllib.request.Request(base + path, data=body, method="POST",
                                 headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def conn_id(path):
    mine = [c for c in get("/connections") if c["path"] == path]
    assert len(mine) == 1, mine
    return mine[0]["id"]


# With permessage-deflate (websockets offers it by default): the frame's
# preview is compressed bytes, the message record has the text.
text = "hello inspector, this is a longer message " * 3
with connect(f"ws://{addr}/py-deflate") as ws:
    ws.send(text)
    assert ws.recv(timeout=5) == text
    cid = conn_id("/py-deflate")
    msgs = get(f"/messages?conn={cid}")
    assert [(m["dir"], m["text"], m["compressed"]) for m in msgs] == \
        [("in", text, True), ("out", text, True)], msgs
    assert all(m["wire_len"] < m["len"] for m in msgs), msgs
    # Send, ping and close from the inspector to this client.
    status, answer = post(f"/connections/{cid}/send", "from the inspector".encode())
    assert status == 200 and answer["conn"] == cid and answer["queued"] > 0, (status, answer)
    assert ws.recv(timeout=5) == "from the inspector"
    status, answer = post(f"/connections/{cid}/send?fragment=5", b"\x00\x01\x02binary",
                          "application/octet-stream")
    assert status == 200, (status, answer)
    assert ws.recv(timeout=5) == b"\x00\x01\x02binary"
    status, _ = post(f"/connections/{cid}/ping", b"ping from inspector")
    assert status == 200
    status, _ = post(f"/connections/{cid}/close", json.dumps({"code": 4001, "reason": "bye"}).encode(),
                     "application/json")
    assert status == 200
    try:
        ws.recv(timeout=5)
        raise AssertionError("the connection should close")
    except Exception as e:  # ConnectionClosedOK/Error
        assert ws.close_code == 4001 and ws.close_reason == "bye", (e, ws.close_code, ws.close_reason)
    time.sleep(0.2)
    records = get(f"/frames?conn={cid}&limit=1000")
    actions = [r["action"] for r in records if r.get("event") == "action"]
    assert actions == ["send text message of 18 bytes", "send binary message of 9 bytes in frames of 5",
                       "ping with 19 bytes", 'close 4001 "bye"'], actions
    # The client answered our ping with a pong.
    assert any(r.get("opcode") == "pong" and r["dir"] == "in" for r in records), records

# A fragmented ping (a raw frame): websockets fails the connection with 1002,
# and the inspector records the raw frame and its close.
with connect(f"ws://{addr}/py-raw", compression=None) as ws:
    cid = conn_id("/py-raw")
    status, _ = post(f"/connections/{cid}/frames",
                     json.dumps([{"opcode": "ping", "fin": False, "payload": "x"}]).encode(),
                     "application/json")
    assert status == 200
    # (websockets fails the connection at once, so it may be gone from
    # /connections already: tests/inspect_actions.rs checks `tainted`.)
    try:
        ws.recv(timeout=5)
        raise AssertionError("websockets should fail the connection")
    except Exception:
        pass
    time.sleep(0.3)
    records = get(f"/frames?conn={cid}&limit=1000")
    raw = [r for r in records if r.get("raw")]
    assert len(raw) == 1 and raw[0]["opcode"] == "ping" and raw[0]["fin"] is False, records
    closes = [r for r in records if r.get("opcode") == "close" and r["dir"] == "in"]
    assert closes and closes[0]["close_code"] == 1002, records
    print(f"inspector.py: deflated text readable in /messages; send, send?fragment, ping, close 4001 "
          f"reached websockets; a fragmented ping made it close with 1002: {closes[0]['close_reason']!r}")
