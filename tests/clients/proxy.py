"""The proxy between Python websockets on both sides: a websockets server as
the upstream (a subprocess, so it can be killed), echocast --proxy in front
of it, and websockets clients. Checks: text and binary from 1 B to 16 MiB both
ways with permessage-deflate agreed on each leg; the upstream's subprotocol
and its 401 reaching the client; closes with codes and reasons both ways; the
upstream killed mid-conversation (1014); the inspector showing both legs,
linked, with the messages decoded both ways.
Usage: proxy.py ECHOCAST_BINARY"""
import json, os, signal, socket, subprocess, sys, tempfile, time, urllib.request
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

UPSTREAM = r'''
import asyncio, sys
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

async def talk(ws):
    path = ws.request.path
    if path.startswith("/close/"):
        code = int(path.split("/")[2])
        await ws.close(code, f"upstream closes with {code}")
        return
    ext = ws.response.headers.get("Sec-WebSocket-Extensions", "none")
    await ws.send(f"upstream sees {path} ext={ext}")
    try:
        async for m in ws:
            await ws.send(m)
    except Exception:
        pass  # a close other than 1000/1001 ends the loop with an exception

def check(conn, req):
    if req.path.startswith("/private") and "Authorization" not in req.headers:
        body = b"who are you?\n"
        return Response(401, "Unauthorized", Headers([("WWW-Authenticate", 'Basic realm="up"'),
            ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]), body)

async def main():
    async with serve(talk, "127.0.0.1", int(sys.argv[1]), process_request=check, max_size=None,
                     select_subprotocol=lambda c, offered: "graphql-transport-ws"
                     if "graphql-transport-ws" in offered else None):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
'''


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_upstream(port):
    p = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def main():
    binary = sys.argv[1]
    up_port = free_port()
    upstream = start_upstream(up_port)
    log = tempfile.NamedTemporaryFile(prefix="proxy-", suffix=".log", delete=False)
    server = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--inspect", "on",
                               "--proxy", f"/up/*=ws://127.0.0.1:{up_port}/*"],
                              stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = server.stdout.readline()
        addr = line.strip().split("ws://")[1]
        base = f"ws://{addr}/up"

        # Sizes both ways, deflate on each leg (both sides offer it by default).
        with connect(f"{base}/sizes", max_size=None, compression="deflate") as ws:
            hello = ws.recv(timeout=10)
            assert hello.startswith("upstream sees /sizes ext=permessage-deflate"), hello
            ext = ws.response.headers["Sec-WebSocket-Extensions"]
            assert ext.startswith("permessage-deflate"), ext
            for n in [1, 125, 126, 65535, 65536, 1 << 20, 16 << 20]:
                data = os.urandom(n // 2) * 2 + os.urandom(n % 2)
                ws.send(data)
                back = ws.recv(timeout=60)
                assert back == data, (n, len(back))
                text = ("é" * (n // 2))[: max(1, n // 2)]
                ws.send(text)
                assert ws.recv(timeout=60) == text, n
        print("proxy.py: 1 B to 16 MiB both ways, text and binary, deflate on each leg: ok")

        # The upstream's subprotocol; its refusal with headers and body.
        with connect(f"{base}/gql", subprotocols=["graphql-ws", "graphql-transport-ws"]) as ws:
            assert ws.subprotocol == "graphql-transport-ws", ws.subprotocol
            ws.recv(timeout=10)
        try:
            connect(f"{base}/private")
            raise AssertionError("the upstream's 401 should reach the client")
        except InvalidStatus as e:
            r = e.response
            assert r.status_code == 401, r.status_code
            assert r.headers["WWW-Authenticate"] == 'Basic realm="up"', r.headers
            assert r.body == b"who are you?\n", r.body
        with connect(f"{base}/private", additional_headers={"Authorization": "Basic eDp5"}) as ws:
            assert ws.recv(timeout=10).startswith("upstream sees /private")
        print("proxy.py: the upstream's subprotocol and its 401 (headers, body): ok")

        # Closes both ways, with codes and reasons.
        with connect(f"{base}/close/4003") as ws:
            try:
                ws.recv(timeout=10)
                raise AssertionError("the upstream closes")
            except ConnectionClosed:
                assert (ws.close_code, ws.close_reason) == (4003, "upstream closes with 4003"), \
                    (ws.close_code, ws.close_reason)
        with connect(f"{base}/echo") as ws:
            ws.recv(timeout=10)
            ws.close(4100, "client is done")
            assert ws.close_code == 4100, ws.close_code
        print("proxy.py: closes with codes and reasons both ways: ok")

        # The inspector: both legs listed and linked, messages both ways.
        with connect(f"{base}/watched") as ws:
            ws.recv(timeout=10)
            ws.send("inspect me")
            assert ws.recv(timeout=10) == "inspect me"
            time.sleep(0.3)
            rows = json.load(urllib.request.urlopen(f"http://{addr}/connections", timeout=10))
            client = next(c for c in rows if c.get("path") == "/up/watched" and c.get("upstream"))
            up = next(c for c in rows if c["id"] == client["upstream"])
            assert up.get("client") == client["id"], up
            assert up.get("url") == f"ws://127.0.0.1:{up_port}/watched", up
            for row, want in [(client, "inspect me"), (up, "inspect me")]:
                items = json.load(urllib.request.urlopen(
                    f"http://{addr}/messages?conn={row['id']}", timeout=10))
                dirs = {(m["dir"], m.get("text")) for m in items}
                assert ("in", want) in dirs and ("out", want) in dirs, (row["id"], items)
        print("proxy.py: the inspector lists both legs, linked, messages decoded both ways: ok")

        # The upstream killed mid-conversation: the client gets 1014.
        with connect(f"{base}/doomed") as ws:
            ws.recv(timeout=10)
            upstream.send_signal(signal.SIGKILL)
            upstream.wait()
            try:
                ws.recv(timeout=10)
                raise AssertionError("the client should be closed")
            except ConnectionClosed:
                assert ws.close_code == 1014, (ws.close_code, ws.close_reason)
        # Nothing listens now: a new client gets a 502 naming why.
        try:
            connect(f"{base}/again")
            raise AssertionError("502 expected")
        except InvalidStatus as e:
            assert e.response.status_code == 502, e.response.status_code
            assert b"refused" in e.response.body, e.response.body
        print("proxy.py: the upstream killed: 1014, then 502 (connection refused): ok")
    finally:
        server.terminate()
        server.wait()
        upstream.kill()
        upstream.wait()


main()
