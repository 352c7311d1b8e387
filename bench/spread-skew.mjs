// How fast the skew detector (src/arbiter/spread.ts) turns the spread
// random for one client thread, and whether normal two-thread load ever
// turns it (issue 15 item 3). Each run starts a 2-worker rwsgi (default
// --spread cpu, examples/hello.js) and runs wrk against it:
//   one:  taskset -c 0 wrk -t1 -c16 -H 'Connection: close' (one client thread, new connections)
//   two:  wrk -t2 -c64 -H 'Connection: close' (two client threads the scheduler places)
//   two-keepalive: wrk -t2 -c64 (keep-alive)
// and prints, per run, whether and when ("New connections arrive unevenly")
// the arbiter switched, in seconds after wrk started.
//   node bench/spread-skew.mjs [--dist DIR] [--rounds 3] [--seconds 15]
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({ options: { dist: { type: 'string', default: 'dist' }, rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '15' } } });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function run(name, wrkArgs, seconds) {
  const server = spawn(process.execPath, [`${values.dist}/cli/main.js`, 'serve', 'examples/hello.js', '-b', '127.0.0.1:0', '-w', '2'], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  server.stderr.on('data', (d) => (log += d));
  while ((log.match(/Booting worker/g) ?? []).length < 2 || !/Listening at: http:\/\/\S+:(\d+)/.test(log)) await sleep(50);
  await sleep(1500);
  const port = /Listening at: http:\/\/\S+:(\d+)/.exec(log)[1];
  const started = Date.now();
  let switchedAt = null;
  const watch = setInterval(() => {
    if (switchedAt === null && /arrive unevenly/.test(log)) switchedAt = Date.now();
  }, 20);
  const [command, ...args] = [...wrkArgs, '-d', `${seconds}s`, `http://127.0.0.1:${port}/`];
  const wrk = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  wrk.stdout.on('data', (d) => (out += d));
  const done = new Promise((r) => wrk.on('exit', r));
  // One thread: stop at the switch; two threads: run the whole time.
  while (!(name === 'one' && switchedAt !== null) && Date.now() - started < seconds * 1000 + 2000) await sleep(50);
  wrk.kill('SIGINT');
  await done;
  clearInterval(watch);
  server.kill('SIGINT');
  await new Promise((r) => server.on('exit', r));
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? '?';
  const shares = /slot shares ([\d%/]+)/.exec(log)?.[1];
  const when = switchedAt === null ? `no switch in ${seconds} s` : `switched after ${((switchedAt - started) / 1000).toFixed(1)} s (shares ${shares})`;
  console.log(`${name}: ${when}, ${rps} req/s`);
}

const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
for (let i = 0; i < rounds; i++) await run('one', ['taskset', '-c', '0', 'wrk', '-t1', '-c16', '-H', 'Connection: close'], seconds);
for (let i = 0; i < rounds; i++) await run('two', ['wrk', '-t2', '-c64', '-H', 'Connection: close'], seconds);
await run('two-keepalive', ['wrk', '-t2', '-c64'], seconds);
