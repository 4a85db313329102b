"""The frame inspector from a real client (issue 19): Python websockets with
a custom header and an Authorization header, seen in /connections and
/connections/ID (order and case kept, the credential redacted), its frames
in /frames after it is gone, and a live /.inspect subscriber filtered by
path. Usage: inspect.py HOST:PORT"""
import json, sys, urllib.request
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
    # Live: open, the frame in, the echo in frames of 4 bytes.
    seen = [json.loads(live.recv(timeout=5)) for _ in range(2 + 4)]
    assert seen[0]["event"] == "open" and seen[0]["path"] == "/py-inspect?fragment=4", seen
    assert seen[1]["dir"] == "in" and seen[1]["preview"] == "hello inspector" and seen[1]["masked"], seen
    outs = seen[2:]
    assert [o["opcode"] for o in outs] == ["text", "continuation", "continuation", "continuation"], outs
    assert "".join(o["preview"] for o in outs) == "hello inspector", outs
    conn = c["id"]

frames = get(f"/frames?conn={conn}&limit=1000")
assert frames[-1]["event"] == "closed" and frames[-1]["received"] == 1000, frames[-1]
assert any(f.get("opcode") == "close" and f["dir"] == "in" and f["close_code"] == 1000 for f in frames)
print(f"inspector.py: /connections, /connections/{conn} (redacted Authorization, custom header), "
      f"{len(frames)} records in /frames, live /.inspect?path= all checked")
