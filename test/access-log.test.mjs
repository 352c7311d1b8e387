// The access log, from real servers: every atom against expected strings
// (and against gunicorn's own lines when a Python with gunicorn is found),
// JSON lines, stdout, USR1 rotation, and no line lost on TERM, HUP or
// --max-requests recycling.

import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, fixture, freshRequests, python, raw, rwsgi, serve, waitFor } from './helpers.mjs';

const run = promisify(execFile);
const APP = fixture('access-log-app.mjs');
const scratch = () => mkdtempSync(join(tmpdir(), 'rwsgi-access-'));
const linesOf = (file) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);
const workerPids = (log) => [...log.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));

/** `n` GETs of `/` over one keep-alive connection; resolves with how many got a 200. */
async function burst(port, n) {
  const out = await python(
    `
import http.client
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
ok = 0
for i in range(${n}):
    c.request('GET', '/?i=%d' % i); r = c.getresponse(); r.read(); ok += r.status == 200
print(ok)
`,
    port,
  );
  return Number(out);
}

const ATOMS = [
  '%(h)s', '%(l)s', '%(u)s', '"%(r)s"', '%(s)s', '%(m)s', '%(U)s', '[%(q)s]', '%(H)s', '%(b)s', '%(B)s',
  '"%(f)s"', '"%(a)s"', '%({x-custom}i)s', '%({X-Out}o)s', '%({http_x_custom}e)s', '%({server_port}e)s',
  '%(t)s', '%(T)s', '%(D)s', '%(M)s', '%(L)s', '%(p)s',
];

test('every atom, for app responses and for requests the engine refuses', async (t) => {
  const file = join(scratch(), 'access.log');
  const server = await serve(t, APP, { args: ['--access-logfile', file, '--access-logformat', ATOMS.join('\t')] });
  const { port } = server;
  const close = 'Connection: close\r\n';
  await raw(port, `GET /caf%C3%A9?q=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: UA "x"\r\nReferer: http://ref/\r\nAuthorization: Basic Ym9iOnB3\r\nX-Custom: v1\r\nX-Custom: v2\r\n${close}\r\n`);
  await raw(port, `POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n${close}\r\nhello`);
  await raw(port, `GET /missing HTTP/1.1\r\nHost: h\r\n${close}\r\n`);
  t.regex((await raw(port, `GET / HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(9000)}\r\n\r\n`)).text, /^HTTP\/1\.1 431 /);
  t.regex((await raw(port, 'garbage\r\n\r\n')).text, /^HTTP\/1\.1 400 /);
  await waitFor(() => linesOf(file).length >= 5, 10_000, 'five lines');
  const [pid] = workerPids(server.log);
  const lines = linesOf(file).map((line) => line.split('\t'));
  const timing = lines.map((fields) => fields.splice(17));
  t.deepEqual(lines.map((fields) => fields.join('\t')), [
    `127.0.0.1\t-\tbob\t"GET /caf%C3%A9?q=1 HTTP/1.1"\t200\tGET\t/cafÃ©\t[q=1]\tHTTP/1.1\t5\t5\t"http://ref/"\t"UA \\"x\\""\tv2\to\\"1\tv1,v2\t${port}`,
    `127.0.0.1\t-\t-\t"POST /echo HTTP/1.1"\t200\tPOST\t/echo\t[]\tHTTP/1.1\t5\t5\t"-"\t"-"\t-\techo\t-\t${port}`,
    `127.0.0.1\t-\t-\t"GET /missing HTTP/1.1"\t404\tGET\t/missing\t[]\tHTTP/1.1\t4\t4\t"-"\t"-"\t-\to\\"1\t-\t${port}`,
    `127.0.0.1\t-\t-\t"-"\t431\t-\t-\t[-]\t-\t31\t31\t"-"\t"-"\t-\t-\t-\t${port}`,
    `127.0.0.1\t-\t-\t"-"\t400\t-\t-\t[-]\t-\t11\t11\t"-"\t"-"\t-\t-\t-\t${port}`,
  ]);
  for (const [time, seconds, micros, millis, decimal, pidAtom] of timing) {
    t.regex(time, /^\[\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]$/);
    t.is(Number(millis), Math.floor(Number(micros) / 1000));
    t.is(Number(seconds), Math.floor(Number(micros) / 1e6));
    t.is(decimal, `${seconds}.${String(Number(micros) % 1e6).padStart(6, '0')}`);
    t.is(pidAtom, `<${pid}>`);
  }
  await server.stop();
});

test('gunicorn 27 writes the same lines (when a Python with gunicorn is found)', async (t) => {
  const candidates = [process.env.RWSGI_GUNICORN_PYTHON, 'python3'].filter(Boolean);
  let pythonWithGunicorn = null;
  for (const candidate of candidates) {
    try {
      await run(candidate, ['-c', 'import gunicorn']);
      pythonWithGunicorn = candidate;
      break;
    } catch {
      // Not this one.
    }
  }
  if (pythonWithGunicorn === null) {
    t.log('no Python with gunicorn (set RWSGI_GUNICORN_PYTHON); skipped');
    t.pass();
    return;
  }
  const { stdout } = await run(pythonWithGunicorn, [join(ROOT, 'bench', 'access-log-vs-gunicorn.py')], { timeout: 120_000 });
  t.regex(stdout, /^\d+ lines identical/);
});

test('--access-log-json: one object per line, the request id from X-Request-Id', async (t) => {
  const file = join(scratch(), 'access.json');
  const server = await serve(t, APP, { args: ['--access-logfile', file, '--access-log-json'] });
  await raw(server.port, 'GET /p?a=1 HTTP/1.1\r\nHost: h\r\nX-Request-Id: req-7\r\nUser-Agent: "ua"\r\nReferer: r\r\nConnection: close\r\n\r\n');
  await raw(server.port, 'garbage\r\n\r\n');
  await waitFor(() => linesOf(file).length >= 2, 10_000, 'two lines');
  const [ok, refused] = linesOf(file).map((line) => JSON.parse(line));
  const [pid] = workerPids(server.log);
  t.deepEqual(Object.keys(ok), ['time', 'remote', 'method', 'path', 'query', 'protocol', 'status', 'bytes', 'duration_ms', 'referer', 'user_agent', 'pid', 'request_id']);
  t.like(ok, { remote: '127.0.0.1', method: 'GET', path: '/p', query: 'a=1', protocol: 'HTTP/1.1', status: 200, bytes: 5, referer: 'r', user_agent: '"ua"', pid, request_id: 'req-7' });
  t.true(ok.duration_ms >= 0);
  t.false(Number.isNaN(Date.parse(ok.time)));
  t.like(refused, { method: null, path: null, status: 400, bytes: 11, request_id: null });
  await server.stop();
});

test('%(h)s is the client a trusted proxy names, and the peer otherwise', async (t) => {
  const file = join(scratch(), 'access.log');
  const server = await serve(t, APP, { args: ['--access-logfile', file, '--access-logformat', '%(h)s %(U)s'] });
  const forwarded = (from) =>
    raw(server.port, `GET /${from} HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9, 198.51.100.7\r\nConnection: close\r\n\r\n`, {
      localAddress: from,
    });
  await forwarded('127.0.0.1');
  await forwarded('127.0.0.2');
  await waitFor(() => linesOf(file).length >= 2, 10_000, 'two lines');
  // From 127.0.0.1 (trusted by default): the rightmost untrusted hop; from 127.0.0.2: the peer.
  t.deepEqual(linesOf(file).sort(), ['127.0.0.2 /127.0.0.2', '198.51.100.7 /127.0.0.1']);
  await server.stop();
});

test('--access-logfile - writes to stdout', async (t) => {
  const server = await serve(t, APP, { args: ['--access-logfile', '-'] });
  await raw(server.port, 'GET /missing HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  await waitFor(() => /"GET \/missing HTTP\/1\.1" 404 4 "-" "-"\n/.test(server.log), 10_000, 'the line on stdout');
  t.regex(server.log, /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/missing HTTP\/1\.1" 404 4 "-" "-"$/m);
  await server.stop();
});

test('USR1 reopens the file: after a rename, new lines go to a new file', async (t) => {
  const dir = scratch();
  const file = join(dir, 'access.log');
  const args = ['--access-logfile', file, '--access-logformat', '%(p)s %(r)s', '--spread', 'random'];
  const server = await serve(t, APP, { workers: 2, args });
  const pids = workerPids(server.log);
  const writers = (path) => new Set(linesOf(path).map((l) => l.split(' ')[0]));
  let sent = 0;
  const some = async (n) => (sent += await freshRequests(server.port, n, { path: '/' }));
  // Both workers have written (fresh connections, spread at random).
  await waitFor(async () => (await some(10), writers(file).size === 2), 20_000, 'lines from both workers');
  renameSync(file, `${file}.1`);
  server.child.kill('SIGUSR1');
  // Each worker reopens before its next write: wait until both write to the new file.
  await waitFor(async () => (await some(10), writers(file).size === 2), 20_000, 'both workers in the new file');
  t.deepEqual([...writers(file)].sort(), pids.map((p) => `<${p}>`).sort());
  const total = () => linesOf(file).length + linesOf(`${file}.1`).length;
  await waitFor(() => total() === sent, 10_000, 'every line so far written');
  const rotated = linesOf(`${file}.1`).length;
  const current = linesOf(file).length;
  await some(20);
  await server.stop();
  t.is(linesOf(`${file}.1`).length, rotated, 'nothing more in the rotated file');
  t.is(linesOf(file).length, current + 20);
  t.is(total(), sent);
});

test('no line is lost on TERM right after a burst, nor from workers replaced by HUP', async (t) => {
  const file = join(scratch(), 'access.log');
  const server = await serve(t, APP, { workers: 2, args: ['--access-logfile', file] });
  t.is(await burst(server.port, 300), 300);
  server.child.kill('SIGHUP');
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 4, 20_000, 'reloaded workers');
  t.is(await burst(server.port, 200), 200);
  const exit = await server.stop();
  t.is(exit.code, 0);
  const lines = linesOf(file);
  t.is(lines.length, 500);
  t.is(new Set(lines.map((l) => /\?i=(\d+) /.exec(l)?.[1])).size, 300);
});

test('no line is lost when --max-requests recycles the worker', async (t) => {
  const file = join(scratch(), 'access.log');
  const server = await serve(t, APP, { args: ['--access-logfile', file, '--max-requests', '25'] });
  t.is(await freshRequests(server.port, 80, { path: '/' }), 80);
  await waitFor(() => /served \d+ requests \(max 25\): replacing it/.test(server.log), 20_000, 'a recycled worker');
  await server.stop();
  const lines = linesOf(file);
  t.is(lines.length, 80);
});

test('an unknown atom or an unwritable file stops the server with exit 3, naming the setting', async (t) => {
  const bad = await rwsgi(['serve', APP, '--access-logformat', '%(h)s %(x)s']);
  t.is(bad.code, 3);
  t.regex(bad.out, /--access-logformat.*unknown atom %\(x\)s/);
  const file = await rwsgi(['serve', APP, '-b', '127.0.0.1:0', '--access-logfile', '/nonexistent-dir/access.log']);
  t.is(file.code, 3);
  t.regex(file.out, /--access-logfile \/nonexistent-dir\/access\.log: No such file or directory/);
});
