// A worker that cannot take a connection gets none: one client thread's
// burst of keep-alive connections (all steered to one worker by CPU) is
// served by both workers once the first is full, including the
// connections already queued on the full one.

import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import test from 'ava';
import { fixture, python, serve, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');
// Expects the machine of this project: CPUs 0 and 1.
const twoCpus = /Cpus_allowed_list:\s*0-1\n/.test(readFileSync('/proc/self/status', 'utf8')) ? test : test.skip;

/** Opens `n` keep-alive connections from one thread, one GET on each, and
 * waits (at most 10 s) for every response: prints how many got a 200, the
 * slowest in seconds, and how many were reset. All stay open meanwhile. */
const BURST = `
import os, select, socket, time
# One client thread on one CPU: spread by CPU, all its connections go to one worker.
os.sched_setaffinity(0, {CPU})
socks, started, done, slowest, resets = [], {}, set(), 0.0, 0
for i in range(N):
    s = socket.create_connection(('127.0.0.1', port))
    s.sendall(b'GET /pid HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
    s.setblocking(False)
    socks.append(s); started[s] = time.time()
got = {s: b'' for s in socks}
deadline = time.time() + 10
while len(done) + resets < N and time.time() < deadline:
    ready, _, _ = select.select([s for s in socks if s not in done], [], [], 0.5)
    for s in ready:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            resets += 1; done.add(s); continue
        if not chunk:
            resets += 1; done.add(s); continue
        got[s] += chunk
        if b'\\r\\n\\r\\n' in got[s] and got[s].startswith(b'HTTP/1.1 200'):
            done.add(s); slowest = max(slowest, time.time() - started[s])
ok = sum(1 for s in socks if got[s].startswith(b'HTTP/1.1 200'))
pids = len({got[s].split(b'\\r\\n\\r\\n', 1)[-1] for s in socks if got[s].startswith(b'HTTP/1.1 200')})
print(ok, round(slowest, 3), resets, pids)
`;

twoCpus('one client thread with more connections than a worker takes: every one answered quickly, none reset', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2, args: ['--worker-connections', '200', '--keep-alive', '60'] });
  const out = await python(`N = 300\nCPU = 0\n${BURST}`, server.port);
  const [ok, slowest, resets, workers] = out.trim().split(' ').map(Number);
  t.is(ok, 300, `answered: ${out}`);
  t.is(resets, 0);
  t.true(slowest < 2, `slowest response ${slowest}s`);
  t.is(workers, 2, 'both workers served the burst');
  t.regex(server.log, /\[DEBUG\] Worker \(pid:\d+\) is full: new connections go to the others/);
  // Once those connections are gone, the full worker has room again.
  await waitFor(() => /\[DEBUG\] Worker \(pid:\d+\) has room again/.test(server.log), 10_000, 'room again');
});

const booted = (log) => [...log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));

twoCpus('one client thread at a worker out of descriptors (low ulimit -n): every connection answered quickly, none reset', async (t) => {
  const server = await serve(t, ROUTES, { workers: 2, args: ['--keep-alive', '60'] });
  // Both workers pinned, one per CPU: the client goes to the CPU of the one given a low limit.
  const cpuOf = (pid) => /Cpus_allowed_list:\s*(\d+)\n/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  const [limited] = booted(server.log);
  const cpu = await waitFor(() => cpuOf(limited), 10_000, 'the workers pinned');
  // Room for about 100 connections on top of what it has open.
  const open = readdirSync(`/proc/${limited}/fd`).length;
  execFileSync('prlimit', ['--pid', String(limited), `--nofile=${open + 100}`]);
  const out = await python(`N = 300\nCPU = ${cpu}\n${BURST}`, server.port);
  const [ok, slowest, resets, workers] = out.trim().split(' ').map(Number);
  t.is(ok, 300, `answered: ${out}`);
  t.is(resets, 0);
  t.true(slowest < 3, `slowest response ${slowest}s`);
  t.is(workers, 2, 'both workers served the burst');
  t.regex(server.log, new RegExp(`\\[${limited}\\] \\[WARNING\\] Cannot accept connections \\(EMFILE`));
  t.regex(server.log, new RegExp(`\\[DEBUG\\] Worker \\(pid:${limited}\\) is full: new connections go to the others`));
  // The client's connections closed: it has descriptors again, and rejoins.
  await waitFor(() => new RegExp(`Worker \\(pid:${limited}\\) has room again`).test(server.log), 10_000, 'room again');
});
