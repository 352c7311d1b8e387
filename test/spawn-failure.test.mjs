// The arbiter when the system will not start a worker (issue 19: an
// arbiter gone silent right at "respawning in 0.1s"): a spawn that fails
// (out of descriptors here; out of processes or memory on a busy machine)
// used to throw out of the reconcile tick and end the arbiter, with no log
// line. It must log the failure, back off and retry until a worker starts.

import { execFileSync, spawnSync } from 'node:child_process';
import test from 'ava';
import { alive, curl, fixture, serve, waitFor } from './helpers.mjs';

const hasPrlimit = spawnSync('prlimit', ['--version'], { stdio: 'ignore' }).status === 0;
const booted = (log) => [...log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));

/** Sets `pid`'s soft limit of open files; returns the previous one. */
function softNofile(pid, limit) {
  const before = execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--output', 'SOFT', '--noheadings']).toString().trim();
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limit}:`]);
  return before;
}

(hasPrlimit ? test : test.skip)('a worker that cannot be spawned is retried with backoff; the arbiter lives and serves again', async (t) => {
  const server = await serve(t, fixture('routes.mjs'), { workers: 1 });
  const arbiter = server.child.pid;
  const [worker] = booted(server.log);
  // No new descriptor can be opened: spawning fails with EMFILE.
  const before = softNofile(arbiter, 3);
  process.kill(worker, 'SIGKILL');
  await waitFor(() => (server.log.match(/\[ERROR\] Cannot start a worker \(.*EMFILE\); retrying in [\d.]+s/g) ?? []).length >= 2, 10_000, 'two failed spawns logged');
  t.true(alive(arbiter), 'the arbiter is still there');
  t.is(server.exit, null);
  softNofile(arbiter, before === 'unlimited' ? 'unlimited' : Number(before));
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 2, 15_000, 'a new worker ready');
  t.is(await curl(`${server.url}/ok`), 'ok');
  t.false(/TypeError|at new WorkerProcess/.test(server.log), server.log);
});
