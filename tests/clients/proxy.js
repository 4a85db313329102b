// The proxy between Node `ws` on both sides: a ws server as the upstream
// (permessage-deflate on, a subprotocol, a 403 for a forbidden path) and ws
// clients through `echocast --proxy`. Checks: text and binary up to 16 MiB
// both ways with deflate agreed on each leg, the subprotocol, the refusal's
// status and body, closes with codes and reasons both ways.
// Usage: node proxy.js ECHOCAST_BINARY
'use strict';
const { spawn } = require('child_process');
const http = require('http');
const crypto = require('crypto');
const WebSocket = require('ws');

const binary = process.argv[2];
const fail = (msg) => { console.error('proxy.js: FAIL:', msg); process.exit(1); };
setTimeout(() => fail('timed out'), 90000).unref();

const upstreamHttp = http.createServer();
const wss = new WebSocket.Server({
  noServer: true,
  perMessageDeflate: true,
  maxPayload: 64 << 20,
  handleProtocols: (offered) => (offered.has('mqtt') ? 'mqtt' : false),
});
upstreamHttp.on('upgrade', (req, socket, head) => {
  if (req.url.startsWith('/forbidden')) {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nnot you\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const ext = req.headers['sec-websocket-extensions'] || 'none';
    if (req.url.startsWith('/close')) {
      ws.close(4200, 'node upstream closes');
      return;
    }
    ws.send(`node upstream ${req.url} offered ${ext}`);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', (code, reason) => { upstreamCloses.push([code, reason.toString()]); });
  });
});
const upstreamCloses = [];

function open(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { perMessageDeflate: true, maxPayload: 64 << 20 });
    const queue = [];
    const waiters = [];
    ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      if (waiters.length) waiters.shift()(m); else queue.push(m);
    });
    ws.next = () => new Promise((res) => (queue.length ? res(queue.shift()) : waiters.push(res)));
    ws.on('open', () => resolve(ws));
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => reject(Object.assign(new Error('refused'), { status: res.statusCode, body })));
    });
    ws.on('error', reject);
  });
}

async function main() {
  await new Promise((r) => upstreamHttp.listen(0, '127.0.0.1', r));
  const upPort = upstreamHttp.address().port;
  const server = spawn(binary, ['--listen', '127.0.0.1:0', '--proxy', `/node/*=ws://127.0.0.1:${upPort}/*`],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const addr = await new Promise((resolve) => {
    server.stdout.on('data', (d) => {
      const m = /listening on ws:\/\/(\S+)/.exec(d.toString());
      if (m) resolve(m[1]);
    });
  });
  try {
    const ws = await open(`ws://${addr}/node/echo?x=1`, ['mqtt']);
    if (ws.protocol !== 'mqtt') fail(`subprotocol ${ws.protocol}`);
    if (!/permessage-deflate/.test(String(ws.extensions))) {
      fail(`client leg extensions: ${JSON.stringify(ws.extensions)}`);
    }
    const hello = (await ws.next()).data.toString();
    if (!hello.startsWith('node upstream /echo?x=1 offered permessage-deflate')) fail(hello);
    for (const n of [1, 1000, 70000, 1 << 20, 16 << 20]) {
      const bin = crypto.randomBytes(n);
      ws.send(bin);
      const back = await ws.next();
      if (!back.isBinary || back.data.length !== n) fail(`binary ${n}`);
      if (Buffer.compare(back.data, bin) !== 0) fail(`binary ${n} differs`);
      const text = 'ü'.repeat(Math.max(1, n >> 1));
      ws.send(text);
      const t = await ws.next();
      if (t.isBinary || t.data.toString() !== text) fail(`text ${n}`);
    }
    console.log('proxy.js: text and binary to 16 MiB both ways, deflate on each leg, subprotocol: ok');
    const closed = new Promise((r) => ws.on('close', (code, reason) => r([code, reason.toString()])));
    ws.close(4300, 'node client done');
    const [code] = await closed;
    if (code !== 4300) fail(`close echoed as ${code}`);
    await new Promise((r) => setTimeout(r, 200));
    if (!upstreamCloses.some(([c, why]) => c === 4300 && why === 'node client done')) {
      fail(`upstream saw ${JSON.stringify(upstreamCloses)}`);
    }
    const ws2 = await open(`ws://${addr}/node/close`);
    const [code2, why2] = await new Promise((r) => ws2.on('close', (c, why) => r([c, why.toString()])));
    if (code2 !== 4200 || why2 !== 'node upstream closes') fail(`upstream close as ${code2} ${why2}`);
    console.log('proxy.js: closes with codes and reasons both ways: ok');
    try {
      await open(`ws://${addr}/node/forbidden`);
      fail('403 expected');
    } catch (e) {
      if (e.status !== 403 || e.body !== 'not you\n') fail(`refusal ${e.status} ${JSON.stringify(e.body)}`);
    }
    console.log('proxy.js: the upstream\'s 403 with its body: ok');
  } finally {
    server.kill();
    upstreamHttp.close();
    wss.close();
  }
  process.exit(0);
}

main().catch((e) => fail(e.stack || e));
