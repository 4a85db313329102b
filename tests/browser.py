#!/usr/bin/env python3
"""End-to-end: the built-in page in headless Chromium, two tabs in one room.

Starts echocast on port 0 and chromedriver on a free port, opens the page in two
windows of one browser with ?room=..., types a message into the first window and
waits for it to appear in the second. Standard library only (WebDriver is HTTP).
"""
import json, os, socket, subprocess, sys, tempfile, time, urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/echocast"
DEADLINE = time.monotonic() + 90


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wd(method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{DRIVER_PORT}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["value"]


def wait_for(what, fn):
    while time.monotonic() < DEADLINE:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


server = subprocess.Popen([BIN, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = server.stdout.readline().strip().removeprefix("listening on ws://")
DRIVER_PORT = free_port()
driver = subprocess.Popen(["chromedriver", f"--port={DRIVER_PORT}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
profile = tempfile.mkdtemp(prefix="echocast-chromium-")
session = None


def _ready():
    try:
        return wd("GET", "/status").get("ready")
    except OSError:
        return False


try:
    wait_for("chromedriver", _ready)
    caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={profile}"],
    }}}}
    session = wd("POST", "/session", caps)["sessionId"]
    s = f"/session/{session}"
    page = f"http://{addr}/?room=e2e"

    def state():
        return wd("POST", f"{s}/execute/sync", {"script": "return document.getElementById('state').textContent", "args": []})

    def log_text():
        return wd("POST", f"{s}/execute/sync", {"script": "return document.getElementById('log').textContent", "args": []})

    wd("POST", f"{s}/url", {"url": page})
    first = wd("GET", f"{s}/window")
    wait_for("tab 1 open", lambda: state() == "open")
    second = wd("POST", f"{s}/window/new", {"type": "tab"})["handle"]
    wd("POST", f"{s}/window", {"handle": second})
    wd("POST", f"{s}/url", {"url": page})
    wait_for("tab 2 open", lambda: state() == "open")

    # Type into tab 1 like a user: focus the field, send keys, press the button.
    wd("POST", f"{s}/window", {"handle": first})
    el = wd("POST", f"{s}/element", {"using": "css selector", "value": "#msg"})
    el_id = next(iter(el.values()))
    wd("POST", f"{s}/element/{el_id}/value", {"text": "hello from tab one"})
    btn = wd("POST", f"{s}/element", {"using": "css selector", "value": "#send"})
    wd("POST", f"{s}/element/{next(iter(btn.values()))}/click", {})
    wait_for("tab 1 sees its own message", lambda: "\u2190 hello from tab one" in log_text())

    wd("POST", f"{s}/window", {"handle": second})
    wait_for("tab 2 receives the message", lambda: "\u2190 hello from tab one" in log_text())
    print("browser e2e: a message typed in one tab appeared in the other")

    # permessage-deflate: Chromium offers it; the page's socket agreed it, and
    # echoes of text and binary, 1 B to 16 MiB, come back byte for byte.
    ext = wd("POST", f"{s}/execute/sync", {"script": "return ws.extensions", "args": []})
    assert ext.startswith("permessage-deflate"), ext
    wd("POST", f"{s}/timeouts", {"script": 120000})
    echo_js = """
const done = arguments[arguments.length - 1];
const cases = [];
for (const n of [1, 125, 126, 65536, 1 << 20, 16 << 20]) {
  cases.push("\u00e9".repeat(n >> 1) + "x".repeat(n & 1));
  const b = new Uint8Array(n);
  for (let k = 0; k < n; k++) b[k] = (k * 31 + (k >> 9)) & 255;
  cases.push(b);
}
const e = new WebSocket(arguments[0]);
e.binaryType = "arraybuffer";
let i = 0;
e.onopen = () => e.send(cases[0]);
e.onerror = () => done("socket error");
e.onmessage = (m) => {
  const c = cases[i];
  let ok;
  if (typeof c === "string") ok = m.data === c;
  else {
    const g = new Uint8Array(m.data);
    ok = g.length === c.length && g.every((v, k) => v === c[k]);
  }
  if (!ok) return done("echo " + i + " differs");
  if (++i === cases.length) { done("ok " + e.extensions); e.close(); return; }
  e.send(cases[i]);
};
"""
    result = wd("POST", f"{s}/execute/async", {"script": echo_js, "args": [f"ws://{addr}/"]})
    assert result.startswith("ok permessage-deflate"), result
    print(f"browser e2e: deflate agreed ({ext}); 12 echoes, 1 B to 16 MiB, byte for byte")
finally:
    if session:
        try:
            wd("DELETE", f"/session/{session}")
        except OSError:
            pass
    driver.terminate()
    server.terminate()
    driver.wait(10)
    server.wait(10)
