// Subprotocol selection as Node ws sees it (server: --subprotocol chat.v1).
//
//     node subprotocol.js HOST:PORT
const WebSocket = require("ws");
const addr = process.argv[2];

function open(protocols) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${addr}/`, protocols);
    ws.on("open", () => resolve({ ws, protocol: ws.protocol }));
    ws.on("error", (e) => resolve({ error: e.message }));
  });
}

(async () => {
  const a = await open(["mqtt", "chat.v1"]);
  if (a.protocol !== "chat.v1") throw new Error(`selected ${a.protocol}`);
  a.ws.close();
  // Nothing in common: the 101 names none (RFC 6455 §4.2.2); ws, stricter
  // than the RFC asks, then fails the connection itself.
  const b = await open(["graphql-ws"]);
  if (!b.error || !/no subprotocol/i.test(b.error)) throw new Error(`expected ws to refuse: ${JSON.stringify(b)}`);
  console.log("subprotocol.js: chat.v1 selected; with nothing in common none is named (ws then refuses)");
  process.exit(0);
})().catch((e) => {
  console.error("subprotocol.js:", e);
  process.exit(1);
});
