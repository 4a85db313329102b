#!/usr/bin/env python3
"""Rooms over HTTP from Python httpx (issue 20): publishing (text, JSON,
binary, chunked, several on one kept connection), an event stream read and
parsed by hand with the browser's rules, resume with Last-Event-ID and the gap
event, and the refusals. Usage: rooms.py ADDR [CAFILE] (with CAFILE, over
https:// on the TLS port). The server runs with --room-history 5 and
--max-message-size 1MiB."""
import base64, json, sys, threading, time

import httpx

ADDR = sys.argv[1]
CAFILE = sys.argv[2] if len(sys.argv) > 2 else None
BASE = f"{'https' if CAFILE else 'http'}://{ADDR}"
VERIFY = CAFILE if CAFILE else True
ROOM = f"/broadcast/py-{'tls' if CAFILE else 'plain'}"


def events(lines):
    """WHATWG HTML §9.2.6, enough for our streams: yields (id, type, data)."""
    eid, kind, data = None, "message", []
    for line in lines:
        if line == "":
            if data:
                yield eid, kind, "\n".join(data)
            eid, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            eid = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)


def subscribe(headers=None, path=ROOM):
    h = {"Accept": "text/event-stream", **(headers or {})}
    return httpx.stream("GET", BASE + path, headers=h, verify=VERIFY, timeout=10)


def stats():
    return httpx.get(BASE + "/stats", verify=VERIFY).json()


# A subscriber in a thread, collecting the first 5 events.
got, ready = [], threading.Event()


def follow():
    with subscribe() as r:
        assert r.status_code == 200, r.status_code
        assert r.headers["content-type"] == "text/event-stream", r.headers
        assert r.headers["cache-control"] == "no-store", r.headers
        ready.set()
        for ev in events(r.iter_lines()):
            got.append(ev)
            if len(got) == 5:
                return


t = threading.Thread(target=follow, daemon=True)
t.start()
assert ready.wait(10), "no event stream"
deadline = time.monotonic() + 10
while stats()["connections"]["events"] < 1:
    assert time.monotonic() < deadline
    time.sleep(0.02)

before = stats()["connections"]["accepted"]
with httpx.Client(base_url=BASE, verify=VERIFY) as c:
    answers = [
        c.post(ROOM, content="line one\r\nline two", headers={"Content-Type": "text/plain; charset=utf-8"}),
        c.post(ROOM, json={"n": 2}),
        c.post(ROOM, content=bytes(range(256)), headers={"Content-Type": "application/octet-stream"}),
        # A generator body goes chunked.
        c.post(ROOM, content=(p for p in [b"chun", b"ked"]), headers={"Content-Type": "text/plain"}),
        c.post(ROOM, content="fifth", headers={"Content-Type": "text/plain"}),
    ]
for i, a in enumerate(answers, 1):
    assert a.status_code == 200, (i, a.status_code, a.text)
    body = a.json()
    assert body == {"room": ROOM, "id": i, "members": 1}, body
# One connection for the five (keep-alive), plus the two /stats requests.
assert stats()["connections"]["accepted"] - before == 2, "the POSTs did not share a connection"
t.join(10)
want = [
    ("1", "message", "line one\nline two"),
    ("2", "message", '{"n":2}'),
    ("3", "binary", base64.b64encode(bytes(range(256))).decode()),
    ("4", "message", "chunked"),
    ("5", "message", "fifth"),
]
assert got == want, got

# Resume: after 3, then (history 5) a gap once more than 5 were published.
with subscribe({"Last-Event-ID": "3"}) as r:
    evs = events(r.iter_lines())
    assert [next(evs), next(evs)] == want[3:], "resume after 3"
for i in range(6, 9):
    httpx.post(BASE + ROOM, content=f"m{i}", headers={"Content-Type": "text/plain"}, verify=VERIFY)
with subscribe(path=ROOM + "?lastEventId=1") as r:
    evs = events(r.iter_lines())
    gap = next(evs)
    assert gap[1] == "gap" and json.loads(gap[2]) == {"from": 2, "to": 3}, gap
    assert [e[0] for e in (next(evs) for _ in range(5))] == ["4", "5", "6", "7", "8"]

# Refusals.
r = httpx.post(BASE + "/echo", content="x", verify=VERIFY)
assert r.status_code == 405 and r.headers["allow"] == "GET", (r.status_code, r.headers)
r = httpx.post(BASE + ROOM, content=b"\xff", headers={"Content-Type": "text/plain"}, verify=VERIFY)
assert r.status_code == 400 and "UTF-8" in r.text, (r.status_code, r.text)
r = httpx.post(BASE + ROOM, content=b"x" * (1024 * 1024 + 1), verify=VERIFY)
assert r.status_code == 413, r.status_code
with subscribe({"Last-Event-ID": "nope"}) as r:
    assert r.status_code == 400, r.status_code
    assert "Last-Event-ID" in r.read().decode()
print(f"rooms over {BASE}: publish (5 kinds, one connection), subscribe, resume, gap, refusals: ok")
