"""Peer for echocast's benchmarks: echo + broadcast rooms on Python websockets.

Same routing as echocast: /broadcast and /broadcast/... are rooms, every other
path echoes. Usage: python server.py [HOST:PORT]
PEER_DEFLATE=1 turns permessage-deflate on (websockets' default settings).
"""

import asyncio
import os
import sys

from websockets.asyncio.server import broadcast, serve

rooms: dict[str, set] = {}


async def handler(ws):
    path = ws.request.path.split("?")[0]
    if path == "/broadcast" or path.startswith("/broadcast/"):
        room = rooms.setdefault(path, set())
        room.add(ws)
        try:
            async for message in ws:
                broadcast(room, message)
        finally:
            room.discard(ws)
    else:
        async for message in ws:
            await ws.send(message)


async def main():
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9001").split(":")
    async with serve(
        handler,
        host,
        int(port),
        compression="deflate" if os.environ.get("PEER_DEFLATE") == "1" else None,
        max_size=64 << 20,
        max_queue=None,
    ) as server:
        addr = server.sockets[0].getsockname()
        print(f"listening on ws://{addr[0]}:{addr[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
