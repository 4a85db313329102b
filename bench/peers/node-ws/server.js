// Peer for echocast's benchmarks: echo + broadcast rooms on Node `ws`.
// Same routing as echocast: /broadcast and /broadcast/... are rooms, every
// other path echoes. Usage: node server.js [HOST:PORT]
// PEER_DEFLATE=1 turns permessage-deflate on (ws's own defaults otherwise).
// PEER_TLS_CERT and PEER_TLS_KEY (PEM files): ws on a Node https server.
"use strict";
const fs = require("fs");
const https = require("https");
const { WebSocketServer } = require("ws");

const [host, port] = (process.argv[2] || "127.0.0.1:9001").split(":");
const options = {
  perMessageDeflate: process.env.PEER_DEFLATE === "1",
  maxPayload: 64 << 20,
};
const tls = process.env.PEER_TLS_CERT && process.env.PEER_TLS_KEY;
let wss;
if (tls) {
  const server = https.createServer({
    cert: fs.readFileSync(process.env.PEER_TLS_CERT),
    key: fs.readFileSync(process.env.PEER_TLS_KEY),
    ALPNProtocols: ["http/1.1"],
  });
  wss = new WebSocketServer({ server, ...options });
  server.listen(Number(port), host, () => {
    const a = server.address();
    console.log(`listening on wss://${a.address}:${a.port}`);
  });
} else {
  wss = new WebSocketServer({ host, port: Number(port), ...options });
  wss.on("listening", () => {
    const a = wss.address();
    console.log(`listening on ws://${a.address}:${a.port}`);
  });
}
const rooms = new Map();

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
