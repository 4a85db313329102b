"""permessage-deflate against Python websockets, every parameter a client can
offer: echo and broadcast, text and binary, 1 B to 16 MiB, byte for byte.

    python deflate.py HOST:PORT shared|dedicated
"""
import os
import sys

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory as Offer
from websockets.sync.client import connect

addr, mode = sys.argv[1], sys.argv[2]
SIZES = [1, 125, 126, 1000, 65535, 65536, 1 << 20]


def payloads(big):
    for n in SIZES + ([16 << 20] if big else []):
        yield ("é" * (n // 2) + "x" * (n % 2))  # text of n bytes
        yield os.urandom(n // 2) + b"\x00" * (n - n // 2)  # binary, half compressible


def agreed(ws):
    return ws.response.headers.get("Sec-WebSocket-Extensions") or ""


offers = {
    "default (client_max_window_bits)": None,
    "client_no_context_takeover": Offer(client_no_context_takeover=True),
    "server_no_context_takeover": Offer(server_no_context_takeover=True),
    "client_max_window_bits=9": Offer(client_max_window_bits=9),
}
for bits in range(9, 16):
    offers[f"server_max_window_bits={bits}"] = Offer(server_max_window_bits=bits)

checked = 0
for i, (name, offer) in enumerate(offers.items()):
    kw = {} if offer is None else {"extensions": [offer]}
    with connect(f"ws://{addr}/", max_size=None, **kw) as ws:
        ext = agreed(ws)
        assert ext.startswith("permessage-deflate"), (name, ext)
        if mode == "shared" or "server_no_context_takeover" in name:
            assert "server_no_context_takeover" in ext, (name, ext)
        if name.startswith("server_max_window_bits="):
            bits = int(name.split("=")[1])
            if bits < 15:
                assert f"server_max_window_bits={bits}" in ext, (name, ext)
        if name == "client_max_window_bits=9":
            assert "client_max_window_bits=9" in ext, (name, ext)
        for p in payloads(big=i < 2):
            ws.send(p)
            assert ws.recv() == p, (name, type(p), len(p))
            checked += 1
    # A room: this client and a plain one (no deflate) get every message.
    with connect(f"ws://{addr}/broadcast/py-{i}", max_size=None, **kw) as a, connect(
        f"ws://{addr}/broadcast/py-{i}", max_size=None, compression=None
    ) as b:
        assert agreed(b) == ""
        for p in payloads(big=False):
            a.send(p)
            assert a.recv() == p, (name, "room, sender")
            assert b.recv() == p, (name, "room, plain member")
            checked += 2
print(f"python websockets: {len(offers)} offers, {checked} messages checked ({mode})")
