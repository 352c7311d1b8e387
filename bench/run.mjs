// Hello-world throughput, rwsgi next to its peers in one run: wrk against
// each server in interleaved rounds, median requests/s, and server CPU time
// per request read from /proc. Usage:
//   node bench/run.mjs [--app hello|express] [--workers 2] [--rounds 3] [--seconds 5] [--connections 64]
// Needs wrk (Debian: apt-get install wrk). Numbers are ratios within one run;
// absolute numbers on shared machines drift.

import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    app: { type: 'string', default: 'hello' },
  },
});
/** hello: the native hello world against node:http's; express: examples/express.js under both. */
const APP = values.app === 'express' ? 'examples/express.js' : 'examples/hello.js';
const workers = Number(values.workers);

const PEERS = [
  {
    name: 'rwsgi',
    port: 8101,
    command: (port) => [process.execPath, ['dist/cli/main.js', 'serve', APP, '-b', `127.0.0.1:${port}`, '-w', String(workers), '--log-level', 'warning']],
  },
  {
    name: 'node:cluster',
    port: 8102,
    command: () => [process.execPath, ['bench/peers/node-cluster.mjs']],
  },
];

const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

function children(pid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {}
  }
  return out;
}

/** CPU seconds (user + system) of a process and its descendants. */
function treeCpu(pid) {
  let total = 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {}
  for (const child of children(pid)) total += treeCpu(child);
  return total;
}

async function waitForPort(port, ms = 15000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

function wrk(port) {
  const out = execFileSync('wrk', ['-t', values.threads, '-c', values.connections, '-d', `${values.seconds}s`, '--latency', `http://127.0.0.1:${port}/`]).toString();
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const total = Number(/(\d+) requests in/.exec(out)?.[1]);
  const p99 = /99%\s+(\S+)/.exec(out)?.[1];
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? '0';
  const socketErrors = /Socket errors: (.*)/.exec(out)?.[1] ?? 'none';
  return { rps, total, p99, errors: Number(errors), socketErrors };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const results = Object.fromEntries(PEERS.map((p) => [p.name, { rps: [], cpuPerReq: [], p99: [], errors: 0 }]));
const running = [];
try {
  for (const peer of PEERS) {
    const [cmd, args] = peer.command(peer.port);
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, WORKERS: String(workers), PORT: String(peer.port), ...(values.app === 'express' ? { APP } : {}) }, stdio: 'inherit' });
    running.push(child);
    peer.pid = child.pid;
    await waitForPort(peer.port);
  }
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const peer of PEERS) {
      const before = treeCpu(peer.pid);
      const r = wrk(peer.port);
      const cpu = treeCpu(peer.pid) - before;
      const res = results[peer.name];
      res.rps.push(r.rps);
      res.cpuPerReq.push((cpu / r.total) * 1e6);
      res.p99.push(r.p99);
      res.errors += r.errors;
      console.error(`round ${round + 1} ${peer.name}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99}, ${((cpu / r.total) * 1e6).toFixed(2)} µs CPU/req, socket errors: ${r.socketErrors}`);
    }
  }
} finally {
  for (const child of running) child.kill('SIGTERM');
}

const base = median(results['node:cluster'].rps);
console.log(`\n${APP}, ${workers} workers, wrk -t${values.threads} -c${values.connections} -d${values.seconds}s, ${values.rounds} interleaved rounds (median)\n`);
console.log('| server | req/s | vs node:cluster | server CPU µs/req | p99 (last round) | non-2xx |');
console.log('|---|---|---|---|---|---|');
for (const [name, r] of Object.entries(results)) {
  const rps = median(r.rps);
  console.log(`| ${name} | ${rps.toFixed(0)} | ${(rps / base).toFixed(2)}× | ${median(r.cpuPerReq).toFixed(2)} | ${r.p99.at(-1)} | ${r.errors} |`);
}
