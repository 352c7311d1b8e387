// Under systemd: socket activation (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES,
// the sockets made by the test and passed on fds 3.. the way systemd
// does), and sd_notify datagrams read from a NOTIFY_SOCKET the test binds,
// path and abstract.

import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { alive, CLI, fixture, launch, python, ROOT, waitFor } from './helpers.mjs';

const APP = fixture('environment.mjs');

// Makes the sockets, moves them to fds 3.., sets LISTEN_PID to its own pid
// and execs rwsgi (same pid), as systemd does. Prints where each listens.
const LAUNCHER = `
import json, os, socket, sys
specs, names, argv = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
socks, where = [], []
for spec in specs:
    if spec['kind'] == 'tcp':
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(128); where.append(s.getsockname()[1])
    elif spec['kind'] == 'unix':
        s = socket.socket(socket.AF_UNIX); s.bind(spec['path']); s.listen(128); where.append(spec['path'])
    else:
        s = socket.socket(); where.append(None)
    socks.append(s)
high = [os.dup2(s.fileno(), 100 + i) for i, s in enumerate(socks)]
for s in socks: s.close()
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i); os.close(fd)
env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(specs)))
if names: env['LISTEN_FDNAMES'] = names
print(json.dumps(where), flush=True)
os.execve(argv[0], argv, env)
`;

/** Starts rwsgi with `specs` sockets activated; resolves once `workers` are ready (or it exited). */
async function activated(t, specs, { names = '', args = [], workers = 2, env = {} } = {}) {
  const argv = [process.execPath, CLI, 'serve', APP, '-w', String(workers), '--log-level', 'debug', ...args];
  const server = launch(t, 'python3', ['-c', LAUNCHER, JSON.stringify(specs), names, ...argv], { env });
  server.where = JSON.parse((await waitFor(() => /^(\[.*\])$/m.exec(server.log), 10_000, 'the launcher'))[1]);
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= workers || server.exit, 20_000, 'workers ready');
  return server;
}

/** GETs `/` `n` times on fresh connections, over TCP `port` or the Unix socket at `path`; resolves with the parsed bodies. */
async function get({ port = 0, path = null }, n = 1) {
  const out = await python(
    `
import http.client, socket
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.settimeout(10); self.sock.connect(${JSON.stringify(path)})
for _ in range(${n}):
    c = Unix('x', timeout=10) if ${path ? 'True' : 'False'} else http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    c.request('GET', '/'); print(c.getresponse().read().decode()); c.close()
`,
    port,
  );
  return out.trim().split('\n').map((line) => JSON.parse(line));
}

test('activated TCP and Unix sockets are served by every worker, named, kept across HUP, and hidden from the workers', async (t) => {
  t.timeout(120_000);
  const path = join(mkdtempSync(join(tmpdir(), 'rwsgi-activation-')), 'app.sock');
  // PORT too is a default address: the activated sockets replace it.
  const server = await activated(t, [{ kind: 'tcp' }, { kind: 'unix', path }], { names: 'web:internal', env: { PORT: '0' } });
  const [port] = server.where;
  t.is(server.exit, null, server.log);
  t.regex(server.log, new RegExp(`systemd socket activation: fd 3 \\(web\\) listens at 127\\.0\\.0\\.1:${port}`));
  t.regex(server.log, new RegExp(`systemd socket activation: fd 4 \\(internal\\) listens at unix:${path}`));
  t.regex(server.log, /Listening at: fd:\/\/3/);
  t.regex(server.log, /Listening at: fd:\/\/4/);
  // No bind was given: the activated sockets replace the default one (and PORT's).
  t.notRegex(server.log, /Listening at: http:/);

  const overTcp = await get({ port }, 30);
  const overUnix = await get({ path }, 30);
  for (const body of [...overTcp, ...overUnix]) t.deepEqual(body.seen, {}, 'no LISTEN_* variable reaches a worker');
  // Both workers take from the shared sockets (which one does is up to the kernel).
  const answered = new Set([...overTcp, ...overUnix].map((b) => b.pid));
  await waitFor(async () => {
    for (const b of [...(await get({ path }, 5)), ...(await get({ port }, 5))]) answered.add(b.pid);
    return answered.size === 2;
  }, 40_000, 'both workers answering');

  server.child.kill('SIGHUP');
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 4, 20_000, 'reloaded workers ready');
  t.notRegex(server.log, /Stopped listening/);
  t.is((await get({ port }))[0].seen.LISTEN_FDS, undefined);
  t.is((await get({ path })).length, 1);

  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
  t.true(existsSync(path), 'the socket file belongs to whoever activated it: it stays');
});

test('explicit binds are served too, except one an activated socket already listens on', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'rwsgi-activation-')), 'app.sock');
  const systemd = await notifySocket(t, `${path}.notify`);
  const args = ['-b', `unix:${path}`, '-b', '127.0.0.1:0'];
  const server = await activated(t, [{ kind: 'unix', path }], { args, workers: 1, env: { NOTIFY_SOCKET: `${path}.notify` } });
  t.is(server.exit, null, server.log);
  const port = Number(/Listening at: http:\/\/127\.0\.0\.1:(\d+)/.exec(server.log)?.[1]);
  t.true(port > 0);
  // systemd's status names the activated socket by its address.
  await waitFor(() => systemd.lines().includes(`STATUS=1/1 workers ready, serving unix:${path}, http://127.0.0.1:${port}`), 10_000, 'STATUS');
  t.notRegex(server.log, new RegExp(`Listening at: unix:${path}`), 'the activated socket serves that bind');
  t.is((await get({ path })).length, 1);
  t.is((await get({ port })).length, 1);
  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
});

test('an activated descriptor that is not a listening socket is refused with exit 3', async (t) => {
  const server = await activated(t, [{ kind: 'tcp' }, { kind: 'connected' }], { names: 'web:broken' });
  t.is((await server.exited).code, 3);
  t.regex(server.log, /systemd socket activation: fd 4 \(broken\) is a socket but not a listening one/);
});

test('LISTEN_FDS meant for another process is ignored, and still hidden from the workers', async (t) => {
  const server = start(t, { LISTEN_PID: '1', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b' }, 1);
  const port = Number((await waitFor(() => /Listening at: http:\/\/127\.0\.0\.1:(\d+)/.exec(server.log) ?? server.exit, 20_000, 'listening'))[1]);
  await waitFor(() => server.log.includes('Worker ready') || server.exit, 20_000, 'a worker ready');
  t.notRegex(server.log, /Listening at: fd:/);
  t.deepEqual((await get({ port }))[0].seen, {});
  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
});

/** systemd's side of NOTIFY_SOCKET at `address` (a path or `@name`): every datagram, with CLOCK_MONOTONIC µs when it came. */
async function notifySocket(t, address) {
  const receiver = spawn('python3', [
    '-u',
    '-c',
    `
import json, socket, sys, time
a = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind('\\0' + a[1:] if a.startswith('@') else a)
print('bound')
while True:
    m = s.recv(4096).decode()
    print(json.dumps({'at': time.monotonic_ns() // 1000, 'lines': m.split('\\n')}))
`,
    address,
  ]);
  t.teardown(() => receiver.kill());
  const got = { text: '', messages: () => got.text.split('\n').slice(1).filter(Boolean).map((l) => JSON.parse(l)) };
  receiver.stdout.on('data', (d) => (got.text += d));
  await waitFor(() => got.text.startsWith('bound'), 10_000, 'the notify socket');
  /** Every line sent so far, in order. */
  got.lines = () => got.messages().flatMap((m) => m.lines);
  return got;
}

/** Starts rwsgi on a free port with `env`. */
function start(t, env, workers = 2) {
  return launch(t, process.execPath, [CLI, 'serve', APP, '-w', String(workers), '-b', '127.0.0.1:0', '--log-level', 'debug'], { env });
}

test('sd_notify on a path socket: READY, STATUS, RELOADING with MONOTONIC_USEC and READY around HUP, WATCHDOG, STOPPING', async (t) => {
  const address = join(mkdtempSync(join(tmpdir(), 'rwsgi-notify-')), 'notify');
  const systemd = await notifySocket(t, address);
  const server = start(t, { NOTIFY_SOCKET: address, WATCHDOG_USEC: '1000000' });
  await waitFor(() => systemd.lines().includes('READY=1'), 20_000, 'READY=1');
  const port = Number(/Listening at: http:\/\/127\.0\.0\.1:(\d+)/.exec(server.log)?.[1]);
  const lines = systemd.lines();
  // Readiness comes once the whole first set is ready, and says so.
  const ready = lines.indexOf('READY=1');
  t.true(lines.slice(0, ready).some((l) => l.startsWith('STATUS=1/2 workers ready')), lines.join(' | '));
  t.true(lines.includes(`STATUS=2/2 workers ready, serving http://127.0.0.1:${port}`), lines.join(' | '));
  t.false(lines.slice(0, ready).includes('STATUS=2/2'), 'READY=1 is not late');
  const body = (await get({ port }))[0];
  t.deepEqual(body.seen, {}, 'NOTIFY_SOCKET and WATCHDOG_* do not reach a worker');

  // WATCHDOG_USEC=1s: a ping about every half second, from the arbiter.
  await waitFor(() => systemd.lines().filter((l) => l === 'WATCHDOG=1').length >= 4, 20_000, 'watchdog pings');
  const pings = systemd.messages().filter((m) => m.lines.includes('WATCHDOG=1')).map((m) => m.at);
  // Load only stretches the gaps; on average they are not shorter than half the interval.
  const mean = ((pings.at(-1) ?? 0) - (pings[0] ?? 0)) / (pings.length - 1);
  t.true(mean >= 400_000, `pings ${mean} µs apart on average`);

  const before = systemd.messages().length;
  const hupAt = BigInt(await python('import time; print(time.monotonic_ns() // 1000)', 0));
  server.child.kill('SIGHUP');
  await waitFor(() => systemd.messages().slice(before).some((m) => m.lines.includes('READY=1')), 20_000, 'READY=1 after the reload');
  const reload = systemd.messages().slice(before).flatMap((m) => m.lines);
  const reloading = reload.indexOf('RELOADING=1');
  t.true(reloading >= 0, reload.join(' | '));
  t.true(reloading < reload.indexOf('READY=1'), 'RELOADING=1 comes before READY=1');
  const usec = BigInt(reload.find((l) => l.startsWith('MONOTONIC_USEC='))?.split('=')[1] ?? '0');
  // CLOCK_MONOTONIC, the clock systemd compares it with: near the moment HUP was sent.
  t.true(usec >= hupAt - 1_000_000n && usec <= hupAt + 10_000_000n, `MONOTONIC_USEC ${usec} vs ${hupAt}`);
  t.true(reload.some((l) => l.includes('reloading: ')), 'STATUS says a reload is under way');

  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
  await waitFor(() => systemd.lines().includes('STOPPING=1'), 5000, 'STOPPING=1');
});

test('sd_notify on an abstract socket; WATCHDOG_PID naming another process turns the watchdog off; USR2 hands MAINPID over', async (t) => {
  const address = `@rwsgi-test-${process.pid}-${Date.now()}`;
  const systemd = await notifySocket(t, address);
  const server = start(t, { NOTIFY_SOCKET: address, WATCHDOG_USEC: '400000', WATCHDOG_PID: '1' }, 1);
  await waitFor(() => systemd.lines().includes('READY=1'), 20_000, 'READY=1');

  server.child.kill('SIGUSR2');
  const pid = Number(await waitFor(() => /Upgrade: started a new arbiter with pid: (\d+)/.exec(server.log)?.[1], 10_000, 'the new arbiter'));
  t.teardown(() => alive(pid) && process.kill(pid, 'SIGKILL'));
  await waitFor(() => systemd.lines().includes(`MAINPID=${pid}`), 30_000, 'MAINPID of the new arbiter');
  await waitFor(() => !alive(server.child.pid), 30_000, 'the old arbiter to exit');
  t.false(systemd.lines().includes('STOPPING=1'), 'the old arbiter does not stop the service it handed over');
  t.false(systemd.lines().includes('WATCHDOG=1'), 'WATCHDOG_PID=1 is not the arbiter');
  t.regex(server.log, /\[INFO\] Listening at: http:\/\/127\.0\.0\.1:\d+ \(\d+\), handed over/);

  // The new arbiter is the one systemd talks to now; it stops the service.
  process.kill(pid, 'SIGTERM');
  await waitFor(() => systemd.lines().includes('STOPPING=1'), 20_000, 'STOPPING=1 from the new arbiter');
  await waitFor(() => !alive(pid), 20_000, 'the new arbiter to exit');
});

test('USR2 keeps activated sockets: the new arbiter serves them and its workers still see no LISTEN_*', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'rwsgi-activation-')), 'app.sock');
  const server = await activated(t, [{ kind: 'unix', path }], { workers: 1 });
  const old = server.child.pid;
  server.child.kill('SIGUSR2');
  const pid = Number(await waitFor(() => /Upgrade: started a new arbiter with pid: (\d+)/.exec(server.log)?.[1], 10_000, 'the new arbiter'));
  t.teardown(() => alive(pid) && process.kill(pid, 'SIGKILL'));
  await waitFor(() => !alive(old), 30_000, 'the old arbiter to exit');
  t.regex(server.log, new RegExp(`Listening at: fd://3 \\(${pid}\\), handed over by pid ${old}`));
  t.notRegex(server.log, /Listening at: http:/, 'the new arbiter binds no default address either');
  const [body] = await get({ path });
  t.deepEqual(body.seen, {});
  t.is(Number(readParent(body.pid)), pid);
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !alive(pid), 20_000, 'the new arbiter to exit');
  t.true(existsSync(path));
});

/** The parent pid of `pid`, from /proc. */
const readParent = (pid) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1];

/** Runs `systemd-analyze verify` on the units in `dir`; null when the command is not there. */
const verify = (dir) =>
  new Promise((resolve) => {
    execFile('systemd-analyze', ['verify', join(dir, 'rwsgi.socket'), join(dir, 'rwsgi.service')], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve(err?.code === 'ENOENT' ? null : { code: err ? (err.code ?? 1) : 0, out: stdout + stderr }),
    );
  });

test('deploy/systemd units pass systemd-analyze verify', async (t) => {
  // The units name /srv/app (the app and its node_modules/.bin/rwsgi); verify
  // checks that ExecStart exists, so a copy points at one made here.
  const app = mkdtempSync(join(tmpdir(), 'rwsgi-unit-app-'));
  mkdirSync(join(app, 'node_modules', '.bin'), { recursive: true });
  symlinkSync(CLI, join(app, 'node_modules', '.bin', 'rwsgi'));
  const units = mkdtempSync(join(tmpdir(), 'rwsgi-units-'));
  for (const name of ['rwsgi.socket', 'rwsgi.service']) {
    writeFileSync(join(units, name), readFileSync(join(ROOT, 'deploy', 'systemd', name), 'utf8').replaceAll('/srv/app', app));
  }
  const result = await verify(units);
  if (result === null) {
    t.log('systemd-analyze is not installed: the units were not verified');
    t.pass();
    return;
  }
  t.deepEqual(result, { code: 0, out: '' });
  // The check bites: a misspelt setting is reported.
  writeFileSync(join(units, 'rwsgi.service'), readFileSync(join(units, 'rwsgi.service'), 'utf8').replace('Type=notify', 'Type=notfy'));
  t.regex((await verify(units)).out, /Failed to parse service type/);
});

test('the README shows the deploy/ files as they are (comments aside)', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const settings = (text) =>
    text
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'))
      .join('\n');
  const blocks = [...readme.matchAll(/```(?:ini|nginx)\n([\s\S]*?)```/g)].map((m) => settings(m[1]));
  for (const file of ['systemd/rwsgi.socket', 'systemd/rwsgi.service', 'nginx/rwsgi.conf']) {
    t.true(blocks.includes(settings(readFileSync(join(ROOT, 'deploy', file), 'utf8'))), `README shows deploy/${file}`);
  }
});
