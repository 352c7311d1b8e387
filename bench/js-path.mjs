// The JavaScript of a pipelined request, alone: batches of rows fed to the
// worker's Dispatcher as the addon writes them (64 connections' worth of
// 16-deep requests with one Host header), each served by the native
// interface's WsgiRunner and an app, with the addon's calls stubbed. Prints
// nanoseconds per request per round; pin it (`taskset -c 0`) and compare
// builds with `--dir`. Usage:
//   node bench/js-path.mjs [--dir CHECKOUT] [--app FILE] [--rounds 5]

import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: ROOT },
    app: { type: 'string', default: join(ROOT, 'examples/hello.js') },
    rounds: { type: 'string', default: '5' },
  },
});
const load = (path) => import(pathToFileURL(join(values.dir, path)).href);
const { Dispatcher } = await load('dist/worker/dispatcher.js');
const { WsgiRunner } = await load('dist/apps/wsgi.js');
const { REQUEST_STRIDE, FLAG_KEEP_ALIVE, FLAG_SAME_HEADERS, native } = await load('dist/native.js');
const app = (await import(pathToFileURL(values.app).href)).default;

const runner = new WsgiRunner(app);
const busy = new Int32Array(new SharedArrayBuffer(8));
const dispatcher = new Dispatcher(
  (ex) => runner.handle(ex),
  (row) => {
    busy[1] = row;
    busy[0] = 1;
  },
  () => {
    busy[0] = 0;
  },
);
const calls = { respond: () => true, start: () => true, write: () => 1, end: () => true };
dispatcher.attach({ responseCalls: () => calls, setTraceRejections() {} });
dispatcher.onMethod(0, 'GET');

// The batch's text as the addon cuts it: peer address, target, header block.
const text = '127.0.0.1/Host\u0000127.0.0.1:8080\u0000';
const DEPTH = 16;
const BATCH = DEPTH * 8;
const table = dispatcher.requestTable;
// Each row's slots placed by name, in the order the addon's contract gives.
const slots = native().contract().slots;
const slotValues = {
  Conn: 0,
  Flags: FLAG_KEEP_ALIVE | FLAG_SAME_HEADERS,
  Method: 0,
  UrlStart: 9,
  UrlEnd: 10,
  HeadersStart: 10,
  HeadersEnd: text.length,
  PeerIpStart: 0,
  PeerIpEnd: 9,
  ClientIpStart: 0,
  ClientIpEnd: 9,
  PeerPort: 40000,
  LocalPort: 8080,
  ClientPort: 40000,
};
for (let i = 0; i < BATCH; i++) {
  const row = slots.map((name) => (name === 'Conn' ? 1000 + Math.floor(i / DEPTH) : slotValues[name]));
  if (row.includes(undefined)) throw new Error(`bench/js-path.mjs knows no value for a slot of [${slots.join(', ')}]`);
  table.set(row, i * REQUEST_STRIDE);
}

const repeats = dispatcher.repeatTable ?? new Float64Array(1);
function run(batches) {
  for (let k = 0; k < batches; k++) {
    // Open as the addon opens it for onRequests, then closed.
    repeats[0] = 0;
    dispatcher.onRequests(BATCH, text);
    repeats[0] = -1;
  }
}

const BATCHES = 20000;
run(BATCHES);
for (let round = 0; round < Number(values.rounds); round++) {
  const start = process.hrtime.bigint();
  run(BATCHES);
  const ns = Number(process.hrtime.bigint() - start) / (BATCHES * BATCH);
  console.log(`${values.dir}: ${ns.toFixed(1)} ns per request`);
}
