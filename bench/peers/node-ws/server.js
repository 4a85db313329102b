// Peer for echocast's benchmarks: echo + broadcast rooms on Node `ws`.
// Same routing as echocast: /broadcast and /broadcast/... are rooms, every
// other path echoes. Usage: node server.js [HOST:PORT]
// PEER_DEFLATE=1 turns permessage-deflate on (ws's own defaults otherwise).
"use strict";
const { WebSocketServer } = require("ws");

const [host, port] = (process.argv[2] || "127.0.0.1:9001").split(":");
const wss = new WebSocketServer({
  host,
  port: Number(port),
  perMessageDeflate: process.env.PEER_DEFLATE === "1",
  maxPayload: 64 << 20,
});
const rooms = new Map();

wss.on("listening", () => {
  const a = wss.address();
  console.log(`listening on ws://${a.address}:${a.port}`);
});

wss.on("connection", (ws, req) => {
  ws._socket.setNoDelay(true);
  const path = req.url.split("?")[0];
  if (path === "/broadcast" || path.startsWith("/broadcast/")) {
    let room = rooms.get(path);
    if (!room) rooms.set(path, (room = new Set()));
    room.add(ws);
    ws.on("message", (data, isBinary) => {
      for (const c of room) c.send(data, { binary: isBinary });
    });
    ws.on("close", () => room.delete(ws));
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});
