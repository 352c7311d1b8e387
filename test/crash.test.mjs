// Deaths by fatal signals, in every state a worker can be in, and of the
// arbiter itself: each leaves a CRITICAL line (with a native backtrace)
// naming the signal, and the arbiter logs, respawns and keeps serving.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CLI, ROOT, alive, curl, fixture, freshRequests, python, raw, serve, statusLines, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');
const booted = (log) => [...log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));
const loading = (log, pid) => log.includes(`[${pid}] [DEBUG] Loading `);
const readyCount = (log) => (log.match(/Worker ready/g) ?? []).length;

/** The worker's own report of a signal this test sent, with a backtrace after it. */
function assertReported(t, log, who, pid, signal) {
  const line = `[CRITICAL] ${who} (pid:${pid}) received fatal signal ${signal} sent by pid ${process.pid} (uid ${process.getuid()})`;
  t.true(log.includes(line), `${who} ${pid} reports ${signal}:\n${log}`);
  const after = log.slice(log.indexOf(line));
  t.regex(after, /\n {4}#0 \S+/, 'a backtrace follows');
  t.regex(after, new RegExp(`Ending with ${signal}'s default action`));
}

const killedLine = (pid, signal) => new RegExp(`\\[ERROR\\] Worker \\(pid:${pid}\\) was killed by signal ${signal}`);

test('an idle worker killed by SIGSEGV, SIGBUS or SIGKILL: reported, respawned, serving', async (t) => {
  const server = await serve(t, ROUTES, { workers: 1 });
  for (const signal of ['SIGSEGV', 'SIGBUS', 'SIGKILL']) {
    const pid = booted(server.log).at(-1);
    const ready = readyCount(server.log);
    process.kill(pid, signal);
    await waitFor(() => killedLine(pid, signal).test(server.log), 10_000, `${signal} logged`);
    if (signal !== 'SIGKILL') assertReported(t, server.log, 'Worker', pid, signal);
    await waitFor(() => readyCount(server.log) > ready, 10_000, 'the replacement');
    t.is(await curl(`${server.url}/pid`), String(booted(server.log).at(-1)));
  }
  t.false(server.log.includes('Arbiter (pid:'), 'the arbiter is unharmed');
});

test('a busy worker killed by SIGBUS: its client gets a 503, the replacement serves', async (t) => {
  const server = await serve(t, ROUTES, { workers: 1 });
  const [pid] = booted(server.log);
  const hung = raw(server.port, 'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 10_000 });
  await waitFor(() => server.log.includes('spin request started'), 5000, 'the spin request');
  process.kill(pid, 'SIGBUS');
  t.deepEqual(statusLines((await hung).text), ['HTTP/1.1 503 Service Unavailable'], 'a 503, not a reset');
  await waitFor(() => killedLine(pid, 'SIGBUS').test(server.log), 10_000, 'the death logged');
  assertReported(t, server.log, 'Worker', pid, 'SIGBUS');
  await waitFor(() => readyCount(server.log) === 2, 10_000, 'the replacement');
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('during a HUP: the booting worker and then the old one killed; the slot serves throughout, then from the new code', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gate = join(dir, 'gate');
  writeFileSync(gate, '');
  const server = await serve(t, fixture('gated-boot.mjs'), { workers: 1, env: { BOOT_GATE: gate } });
  const [old] = booted(server.log);
  rmSync(gate);
  server.child.kill('SIGHUP');
  await waitFor(() => booted(server.log).length === 2, 10_000, 'a new worker booting');
  const first = booted(server.log)[1];
  await waitFor(() => loading(server.log, first), 10_000, 'the new worker loading the app');
  process.kill(first, 'SIGSEGV');
  await waitFor(() => killedLine(first, 'SIGSEGV').test(server.log), 10_000, 'the booting worker death');
  assertReported(t, server.log, 'Worker', first, 'SIGSEGV');
  t.is(await curl(`${server.url}/pid`), String(old), 'the old worker keeps serving');
  await waitFor(() => booted(server.log).length === 3, 10_000, 'another new worker booting');
  const second = booted(server.log)[2];
  await waitFor(() => loading(server.log, second), 10_000, 'it loading the app');
  // Now the serving worker dies while its replacement is still loading.
  process.kill(old, 'SIGKILL');
  await waitFor(() => killedLine(old, 'SIGKILL').test(server.log), 10_000, 'the old worker death');
  const queued = curl(`${server.url}/pid`);
  writeFileSync(gate, '');
  t.is(await queued, String(second), 'a request queued while no worker was ready is served by the new one');
  t.is(alive(first) || alive(old), false);
});

test('a draining worker killed by SIGSEGV: reported as a crash while draining, its client gets a 503', async (t) => {
  const server = await serve(t, ROUTES, { workers: 1 });
  const [old] = booted(server.log);
  const slow = raw(server.port, 'GET /sleep?ms=8000 HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 10_000 });
  await waitFor(() => server.log.includes('sleep request started'), 5000, 'the slow request');
  server.child.kill('SIGHUP');
  await waitFor(() => readyCount(server.log) === 2, 10_000, 'the replacement ready');
  // The old worker drains (told so as its replacement got ready) while its request sleeps.
  process.kill(old, 'SIGSEGV');
  t.deepEqual(statusLines((await slow).text), ['HTTP/1.1 503 Service Unavailable']);
  await waitFor(() => new RegExp(`Worker \\(pid:${old}\\) was killed by signal SIGSEGV while draining`).test(server.log), 10_000, 'the death logged');
  assertReported(t, server.log, 'Worker', old, 'SIGSEGV');
  t.is(booted(server.log).length, 2, 'no respawn: the replacement is already serving');
  t.is(await curl(`${server.url}/pid`), String(booted(server.log)[1]));
});

test('workers killed while keep-alive connections hop between CPUs (handoffs): the arbiter keeps serving', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2 });
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stop = join(dir, 'stop');
  const started = join(dir, 'started');
  // Four client threads, each with a keep-alive connection, moving between
  // the CPUs every few requests (so idle connections are handed over),
  // reconnecting after a failure; bounded by a stop file and 40 s.
  const client = python(
    `
import http.client, os, threading, time
cpus = sorted(os.sched_getaffinity(0))
until = time.time() + 40
counts = {'ok': 0, 'fail': 0}
lock = threading.Lock()
def run(k):
    c = None
    i = 0
    while not os.path.exists(${JSON.stringify(stop)}) and time.time() < until:
        i += 1
        if i % 5 == 0: os.sched_setaffinity(0, {cpus[(i // 5 + k) % len(cpus)]})
        try:
            if c is None: c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
            c.request('GET', '/ok'); ok = c.getresponse().read() == b'ok'
        except Exception:
            ok = False; c.close(); c = None
        with lock: counts['ok' if ok else 'fail'] += 1
        if counts['ok'] == 50: open(${JSON.stringify(started)}, 'w').close()
threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(counts['ok'], counts['fail'])
`,
    server.port,
  );
  try {
    await waitFor(() => existsSync(started), 15_000, 'the clients running');
    for (const signal of ['SIGSEGV', 'SIGKILL', 'SIGBUS', 'SIGSEGV']) {
      const ready = readyCount(server.log);
      const victim = booted(server.log).filter(alive).at(-1);
      process.kill(victim, signal);
      await waitFor(() => killedLine(victim, signal).test(server.log), 10_000, `${signal} logged`);
      await waitFor(() => readyCount(server.log) > ready, 10_000, 'the replacement ready');
    }
  } finally {
    writeFileSync(stop, '');
  }
  const [ok] = (await client).trim().split(' ').map(Number);
  t.true(ok >= 50, `requests served meanwhile: ${ok}`);
  t.false(server.log.includes('Arbiter (pid:'), 'the arbiter is unharmed');
  t.is(await freshRequests(server.port, 10), 10, 'and serves every new connection after');
});

/** Runs `rwsgi serve` with `env` until it exits; resolves with its log and exit. */
function runUntilExit(args, env = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'serve', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ log, code, signal, pid: child.pid });
    });
  });
}

test('the arbiter killed by a fatal signal says so before it dies, and its workers follow', async (t) => {
  for (const signal of ['SIGSEGV', 'SIGBUS', 'SIGILL', 'SIGFPE', 'SIGABRT', 'SIGALRM']) {
    const server = await serve(t, ROUTES, { workers: 1 });
    const [worker] = booted(server.log);
    server.child.kill(signal);
    const exit = await server.exited;
    t.is(exit.signal, signal, `ended by ${signal}`);
    assertReported(t, server.log, 'Arbiter', server.child.pid, signal);
    await waitFor(() => !alive(worker), 10_000, 'the orphaned worker gone');
  }
});

test('an uncaught exception, an unhandled rejection or a stray exit in the arbiter is logged before it exits', async (t) => {
  const args = [ROUTES, '-b', '127.0.0.1:0', '-w', '1'];
  const env = (how) => ({ DIE_HOW: how, NODE_OPTIONS: `--import=${fixture('arbiter-dies.mjs')}` });
  const [exception, rejection, exit] = await Promise.all(['exception', 'rejection', 'exit'].map((how) => runUntilExit(args, env(how))));
  t.is(exception.code, 1);
  t.regex(exception.log, new RegExp(`\\[CRITICAL\\] Uncaught exception in the arbiter \\(pid:${exception.pid}\\), exiting:\\nError: injected arbiter exception\\n +at `));
  t.is(rejection.code, 1);
  t.regex(rejection.log, new RegExp(`\\[CRITICAL\\] Unhandled promise rejection in the arbiter \\(pid:${rejection.pid}\\), exiting:\\nError: injected arbiter rejection\\n +at `));
  t.is(exit.code, 7);
  t.regex(exit.log, new RegExp(`\\[CRITICAL\\] Arbiter \\(pid:${exit.pid}\\) exiting with status 7 before shutting down`));
});
