// Memory soak: a million requests, mixed keep-alive, Connection: close,
// 8-deep pipelining and chunked uploads, against one rwsgi worker serving
// examples/hello.js, sampling the worker's RSS as it goes. Passes when RSS
// after warm-up grows by less than 5%. Usage:
//   node bench/soak.mjs [--requests 1000000] [--clients 32]

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: { requests: { type: 'string', default: '1000000' }, clients: { type: 'string', default: '32' } },
});
const TOTAL = Number(values.requests);
const CLIENTS = Number(values.clients);
const WARMUP = Math.floor(TOTAL / 5);
const BODY = 'Hello, World!';

const GET = 'GET / HTTP/1.1\r\nHost: soak\r\n\r\n';
const CLOSE = 'GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n';
const CHUNKED = 'POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n';

/** The four traffic shapes, each as writes on one connection and the responses they get. */
const SCENARIOS = [
  { name: 'keep-alive', writes: Array(10).fill(GET), responses: 10 },
  { name: 'close', writes: [CLOSE], responses: 1 },
  { name: 'pipelined', writes: [GET.repeat(8)], responses: 8 },
  { name: 'chunked', writes: [CHUNKED, CHUNKED], responses: 2 },
];

function rssKiB(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
}

/** Runs one scenario on a fresh connection; resolves with the responses seen. */
function runScenario(port, scenario) {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let seen = 0;
    let tail = '';
    let sent = 0;
    const sendNext = () => socket.write(scenario.writes[sent++]);
    socket.setEncoding('latin1');
    socket.on('connect', sendNext);
    socket.on('data', (chunk) => {
      const text = tail + chunk;
      seen += text.split(BODY).length - 1;
      tail = text.slice(-(BODY.length - 1));
      // Sequential scenarios send their next request once the last one is answered.
      if (sent < scenario.writes.length && seen >= sent) sendNext();
      if (seen >= scenario.responses) {
        socket.destroy();
        resolve(seen);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(seen));
  });
}

const server = spawn(process.execPath, ['dist/cli/main.js', 'serve', 'examples/hello.js', '-b', '127.0.0.1:0', '-w', '1'], {
  cwd: ROOT,
  stdio: ['ignore', 'ignore', 'pipe'],
});
let log = '';
server.stderr.on('data', (d) => (log += d));
const until = Date.now() + 15_000;
while (!/Listening at: http:\/\/\S+:(\d+)/.test(log) || !/Booting worker with pid: (\d+)/.test(log)) {
  if (Date.now() > until) throw new Error(`server did not start:\n${log}`);
  await new Promise((r) => setTimeout(r, 50));
}
const port = Number(/Listening at: http:\/\/\S+:(\d+)/.exec(log)[1]);
const worker = Number(/Booting worker with pid: (\d+)/.exec(log)[1]);
await new Promise((r) => setTimeout(r, 500));

let done = 0;
let failures = 0;
let next = 0;
const samples = [];
let nextSample = 0;
const started = Date.now();
try {
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (done < TOTAL) {
        const scenario = SCENARIOS[next++ % SCENARIOS.length];
        try {
          const seen = await runScenario(port, scenario);
          done += seen;
          failures += scenario.responses - seen;
        } catch {
          failures += scenario.responses;
          done += scenario.responses;
        }
        if (done >= nextSample) {
          samples.push({ requests: done, rssKiB: rssKiB(worker) });
          nextSample += TOTAL / 20;
        }
      }
    }),
  );
} finally {
  server.kill('SIGTERM');
}
const seconds = (Date.now() - started) / 1000;
const warm = samples.find((s) => s.requests >= WARMUP) ?? samples[0];
const last = samples[samples.length - 1];
const growth = (last.rssKiB - warm.rssKiB) / warm.rssKiB;
console.log(`| requests | worker RSS (KiB) |\n|---|---|`);
for (const s of samples) console.log(`| ${s.requests} | ${s.rssKiB} |`);
console.log(
  `\n${done} requests in ${seconds.toFixed(1)}s (${(done / seconds).toFixed(0)}/s), ${failures} failed; ` +
    `RSS after warm-up (${warm.requests} requests): ${warm.rssKiB} KiB -> ${last.rssKiB} KiB, ` +
    `growth ${(growth * 100).toFixed(2)}% (limit 5%)`,
);
process.exitCode = growth < 0.05 && failures === 0 ? 0 : 1;
