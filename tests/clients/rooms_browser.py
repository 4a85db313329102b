#!/usr/bin/env python3
"""Rooms over HTTP in headless Chromium (issue 20): the browser's own
EventSource, on a page of another origin (a second echocast: another port),
subscribed with ?drop=2 to a room on the first. Messages are published by
fetch() (a JSON POST: CORS preflight), by a WebSocket member in the page and
by POSTs from here; the server ends the stream after every two events, and
EventSource must reconnect by itself with Last-Event-ID and receive every
message once, in order. Standard library only (WebDriver is HTTP).
Usage: rooms_browser.py BIN."""
import json, os, subprocess, sys, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from webdriver import Chromium  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/echocast"
DEADLINE = time.monotonic() + 120


def start(*args):
    p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    addr = line.removeprefix("listening on ws://")
    assert addr != line, line
    return p, addr


def wait_for(what, fn):
    while time.monotonic() < DEADLINE:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def post(addr, room, body):
    req = urllib.request.Request(f"http://{addr}{room}", data=body.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def stats(addr):
    with urllib.request.urlopen(f"http://{addr}/stats", timeout=10) as r:
        return json.load(r)


rooms, A = start()
other, B = start()
browser = None
try:
    browser = Chromium()
    js, s = browser.js, browser.s

    # A page of another origin (the second server's /healthz).
    browser.wd("POST", f"{s}/url", {"url": f"http://{B}/healthz"})
    room = "/broadcast/browser"
    js("""
        const base = arguments[0];
        window.got = []; window.opens = 0; window.errors = [];
        const es = new EventSource(base + '?drop=2');
        es.onopen = () => window.opens++;
        es.onmessage = e => window.got.push([e.lastEventId, e.data]);
        es.addEventListener('gap', e => window.got.push(['gap', e.data]));
        window.es = es;
    """, f"http://{A}{room}")
    wait_for("the EventSource to open", lambda: js("return window.opens") >= 1)
    wait_for("the subscriber in the room", lambda: stats(A)["connections"]["events"] >= 1)
    # 1: fetch with a JSON body (a preflight first), from the page's origin.
    browser.js_async("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/json'},
                             body: '{"from": "fetch"}'})
            .then(r => r.json()).then(j => { window.fetched = j; done(j.id); })
            .catch(e => { window.fetched = String(e); done(-1); });
    """, f"http://{A}{room}")
    assert js("return window.fetched") == {"room": room, "id": 1, "members": 1}, js("return window.fetched")
    # 2, 3: a WebSocket member in the page.
    browser.js_async("""
        const done = arguments[arguments.length - 1];
        const ws = new WebSocket(arguments[0]);
        let n = 0;
        ws.onopen = () => { ws.send('ws one'); ws.send('ws two\\nwith a second line'); };
        ws.onmessage = () => { if (++n == 2) { ws.close(); done(true); } };
    """, f"ws://{A}{room}")
    # 4, 5, 6: POSTs from here, while EventSource comes and goes.
    for i in range(4, 7):
        assert post(A, room, f"post {i}")["id"] == i
        time.sleep(0.3)
    want = [["1", '{"from": "fetch"}'], ["2", "ws one"], ["3", "ws two\nwith a second line"],
            ["4", "post 4"], ["5", "post 5"], ["6", "post 6"]]
    got = wait_for("six events", lambda: (lambda g: g if len(g) >= 6 else None)(js("return window.got")))
    time.sleep(1.5)  # anything more (a duplicate) would come with the next reconnect
    got = js("return window.got")
    opens = js("return window.opens")
    assert got == want, f"EventSource got {got}"
    assert opens >= 3, f"{opens} connections: drop=2 should have ended the stream twice"
    http = stats(A)["http_answers"]
    assert http.get("204", 0) >= 1, f"no preflight answered: {http}"
    print(f"Chromium EventSource (page on {B}, room on {A}): 6 messages from fetch, WebSocket and POST, "
          f"{opens} connections (drop=2), in order, none missing, none twice")
finally:
    if browser:
        browser.close()
    for p in (rooms, other):
        p.kill()
        p.wait()
