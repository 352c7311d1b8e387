// The JavaScript stack of a worker's main thread: logged under WORKER
// TIMEOUT before the worker is killed, and returned by the arbiter's
// requestStack (what `rwsgi dump PID` shows) for a live worker.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';
import { ROOT, fixture, raw, serve, statusLines, waitFor } from './helpers.mjs';

const STUCK = fixture('stuck.mjs');
const booted = (log) => [...log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));

/** Sends `path` to a worker that will hang in it; resolves with the log after its replacement is up. */
async function hang(t, path, env = {}) {
  const server = await serve(t, STUCK, { args: ['--timeout', '2'], env });
  const response = raw(server.port, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, { ms: 20_000 });
  await waitFor(() => /exited with code 134|was killed by signal/.test(server.log), 20_000, 'the hung worker killed');
  t.deepEqual(statusLines((await response).text), ['HTTP/1.1 503 Service Unavailable'], 'the hung request gets a 503');
  const since = server.log.indexOf('WORKER TIMEOUT');
  t.true(since >= 0, server.log);
  return server.log.slice(server.log.lastIndexOf('\n', since) + 1);
}

test('while (true) {} in a handler: the WORKER TIMEOUT lines show its function and file, then it is killed', async (t) => {
  const log = await hang(t, '/spin');
  t.regex(log, /\[CRITICAL\] WORKER TIMEOUT \(pid:\d+\) GET \/spin running \d+\.\ds/);
  t.regex(log, /\[CRITICAL\] WORKER TIMEOUT \(pid:\d+\) JavaScript stack of worker \d+ \(\d+ frames\):\n {4}at spinForever \(file:\/\/\S+\/test\/fixtures\/stuck\.mjs:\d+:\d+\)\n/);
  t.regex(log, /\n {4}at app \(file:\/\/\S+stuck\.mjs:\d+:\d+\)/, 'the frames below it too');
});

test('Atomics.wait: V8 wakes the wait for the interrupt, so the stack shows it', async (t) => {
  const log = await hang(t, '/atomics');
  t.regex(log, /JavaScript stack of worker \d+ \(\d+ frames\):\n {4}at waitOnNothing \(\S+stuck\.mjs:\d+:\d+\)/);
});

test('a handler blocked in a system call: no stack, said so within the bound, then killed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-stack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fifo = join(dir, 'fifo');
  await new Promise((resolve, reject) => spawn('mkfifo', [fifo]).on('exit', (code) => (code === 0 ? resolve() : reject(new Error('mkfifo')))));
  const log = await hang(t, '/fifo', { STUCK_FIFO: fifo });
  t.regex(log, /\[CRITICAL\] WORKER TIMEOUT \(pid:\d+\) no JavaScript stack: the main thread did not reach JavaScript within 1 s \(blocked in a system call\?\)/);
  t.notRegex(log, /JavaScript stack of worker/);
});

/** The arbiter of the dump harness, with a `dump(pid)` that returns requestStack's report. */
async function dumpable(t, args) {
  const child = spawn(process.execPath, [fixture('dump-harness.mjs'), 'serve', STUCK, '-b', '127.0.0.1:0', '-w', '1', '--log-level', 'debug', ...args], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const server = { log: '' };
  child.stderr.on('data', (d) => (server.log += d));
  const exited = new Promise((resolve) => child.on('close', resolve));
  t.teardown(async () => {
    child.kill('SIGINT');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  });
  const answers = [];
  createInterface({ input: child.stdout }).on('line', (line) => answers.push(JSON.parse(line)));
  await waitFor(() => /Worker ready/.test(server.log), 15_000, 'the worker ready');
  server.port = Number(/Listening at: http:\/\/\S+:(\d+)/.exec(server.log)[1]);
  server.pid = booted(server.log)[0];
  server.dump = async (pid) => {
    const count = answers.length;
    child.stdin.write(`${pid}\n`);
    await waitFor(() => answers.length > count, 10_000, 'the dump');
    return answers[count];
  };
  return server;
}

test('requestStack of a live worker: idle, its stack is empty (the event loop waits); spinning, its frames and request', async (t) => {
  const server = await dumpable(t, ['--timeout', '60']);
  // A dump that lands while a timer's JavaScript runs shows that instead: ask again.
  const idle = await waitFor(async () => {
    const r = await server.dump(server.pid);
    return r.state === 'idle' ? r : null;
  }, 10_000, 'an idle dump');
  t.like(idle, { pid: server.pid, state: 'idle', frames: [], total: 0, error: null });
  t.is((await server.dump(999_999_999)).error, 'no worker with pid 999999999');

  raw(server.port, 'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 2000 }).catch(() => {});
  await waitFor(() => server.log.includes('/spin request started'), 10_000, 'the spin request');
  // The busy note names the request once the heartbeat is late.
  const report = await waitFor(async () => {
    const r = await server.dump(server.pid);
    return r.state === 'running' && r.oldest.startsWith('GET /spin') ? r : null;
  }, 15_000, 'a dump naming the spinning request');
  t.is(report.frames[0].function, 'spinForever');
  t.regex(report.frames[0].file, /stuck\.mjs$/);
  t.true(report.frames[0].line > 0 && report.frames[0].column > 0);
  t.true(report.total >= report.frames.length);
});
