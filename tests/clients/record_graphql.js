// Record and replay (docs/stubs.md): a real graphql-ws server (npm graphql-ws
// on a ws server: a query and a subscription) driven by the real graphql-ws
// client through `echocast --proxy --record`; the server and that echocast
// stopped (SIGTERM: the recording is written); then `echocast --stubs` the
// recording alone answers the same client script, which picks new random
// operation ids, with the same results, twice in a row.
// Usage: node record_graphql.js ECHOCAST_BINARY
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { createClient } = require('graphql-ws');
const { useServer } = require('graphql-ws/use/ws');
const WebSocket = require('ws');
const { GraphQLSchema, GraphQLObjectType, GraphQLString, GraphQLInt } = require('graphql');

const binary = process.argv[2];
const fail = (msg) => { console.error('record_graphql.js: FAIL:', msg); process.exit(1); };
setTimeout(() => fail('timed out'), 60000).unref();

const schema = new GraphQLSchema({
  query: new GraphQLObjectType({
    name: 'Query',
    fields: { hello: { type: GraphQLString, args: { name: { type: GraphQLString } }, resolve: (_, a) => `hello ${a.name}` } },
  }),
  subscription: new GraphQLObjectType({
    name: 'Subscription',
    fields: {
      countdown: {
        type: GraphQLInt,
        args: { from: { type: GraphQLInt } },
        subscribe: async function* (_, { from }) {
          for (let i = from; i > 0; i--) {
            await new Promise((r) => setTimeout(r, 20));
            yield { countdown: i };
          }
        },
      },
    },
  }),
});

function start(args) {
  const p = spawn(binary, ['--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    p.stdout.on('data', (d) => {
      const m = /listening on ws:\/\/(\S+)/.exec(d.toString());
      if (m) resolve({ p, addr: m[1] });
    });
  });
}

// The client script: one query, one subscription, with graphql-ws's own
// random operation ids (UUIDs).
async function conversation(addr) {
  const client = createClient({ url: `ws://${addr}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
  const run = (payload) => new Promise((resolve, reject) => {
    const results = [];
    client.subscribe(payload, { next: (r) => results.push(r), error: reject, complete: () => resolve(results) });
  });
  const query = await run({ query: 'query Hello($n: String) { hello(name: $n) }', variables: { n: 'ann' } });
  const sub = await run({ query: 'subscription { countdown(from: 3) }' });
  await client.dispose();
  return JSON.stringify({ query, sub });
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'echocast-record-'));
  const file = path.join(dir, 'session.json');
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, path: '/graphql' });
  await new Promise((r) => wss.on('listening', r));
  useServer({ schema }, wss);
  const up = `ws://127.0.0.1:${wss.address().port}/graphql`;

  const rec = await start(['--proxy', `/graphql=${up}`, '--record', file]);
  const live = await conversation(rec.addr);
  const want = JSON.stringify({
    query: [{ data: { hello: 'hello ann' } }],
    sub: [{ data: { countdown: 3 } }, { data: { countdown: 2 } }, { data: { countdown: 1 } }],
  });
  if (live !== want) fail(`through the proxy: ${live}`);
  // Stop the recorder (SIGTERM: a graceful stop writes the recording) and
  // the real server.
  await new Promise((r) => { rec.p.on('exit', r); rec.p.kill('SIGTERM'); });
  await new Promise((r) => wss.close(r));
  const stubs = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(stubs.stubs) || stubs.stubs.length === 0) fail(`no stubs recorded: ${JSON.stringify(stubs)}`);
  console.log(`record_graphql.js: recorded ${stubs.stubs.length} stubs through the proxy`);

  const replay = await start(['--stubs', file, '--stubs-speed', '0']);
  for (const round of [1, 2]) {
    const again = await conversation(replay.addr);
    if (again !== want) fail(`replay ${round}: ${again}`);
  }
  replay.p.kill();
  fs.rmSync(dir, { recursive: true });
  console.log('record_graphql.js: the recording alone answered the same client twice, with its new ids: ok');
  process.exit(0);
}

main().catch((e) => fail(e.stack || e));
