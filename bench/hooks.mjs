// What request hooks cost: one rwsgi worker serving bench/apps/rwsgi-app.js
// with no config file, then with empty preRequest/postRequest hooks, in
// interleaved rounds of `wrk -t1 -c32` (plain keep-alive GETs). Prints the
// median req/s and the worker's CPU µs per request (from /proc). Without
// hooks the dispatcher runs exactly the code it ran before hooks existed
// (no wrapper, the plain Exchange class); `--base DIR` adds a row for
// another build (DIR/dist, e.g. the commit before hooks) to show it.
//
//   node bench/hooks.mjs [--rounds 3] [--seconds 3] [--base DIR]

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '3' }, base: { type: 'string' } },
});
const dir = mkdtempSync(join(tmpdir(), 'rwsgi-bench-hooks-'));
const hooked = join(dir, 'hooks.mjs');
writeFileSync(hooked, 'export default { preRequest() {}, postRequest() {} };\n');
const CLI = join(ROOT, 'dist/cli/main.js');
const VARIANTS = { none: [CLI], 'pre+post': [CLI, '-c', hooked] };
if (values.base) VARIANTS[`before hooks (${values.base})`] = [join(values.base, 'dist/cli/main.js')];

const cpuSeconds = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};

async function round(name, [cli, ...args]) {
  const argv = [cli, 'serve', 'bench/apps/rwsgi-app.js', '-b', '127.0.0.1:0', '-w', '1', '--log-level', 'debug', ...args];
  const child = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const until = Date.now() + 15_000;
  while (!/Worker ready/.test(log) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  const port = /Listening at: http:\/\/\S+:(\d+)/.exec(log)?.[1];
  const worker = Number(/Booting worker with pid: (\d+)/.exec(log)?.[1]);
  if (!port || !worker) throw new Error(`${name}: server did not start:\n${log}`);
  const before = cpuSeconds(worker);
  const out = execFileSync('wrk', ['-t1', '-c32', '-d', `${values.seconds}s`, `http://127.0.0.1:${port}/`]).toString();
  const cpu = cpuSeconds(worker) - before;
  child.kill('SIGTERM');
  await new Promise((r) => child.on('close', r));
  const total = Number(/(\d+) requests in/.exec(out)?.[1]);
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), cpuUs: (cpu * 1e6) / total };
}

const results = Object.fromEntries(Object.keys(VARIANTS).map((k) => [k, []]));
for (let r = 0; r < Number(values.rounds); r++) for (const [name, args] of Object.entries(VARIANTS)) results[name].push(await round(name, args));
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log('| request hooks | req/s | worker CPU µs/req |\n|---|---|---|');
for (const [name, rs] of Object.entries(results)) {
  console.log(`| ${name} | ${Math.round(median(rs.map((x) => x.rps))).toLocaleString('en')} | ${median(rs.map((x) => x.cpuUs)).toFixed(2)} |`);
}
