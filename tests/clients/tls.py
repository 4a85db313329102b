"""wss:// against Python websockets trusting the self-signed certificate that
echocast wrote with --tls-cert-out; plain ws:// on the same port in the same
run. Echo and broadcast, text and binary, 1 B to 4 MiB, byte for byte, with
permessage-deflate (websockets' default offer) and without.

    python tls.py HOST:PORT CERT.pem
"""
import os
import socket
import ssl
import sys

from websockets.sync.client import connect

addr, pem = sys.argv[1], sys.argv[2]
port = addr.rsplit(":", 1)[1]
ctx = ssl.create_default_context(cafile=pem)  # hostname and chain checked
SIZES = [1, 125, 126, 65536, 1 << 20, 4 << 20]


def payloads():
    for n in SIZES:
        yield "é" * (n // 2) + "x" * (n % 2)
        yield os.urandom(n)


checked = 0
for url, kw in [
    (f"wss://localhost:{port}", {"ssl": ctx}),
    (f"wss://127.0.0.1:{port}", {"ssl": ctx, "compression": None}),
    (f"ws://{addr}", {}),
]:
    with connect(url + "/", max_size=None, **kw) as ws:
        for p in payloads():
            ws.send(p)
            assert ws.recv() == p, (url, len(p))
            checked += 1
    # A room: two members over this transport, one over the other.
    other = f"ws://{addr}" if url.startswith("wss") else f"wss://localhost:{port}"
    okw = {} if other.startswith("ws:") else {"ssl": ctx}
    with connect(url + "/broadcast/tls", max_size=None, **kw) as a, connect(
        other + "/broadcast/tls", max_size=None, **okw
    ) as b:
        for p in ["hello room", os.urandom(1 << 20)]:
            a.send(p)
            assert a.recv() == p and b.recv() == p, url
            checked += 2
# docs/limits.md: "TLS session resumption"
# No TLS 1.3 session ticket after the handshake (they raced with the sync
# client's first write and lost its request now and then): the 101 is the
# first thing the client reads, and no ticket came before it.
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="localhost")
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert s.version() == "TLSv1.3" and head.startswith(b"HTTP/1.1 101"), (s.version(), head)
assert not s.session.has_ticket, "a TLS 1.3 session ticket was sent"
s.close()
print(f"tls.py: {checked} messages checked over wss:// and ws:// on one port")
