// A server whose stderr reader went away (issue 19: an arbiter that
// stopped without a log line): writing a log line to the closed pipe
// (EPIPE) used to end the process that wrote it, silently. The arbiter and
// its workers must keep serving and supervising.

import { execFileSync } from 'node:child_process';
import test from 'ava';
import { alive, curl, fixture, serve, waitFor } from './helpers.mjs';

const children = (pid) => {
  try {
    return execFileSync('pgrep', ['-P', String(pid)]).toString().trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
};

test('log lines to a closed stderr pipe end neither the arbiter nor a worker', async (t) => {
  const server = await serve(t, fixture('routes.mjs'), { workers: 1 });
  const arbiter = server.child.pid;
  // Nobody reads the log any more: the next line written gets EPIPE.
  server.child.stderr.destroy();
  // TTIN: the arbiter logs, and starts a worker that logs as it boots (debug).
  process.kill(arbiter, 'SIGTTIN');
  await waitFor(() => children(arbiter).length === 2 || server.exit, 15_000, 'a second worker');
  t.is(server.exit, null, 'the arbiter is still running');
  t.true(alive(arbiter));
  t.is(await curl(`${server.url}/ok`), 'ok');
  // And it still supervises: a killed worker is replaced (more log lines).
  const [victim] = children(arbiter);
  process.kill(victim, 'SIGKILL');
  await waitFor(() => (!children(arbiter).includes(victim) && children(arbiter).length === 2) || server.exit, 15_000, 'the respawn');
  t.is(server.exit, null);
  t.is(await curl(`${server.url}/ok`), 'ok');
});
