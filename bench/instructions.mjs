// Load-insensitive cost per request of one pinned server process: CPU
// instructions (valgrind's callgrind) or system calls (strace -c), counted
// over a window of rwsgi-load traffic after a warm-up. Usage:
//   node bench/instructions.mjs [--server rwsgi|uws.js|nginx] [--tool callgrind|strace]
//                               [--connections 1] [--pipeline 1] [--warm 15] [--seconds 8]
//                               [--dir DIR] [--keep]
// rwsgi runs one worker (the arbiter starts it under the tool through
// RWSGI_WORKER_WRAPPER); `--dir DIR`: the rwsgi built in another checkout.
// The server is pinned to core 0 and the client to core 1. The counts do not
// depend on how loaded the machine is (callgrind counts a `rep stos`/`rep
// movs` iteration as one instruction, so bulk fills weigh more than they cost).

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HELLO } from './apps/payloads.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    server: { type: 'string', default: 'rwsgi' },
    tool: { type: 'string', default: 'callgrind' },
    connections: { type: 'string', default: '1' },
    pipeline: { type: 'string', default: '1' },
    warm: { type: 'string', default: '15' },
    seconds: { type: 'string', default: '8' },
    dir: { type: 'string', default: ROOT },
    keep: { type: 'boolean', default: false },
  },
});
const LOADGEN = join(ROOT, 'target/release/rwsgi-load');
const PORT = 8390;
const work = mkdtempSync(join(tmpdir(), 'rwsgi-instructions-'));
const TOOL = {
  callgrind: ['valgrind', '--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${join(work, 'cg.%p')}`],
  strace: [],
}[values.tool];
if (!TOOL) throw new Error(`unknown --tool ${values.tool}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function nginxConfig() {
  const conf = join(work, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;
master_process off;
daemon off;
pid ${work}/nginx.pid;
error_log ${work}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${PORT} reuseport;
    location = / { default_type text/plain; return 200 '${HELLO}'; }
  }
}
`,
  );
  return conf;
}

/** The command line of the process measured (the arbiter's, for rwsgi). */
function command() {
  switch (values.server) {
    case 'rwsgi':
      return [process.execPath, join(values.dir, 'dist/cli/main.js'), 'serve', join(ROOT, 'bench/apps/rwsgi-app.js'), '-b', `127.0.0.1:${PORT}`, '-w', '1', '--timeout', '600', '--boot-timeout', '600', '--log-level', 'warning'];
    case 'uws.js':
      return [...TOOL, process.execPath, join(ROOT, 'bench/peers/uws-server.mjs')];
    case 'nginx':
      return [...TOOL, 'nginx', '-c', nginxConfig()];
    default:
      throw new Error(`unknown --server ${values.server}`);
  }
}

/** Until the server answers (the port opens before a worker under valgrind serves). */
async function waitForServer(ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const r = await fetch(`http://127.0.0.1:${PORT}/`, { signal: AbortSignal.timeout(30_000) });
      await r.text();
      if (r.ok) return;
    } catch {}
    await sleep(500);
  }
  throw new Error(`nothing answered on port ${PORT}`);
}

/** rwsgi-load pinned to core 1; the number of responses. */
function load(seconds) {
  const args = ['-c', '1', LOADGEN, '--port', String(PORT), '--connections', values.connections, '--pipeline', values.pipeline, '--seconds', String(seconds)];
  return JSON.parse(execFileSync('taskset', args).toString()).requests;
}

/** The pid of the process that serves: the worker, for rwsgi. */
function servingPid(top) {
  if (values.server !== 'rwsgi') return top;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === top) return Number(entry);
    } catch {}
  }
  throw new Error('no worker process');
}

/** Instructions in a callgrind dump: all threads, and the busiest one. */
function instructions(pid) {
  const counts = readdirSync(work)
    .filter((f) => f.startsWith(`cg.${pid}.`) || f.startsWith(`cg.${pid}-`))
    .map((f) => Number(/^(?:summary|totals): (\d+)/m.exec(readFileSync(join(work, f), 'utf8'))?.[1] ?? 0));
  return { all: counts.reduce((a, b) => a + b, 0), main: Math.max(0, ...counts) };
}

const env = { ...process.env, PORT: String(PORT), WORKERS: '1' };
if (values.server === 'rwsgi') env.RWSGI_WORKER_WRAPPER = TOOL.join(' ');
const cmd = command();
const server = spawn('taskset', ['-c', '0', ...cmd], { env, stdio: ['ignore', 'ignore', 'inherit'] });
try {
  await waitForServer(180_000);
  const pid = servingPid(server.pid);
  load(Number(values.warm));
  const seconds = Number(values.seconds);
  const label = `${values.server}, ${values.connections} connection(s), ${values.pipeline} request(s) per batch`;
  if (values.tool === 'callgrind') {
    execFileSync('callgrind_control', ['-z', String(pid)], { stdio: 'ignore' });
    const requests = load(seconds);
    execFileSync('callgrind_control', ['-d', String(pid)], { stdio: 'ignore' });
    const { all, main } = instructions(pid);
    console.log(`${label}: ${requests} requests, ${Math.round(all / requests)} instructions per request (${Math.round(main / requests)} on the busiest thread)`);
  } else {
    const out = join(work, 'strace.txt');
    const strace = spawn('strace', ['-c', '-f', '-o', out, '-p', String(pid)], { stdio: 'ignore' });
    await sleep(1000);
    const requests = load(seconds);
    strace.kill('SIGINT');
    await new Promise((r) => strace.on('exit', r));
    console.log(`${label}: ${requests} requests; system calls per request:`);
    for (const line of readFileSync(out, 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      const name = f.at(-1);
      const calls = Number(f[3]);
      if (f.length >= 5 && /^[\d.]+$/.test(f[0]) && name !== 'total' && calls / requests >= 0.01) {
        console.log(`  ${name.padEnd(16)} ${(calls / requests).toFixed(3)}`);
      }
    }
  }
} finally {
  server.kill('SIGTERM');
  await new Promise((r) => server.on('exit', r));
  if (!values.keep) rmSync(work, { recursive: true, force: true });
  else console.log(`kept ${work}`);
}
