// rwsgi as PID 1 (as in a container started without an init): in a new PID
// namespace it handles TERM (PID 1 gets no signal it has no handler for),
// reaps a killed worker and respawns it, and leaves no zombie.

import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import test from 'ava';
import { CLI, ROOT, alive, curl, fixture, waitFor } from './helpers.mjs';

const canUnshare = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;

/** [pid, state] of each process whose parent is `ppid`, from /proc. */
function childrenOf(ppid) {
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const [state, parent] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(parent) === ppid) out.push([Number(name), state]);
    } catch {
      // Exited meanwhile.
    }
  }
  return out;
}

(canUnshare ? test : test.skip)('as PID 1 of a PID namespace: a killed worker is reaped and respawned, no zombies, TERM stops cleanly', async (t) => {
  const child = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, CLI, 'serve', fixture('routes.mjs'), '-b', '127.0.0.1:0', '-w', '2', '--log-level', 'debug'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  t.teardown(() => child.kill('SIGKILL'));

  const port = Number((await waitFor(() => /Listening at: http:\/\/\S+:(\d+) \(1\)/.exec(log), 15_000, 'listening as pid 1'))[1]);
  await waitFor(() => (log.match(/Worker ready/g) ?? []).length >= 2, 20_000, 'two workers');
  // The arbiter, seen from here: unshare's child.
  const [[arbiter]] = await waitFor(() => childrenOf(child.pid).length === 1 && [childrenOf(child.pid)[0]], 5000, 'the arbiter');
  const workers = childrenOf(arbiter).map(([pid]) => pid);
  t.is(workers.length, 2);

  process.kill(workers[0], 'SIGKILL');
  await waitFor(() => (log.match(/Worker ready/g) ?? []).length >= 3, 20_000, 'the respawned worker');
  t.regex(log, /\[1\] \[ERROR\] Worker \(pid:\d+\) was killed by signal SIGKILL; respawning/);
  t.false(alive(workers[0]) && childrenOf(arbiter).some(([pid]) => pid === workers[0]), 'the killed worker was reaped');
  t.deepEqual(childrenOf(arbiter).filter(([, state]) => state === 'Z'), [], 'no zombie');
  t.is(await curl(`http://127.0.0.1:${port}/ok`), 'ok');

  process.kill(arbiter, 'SIGTERM');
  t.deepEqual(await exited, { code: 0, signal: null });
  t.regex(log, /\[1\] \[INFO\] Handling signal: term/);
  t.regex(log, /\[1\] \[INFO\] Shutting down: Master/);
});
