#!/usr/bin/env python3
"""End-to-end: the built-in page in headless Chromium, two tabs in one room.

Starts echocast on port 0 and chromedriver on a free port, opens the page in two
windows of one browser with ?room=..., types a message into the first window and
waits for it to appear in the second. Standard library only (WebDriver is HTTP).

With --tls, echocast runs with --tls-self-signed and the page is loaded over
https:// (Chromium with --ignore-certificate-errors); the page then speaks
wss:// by itself, and the echoes are checked over wss:// and plain ws:// on the
same port.
"""
import os, socket, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients"))
from webdriver import Chromium  # noqa: E402

ARGS = [a for a in sys.argv[1:] if a != "--tls"]
TLS = "--tls" in sys.argv[1:]
BIN = ARGS[0] if ARGS else "target/release/echocast"
SCHEME = "https" if TLS else "http"
DEADLINE = time.monotonic() + 90


def wait_for(what, fn):
    while time.monotonic() < DEADLINE:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


server = subprocess.Popen([BIN, "--listen", "127.0.0.1:0"] + (["--tls-self-signed"] if TLS else []),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = server.stdout.readline().strip()
addr = line.removeprefix("listening on wss://" if TLS else "listening on ws://")
assert addr != line, line
browser = None


try:
    browser = Chromium(["--ignore-certificate-errors"] if TLS else [])
    wd, s = browser.wd, browser.s
    page = f"{SCHEME}://{addr}/?room=e2e"

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
    print(f"browser e2e ({SCHEME}): a message typed in one tab appeared in the other")
    if TLS:
        url = wd("POST", f"{s}/execute/sync", {"script": "return ws.url", "args": []})
        assert url.startswith("wss://"), url

    # The knobs field: prefilled from ?knobs=, sent as the socket's query.
    wd("POST", f"{s}/url", {"url": f"{SCHEME}://{addr}/?knobs=greeting%3Dhi%2520there%26repeat%3D2"})
    wait_for("knobs tab open", lambda: state() == "open")
    url = wd("POST", f"{s}/execute/sync", {"script": "return ws.url", "args": []})
    assert url.endswith("/?greeting=hi%20there&repeat=2"), url
    wait_for("the greeting arrives first", lambda: "\u2190 hi there" in log_text())
    el = wd("POST", f"{s}/element", {"using": "css selector", "value": "#msg"})
    wd("POST", f"{s}/element/{next(iter(el.values()))}/value", {"text": "twice\ue007"})
    wait_for("repeat=2 echoes twice", lambda: log_text().count("\u2190 twice") == 2)
    print(f"browser e2e ({SCHEME}): the knobs field (greeting, repeat=2) shapes the page's socket")

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
    for url in [f"wss://{addr}/", f"ws://{addr}/"] if TLS else [f"ws://{addr}/"]:
        if url.startswith("ws://") and TLS:
            # An https page may not open ws:// (mixed content): check the plain
            # transport from a page loaded over http on the same port.
            wd("POST", f"{s}/url", {"url": f"http://{addr}/?room=plain"})
            wait_for("plain page open", lambda: state() == "open")
        result = wd("POST", f"{s}/execute/async", {"script": echo_js, "args": [url]})
        assert result.startswith("ok permessage-deflate"), (url, result)
        print(f"browser e2e: {url} deflate agreed ({ext}); 12 echoes, 1 B to 16 MiB, byte for byte")

    # The Inspector view: the page's own connection is listed; selecting it
    # shows its frames; a client that breaks a rule shows up with the rule.
    wd("POST", f"{s}/url", {"url": f"{SCHEME}://{addr}/?knobs=fragment%3D3"})
    wait_for("inspector page open", lambda: state() == "open")
    js = lambda script: wd("POST", f"{s}/execute/sync", {"script": script, "args": []})
    summary = wd("POST", f"{s}/element", {"using": "css selector", "value": "#inspector summary"})
    wd("POST", f"{s}/element/{next(iter(summary.values()))}/click", {})
    wait_for("the connections table", lambda: js(
        "return [...document.querySelectorAll('#conns tbody tr')].some(r => r.cells[1].textContent.endsWith('?fragment=3'))"))
    js("[...document.querySelectorAll('#conns tbody tr')].find(r => r.cells[1].textContent.endsWith('?fragment=3')).click()")
    el = wd("POST", f"{s}/element", {"using": "css selector", "value": "#msg"})
    wd("POST", f"{s}/element/{next(iter(el.values()))}/value", {"text": "inspected\ue007"})
    # Chromium compresses (permessage-deflate): the view shows the messages as
    # the page meant them, text and all; with the frames shown, RSV1 on the
    # first frame, and the echo goes back in frames of at most 3 bytes.
    frames = lambda: js("return document.getElementById('frames').textContent")
    wait_for("the page's own compressed message, as its text",
             lambda: "\u2192 text 9 B (compressed, " in frames() and '"inspected"' in frames())
    wait_for("its echo, in 3 frames", lambda: "\u2190 text 9 B (compressed, " in frames() and " frames)" in frames())
    assert "FIN" not in frames(), frames()
    js("document.getElementById('show-frames').click()")
    wait_for("the frames of the selected connection", lambda: "\u2192 text FIN RSV1 masked " in frames())
    wait_for("the echo, in frames of 3 bytes", lambda: "\u2190 continuation FIN " in frames())
    # The direction filter keeps one way.
    js("const d = document.getElementById('dir-filter'); d.value = 'in'; d.dispatchEvent(new Event('input'))")
    wait_for("incoming only", lambda: "\u2190" not in frames() and "\u2192 text 9 B" in frames())
    # Messages open to the frames that carried them.
    js("const d = document.getElementById('dir-filter'); d.value = ''; d.dispatchEvent(new Event('input'))")
    js("document.getElementById('show-frames').click()")
    wait_for("messages only again", lambda: "FIN" not in frames() and "\u2190 text 9 B" in frames())
    js("[...document.querySelectorAll('#frames summary')].find(s => s.textContent.includes('\u2192 text 9 B')).click()")
    wait_for("the message opened to its frame", lambda: "\u2192 text FIN RSV1 masked " in frames())
    host, port = addr.rsplit(":", 1)

    def client(path):
        sock = socket.create_connection((host, int(port)))
        if TLS:
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
        return sock

    def read_exact(sock, n):
        out = b""
        while len(out) < n:
            got = sock.recv(n - len(out))
            assert got, "EOF"
            out += got
        return out

    def read_frame(sock):
        b0, b1 = read_exact(sock, 2)
        n = b1 & 127
        if n == 126:
            n = int.from_bytes(read_exact(sock, 2), "big")
        elif n == 127:
            n = int.from_bytes(read_exact(sock, 8), "big")
        return b0 & 15, read_exact(sock, n)

    # Acting from the page on another client (a plain socket client here):
    # the send box reaches it, the close button closes it with the code typed.
    other = client("/page-target")
    other.settimeout(10)
    other.sendall(b"GET /page-target HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += read_exact(other, 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    wait_for("the other client listed", lambda: js(
        "return [...document.querySelectorAll('#conns tbody tr')].some(r => r.cells[1].textContent === '/page-target')"))
    js("[...document.querySelectorAll('#conns tbody tr')].find(r => r.cells[1].textContent === '/page-target').click()")
    el = wd("POST", f"{s}/element", {"using": "css selector", "value": "#act-text"})
    wd("POST", f"{s}/element/{next(iter(el.values()))}/value", {"text": "sent from the page"})
    btn = wd("POST", f"{s}/element", {"using": "css selector", "value": "#act-send"})
    wd("POST", f"{s}/element/{next(iter(btn.values()))}/click", {})
    assert read_frame(other) == (1, b"sent from the page")
    wait_for("the answer shown", lambda: "send: 200" in js("return document.getElementById('act-result').textContent"))
    js("document.getElementById('act-code').value = ''")
    el = wd("POST", f"{s}/element", {"using": "css selector", "value": "#act-code"})
    wd("POST", f"{s}/element/{next(iter(el.values()))}/value", {"text": "4002"})
    btn = wd("POST", f"{s}/element", {"using": "css selector", "value": "#act-close"})
    wd("POST", f"{s}/element/{next(iter(btn.values()))}/click", {})
    op, payload = read_frame(other)
    assert op == 8 and int.from_bytes(payload[:2], "big") == 4002 and payload[2:] == b"bye", (op, payload)
    wait_for("the action in the timeline", lambda: "action  close 4002" in frames())
    other.close()
    print(f"browser e2e ({SCHEME}): a message opens to its frames; the page's send box and close button "
          f"reached another client (close 4002)")
    raw = client("/bad")
    raw.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                b"\x81\x02hi")  # unmasked
    wait_for("the failed connection and its rule", lambda: "RFC 6455 \u00a75.1" in js("return document.getElementById('errors').textContent"))
    raw.close()
    print(f"browser e2e ({SCHEME}): the Inspector view lists connections, shows a compressed message as its text and the frames that carried it, and a failed client's rule")
finally:
    if browser:
        browser.close()
    server.terminate()
    server.wait(10)
