// USR2: a new arbiter takes over the listening sockets, the old one drains
// and exits; a new arbiter that fails to boot leaves the old one serving.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { alive, curl, fixture, load, serve, waitFor } from './helpers.mjs';

/** Stops the new arbiter at the end of the test (the helper only knows the old one). */
function stopAtEnd(t, pid) {
  t.teardown(async () => {
    if (!alive(pid)) return;
    process.kill(pid, 'SIGINT');
    await waitFor(() => !alive(pid), 5000, 'the new arbiter to stop').catch(() => process.kill(pid, 'SIGKILL'));
  });
}

const newArbiter = (log) => Number(/Upgrade: started a new arbiter with pid: (\d+)/.exec(log)?.[1] ?? 0);

test('USR2 under load: the new arbiter takes the sockets, the old drains and exits, zero failed requests', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-upgrade-'));
  const pidfile = join(dir, 'rwsgi.pid');
  // systemd's side of NOTIFY_SOCKET: prints each datagram it gets.
  const notifySocket = join(dir, 'notify');
  const systemd = spawn('python3', ['-u', '-c', `import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(${JSON.stringify(notifySocket)}); print('bound')\nwhile True: print(s.recv(4096).decode().replace('\\n', ' '))`]);
  t.teardown(() => systemd.kill());
  let notified = '';
  systemd.stdout.on('data', (d) => (notified += d));
  await waitFor(() => notified.includes('bound'), 10_000, 'the notify socket');
  const server = await serve(t, fixture('routes.mjs'), { workers: 2, args: ['--pid', pidfile], env: { NOTIFY_SOCKET: notifySocket } });
  const old = server.child.pid;
  const mark = join(dir, 'mark');
  const running = load(server.port, 1500, mark);
  await waitFor(() => existsSync(mark), 10_000, 'load to start');

  server.child.kill('SIGUSR2');
  const pid = await waitFor(() => newArbiter(server.log), 10_000, 'the new arbiter');
  stopAtEnd(t, pid);
  t.is(readFileSync(`${pidfile}.oldbin`, 'utf8').trim(), String(old), 'the old pid file is <pidfile>.oldbin while both run');
  await waitFor(() => !alive(old), 30_000, 'the old arbiter to exit');
  t.regex(server.log, new RegExp(`Listening at: http://127\\.0\\.0\\.1:${server.port} \\(${pid}\\), handed over by pid ${old}`));
  t.regex(server.log, new RegExp(`Upgrade: the new arbiter \\(pid:${pid}\\) is ready; this one \\(pid:${old}\\) drains and exits`));

  const [ok, fail, ...errors] = (await running).split(' ');
  t.is(Number(fail), 0, errors.join(' '));
  t.is(Number(ok), 4500);
  t.is(readFileSync(pidfile, 'utf8').trim(), String(pid));
  await waitFor(() => notified.includes(`MAINPID=${pid} READY=1`), 5000, 'MAINPID sent to systemd');
  t.false(existsSync(`${pidfile}.oldbin`));
  t.is(await curl(`${server.url}/ok`), 'ok');
  // The new arbiter's workers are its children.
  const workerPid = Number(await curl(`${server.url}/pid`));
  t.is(Number(readFileSync(`/proc/${workerPid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]), pid);

  // And it can hand over again (its own sockets are the adopted ones).
  process.kill(pid, 'SIGUSR2');
  const third = await waitFor(() => newArbiter(server.log.slice(server.log.indexOf(`(pid:${old}) drains`))), 10_000, 'a third arbiter');
  stopAtEnd(t, third);
  await waitFor(() => !alive(pid), 30_000, 'the second arbiter to exit');
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('USR2 with a new generation that cannot boot: the old arbiter keeps serving and says why', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-upgrade-'));
  const app = join(dir, 'app.mjs');
  const pidfile = join(dir, 'rwsgi.pid');
  writeFileSync(app, "export default (env, start) => { start('200 OK', []); return ['old']; };\n");
  const server = await serve(t, app, { workers: 1, args: ['--pid', pidfile] });
  writeFileSync(app, "throw new Error('the new release is broken');\n");
  server.child.kill('SIGUSR2');
  const pid = await waitFor(() => newArbiter(server.log), 10_000, 'the new arbiter');
  stopAtEnd(t, pid);
  await waitFor(() => /Upgrade failed, this arbiter keeps serving: the new arbiter \(pid:\d+\) exited with code 4/.test(server.log), 20_000, 'the upgrade to fail');
  t.regex(server.log, /the new release is broken/);
  t.is(await curl(`${server.url}/`), 'old');
  t.is(readFileSync(pidfile, 'utf8').trim(), String(server.child.pid), 'the pid file is back');
  t.true(alive(server.child.pid));
});
