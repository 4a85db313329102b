#!/usr/bin/env python3
"""A stand-in for your real server, for the README's proxy example: Python
`websockets` on 127.0.0.1:PORT (default 4000). It greets each connection with
the path and the `Authorization` it received, answers `401` to a path with
`/private` in it when no token came, speaks the `chat.v1` subprotocol when
offered, and answers each message in upper case."""
import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response


async def talk(ws):
    auth = ws.request.headers.get("Authorization", "none")
    await ws.send(f"welcome to {ws.request.path} (auth: {auth})")
    async for message in ws:
        await ws.send(message.upper() if isinstance(message, str) else message)


def check(connection, request):
    if "/private" in request.path and "Authorization" not in request.headers:
        body = b"a token, please\n"
        return Response(401, "Unauthorized", Headers([
            ("WWW-Authenticate", 'Bearer realm="upstream"'),
            ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]), body)
    return None


def choose(connection, offered):
    return "chat.v1" if "chat.v1" in offered else None


async def main(port):
    async with serve(talk, "127.0.0.1", port, process_request=check, select_subprotocol=choose):
        print(f"upstream listening on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000))
