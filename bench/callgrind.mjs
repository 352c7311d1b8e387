// Instructions per request of one worker, counted by callgrind: repeatable
// whatever else runs on the machine, unlike requests/s. Usage:
//   node bench/callgrind.mjs [--requests 5000] [--warmup 5000]
//        [--variant 'plain=' --variant 'metrics=--metrics-bind 127.0.0.1:0']
// Each variant serves bench/apps/rwsgi-app.js with one worker under
// `valgrind --tool=callgrind --trace-children=yes --instr-atstart=no`;
// after `--warmup` keep-alive GETs (so V8 has compiled the hot path), the
// worker's instrumentation is switched on for `--requests` more and off
// again (callgrind_control), and its instruction count is divided by them.
// Heartbeats in that window are included: under valgrind a run takes long,
// so their share is overstated, not hidden. The whole worker's count moves
// by a few percent from run to run (V8 compiles and collects when it
// likes); the addon's own count (the engine) is steady, so it is printed
// apart.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '5000' },
    warmup: { type: 'string', default: '5000' },
    variant: { type: 'string', multiple: true, default: ['plain=', 'metrics=--metrics-bind 127.0.0.1:0'] },
  },
});

const LOAD = `
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
for i in range(n):
    c.request('GET', '/'); r = c.getresponse(); r.read()
`;
const load = (port, n) => execFileSync('python3', ['-c', LOAD, String(port), String(n)]);

async function until(predicate, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = predicate();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Instructions spent in the addon itself (rwsgi*.node): the engine's share,
 * free of the JIT's and the garbage collector's run-to-run variation. */
function addonInstructions(file) {
  const text = execFileSync('callgrind_annotate', ['--threshold=100', file], { maxBuffer: 256 * 1024 * 1024 }).toString();
  let sum = 0;
  for (const m of text.matchAll(/^\s*([\d,]+) \([^)]*\)\s+.*\[[^\]]*rwsgi[^\]]*\.node\]$/gm)) sum += Number(m[1].replaceAll(',', ''));
  return sum;
}

async function measure(name, extra) {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-callgrind-'));
  const args = ['serve', 'bench/apps/rwsgi-app.js', '-b', '127.0.0.1:0', '-w', '1', '--timeout', '600', '--boot-timeout', '300', '--log-level', 'info'];
  const child = spawn(
    'valgrind',
    ['--tool=callgrind', '--trace-children=yes', '--instr-atstart=no', `--callgrind-out-file=${dir}/cg.%p`, process.execPath, 'dist/cli/main.js', ...args, ...extra],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  try {
    const port = Number((await until(() => /Listening at: http:\/\/\S+:(\d+)/.exec(log), 120_000, 'listening'))[1]);
    const worker = Number((await until(() => /Booting worker with pid: (\d+)/.exec(log), 120_000, 'the worker'))[1]);
    load(port, Number(values.warmup));
    execFileSync('callgrind_control', ['-i', 'on', String(worker)]);
    load(port, Number(values.requests));
    execFileSync('callgrind_control', ['-i', 'off', String(worker)]);
    execFileSync('callgrind_control', ['-d', String(worker)]);
    const dump = await until(() => readdirSync(dir).find((f) => f.startsWith(`cg.${worker}.`)), 30_000, 'the dump');
    const file = join(dir, dump);
    const totals = Number(/^totals: (\d+)/m.exec(readFileSync(file, 'utf8'))?.[1]);
    const n = Number(values.requests);
    return { name, perRequest: totals / n, addonPerRequest: addonInstructions(file) / n };
  } finally {
    child.kill('SIGINT');
    await new Promise((r) => child.on('close', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

const results = [];
for (const variant of values.variant) {
  const [name, rest] = [variant.slice(0, variant.indexOf('=')), variant.slice(variant.indexOf('=') + 1)];
  results.push(await measure(name, rest.split(' ').filter(Boolean)));
  const r = results.at(-1);
  console.log(`${name}: ${Math.round(r.perRequest)} instructions per request, ${Math.round(r.addonPerRequest)} of them in the addon`);
}
const [base, ...others] = results;
const pct = (a, b) => `${(((a - b) / b) * 100).toFixed(2)}%`;
for (const r of others) {
  console.log(
    `${r.name} vs ${base.name}: ${pct(r.perRequest, base.perRequest)} in all, addon ${Math.round(r.addonPerRequest - base.addonPerRequest)} instructions per request`,
  );
}
