#!/usr/bin/env python3
"""A HAR recorded by headless Chromium itself, replayed by echocast to a
client that picks other ids (docs/stubs.md, "From a browser's HAR file").

A real server that is not echocast (Python websockets: a greeting, then
JSON-RPC-style answers carrying the caller's id back, 20 ms later, under
the subprotocol rpc.v1) is driven by a page in Chromium. The HAR is built
from the DevTools protocol's events as DevTools builds its own
(Network.webSocketCreated, ...HandshakeResponseReceived, ...FrameSent and
...FrameReceived, read from chromedriver's performance log). Then the real
server is stopped, echocast is started with --stubs on the HAR, and another
client (Python websockets) with other ids gets the same answers with its
own ids. Usage: har_browser.py BIN (run with the venv's python)."""
import asyncio, datetime, http.server, json, os, socket, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webdriver import Chromium, free_port  # noqa: E402

if len(sys.argv) > 2 and sys.argv[1] == "serve":
    # The real server, in a process of its own so the test can stop it.
    from websockets.asyncio.server import serve

    async def rpc(ws):
        await ws.send(json.dumps({"hello": "server"}))
        async for text in ws:
            call = json.loads(text)
            await asyncio.sleep(0.02)
            await ws.send(json.dumps({"id": call["id"], "result": sum(call["params"]), "seq": 1}))

    async def main(port):
        async with serve(rpc, "127.0.0.1", port, subprotocols=["rpc.v1"]):
            print("ready", flush=True)
            await asyncio.Future()

    asyncio.run(main(int(sys.argv[2])))
    sys.exit(0)

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/echocast"
ws_port, page_port = free_port(), free_port()
PAGE = f"""<!doctype html><title>rpc</title><script>
window.results = [];
const ws = new WebSocket("ws://127.0.0.1:{ws_port}/rpc?token=t", ["rpc.v1"]);
const calls = [[2, 3], [10, 20]];
let n = 0;
ws.onmessage = e => {{
  const m = JSON.parse(e.data);
  if (m.result !== undefined) window.results.push(m);
  if (n < calls.length) ws.send(JSON.stringify({{id: ++n, method: "add", params: calls[n - 1]}}));
  else window.done = true;
}};
</script>"""


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_for(what, fn, within=60):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def har_from_events(events):
    """Chrome's HAR WebSocket entries, from the DevTools events."""
    sockets = {}
    for e in events:
        method, p = e["method"], e["params"]
        rid = p.get("requestId")
        if method == "Network.webSocketCreated":
            sockets[rid] = {"url": p["url"], "messages": [], "offset": None, "started": None, "response": None}
        elif rid not in sockets:
            continue
        elif method == "Network.webSocketWillSendHandshakeRequest":
            sockets[rid]["offset"] = p["wallTime"] - p["timestamp"]
            sockets[rid]["started"] = p["wallTime"]
        elif method == "Network.webSocketHandshakeResponseReceived":
            sockets[rid]["response"] = p["response"]
        elif method in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
            sockets[rid]["messages"].append((method.endswith("Sent"), p["timestamp"], p["response"]))
    entries = []
    for s in sockets.values():
        offset = s["offset"] or 0.0
        started = datetime.datetime.fromtimestamp(s["started"] or time.time(), datetime.timezone.utc)
        response = s["response"] or {"status": 0, "headers": {}}
        entries.append({
            "_resourceType": "websocket",
            "startedDateTime": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request": {"method": "GET", "url": s["url"], "headers": []},
            "response": {"status": response["status"],
                         "headers": [{"name": k, "value": v} for k, v in response["headers"].items()]},
            "_webSocketMessages": [
                {"type": "send" if sent else "receive", "time": ts + offset,
                 "opcode": frame["opcode"], "data": frame["payloadData"]}
                for sent, ts, frame in s["messages"]],
        })
    return {"log": {"version": "1.2", "creator": {"name": "tests/clients/har_browser.py", "version": "1"},
                    "entries": [{"request": {"method": "GET", "url": f"http://127.0.0.1:{page_port}/"},
                                 "response": {"status": 200, "headers": []}}] + entries}}


real = subprocess.Popen([sys.executable, __file__, "serve", str(ws_port)], stdout=subprocess.PIPE, text=True)
assert real.stdout.readline().strip() == "ready"
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Page)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
workdir = tempfile.mkdtemp(prefix="echocast-har-")
echocast = None
try:
    with Chromium(capabilities={"goog:loggingPrefs": {"performance": "ALL"}}) as browser:
        browser.wd("POST", f"{browser.s}/url", {"url": f"http://127.0.0.1:{page_port}/"})
        wait_for("the page's two calls", lambda: browser.js("return window.done === true"))
        results = browser.js("return window.results")
        assert results == [{"id": 1, "result": 5, "seq": 1}, {"id": 2, "result": 30, "seq": 1}], results
        log = browser.wd("POST", f"{browser.s}/se/log", {"type": "performance"})
    events = [json.loads(entry["message"])["message"] for entry in log]
    har = har_from_events(events)
    ws_entries = [e for e in har["log"]["entries"] if e.get("_resourceType") == "websocket"]
    assert len(ws_entries) == 1 and len(ws_entries[0]["_webSocketMessages"]) == 5, json.dumps(har, indent=1)
    path = os.path.join(workdir, "session.har")
    with open(path, "w") as f:
        json.dump(har, f)

    # The real server goes: what answers now is the recording.
    real.kill()
    real.wait()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", ws_port)) != 0, "the real server is still there"

    stubs = json.loads(subprocess.run([BIN, "stubs-from-har", path], check=True, capture_output=True,
                                      text=True).stdout)
    assert stubs["upgrades"] == [{"path": "/rpc", "accept": {"subprotocol": "rpc.v1"}}], stubs

    echocast = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--stubs", path], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    addr = echocast.stdout.readline().strip().removeprefix("listening on ws://")
    from websockets.sync.client import connect
    for run in range(2):
        with connect(f"ws://{addr}/rpc?token=other", subprotocols=["rpc.v1"], open_timeout=10) as ws:
            assert ws.subprotocol == "rpc.v1", ws.subprotocol
            assert json.loads(ws.recv(timeout=10)) == {"hello": "server"}
            for new_id, params, result in [(f"run{run}-a", [2, 3], 5), (1000 + run, [10, 20], 30)]:
                start = time.monotonic()
                ws.send(json.dumps({"method": "add", "params": params, "id": new_id}))
                got = json.loads(ws.recv(timeout=10))
                assert got == {"id": new_id, "result": result, "seq": 1}, got
                waited = time.monotonic() - start
                assert waited >= 0.015, f"answered after {waited:.3f} s: the recorded 20 ms are kept"
    print(f"har_browser: Chromium's HAR ({len(ws_entries[0]['_webSocketMessages'])} messages) replayed "
          "twice to a client with other ids: OK")
finally:
    if real.poll() is None:
        real.kill()
    if echocast is not None:
        echocast.kill()
    httpd.shutdown()
