// wss:// against Node ws trusting echocast's self-signed certificate (ca:),
// with ws's default permessage-deflate offer, and plain ws:// on the same
// port: echo and broadcast, text and binary, 1 B to 4 MiB, byte for byte.
//
//     node tls.js HOST:PORT CERT.pem
const crypto = require("crypto");
const fs = require("fs");

const [addr, pem] = process.argv.slice(2);
const port = addr.split(":").pop();
const ca = fs.readFileSync(pem);
const sizes = [1, 125, 126, 65536, 1 << 20, 4 << 20];

const openUrl = require("./open.js");
const open = (url) => openUrl(url, { ca });

function same(m, text, data) {
  if (m.isBinary === text) throw new Error(`type changed for ${data.length} bytes`);
  const got = text ? m.data.toString("utf8") : m.data;
  if (text ? got !== data : !got.equals(data)) throw new Error(`${data.length} bytes differ`);
}

(async () => {
  let checked = 0;
  for (const base of [`wss://localhost:${port}`, `ws://${addr}`]) {
    const ws = await open(`${base}/`);
    for (const n of sizes) {
      const t = "é".repeat(n >> 1) + "x".repeat(n & 1);
      ws.send(t);
      same(await ws.next(), true, t);
      const b = crypto.randomBytes(n);
      ws.send(b);
      same(await ws.next(), false, b);
      checked += 2;
    }
    ws.close();
    const other = base.startsWith("wss") ? `ws://${addr}` : `wss://localhost:${port}`;
    const a = await open(`${base}/broadcast/tls-js`);
    const b = await open(`${other}/broadcast/tls-js`);
    await new Promise((r) => setTimeout(r, 100));
    const m = crypto.randomBytes(1 << 20);
    a.send(m);
    same(await a.next(), false, m);
    same(await b.next(), false, m);
    checked += 2;
    a.close();
    b.close();
  }
  console.log(`tls.js: ${checked} messages checked over wss:// and ws:// on one port`);
  process.exit(0);
})().catch((e) => {
  console.error("tls.js:", e);
  process.exit(1);
});
