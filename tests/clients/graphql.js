// The graphql-ws npm client (the GraphQL over WebSocket protocol,
// graphql-transport-ws) against echocast with examples/stubs/graphql-transport-ws.json:
// the subprotocol agreed, connection_init -> connection_ack, a subscription
// gets three `next` results with its id and then `complete`.
// Usage: node graphql.js HOST:PORT
const { createClient } = require("graphql-ws");
const WebSocket = require("ws");

const addr = process.argv[2];
const client = createClient({
  url: `ws://${addr}/graphql`,
  webSocketImpl: WebSocket,
  retryAttempts: 0,
  lazy: true,
});
const results = [];
const timer = setTimeout(() => { console.error("graphql.js: timed out", results); process.exit(1); }, 10000);
client.subscribe(
  { query: "subscription { tick }" },
  {
    next: (r) => results.push(r),
    error: (e) => { console.error("graphql.js: error", e); process.exit(1); },
    complete: () => {
      clearTimeout(timer);
      const ticks = results.map((r) => r.data.tick);
      if (JSON.stringify(ticks) !== "[1,2,3]") { console.error("graphql.js: results", JSON.stringify(results)); process.exit(1); }
      if (results[0].data.query !== "subscription { tick }") { console.error("graphql.js: query", results[0]); process.exit(1); }
      console.log(`graphql.js: graphql-ws got ${results.length} results (ticks ${ticks}) and complete`);
      client.dispose();
      process.exit(0);
    },
  },
);
