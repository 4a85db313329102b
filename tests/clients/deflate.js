// permessage-deflate against Node ws with its defaults (it offers
// client_max_window_bits, as browsers do): echo and broadcast, text and
// binary, 1 B to 16 MiB, byte for byte.
//
//     node deflate.js HOST:PORT
const crypto = require("crypto");

const addr = process.argv[2];
const sizes = [1, 125, 126, 1000, 65536, 1 << 20, 16 << 20];

const openUrl = require("./open.js");
const open = (path, options) => openUrl(`ws://${addr}${path}`, options);

function payloads() {
  const out = [];
  for (const n of sizes) {
    out.push({ text: true, data: "é".repeat(n >> 1) + "x".repeat(n & 1) });
    const b = Buffer.alloc(n);
    crypto.randomFillSync(b, 0, n >> 1);
    out.push({ text: false, data: b });
  }
  return out;
}

function same(m, p) {
  if (m.isBinary === p.text) throw new Error(`type changed for ${p.data.length} bytes`);
  const got = p.text ? m.data.toString("utf8") : m.data;
  if (p.text ? got !== p.data : !got.equals(p.data)) throw new Error(`payload of ${p.data.length} differs`);
}

(async () => {
  let checked = 0;
  const ws = await open("/");
  if (!ws.extensions.startsWith("permessage-deflate")) throw new Error(`not negotiated: ${ws.extensions}`);
  for (const p of payloads()) {
    ws.send(p.data, { binary: !p.text });
    same(await ws.next(), p);
    checked++;
  }
  ws.close();
  const a = await open("/broadcast/node");
  const b = await open("/broadcast/node", { perMessageDeflate: false });
  if (b.extensions !== "") throw new Error("deflate offered although turned off");
  for (const p of payloads()) {
    a.send(p.data, { binary: !p.text });
    same(await a.next(), p);
    same(await b.next(), p);
    checked += 2;
  }
  a.close();
  b.close();
  console.log(`node ws: extensions "${ws.extensions}", ${checked} messages checked`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
