// Binding kinds other than TCP: a Unix socket every worker shares, made
// with the umask's permissions, a stale file replaced, a live one refused,
// removed at exit.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CLI, fixture, launch, python, ROOT, rwsgi, waitFor } from './helpers.mjs';

const PEER = fixture('peer.mjs');

/** Starts rwsgi with `args`; resolves once `workers` are ready. */
async function start(t, args, workers = 1) {
  const server = launch(t, process.execPath, [CLI, 'serve', PEER, '-w', String(workers), '--log-level', 'debug', ...args]);
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= workers || server.exit, 15_000, 'workers ready');
  if (server.exit) throw new Error(`server exited early:\n${server.log}`);
  return server;
}

/** GETs `/` over the Unix socket at `path` `n` times, each on a fresh connection. */
const overUnix = (path, n) =>
  python(
    `
import socket, sys
for _ in range(${n}):
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(${JSON.stringify(path)})
    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        data += chunk
    s.close()
    print(data.split(b'\\r\\n\\r\\n', 1)[1].decode())
`,
    0,
  );

test('a unix: bind is served by every worker, rwxrwx--- by default, and removed at exit', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'rwsgi-unix-')), 'app.sock');
  const server = await start(t, ['-b', `unix:${path}`], 2);
  t.regex(server.log, new RegExp(`Listening at: unix:${path}`));
  t.is(statSync(path).mode & 0o777, 0o770);
  const lines = (await overUnix(path, 40)).trim().split('\n');
  t.is(lines.length, 40);
  // gunicorn shows a Unix peer with an empty address.
  for (const line of lines) t.regex(line, /^\d+ \[\] \[0\]$/);
  // Both workers accept from the one shared socket (no thundering herd, but no single taker either).
  await waitFor(async () => new Set((await overUnix(path, 20)).trim().split('\n').map((l) => l.split(' ')[0])).size === 2, 20_000, 'both workers answering');
  server.child.kill('SIGHUP');
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 4, 15_000, 'reloaded workers ready');
  t.true(existsSync(path), 'the socket survives a HUP');
  t.is((await overUnix(path, 1)).trim().split('\n').length, 1);
  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
  t.false(existsSync(path), 'the socket file is removed at exit');
});

test('--umask sets the socket mode', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'rwsgi-unix-')), 'app.sock');
  const server = await start(t, ['-b', `unix:${path}`, '--umask', String(0o077)]);
  t.is(statSync(path).mode & 0o777, 0o700);
  server.child.kill('SIGTERM');
  await server.exited;
});

test('a stale socket file is replaced; a live one is refused with exit 3', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'rwsgi-unix-')), 'app.sock');
  // A stale file: a socket that was listened on, then closed without unlinking.
  await python(`import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(path)}); s.close()`, 0);
  t.true(existsSync(path));
  const server = await start(t, ['-b', `unix:${path}`]);
  t.regex((await overUnix(path, 1)).trim(), /^\d+ \[\]/);

  const second = await rwsgi(['serve', PEER, '-b', `unix:${path}`], { ms: 20_000 });
  t.is(second.code, 3);
  t.regex(second.out, /cannot listen at unix:.*another server is listening/);
  t.true(existsSync(path), 'the refused server leaves the live socket alone');
  t.regex((await overUnix(path, 1)).trim(), /^\d+ \[\]/);
  server.child.kill('SIGTERM');
  await server.exited;

  // A path that is not a socket is never removed.
  const file = join(mkdtempSync(join(tmpdir(), 'rwsgi-unix-')), 'data');
  writeFileSync(file, 'keep');
  const refused = await rwsgi(['serve', PEER, '-b', `unix:${file}`], { ms: 20_000 });
  t.is(refused.code, 3);
  t.regex(refused.out, /not a socket/);
  t.true(existsSync(file));
});

test('unix: with no path is a config error', async (t) => {
  const r = await rwsgi(['serve', PEER, '-b', 'unix:'], { ms: 20_000 });
  t.is(r.code, 3);
  t.regex(r.out, /bind/);
});

test('-b fd://N serves a listening socket the parent passed in', async (t) => {
  const { createServer } = await import('node:net');
  const listening = createServer();
  await new Promise((resolve) => listening.listen(0, '127.0.0.1', resolve));
  const { port } = listening.address();
  const child = spawn(process.execPath, [CLI, 'serve', PEER, '-w', '2', '--log-level', 'debug', '-b', 'fd://3'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe', listening._handle.fd],
  });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  child.stdout.on('data', (d) => (log += d));
  const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
  t.teardown(() => child.kill('SIGKILL'));
  // The child has its own copy; the test's must not take connections.
  listening.close();
  await waitFor(() => (log.match(/Worker ready/g) ?? []).length >= 2, 15_000, 'workers ready');
  t.regex(log, /Listening at: fd:\/\/3/);
  const out = await python(
    `
import http.client
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
c.request('GET', '/'); print(c.getresponse().read().decode())
`,
    port,
  );
  t.regex(out.trim(), /^\d+ \[127\.0\.0\.1\] \[\d+\]$/);
  child.kill('SIGTERM');
  t.is(await exited, 0);
});

test('-b fd://N on a descriptor that is not a socket is refused with exit 3', async (t) => {
  const r = await rwsgi(['serve', PEER, '-b', 'fd://57'], { ms: 20_000 });
  t.is(r.code, 3);
  t.regex(r.out, /fd 57 is not an open socket/);
});

test('-b fd://N on a socket that is not listening is refused with exit 3', async (t) => {
  const { createServer, connect } = await import('node:net');
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = connect(server.address().port, '127.0.0.1');
  await new Promise((resolve) => client.on('connect', resolve));
  t.teardown(() => {
    client.destroy();
    server.close();
  });
  const child = spawn(process.execPath, [CLI, 'serve', PEER, '-b', 'fd://3'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe', client._handle.fd] });
  let out = '';
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  t.is(code, 3);
  t.regex(out, /cannot listen at fd:\/\/3: fd 3 is a socket but not a listening one/);
});
