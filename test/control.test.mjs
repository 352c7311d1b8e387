// The control socket and the commands that use it, on real servers: status
// (table, JSON, --watch in a terminal) under load and during a hang, each
// command, the peer check, bad requests, no server; memory recycling.
// Serial: each starts servers under load, and the machine may be busy.

import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { CLI, ROOT, alive, fixture, load, raw, rwsgi, serve, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');
const run = promisify(execFile);

/** A server whose default control socket is alone in a directory of its own. */
async function controlled(t, app, options = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-ctl-'));
  const env = { RWSGI_CONTROL_DIR: dir };
  const server = await serve(t, app, { ...options, env });
  server.ctl = (...args) => rwsgi(args, { env });
  server.status = async () => {
    const r = await server.ctl('status', '--json');
    if (r.code !== 0) throw new Error(`status failed: ${r.out}`);
    return JSON.parse(r.stdout);
  };
  server.dir = dir;
  return server;
}

const workersOf = (s) => s.slots.flatMap((slot) => slot.workers);

test.serial('status and status --json under load: the counters move', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 2 });
  const first = await server.status();
  t.is(first.pid, server.child.pid);
  t.is(workersOf(first).length, 2);
  const mark = join(mkdtempSync(join(tmpdir(), 'rwsgi-')), 'mark');
  const loading = load(server.port, 400, mark);
  await waitFor(() => existsSync(mark), 20_000, 'the load to start');
  await waitFor(async () => {
    const snap = await server.status();
    return snap.totals.served > first.totals.served && snap;
  }, 20_000, 'requests counted while the load runs');
  const [ok, fail] = (await loading).split(' ');
  t.is(Number(fail), 0);
  // Every request of the load is counted once the workers' next heartbeats are in.
  const later = await waitFor(async () => {
    const snap = await server.status();
    return snap.totals.served >= first.totals.served + Number(ok) && snap;
  }, 20_000, 'all the requests counted');
  t.is(later.totals.served, first.totals.served + Number(ok), 'counted exactly');
  for (const w of workersOf(later)) {
    t.true(w.rss > 10 * 1024 * 1024, 'RSS reported');
    t.true(w.heapUsed > 1024 * 1024, 'V8 heap reported');
    t.true(Number.isInteger(w.connections));
    t.is(w.state, 'ready');
  }
  t.true(later.slots.every((slot) => slot.steered && slot.notSteered === null));
  t.regex(later.listeners[0].address, /^http:\/\/127\.0\.0\.1:\d+$/);
  const table = await server.ctl('status');
  t.is(table.code, 0, table.out);
  t.regex(table.stdout, /^rwsgi \S+ · arbiter pid \d+ · up \d+s · generation 1 · 2 workers wanted/);
  t.regex(table.stdout, /SLOT\s+PID\s+STATE\s+AGE\s+SERVED\s+IN FLIGHT\s+OLDEST REQUEST\s+CONNS\s+RSS\s+HEAP\s+LAG\s+RESTARTS\s+LAST EXIT\s+STEERED/);
  for (const w of workersOf(later)) t.regex(table.stdout, new RegExp(`\\b${w.pid}\\s+ready\\b`));
  t.regex(table.stdout, /TOTAL\s+2\/2 ready\s+[\d,]+/);
  t.regex(table.stdout, /listening:\n {2}http:\/\/127\.0\.0\.1:\d+ \(one socket per slot, steered\)/);
});

test.serial('status while a worker hangs: late, out of the steering set, its request named', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 2, args: ['--timeout', '30'] });
  const hung = raw(server.port, 'GET /spin?x=1 HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 1000 });
  await waitFor(() => server.log.includes('spin request started'), 10_000, 'the spin request');
  // (On a loaded machine the other worker may be late now and then too.)
  const hungLate = (w) => w.state === 'late' && w.oldest?.path === '/spin';
  // The steering set follows at the next reconcile step (every 100 ms).
  const outOfSteering = (snap) => snap.slots.some((slot) => !slot.steered && slot.workers.some(hungLate));
  const s = await waitFor(async () => {
    const snap = await server.status();
    return outOfSteering(snap) && snap;
  }, 20_000, 'the hung worker late and out of the steering set');
  const late = workersOf(s).find(hungLate);
  t.is(late.oldest.method, 'GET');
  t.is(late.oldest.path, '/spin');
  t.true(late.oldest.age >= 1);
  const slot = s.slots.find((x) => x.slot === late.slot);
  t.false(slot.steered);
  t.is(slot.notSteered, 'late');
  const table = await server.ctl('status');
  t.regex(table.stdout, new RegExp(`${late.pid}\\s+late\\s+.*GET /spin \\d+\\.\\ds.*no: late`));
  await hung;
});

test.serial('status --watch redraws in a terminal until Ctrl-C, then exits 0', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 1 });
  const script = `
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], sys.argv[2], 'status', '--watch'])
out = b''
deadline = time.time() + 45
while out.count(b'listening:') < 2 and time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 1)
    if r:
        try: out += os.read(fd, 65536)
        except OSError: break
os.write(fd, b'\\x03')
_, status = os.waitpid(pid, 0)
print(out.count(b'\\x1b[2J'), os.waitstatus_to_exitcode(status), out.count(b'listening:'))
`;
  const { stdout } = await run('python3', ['-c', script, process.execPath, CLI], {
    env: { ...process.env, RWSGI_CONTROL_DIR: server.dir },
    timeout: 90_000,
  });
  const [redraws, code, tables] = stdout.trim().split(' ').map(Number);
  t.true(redraws >= 2, `redraws: ${redraws}`);
  t.true(tables >= 2);
  t.is(code, 0);
});

test.serial('reload: every worker replaced by a new generation', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 2 });
  const before = workersOf(await server.status()).map((w) => w.pid);
  const r = await server.ctl('reload');
  t.is(r.code, 0, r.out);
  t.regex(r.stdout, /^reloading rwsgi \(pid \d+\): generation 2 workers start/);
  const after = await waitFor(async () => {
    const ws = workersOf(await server.status());
    return ws.length === 2 && ws.every((w) => w.generation === 2 && w.state === 'ready') && ws;
  }, 20_000, 'generation 2 ready alone');
  t.false(after.some((w) => before.includes(w.pid)));
  t.regex(server.log, /Control: reload/);
});

test.serial('stop: graceful, exit 0, the socket removed; stop --quick', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 1 });
  t.is(readdirSync(server.dir).length, 1, 'the control socket is there');
  const r = await server.ctl('stop');
  t.is(r.code, 0, r.out);
  t.regex(r.stdout, /stopping rwsgi \(pid \d+\) gracefully/);
  t.deepEqual(await server.exited, { code: 0, signal: null });
  t.deepEqual(readdirSync(server.dir), [], 'removed at exit');

  const quick = await controlled(t, ROUTES, { workers: 1 });
  const q = await quick.ctl('stop', '--quick');
  t.is(q.code, 0, q.out);
  t.regex(q.stdout, /stopping rwsgi \(pid \d+\) quickly/);
  t.is((await quick.exited).code, 0);
  t.regex(quick.log, /Control: stop --quick/);
});

test.serial('scale 3 then 1, and a count out of bounds', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 2 });
  const up = await server.ctl('scale', '3');
  t.is(up.code, 0, up.out);
  t.is(up.stdout.trim().replace(/\(pid \d+\)/, ''), 'scaling rwsgi  from 2 to 3 workers');
  await waitFor(async () => workersOf(await server.status()).filter((w) => w.state === 'ready').length === 3, 20_000, '3 ready');
  const down = await server.ctl('scale', '1');
  t.is(down.code, 0, down.out);
  const s = await waitFor(async () => {
    const snap = await server.status();
    // The retired slots close once their workers are gone, at the next reconcile step.
    return workersOf(snap).length === 1 && snap.slots.length === 1 && snap;
  }, 30_000, 'one worker and one slot left');
  t.is(s.workers, 1);
  t.is(s.slots.length, 1);
  const bad = await server.ctl('scale', '5000');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /rwsgi scale: scale: the number of workers must be an integer <= 1024, got 5000/);
  const usage = await server.ctl('scale');
  t.is(usage.code, 3);
  t.regex(usage.stderr, /scale needs N/);
});

test.serial('restart-worker: that worker replaced, zero failed requests under light load', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 2 });
  const [victim, other] = workersOf(await server.status());
  const mark = join(mkdtempSync(join(tmpdir(), 'rwsgi-')), 'mark');
  const loading = load(server.port, 300, mark);
  await waitFor(() => existsSync(mark), 20_000, 'the load to start');
  const r = await server.ctl('restart-worker', String(victim.pid));
  t.is(r.code, 0, r.out);
  t.is(r.stdout.trim(), `replacing worker ${victim.pid} (slot ${victim.slot}): a new worker starts, then ${victim.pid} drains`);
  await waitFor(() => server.log.includes(`Worker exiting (pid: ${victim.pid})`), 30_000, 'the old worker to exit');
  const [ok, fail, ...errors] = (await loading).split(' ');
  t.is(Number(fail), 0, errors.join(' '));
  t.is(Number(ok), 900);
  const s = await server.status();
  const pids = workersOf(s).map((w) => w.pid);
  t.false(pids.includes(victim.pid));
  t.true(pids.includes(other.pid), 'the other worker was left alone');
  const slot = s.slots.find((x) => x.slot === victim.slot);
  t.is(slot.restarts, 1);
  t.is(slot.lastExit.reason, 'restart');
  t.is(slot.lastExit.pid, victim.pid);
  const again = await server.ctl('restart-worker', String(victim.pid));
  t.is(again.code, 1);
  t.regex(again.stderr, new RegExp(`no worker with pid ${victim.pid} \\(workers: `));
});

test.serial('dump: a live worker\'s stack, idle and then stuck in a handler, with its request', async (t) => {
  const server = await controlled(t, fixture('stuck.mjs'), { workers: 1, args: ['--timeout', '120'] });
  const [w] = workersOf(await server.status());
  const idle = await server.ctl('dump', String(w.pid));
  t.is(idle.code, 0, idle.out);
  t.regex(idle.stdout, new RegExp(`JavaScript stack of worker ${w.pid}: empty, the event loop was waiting`));
  t.regex(idle.stdout, /no request in flight/);
  // Answered (a 503) only when the teardown's quick stop kills the worker.
  void raw(server.port, 'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 60_000 });
  // The heartbeat stops once the handler spins; the busy note names the request.
  await waitFor(async () => {
    const r = await server.ctl('dump', String(w.pid));
    return r.code === 0 && /spinForever/.test(r.stdout) && /GET \/spin running/.test(r.stdout) && r;
  }, 30_000, 'the dump to show the spinning handler and its request');
  const r = await server.ctl('dump', String(w.pid));
  t.regex(r.stdout, /at spinForever \(.*stuck\.mjs:\d+:\d+\)/);
  const unknown = await server.ctl('dump', '1');
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no worker with pid 1 /);
});

/** Sends `lines` on one connection to the control socket; resolves with the
 * reply lines (once one per line came, or at once the server closed) and whether it closed. */
function converse(path, lines, { ms = 10_000, untilClosed = false } = {}) {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let text = '';
    const expected = untilClosed ? 0 : lines.length;
    const timer = setTimeout(() => (socket.destroy(), resolve({ replies: text.split('\n').filter(Boolean).map((l) => JSON.parse(l)), closed: false })), ms);
    socket.on('connect', () => lines.length > 0 && socket.write(lines.join('')));
    socket.on('data', (d) => {
      text += d;
      if (text.split('\n').filter(Boolean).length >= expected && expected > 0) {
        clearTimeout(timer);
        socket.destroy();
        resolve({ replies: text.split('\n').filter(Boolean).map((l) => JSON.parse(l)), closed: false });
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ replies: text.split('\n').filter(Boolean).map((l) => JSON.parse(l)), closed: true });
    });
    // The server may close while the rest is still being written: 'close' follows.
    socket.on('error', (err) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? null : reject(err)));
  });
}

test.serial('a malformed line, an unknown command, a line too long: error replies, the socket keeps answering', async (t) => {
  const server = await controlled(t, ROUTES, { workers: 1 });
  const [path] = readdirSync(server.dir).map((f) => join(server.dir, f));
  const { replies } = await converse(path, ['not json\n', '{"cmd":"nope"}\n', '[1]\n', '{"cmd":"scale"}\n', '{"cmd":"status"}\n']);
  t.is(replies.length, 5);
  t.deepEqual(replies[0], { ok: false, error: 'malformed request: one JSON object per line, as {"cmd":"status"}' });
  t.false(replies[1].ok);
  t.regex(replies[1].error, /^unknown command "nope": one of status, reload, stop, scale, restart-worker, dump$/);
  t.false(replies[2].ok);
  t.regex(replies[3].error, /scale needs "workers"/);
  t.true(replies[4].ok);
  t.is(replies[4].pid, server.child.pid);
  const long = await converse(path, ['x'.repeat(70 * 1024)], { untilClosed: true });
  t.true(long.closed);
  t.regex(long.replies[0].error, /request too long/);
  t.is((await server.ctl('status')).code, 0, 'still answering');
  // A connection that sends nothing is closed after the idle timeout (10 s).
  const idle = await converse(path, [], { ms: 40_000, untilClosed: true });
  t.true(idle.closed, 'an idle connection is closed');
  t.deepEqual(idle.replies, []);
});

test.serial('no server: one line naming the socket tried, exit 1; several: exit 2', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'rwsgi-ctl-'));
  const none = await rwsgi(['status'], { env: { RWSGI_CONTROL_DIR: empty } });
  t.is(none.code, 1);
  t.is(none.stdout, '');
  t.is(none.stderr.trim().split('\n').length, 1);
  t.regex(none.stderr, new RegExp(`no server running: no control socket in ${empty} \\(not running\\?`));
  const missing = await rwsgi(['reload', '--socket', join(empty, 'x.sock')]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, new RegExp(`^rwsgi reload: no server at ${join(empty, 'x.sock')} \\(ENOENT\\): not running\\?\\n$`));
  const pidfile = await rwsgi(['status', '--pid', join(empty, 'none.pid')]);
  t.is(pidfile.code, 1);
  t.regex(pidfile.stderr, /cannot read the pid file .*none\.pid \(ENOENT\): not running\?/);

  // A killed server's socket file: nothing answers there.
  const stale = join(empty, '999999.sock');
  await run('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(stale)}); s.close()`]);
  const skipped = await rwsgi(['status'], { env: { RWSGI_CONTROL_DIR: empty } });
  t.is(skipped.code, 1);
  t.regex(skipped.stderr, /no server running/);

  const env = { RWSGI_CONTROL_DIR: empty };
  const one = await serve(t, ROUTES, { workers: 1, env });
  t.false(existsSync(stale), 'a new server removes stale sockets');
  const two = await serve(t, ROUTES, { workers: 1, env });
  const several = await rwsgi(['status'], { env });
  t.is(several.code, 2);
  t.regex(several.stderr, /2 servers are running; pick one with --socket PATH:/);
  t.true(several.stderr.includes(`${one.child.pid}.sock`) && several.stderr.includes(`${two.child.pid}.sock`));
  const picked = await rwsgi(['status', '--json', '--socket', join(empty, `${two.child.pid}.sock`)]);
  t.is(JSON.parse(picked.stdout).pid, two.child.pid);
});

test.serial('--pid FILE finds the server; --no-control-socket listens on none', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-ctl-'));
  const pidfile = join(dir, 'app.pid');
  const env = { RWSGI_CONTROL_DIR: dir };
  const server = await serve(t, ROUTES, { workers: 1, env, args: ['--pid', pidfile] });
  const r = await rwsgi(['status', '--json', '--pid', pidfile], { env });
  t.is(JSON.parse(r.stdout).pid, server.child.pid);
  await server.stop();
  await serve(t, ROUTES, { workers: 1, env, args: ['--no-control-socket'] });
  t.deepEqual(readdirSync(dir), [], 'no socket, and the old one was removed');
});

// Running a client as another user takes root (setpriv, from util-linux).
const asAnotherUser = process.getuid() === 0 ? test.serial : test.skip;

asAnotherUser('the peer check: another user is refused, at connect (0600) and by SO_PEERCRED (socket opened to all)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-ctl-'));
  chmodSync(dir, 0o755);
  const path = join(dir, 'control.sock');
  const server = await serve(t, ROUTES, { workers: 1, args: ['--control-socket', path] });
  const asNobody = (args) =>
    new Promise((resolve) => {
      const child = spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, CLI, ...args], { cwd: ROOT });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ code, out }));
    });
  const denied = await asNobody(['status', '--socket', path]);
  t.is(denied.code, 1);
  t.regex(denied.out, /permission denied at .*control\.sock: run this as the server's user or root/);
  // Opened to all by hand, the file no longer protects it: the server's own check does.
  chmodSync(path, 0o666);
  const refused = await asNobody(['status', '--socket', path]);
  t.is(refused.code, 1);
  t.regex(refused.out, /refused a connection from uid 65534 \(pid \d+\): only uid 0 and root may control this server/);
  await waitFor(() => /\[WARNING\] Control socket: refused a connection from uid 65534/.test(server.log), 5000, 'the warning');
  const stopped = await asNobody(['stop', '--socket', path]);
  t.is(stopped.code, 1);
  const own = await rwsgi(['status', '--json', '--socket', path]);
  t.is(JSON.parse(own.stdout).stopping, null, 'the refused stop did nothing');
});

test.serial('--max-worker-memory replaces a leaking worker gracefully: zero failed requests', async (t) => {
  const server = await controlled(t, fixture('leak.mjs'), { workers: 2, args: ['--max-worker-memory', '150'] });
  const mark = join(mkdtempSync(join(tmpdir(), 'rwsgi-')), 'mark');
  const [ok, fail, ...errors] = (await load(server.port, 100, mark)).split(' ');
  t.is(Number(fail), 0, errors.join(' '));
  t.is(Number(ok), 300);
  await waitFor(() => /Worker \(pid:\d+\) uses \d+\.\d MB of memory \(RSS; max-worker-memory 150 MB\): replacing it/.test(server.log), 20_000, 'the recycling line');
  const s = await waitFor(async () => {
    const snap = await server.status();
    return snap.slots.some((slot) => slot.lastExit?.reason === 'memory') && snap;
  }, 30_000, 'a worker replaced for memory');
  t.true(s.slots.some((slot) => slot.restarts >= 1));
});

test.serial('--max-worker-heap replaces on V8 heap used', async (t) => {
  const server = await controlled(t, fixture('leak.mjs'), { workers: 1, args: ['--max-worker-heap', '40'] });
  const mark = join(mkdtempSync(join(tmpdir(), 'rwsgi-')), 'mark');
  const [, fail, ...errors] = (await load(server.port, 20, mark)).split(' ');
  t.is(Number(fail), 0, errors.join(' '));
  await waitFor(() => /uses \d+\.\d MB of V8 heap \(max-worker-heap 40 MB\): replacing it/.test(server.log), 20_000, 'the recycling line');
});

test.serial('USR2: the new arbiter has its own default socket (the old one goes with it) and takes over a --control-socket path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-ctl-'));
  const env = { RWSGI_CONTROL_DIR: dir };
  const newArbiter = (log) => Number(/Upgrade: started a new arbiter with pid: (\d+)/.exec(log)?.[1] ?? 0);
  const stopAtEnd = (pid) => t.teardown(() => alive(pid) && process.kill(pid, 'SIGINT'));
  for (const explicit of [false, true]) {
    const path = join(dir, 'control.sock');
    const server = await serve(t, ROUTES, { workers: 1, env, args: explicit ? ['--control-socket', path] : [] });
    const old = server.child.pid;
    server.child.kill('SIGUSR2');
    const pid = await waitFor(() => newArbiter(server.log), 10_000, 'the new arbiter');
    stopAtEnd(pid);
    await waitFor(() => !alive(old), 30_000, 'the old arbiter to exit');
    t.deepEqual(readdirSync(dir), [explicit ? 'control.sock' : `${pid}.sock`]);
    const r = await rwsgi(['status', '--json', ...(explicit ? ['--socket', path] : [])], { env });
    t.is(JSON.parse(r.stdout).pid, pid, r.out);
    const stop = await rwsgi(['stop', ...(explicit ? ['--socket', path] : [])], { env });
    t.is(stop.code, 0, stop.out);
    await waitFor(() => !alive(pid), 15_000, 'the new arbiter to stop');
    t.deepEqual(readdirSync(dir), [], 'removed when the new arbiter exits');
  }
});
