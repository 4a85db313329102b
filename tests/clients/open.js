// Shared by the Node test clients: opens a ws WebSocket (no payload limit)
// and resolves once open; `ws.next()` resolves with the next message
// ({ data, isBinary }), in order.
const WebSocket = require("ws");

module.exports = function open(url, options) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 0, ...options });
    const queue = [];
    const waiting = [];
    ws.on("message", (data, isBinary) => {
      const m = { data, isBinary };
      if (waiting.length) waiting.shift()(m);
      else queue.push(m);
    });
    ws.next = () => new Promise((r) => (queue.length ? r(queue.shift()) : waiting.push(r)));
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
};
