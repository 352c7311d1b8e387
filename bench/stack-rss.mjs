// Idle RSS of the two ways to read a hung worker's JavaScript stack (issue
// 14 item 5), against a bare node process: an inspector session on a worker
// thread (Debugger.pause) and rwsgi's native interrupt (an idle rwsgi worker,
// stack reports on). Each process idles 2 s before its RSS (VmRSS) is read;
// medians of ROUNDS rounds, in MB.
//   node bench/stack-rss.mjs
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ROUNDS = 5;
const IDLE_MS = 2000;

const rssOf = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const bare = 'setInterval(() => {}, 1000);';
// What the inspector way keeps in every worker: a thread with its own
// isolate, connected to the main thread's inspector, ready to pause it.
const inspector = `
const { Worker } = require('node:worker_threads');
new Worker(\`
  const inspector = require('node:inspector');
  const session = new inspector.Session();
  session.connectToMainThread();
  session.post('Debugger.enable', () => {});
  setInterval(() => {}, 1000);
\`, { eval: true });
setInterval(() => {}, 1000);
`;

async function idleRss(args) {
  const child = spawn(process.execPath, args, { stdio: 'ignore' });
  await sleep(IDLE_MS);
  const mb = rssOf(child.pid);
  child.kill('SIGKILL');
  return mb;
}

// The inspector way in an rwsgi worker: the same thread, preloaded (in
// main threads only: worker threads run NODE_OPTIONS' preloads too).
const preload = join(mkdtempSync(join(tmpdir(), 'rwsgi-rss-')), 'inspector.cjs');
writeFileSync(preload, `if (require('node:worker_threads').isMainThread) {${inspector.replace(/setInterval\(\(\) => \{\}, 1000\);\n$/, '')}}`);

/** An idle rwsgi worker's RSS (hello app, one worker, stack reports on). */
async function rwsgiWorkerRss(env = {}) {
  const child = spawn(process.execPath, ['dist/cli/main.js', 'serve', 'examples/hello.js', '-b', '127.0.0.1:0', '-w', '1', '--log-level', 'debug'], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  while (!/Worker ready \(pid:(\d+)/.test(log)) await sleep(50);
  const pid = Number(/Worker ready \(pid:(\d+)/.exec(log)[1]);
  await sleep(IDLE_MS);
  const mb = rssOf(pid);
  child.kill('SIGINT');
  await new Promise((r) => child.on('exit', r));
  return mb;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const WITH_INSPECTOR = 'rwsgi worker + the inspector thread (preloaded)';
const rows = { 'bare node': [], 'node + inspector worker thread': [], 'rwsgi worker (hello, stack reports on)': [], [WITH_INSPECTOR]: [] };
for (let i = 0; i < ROUNDS; i++) {
  rows['bare node'].push(await idleRss(['-e', bare]));
  rows['node + inspector worker thread'].push(await idleRss(['-e', inspector]));
  rows['rwsgi worker (hello, stack reports on)'].push(await rwsgiWorkerRss());
  rows[WITH_INSPECTOR].push(await rwsgiWorkerRss({ NODE_OPTIONS: `--require ${preload}` }));
}
const base = median(rows['bare node']);
console.log(`| process | idle RSS (MB, median of ${ROUNDS}) | over bare node |`);
console.log('|---|---|---|');
for (const [name, xs] of Object.entries(rows)) console.log(`| ${name} | ${median(xs).toFixed(1)} | +${(median(xs) - base).toFixed(1)} |`);
