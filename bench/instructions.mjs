// Load-insensitive cost per request of one pinned server process: CPU
// instructions (valgrind's callgrind) or system calls (strace -c), counted
// over a window of rwsgi-load traffic after a warm-up (`--warm` requests). Usage:
//   node bench/instructions.mjs [--server rwsgi|uws.js|nginx] [--tool callgrind|strace]
//                               [--connections 1] [--pipeline 1] [--warm 20000] [--requests 4000]
//                               [--app FILE] [--interface node] [--dir DIR] [--keep]
// rwsgi runs one worker (the arbiter starts it under the tool through
// RWSGI_WORKER_WRAPPER); `--dir DIR`: the rwsgi built in another checkout.
// The server is pinned to core 0 and the client to core 1. Counted: the
// instructions of a window of `--requests` requests, less what the process
// spends idle (timers, heartbeats: measured for 3 s first) over the window's
// length, so a loaded machine (fewer requests per second) does not inflate
// them. Callgrind counts a `rep stos`/`rep movs` iteration as one
// instruction, so bulk fills weigh more than they cost.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nginxConfig } from './nginx.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    server: { type: 'string', default: 'rwsgi' },
    tool: { type: 'string', default: 'callgrind' },
    connections: { type: 'string', default: '1' },
    pipeline: { type: 'string', default: '1' },
    warm: { type: 'string', default: '20000' },
    requests: { type: 'string', default: '4000' },
    dir: { type: 'string', default: ROOT },
    app: { type: 'string', default: join(ROOT, 'bench/apps/rwsgi-app.js') },
    interface: { type: 'string', default: 'auto' },
    keep: { type: 'boolean', default: false },
  },
});
const LOADGEN = join(ROOT, 'target/release/rwsgi-load');
// Servers here listen with SO_REUSEPORT: two runs on one port would share its traffic.
const PORT = 8390 + (process.pid % 500);
const work = mkdtempSync(join(tmpdir(), 'rwsgi-instructions-'));
const TOOL = {
  callgrind: ['valgrind', '--tool=callgrind', '--separate-threads=yes', `--callgrind-out-file=${join(work, 'cg.%p')}`],
  strace: [],
}[values.tool];
if (!TOOL) throw new Error(`unknown --tool ${values.tool}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The command line of the process measured (the arbiter's, for rwsgi). */
function command() {
  switch (values.server) {
    case 'rwsgi':
      return [process.execPath, join(values.dir, 'dist/cli/main.js'), 'serve', values.app, '--interface', values.interface, '-b', `127.0.0.1:${PORT}`, '-w', '1', '--timeout', '600', '--boot-timeout', '600', '--log-level', 'warning'];
    case 'uws.js':
      return [...TOOL, process.execPath, join(ROOT, 'bench/peers/uws-server.mjs')];
    case 'nginx':
      return [...TOOL, 'nginx', '-c', nginxConfig(work, PORT, 1, true)];
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

/** rwsgi-load pinned to core 1: responses and seconds. */
function load(seconds, requests = 0) {
  const args = ['-c', '1', LOADGEN, '--port', String(PORT), '--connections', values.connections, '--pipeline', values.pipeline, '--seconds', String(seconds), '--requests', String(requests)];
  return JSON.parse(execFileSync('taskset', args).toString());
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

/** Instructions in callgrind dump `part`: all threads, and the main one (thread 1). */
function instructions(pid, part) {
  const count = (f) => Number(/^(?:summary|totals): (\d+)/m.exec(readFileSync(join(work, f), 'utf8'))?.[1] ?? 0);
  const files = readdirSync(work).filter((f) => f.startsWith(`cg.${pid}.${part}-`));
  return { all: files.reduce((a, f) => a + count(f), 0), main: files.filter((f) => f.endsWith('-01')).reduce((a, f) => a + count(f), 0) };
}

const env = { ...process.env, PORT: String(PORT), WORKERS: '1' };
if (values.server === 'rwsgi') env.RWSGI_WORKER_WRAPPER = TOOL.join(' ');
const cmd = command();
const server = spawn('taskset', ['-c', '0', ...cmd], { env, stdio: ['ignore', 'ignore', 'inherit'] });
try {
  await waitForServer(180_000);
  const pid = servingPid(server.pid);
  // Warmed by count: V8 optimises after so many calls, however slow they come.
  load(600, Number(values.warm));
  const wanted = Number(values.requests);
  const label = `${values.server}, ${values.connections} connection(s), ${values.pipeline} request(s) per batch`;
  if (values.tool === 'callgrind') {
    const control = (what) => execFileSync('callgrind_control', [what, String(pid)], { stdio: 'ignore' });
    control('-z');
    const idleStart = performance.now();
    await sleep(3000);
    control('-d');
    const idle = instructions(pid, 1);
    const idleSeconds = (performance.now() - idleStart) / 1000;
    control('-z');
    const { requests, seconds } = load(600, wanted);
    control('-d');
    const busy = instructions(pid, 2);
    const net = (key) => Math.round((busy[key] - (idle[key] / idleSeconds) * seconds) / requests);
    console.log(
      `${label}: ${requests} requests in ${seconds}s, ${net('all')} instructions per request (${net('main')} on the main thread; idle: ${Math.round(idle.main / idleSeconds)} a second)`,
    );
  } else {
    const out = join(work, 'strace.txt');
    const strace = spawn('strace', ['-c', '-f', '-o', out, '-p', String(pid)], { stdio: 'ignore' });
    await sleep(1000);
    const { requests } = load(600, wanted);
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
