// Crash hunt (issue 19): cycles load and idleness against three rwsgi servers
// the way the benchmark runs that crashed did, with everything that moves
// memory or connections around turned up, and fails if any process dies of
// a signal or any request fails. Not part of `npm test`: it takes minutes.
//
//   npm run stress [-- --asan]
//
// - servers (bench/apps/stress-app.js, loopback, port 0): "pinned", 1 worker
//   with the arbiter under `taskset -c 0` (so the worker is pinned there),
//   default settings; "twin", 2 workers, default settings (the two servers
//   that crashed); "pair", 2 workers spread by CPU (the default),
//   `--keep-alive 75` so idle connections outlive the idle periods, and
//   `--max-requests` so workers are recycled under load.
// - cycles, one server after the other: a burst (c=1 or c=64, 2-5 s; from
//   wrk when installed, except for the pair, else bench/stress-client.mjs)
//   whose client process is moved between CPUs with `taskset` every 0.7 s,
//   so idle keep-alive connections are handed over between two workers;
//   then an idle period (STRESS_IDLE, default 20-40 s) in which the pair's
//   connections stay open and are pinged now and then from a CPU the
//   client was just moved to; a HUP to a random server in 1 of 3 cycles.
// - V8 in every server process compacts on each full GC and is made to
//   collect every STRESS_GC_MS (bench/stress-gc.cjs, via NODE_OPTIONS;
//   STRESS_GC_MS=0 leaves V8 alone).
// - `--asan` (or STRESS_ASAN=1): the addon built with AddressSanitizer
//   (bench/README.md, "Crash hunting"), loaded with the ASan runtime
//   preloaded; any ASan report fails the run.
// - STRESS_SECONDS (default 180) bounds the cycles, counted from when the
//   servers are up (60 s at most); the whole job is killed after
//   STRESS_SECONDS + 150 s whatever happens. STRESS_HOGS=N runs N
//   busy-looping processes during every other cycle (a loaded machine).

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { platformName } from '../dist/native.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SECONDS = Number(process.env.STRESS_SECONDS ?? 180);
const [IDLE_MIN, IDLE_MAX] = (process.env.STRESS_IDLE ?? '20-40').split('-').map(Number);
const GC_MS = process.env.STRESS_GC_MS ?? '200';
const HOGS = Number(process.env.STRESS_HOGS ?? 0);
const ASAN = process.argv.includes('--asan') || process.env.STRESS_ASAN === '1';
const CPUS = Math.min(availableParallelism(), 2);
const APP = 'bench/apps/stress-app.js';
const WRK = spawnSync('sh', ['-c', 'command -v wrk'], { stdio: 'ignore' }).status === 0;

const startedAt = Date.now();
const failures = [];
const say = (m) => process.stderr.write(`[stress ${((Date.now() - startedAt) / 1000).toFixed(0)}s] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
const between = (lo, hi) => lo + Math.random() * (hi - lo);

if (!Number.isFinite(SECONDS) || SECONDS <= 0 || !(IDLE_MIN >= 0 && IDLE_MAX >= IDLE_MIN)) {
  console.error('stress: STRESS_SECONDS must be > 0 and STRESS_IDLE "MIN-MAX" seconds');
  process.exit(3);
}
/** The dist/ to run and the environment its processes get. */
/** The addon's file name in dist/, as the loader looks for it. */
const ADDON = `rwsgi.${platformName()}.node`;

function runtime() {
  // STRESS_GC_MS=0: V8 left alone, as in the benchmark runs themselves.
  const gc = GC_MS === '0' ? {} : { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc --require=${join(ROOT, 'bench/stress-gc.cjs')}`.trim() };
  const env = { ...process.env, ...gc, STRESS_GC_MS: GC_MS };
  if (!ASAN) return { dist: join(ROOT, 'dist'), env };
  const target = join(ROOT, 'target/asan');
  say('building the addon with AddressSanitizer (cargo +nightly)');
  execFileSync('cargo', ['+nightly', 'build', '-p', 'rwsgi-node', '--target', 'x86_64-unknown-linux-gnu'], {
    cwd: ROOT,
    stdio: 'inherit',
    env: { ...process.env, RUSTFLAGS: '-Zsanitizer=address', CARGO_TARGET_DIR: target },
  });
  // A copy of dist/ with the sanitized addon: the arbiter and its workers
  // load it from there (package.json beside it: ESM, and the version).
  const dist = join(target, 'dist');
  mkdirSync(dist, { recursive: true });
  cpSync(join(ROOT, 'dist'), dist, { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(target, 'package.json'));
  cpSync(join(target, 'x86_64-unknown-linux-gnu/debug/librwsgi_node.so'), join(dist, ADDON));
  const runtimeLib = execFileSync('gcc', ['-print-file-name=libasan.so']).toString().trim();
  if (!existsSync(runtimeLib)) throw new Error(`no ASan runtime at ${runtimeLib} (apt-get install libasan8 gcc)`);
  env.LD_PRELOAD = runtimeLib;
  // Node itself is not instrumented: no leak report for its allocations; a
  // report from the addon still ends the process (exit code 1).
  env.ASAN_OPTIONS = 'detect_leaks=0:handle_segv=1:allow_user_segv_handler=1:print_summary=1:symbolize=1';
  return { dist, env };
}

/** One `rwsgi serve`, its log watched for deaths and sanitizer reports. */
function startServer(name, { taskset, args }, { dist, env }) {
  const cmd = [process.execPath, join(dist, 'cli/main.js'), 'serve', APP, '-b', '127.0.0.1:0', '--log-level', 'info', ...args];
  const full = taskset ? ['taskset', '-c', taskset, ...cmd] : cmd;
  const child = spawn(full[0], full.slice(1), { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  const s = { name, child, port: 0, log: '', booted: 0, exits: 0, deaths: 0, gcs: 0, hups: 0, ok: 0, retried: 0, failed: 0, handoffs: 0, exited: null };
  let partial = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop();
    for (const line of lines) {
      s.log += `${line}\n`;
      const port = /Listening at: http:\/\/\S+:(\d+)/.exec(line);
      if (port) s.port = Number(port[1]);
      if (/Booting worker/.test(line)) s.booted++;
      if (/Worker exiting/.test(line)) s.exits++;
      const gcs = /\[stress-gc\] pid \d+: (\d+) forced/.exec(line);
      if (gcs) s.gcs += Number(gcs[1]);
      if (/was killed by signal|exited with code|\[CRITICAL\]|AddressSanitizer|Unhandled promise rejection/.test(line)) {
        s.deaths += /was killed by signal|exited with code/.test(line) ? 1 : 0;
        failures.push(`${name}: ${line}`);
        say(`${name}: ${line}`);
      }
    }
  });
  child.on('exit', (code, signal) => {
    s.exited = { code, signal, at: Date.now() };
    if (!stopping) failures.push(`${name}: the arbiter exited on its own (code ${code}, signal ${signal})`);
  });
  return s;
}

/** Server-side connections of `s`, "peer address" -> owning pid, from ss(8). */
function owners(s) {
  const r = spawnSync('ss', ['-Htnp', 'state', 'established', `( sport = :${s.port} )`], { encoding: 'utf8' });
  const map = new Map();
  for (const line of (r.stdout ?? '').split('\n')) {
    const m = /\s(\S+)\s+users:\(\("[^"]*",pid=(\d+)/.exec(line);
    if (m) map.set(m[1], Number(m[2]));
  }
  return map;
}

/** Counts connections whose owner changed to another live worker since the last look. */
function watchHandoffs(s) {
  let last = new Map();
  return setInterval(() => {
    const now = owners(s);
    for (const [peer, pid] of now) {
      const before = last.get(peer);
      if (before !== undefined && before !== pid) s.handoffs++;
    }
    last = now;
  }, 500);
}

/** Moves process `pid` (all its threads) to `cpu`; false if it is gone. */
function moveTo(pid, cpu) {
  return spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' }).status === 0;
}

/** wrk's summary as the client's counts: every socket error and non-2xx fails. */
function wrkCounts(out) {
  const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errors = /Socket errors: (.*)/.exec(out)?.[1];
  const socketErrors = errors ? errors.split(',').reduce((n, part) => n + Number(/(\d+)/.exec(part)?.[1] ?? 0), 0) : 0;
  const failed = non2xx + socketErrors;
  return { ok: total - non2xx, retried: 0, failed, errors: failed ? [`wrk: ${non2xx} non-2xx, socket errors: ${errors ?? 'none'}`] : [] };
}

/** One burst (and hold) from a client process that hops between CPUs:
 * wrk (as the benchmark runs it) when installed and nothing is held open,
 * else bench/stress-client.mjs. */
async function burst(s, { connections, burstS, holdS, pingS }) {
  let cpu = Math.floor(Math.random() * CPUS);
  const useWrk = WRK && holdS === 0;
  const load = useWrk
    ? ['wrk', `-t${connections > 1 ? 2 : 1}`, `-c${connections}`, `-d${Math.round(burstS)}s`, `http://127.0.0.1:${s.port}/`]
    : [process.execPath, join(ROOT, 'bench/stress-client.mjs'), '--port', String(s.port), '--connections', String(connections), '--burst', String(burstS), '--hold', String(holdS), '--ping', String(pingS)];
  const client = spawn('taskset', ['-c', String(cpu), ...load], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  client.stdout.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => client.on('exit', resolve));
  let running = true;
  void exited.then(() => (running = false));
  const burstEnd = Date.now() + burstS * 1000;
  while (running) {
    // Fast hops under load, slow ones while idle (before the pings).
    await Promise.race([sleep(Date.now() < burstEnd ? 700 : Math.max(pingS, 1) * 1000 * 0.7), exited]);
    if (!running) break;
    cpu = (cpu + 1) % CPUS;
    moveTo(client.pid, cpu);
  }
  const code = await exited;
  let counts;
  try {
    counts = useWrk ? wrkCounts(out) : JSON.parse(out.trim().split('\n').pop());
  } catch {
    failures.push(`${s.name}: the client exited with code ${code} and no counts`);
    return;
  }
  s.ok += counts.ok;
  s.retried += counts.retried;
  s.failed += counts.failed;
  for (const e of counts.errors) failures.push(`${s.name}: request failed: ${e}`);
  say(`${s.name} ${useWrk ? 'wrk ' : ''}c=${connections} ${burstS.toFixed(1)}s burst, ${holdS.toFixed(0)}s hold: ${counts.ok} ok, ${counts.retried} retried, ${counts.failed} failed`);
}

function hup(s) {
  s.hups++;
  s.child.kill('SIGHUP');
}

/** `n` busy loops, to stand in for a machine busy with other work. */
function hogs(n) {
  return Array.from({ length: n }, () => spawn(process.execPath, ['-e', 'for (;;);'], { stdio: 'ignore' }));
}

let stopping = false;
const rt = runtime();
// Bounded whatever happens (from here: the ASan build above takes what it takes).
const watchdog = setTimeout(() => {
  say('watchdog: the job overran its bound; killing everything');
  for (const s of servers) s.child.kill('SIGKILL');
  process.exit(2);
}, (SECONDS + 150) * 1000);
watchdog.unref();
const servers = [
  startServer('pinned', { taskset: '0', args: ['-w', '1'] }, rt),
  startServer('twin', { args: ['-w', '2'] }, rt),
  startServer('pair', { args: ['-w', '2', '--keep-alive', '75', '--max-requests', '15000', '--max-requests-jitter', '10000'] }, rt),
];
const bootUntil = Date.now() + 60_000;
while (servers.some((s) => !s.port || s.booted === 0) && Date.now() < bootUntil && failures.length === 0) await sleep(100);
if (servers.some((s) => !s.port)) failures.push(`a server did not start:\n${servers.map((s) => s.log).join('')}`);
else await sleep(ASAN ? 5000 : 1000);
if (ASAN) {
  // The sanitized addon only reports if the runtime came along: check the maps.
  for (const s of servers) {
    const pids = [s.child.pid, ...[...s.log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]))];
    for (const pid of pids) {
      const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
      if (!maps.includes('libasan') || !maps.includes(join(rt.dist, ADDON))) failures.push(`${s.name}: pid ${pid} runs without the ASan runtime or addon`);
    }
  }
}
const watchers = servers.map(watchHandoffs);
const deadline = Date.now() + SECONDS * 1000;

let cycle = 0;
while (failures.length === 0 && Date.now() < deadline) {
  const s = servers[cycle % servers.length];
  // Each server gets c=1 and c=64 bursts in turn.
  const connections = [1, 64][Math.floor(cycle / servers.length) % 2];
  const burstS = between(2, 5);
  const remaining = (deadline - Date.now()) / 1000 - burstS;
  const idleS = Math.max(0, Math.min(between(IDLE_MIN, IDLE_MAX), remaining));
  const load = cycle % 2 === 1 ? hogs(HOGS) : [];
  if (Math.random() < 1 / 3) setTimeout(() => hup(pick(servers)), between(0, (burstS + idleS) * 1000)).unref();
  // The pair keeps its connections open through the idle period; the other
  // servers' clients leave at the end of the burst, as wrk does.
  const holdS = s.name === 'pair' ? idleS : 0;
  await burst(s, { connections, burstS, holdS, pingS: holdS > 0 ? between(5, 10) : 0 });
  for (const h of load) h.kill('SIGKILL');
  if (holdS === 0) await sleep(idleS * 1000);
  cycle++;
}

if (cycle === 0 && failures.length === 0) failures.push('no cycle ran: STRESS_SECONDS is shorter than one burst');
// Stop: SIGTERM, and every arbiter must exit cleanly on its own.
stopping = true;
for (const w of watchers) clearInterval(w);
for (const s of servers) if (s.exited === null) s.child.kill('SIGTERM');
const stopUntil = Date.now() + 45_000;
while (servers.some((s) => s.exited === null) && Date.now() < stopUntil) await sleep(100);
for (const s of servers) {
  if (s.exited === null) {
    failures.push(`${s.name}: the arbiter did not stop within 45s of SIGTERM`);
    s.child.kill('SIGKILL');
  } else if (s.exited.code !== 0) {
    failures.push(`${s.name}: the arbiter ended with code ${s.exited.code}, signal ${s.exited.signal}`);
  }
}

const minutes = ((Date.now() - startedAt) / 60_000).toFixed(1);
const gcNote = GC_MS === '0' ? 'V8 left alone' : `GC forced every ${GC_MS} ms with --stress-compaction`;
console.log(`\nstress: ${minutes} min, ${cycle} cycles${ASAN ? ', addon under AddressSanitizer' : ''}, ${gcNote}${HOGS ? `, ${HOGS} CPU hogs every other cycle` : ''}\n`);
console.log('| server | requests ok | retried | failed | workers booted | graceful exits | died | HUPs | handoffs seen | forced GCs (exited processes) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const s of servers) console.log(`| ${s.name} | ${s.ok} | ${s.retried} | ${s.failed} | ${s.booted} | ${s.exits} | ${s.deaths} | ${s.hups} | ${s.handoffs} | ${s.gcs} |`);
if (failures.length > 0) {
  console.log(`\nFAILED:\n${failures.map((f) => `- ${f}`).join('\n')}`);
  process.exitCode = 1;
} else {
  console.log('\nno process died, no request failed');
}
