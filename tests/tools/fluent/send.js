// A real Forward-protocol client for the tests and the benchmark: @fluent-org/logger
// sends `count` events in the given event mode and reports what the server acknowledged.
//
//   node send.js '{"port":24224,"mode":"PackedForward","count":1000,"ack":true}'
//
// Options (JSON): host, port, path (Unix socket), mode, count, tag, prefix (event ids are
// "<prefix>-<i>"), ack (bool), ackTimeout (ms), retries (resend attempts after an ack
// timeout or a lost connection), sharedKey, username, password, tlsCa (PEM file: TLS),
// flushInterval (ms), batch (events queued per flush), payload (bytes of filler per
// event), quiet (no per-second progress).
// Prints "progress <acked> <failed>" lines, then one JSON summary line.
"use strict";
const fs = require("fs");
const { FluentClient, EventTime } = require("@fluent-org/logger");

const o = JSON.parse(process.argv[2] || "{}");
const count = o.count ?? 100;
const prefix = o.prefix ?? "e";
const filler = "x".repeat(o.payload ?? 0);

const socket = { timeout: o.socketTimeout ?? 600000, reconnect: { backoff: 1, delay: 200, minDelay: 200, maxDelay: 1000 } };
if (o.path) socket.path = o.path;
else {
  socket.host = o.host ?? "127.0.0.1";
  socket.port = o.port ?? 24224;
}
if (o.tlsCa) socket.tls = { ca: fs.readFileSync(o.tlsCa), servername: "localhost" };

const options = {
  eventMode: o.mode ?? "PackedForward",
  socket,
  flushInterval: o.flushInterval ?? 0,
  milliseconds: true,
  disconnect: { waitForPending: true, waitForPendingDelay: 60000, socketDisconnectDelay: 100 },
};
if (o.batch) options.sendQueueSyncFlushLimit = { length: o.batch };
if (o.ack) options.ack = { ackTimeout: o.ackTimeout ?? 10000 };
if (o.retries) {
  options.eventRetry = { attempts: o.retries, backoff: 1, delay: 200, minDelay: 200, maxDelay: 1000 };
}
if (o.sharedKey) {
  options.security = {
    clientHostname: "test-client",
    sharedKey: o.sharedKey,
    username: o.username ?? "",
    password: o.password ?? "",
  };
}

const client = new FluentClient(o.tag ?? "test", options);
let acked = 0;
let failed = 0;
const errors = new Map();
const started = Date.now();
const progress = o.quiet ? null : setInterval(() => console.log(`progress ${acked} ${failed}`), 500);

function event(i) {
  return {
    id: `${prefix}-${i}`,
    n: i,
    msg: `event ${i} of ${count}: ünïcödé, "quotes", tab\there, newline\nthere`,
    nested: { list: [1, -2, 3.5, null, true], deep: { k: "v" } },
    bin: Buffer.from([0, 1, 2, 0xc1, 0xff, i & 0xff]),
    filler,
  };
}

async function main() {
  const all = [];
  const base = Date.now();
  for (let i = 0; i < count; i++) {
    // Millisecond EventTimes, distinct per event, in the recent past (brokers apply
    // retention to record timestamps).
    const t = EventTime.fromTimestamp(base - count + i);
    const p = client.emit("sub", event(i), t).then(
      () => { acked++; },
      (e) => {
        failed++;
        const k = `${e.name}: ${e.message}`;
        errors.set(k, (errors.get(k) ?? 0) + 1);
      },
    );
    all.push(p);
    // Let the socket drain now and then, as an application would.
    if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
  }
  await Promise.all(all);
  await client.disconnect();
  if (progress) clearInterval(progress);
  const elapsed = Date.now() - started;
  console.log(JSON.stringify({ sent: count, acked, failed, elapsed_ms: elapsed, errors: Object.fromEntries(errors) }));
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
