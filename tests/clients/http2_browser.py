"""Headless Chromium and WebSockets over HTTP/2: the page loaded over
https:// (ALPN h2), then a WebSocket from it. With --http2 on it is a stream
of the page's HTTP/2 connection (the inspector says `h2`) and echoes; with
--http2 no-websockets the browser opens it on a new HTTP/1.1 connection
(`wss`) and it still echoes; with --http2 refuse-websockets the extended
CONNECT gets 501 and the script prints what the browser then does (what
docs/http2.md says). Usage: http2_browser.py ECHOCAST_BINARY [SCREENSHOT.png]"""
import base64, json, os, ssl, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from webdriver import Chromium  # noqa: E402

BINARY = sys.argv[1]
SHOT = sys.argv[2] if len(sys.argv) > 2 else None
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE

TRY = """
const done = arguments[arguments.length - 1];
const proto = performance.getEntriesByType('navigation')[0].nextHopProtocol;
const ws = new WebSocket(`wss://${location.host}/from-the-browser?tag=` + arguments[0]);
const seen = [];
ws.onopen = () => ws.send('hello over ' + proto);
window.echoWs = ws;
ws.onmessage = (e) => { seen.push(e.data); done({page: proto, seen}); };
ws.onerror = () => seen.push('error');
ws.onclose = (e) => done({page: proto, seen, code: e.code, clean: e.wasClean});
setTimeout(() => done({page: proto, seen, code: 'timeout'}), 8000);
"""

CLOSE = """
const done = arguments[arguments.length - 1];
const ws = window.echoWs;
if (ws.readyState !== WebSocket.OPEN) { done(null); return; }
ws.onclose = (e) => done({code: e.code, clean: e.wasClean});
ws.close(1000, 'done');
setTimeout(() => done({code: 'timeout'}), 8000);
"""


def run(mode):
    log = open(f"/tmp/echocast-h2-browser-{mode}.log", "w")
    server = subprocess.Popen([BINARY, "--listen", "127.0.0.1:0", "--tls-self-signed", "--inspect", "on",
                               "--http2", mode], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        port = int(server.stdout.readline().strip().rsplit(":", 1)[1])
        with Chromium(["--ignore-certificate-errors"] + ([f"--log-net-log=/tmp/netlog-{mode}.json", "--net-log-capture-mode=Everything"] if os.environ.get("NETLOG") else [])) as b:
            b.wd("POST", f"{b.s}/url", {"url": f"https://localhost:{port}/"})
            result = b.js_async(TRY, mode)
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/connections", context=INSECURE) as r:
                conns = json.load(r)
            transports = [c.get("transport") for c in conns if "from-the-browser" in (c.get("path") or "")]
            if SHOT and mode == "on":
                time.sleep(0.5)
                png = b.wd("GET", f"{b.s}/screenshot")
                with open(SHOT, "wb") as f:
                    f.write(base64.b64decode(png))
            closed = b.js_async(CLOSE)
            if closed:
                result.update(closed)
        return result, transports
    finally:
        server.terminate()
        server.wait(10)


def main():
    result, transports = run("on")
    print("--http2 on:", result, transports)
    assert result["page"] == "h2", result
    assert result["seen"] == ["hello over h2"] and result["code"] == 1000 and result["clean"], result
    assert transports == ["h2"], transports
    print("ok  Chromium: the page over h2, its WebSocket a stream of it (inspector: h2), echoed")

    result, transports = run("no-websockets")
    print("--http2 no-websockets:", result, transports)
    assert result["page"] == "h2", result
    assert result["seen"] == ["hello over h2"] and result["code"] == 1000 and result["clean"], result
    assert transports == ["wss"], transports
    print("ok  Chromium: without the setting, the WebSocket falls back to HTTP/1.1 (wss) and echoes")

    result, transports = run("refuse-websockets")
    print("--http2 refuse-websockets:", result, transports)
    assert result["page"] == "h2", result
    # What Chromium does (docs/http2.md says it): no retry over HTTP/1.1,
    # the WebSocket fails (error event, close 1006).
    assert result["seen"] == ["error"] and result["code"] == 1006 and transports == [], result
    print("ok  Chromium with the setting and a 501: no fallback, the WebSocket fails (error, 1006)")


if __name__ == "__main__":
    main()
