// The arbiter with real worker processes: both workers answer, a dead
// worker is replaced, signals stop everything, and startup errors exit with
// gunicorn's codes.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CLI, alive, curl, fixture, python, ROOT, serve, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');


const workerPids = (log) => [...log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));

test('both workers of a 2-worker server answer (--spread random)', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2, args: ['--spread', 'random'] });
  const out = await python(
    `
import http.client
pids = set()
for i in range(200):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    c.request('GET', '/pid'); pids.add(c.getresponse().read().decode()); c.close()
    if len(pids) == 2: break
print(' '.join(sorted(pids)))
`,
    server.port,
  );
  t.deepEqual(out.trim().split(' ').map(Number).sort(), workerPids(server.log).sort());
});

/** The worker pids answering `n` fresh connections made from a client pinned to `cpu`. */
async function pidsFromCpu(port, cpu, n) {
  const out = await python(
    `
import http.client, os
os.sched_setaffinity(0, {${cpu}})
pids = set()
for i in range(${n}):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    c.request('GET', '/pid'); pids.add(int(c.getresponse().read())); c.close()
print(' '.join(map(str, sorted(pids))))
`,
    port,
  );
  return out.trim().split(' ').map(Number);
}

/** A process's main thread's allowed CPUs, as /proc lists them ("0-1"). */
const cpusAllowed = (pid) => /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];

// These expect the machine of this project: CPUs 0 and 1.
const twoCpus = cpusAllowed(process.pid) === '0-1' ? test : test.skip;

twoCpus('by default the connections from one CPU all reach one worker, a different one per CPU', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2 });
  const fromCpu0 = await pidsFromCpu(server.port, 0, 20);
  const fromCpu1 = await pidsFromCpu(server.port, 1, 20);
  t.is(fromCpu0.length, 1, 'CPU 0: one worker');
  t.is(fromCpu1.length, 1, 'CPU 1: one worker');
  t.deepEqual([...fromCpu0, ...fromCpu1].sort(), workerPids(server.log).sort());
  t.is(cpusAllowed(fromCpu0[0]), '0', 'the worker runs where its connections arrive');
  t.is(cpusAllowed(fromCpu1[0]), '1');
});

twoCpus('a keep-alive connection follows its client to the worker of the CPU it moved to', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2 });
  const out = await python(
    `
import http.client, os, time
os.sched_setaffinity(0, {0})
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
def pid():
    c.request('GET', '/pid'); r = c.getresponse()
    assert r.status == 200, r.status
    return int(r.read())
first = pid()
os.sched_setaffinity(0, {1})
until = time.time() + 10
now = pid()
while now == first and time.time() < until:
    time.sleep(0.01)
    now = pid()
print(first, now, pid())
`,
    server.port,
  );
  const [first, moved, after] = out.trim().split(' ').map(Number);
  t.not(moved, first, 'served by the other worker once the client runs on CPU 1');
  t.is(after, moved, 'and it stays there');
  await waitFor(() => new RegExp(`\\[${first}\\] \\[DEBUG\\] Handed 1 idle connections to other workers, received 0`).test(server.log), 5000, 'the handoff counted');
  await waitFor(() => new RegExp(`\\[${moved}\\] \\[DEBUG\\] Handed 0 idle connections to other workers, received 1`).test(server.log), 5000, 'and its arrival');
  t.deepEqual([first, moved].sort(), workerPids(server.log).sort());
});

twoCpus('connections arriving on one CPU turn the spread random', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2, args: ['--timeout', '2'] });
  const stop = join(mkdtempSync(join(tmpdir(), 'rwsgi-')), 'stop');
  // Fresh connections from CPU 0 only, until the arbiter notices (bounded).
  const client = python(
    `
import http.client, os, time
os.sched_setaffinity(0, {0})
until = time.time() + 30
n = 0
while not os.path.exists(${JSON.stringify(stop)}) and time.time() < until:
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    c.request('GET', '/ok'); c.getresponse().read(); c.close(); n += 1
print(n)
`,
    server.port,
  );
  try {
    await waitFor(() => /unevenly across CPUs \(slot shares (100%\/0%|0%\/100%)\): spreading them at random/.test(server.log), 25_000, 'the switch');
  } finally {
    writeFileSync(stop, '');
  }
  t.true(Number(await client) >= 256);
  t.deepEqual(await pidsFromCpu(server.port, 0, 40), workerPids(server.log).sort((a, b) => a - b));
  const all = cpusAllowed(process.pid);
  await waitFor(() => workerPids(server.log).every((pid) => cpusAllowed(pid) === all), 5000, 'workers free to run on any CPU');
});

test('a worker that dies is replaced in its slot', async (t) => {
  const server = await serve(t, ROUTES, { workers: 1 });
  const [first] = workerPids(server.log);
  process.kill(first, 'SIGKILL');
  await waitFor(() => workerPids(server.log).length === 2, 10_000, 'respawn');
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length === 2, 10_000, 'replacement ready');
  t.regex(server.log, new RegExp(`Worker \\(pid:${first}\\) was killed by signal SIGKILL`));
  const [, second] = workerPids(server.log);
  t.is(await curl(`${server.url}/pid`), String(second));
});

test('TERM stops the workers and the arbiter with status 0', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2 });
  const pids = workerPids(server.log);
  const exit = await server.stop('SIGTERM');
  t.deepEqual(exit, { code: 0, signal: null });
  t.regex(server.log, /Handling signal: term/);
  t.regex(server.log, /Shutting down: Master/);
  for (const pid of pids) t.false(alive(pid), `worker ${pid} is gone`);
});

test('TERM lets an in-flight request finish', async (t) => {
  const server = await serve(t, ROUTES);
  const pending = curl(`${server.url}/slow`);
  await waitFor(() => server.log.includes('slow request started'), 5000, 'the request in flight');
  const exit = server.stop('SIGTERM');
  t.is(await pending, 'slow');
  t.is((await exit).code, 0);
});

test('INT stops everything quickly', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2 });
  const pids = workerPids(server.log);
  const exit = await server.stop('SIGINT');
  t.is(exit.code, 0);
  for (const pid of pids) t.false(alive(pid));
});

test('IPv6 loopback binds and serves', async (t) => {
  const server = await serve(t, ROUTES, { bind: '[::1]:0' });
  t.regex(server.log, /Listening at: http:\/\/\[::1\]:\d+/);
  t.is(await curl(`http://[::1]:${server.port}/ok`), 'ok');
});

test('several --bind addresses are all served', async (t) => {
  const server = await serve(t, ROUTES, { args: ['-b', '127.0.0.2:0'] });
  const ports = [...server.log.matchAll(/Listening at: http:\/\/(\S+):(\d+)/g)].map((m) => [m[1], m[2]]);
  t.is(ports.length, 2);
  for (const [host, port] of ports) t.is(await curl(`http://${host}:${port}/ok`), 'ok');
});

function runCli(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    // 'close', not 'exit': the output is complete only once stdout/stderr end.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test('an app that throws at import: error printed once, exit 4, fast', async (t) => {
  const started = Date.now();
  const { code, out } = await runCli(['serve', fixture('broken.mjs'), '-b', '127.0.0.1:0', '-w', '2']);
  t.is(code, 4);
  t.is(out.match(/this app is broken at import time/g)?.length, 1);
  t.regex(out, /App failed to load/);
  t.true(Date.now() - started < 10_000);
});

test('a missing app module exits 4 and names the file', async (t) => {
  const { code, out } = await runCli(['serve', 'no/such/app.js', '-b', '127.0.0.1:0', '-w', '1']);
  t.is(code, 4);
  t.regex(out, /app module 'no\/such\/app\.js' not found/);
});

test('a bind error exits 3 with a clear message', async (t) => {
  const server = await serve(t, ROUTES);
  const { code, out } = await runCli(['serve', ROUTES, '-b', `127.0.0.1:${server.port}`, '-w', '1']);
  t.is(code, 3);
  t.regex(out, new RegExp(`cannot listen at 127\\.0\\.0\\.1:${server.port}: .*[Aa]ddress already in use`));
});

test('usage errors exit 3 and say what is wrong', async (t) => {
  const cases = [
    [['serve'], /missing MODULE/],
    [['serve', 'a.js', '-w', 'zero'], /--workers must be an integer >= 1, got 'zero'/],
    [['serve', 'a.js', '--keep-alive=-1'], /--keep-alive must be a number of seconds >= 0/],
    [['serve', 'a.js', '-b', 'host:99999'], /--bind 'host:99999' is not HOST:PORT/],
    [['serve', 'a.js', '--log-level', 'loud'], /--log-level must be one of/],
    [['serve', 'a.js', '--spread', 'hash'], /--spread must be one of cpu, random, got 'hash'/],
    [['serve', 'a.js', '--frobnicate'], /Unknown option '--frobnicate'/],
    [['launch'], /unknown command 'launch'/],
  ];
  for (const [args, pattern] of cases) {
    const { code, out } = await runCli(args);
    t.is(code, 3, args.join(' '));
    t.regex(out, pattern);
  }
});

test('--help and --version', async (t) => {
  const help = await runCli(['--help']);
  t.is(help.code, 0);
  t.regex(help.out, /usage: rwsgi serve MODULE\[:EXPORT\]/);
  const version = await runCli(['--version']);
  t.regex(version.out, /^rwsgi \d+\.\d+\.\d+\n$/);
});
