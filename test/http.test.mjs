// The HTTP/1.1 engine through a real server: methods, keep-alive,
// pipelining, bodies, limits and malformed input over raw sockets.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import { curl, fixture, python, raw, serve, statusLines, waitFor, cpuSeconds } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');
const ECHO = fixture('echo.mjs');

test('GET, HEAD and POST through curl', async (t) => {
  const server = await serve(t, ROUTES);
  const get = await curl('-i', `${server.url}/ok`);
  t.regex(get, /^HTTP\/1\.1 200 OK\r\n/);
  t.regex(get, /\r\nContent-Length: 2\r\n/);
  t.regex(get, /\r\nDate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/);
  t.true(get.endsWith('\r\n\r\nok'));

  const head = await curl('-I', `${server.url}/ok`);
  t.regex(head, /^HTTP\/1\.1 200 OK\r\n/);
  t.regex(head, /\r\nContent-Length: 2\r\n/);

  const post = await curl('--data-binary', 'payload-123', `${server.url}/echo`);
  t.is(post, 'payload-123');
});

test('HEAD carries no body and the connection stays usable', async (t) => {
  const server = await serve(t, ROUTES);
  const { text } = await raw(
    server.port,
    'HEAD /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  );
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  const [first, second] = text.split(/(?=HTTP\/1\.1 200)/);
  t.true(first.endsWith('\r\n\r\n'), 'HEAD response ends with its head');
  t.true(second.endsWith('\r\n\r\nok'));
});

test('204 has neither body nor Content-Length', async (t) => {
  const server = await serve(t, ROUTES);
  const { text } = await raw(server.port, 'GET /no-content HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.regex(text, /^HTTP\/1\.1 204 No Content\r\n/);
  t.notRegex(text, /Content-Length|Transfer-Encoding/i);
  t.true(text.endsWith('\r\n\r\n'));
});

test('environ carries the PEP 3333 names', async (t) => {
  const server = await serve(t, ECHO);
  const out = JSON.parse(
    await curl('-H', 'X-Custom: v1', '-H', 'Content-Type: text/x', '--data-binary', 'b', `${server.url}/a%20b/c?x=1&y=%20`),
  );
  const e = out.environ;
  t.is(e.REQUEST_METHOD, 'POST');
  t.is(e.PATH_INFO, '/a b/c');
  t.is(e.QUERY_STRING, 'x=1&y=%20');
  t.is(e.RAW_URI, '/a%20b/c?x=1&y=%20');
  t.is(e.SCRIPT_NAME, '');
  t.is(e.CONTENT_TYPE, 'text/x');
  t.is(e.CONTENT_LENGTH, '1');
  t.is(e.HTTP_X_CUSTOM, 'v1');
  t.is(e.SERVER_PROTOCOL, 'HTTP/1.1');
  t.is(e.SERVER_NAME, '127.0.0.1');
  t.is(e.SERVER_PORT, String(server.port));
  t.is(e.REMOTE_ADDR, '127.0.0.1');
  t.regex(e.REMOTE_PORT, /^\d+$/);
  t.is(e['wsgi.url_scheme'], 'http');
  t.is(out.body, 'b');
});

test('environ carries every header of a request with many', async (t) => {
  // The first twelve are added one store per position, the rest in a loop.
  const server = await serve(t, ECHO);
  const names = Array.from({ length: 30 }, (_, i) => `X-H${i}`);
  const args = names.flatMap((n, i) => ['-H', `${n}: v${i}`]);
  const twice = JSON.parse(await curl(...args, '-H', 'X-H3: again', `${server.url}/`)).environ;
  for (const [i, n] of names.entries()) {
    t.is(twice[`HTTP_${n.toUpperCase().replace('-', '_')}`], i === 3 ? 'v3,again' : `v${i}`, n);
  }
  const few = JSON.parse(await curl('-H', 'X-H0: only', `${server.url}/`)).environ;
  t.is(few.HTTP_X_H0, 'only');
  t.false('HTTP_X_H1' in few, 'a request gets only its own headers');
});

test('chunked upload is echoed and trailers are not exposed', async (t) => {
  const server = await serve(t, ECHO);
  const { text } = await raw(
    server.port,
    [
      'POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
      '5\r\nhello\r\n',
      '6\r\n world\r\n0\r\nX-Trailer: secret\r\n\r\n',
    ],
  );
  t.regex(text, /^HTTP\/1\.1 200 OK/);
  const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
  t.is(body.body, 'hello world');
  t.is(body.environ.HTTP_X_TRAILER, undefined);
});

test('a large upload and download pass through intact', async (t) => {
  const server = await serve(t, ROUTES);
  const out = await python(
    `
import http.client, hashlib, os
body = os.urandom(3 * 1024 * 1024 + 17)
c = http.client.HTTPConnection('127.0.0.1', port, timeout=20)
c.request('POST', '/echo', body=body)
r = c.getresponse(); data = r.read()
print(r.status, len(data), hashlib.sha256(data).hexdigest() == hashlib.sha256(body).hexdigest())
c.request('GET', '/big'); r = c.getresponse(); data = r.read()
print(r.status, len(data), r.getheader('Transfer-Encoding'))
`,
    server.port,
  );
  t.is(out, `200 ${3 * 1024 * 1024 + 17} True\n200 ${64 * 64 * 1024} chunked\n`);
});

test('1000 requests on one keep-alive connection (http.client)', async (t) => {
  const server = await serve(t, ROUTES);
  const out = await python(
    `
import http.client
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
ok = 0
for i in range(1000):
    c.request('GET', '/ok'); r = c.getresponse()
    ok += r.status == 200 and r.read() == b'ok'
print(ok, c.sock is not None)
`,
    server.port,
  );
  t.is(out, '1000 True\n');
});

test('three pipelined requests in one write are answered in order', async (t) => {
  const server = await serve(t, ROUTES);
  // /slow finishes last but is asked first: its response must still lead.
  const { text, closed } = await raw(
    server.port,
    'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  );
  t.true(closed);
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  const bodies = text.split(/HTTP\/1\.1 200 OK/).slice(1).map((r) => r.slice(r.indexOf('\r\n\r\n') + 4));
  t.is(bodies[0], 'slow');
  t.regex(bodies[1], /^\d+$/);
  t.is(bodies[2], 'ok');
});

test('Connection: close is honoured and pipelined bytes behind it never run', async (t) => {
  const server = await serve(t, ROUTES);
  const { text, closed } = await raw(
    server.port,
    'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /throw HTTP/1.1\r\nHost: x\r\n\r\n',
  );
  t.true(closed);
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK']);
  t.regex(text, /\r\nConnection: close\r\n/);
  t.notRegex(server.log, /boom from \/throw/);
});

test('HTTP/1.0 closes by default and keeps alive when asked', async (t) => {
  const server = await serve(t, ROUTES);
  const plain = await raw(server.port, 'GET /ok HTTP/1.0\r\n\r\n');
  t.true(plain.closed);
  t.regex(plain.text, /\r\nConnection: close\r\n/);
  const kept = await raw(
    server.port,
    'GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /ok HTTP/1.0\r\n\r\n',
  );
  t.deepEqual(statusLines(kept.text), ['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  t.regex(kept.text, /\r\nConnection: keep-alive\r\n/);
  t.true(kept.closed);
});

test('HTTP/1.0 streamed responses are delimited by close', async (t) => {
  const server = await serve(t, ROUTES);
  const { text, closed } = await raw(server.port, 'GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
  t.true(closed);
  t.notRegex(text, /Transfer-Encoding/);
  t.true(text.endsWith('\r\n\r\none,two,three'));
});

test('unknown-length responses are chunked on HTTP/1.1', async (t) => {
  const server = await serve(t, ROUTES);
  const { text } = await raw(server.port, 'GET /async-stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.regex(text, /\r\nTransfer-Encoding: chunked\r\n/);
  t.true(text.endsWith('\r\n\r\n6\r\npart0;\r\n6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n'));
});

test('Expect: 100-continue is answered when the app reads the body', async (t) => {
  const server = await serve(t, ROUTES);
  const out = await curl('-i', '-H', 'Expect: 100-continue', '--expect100-timeout', '30', '--data-binary', 'abc', `${server.url}/echo`);
  t.regex(out, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  t.true(out.endsWith('abc'));
});

test('idle keep-alive connections are closed after --keep-alive', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--keep-alive', '1'] });
  const started = Date.now();
  const { text, closed } = await raw(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 8000 });
  t.true(closed);
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK']);
  t.true(Date.now() - started < 7000);
});

test('a slow request head gets 408 after --header-timeout', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--header-timeout', '1'] });
  const { text, closed } = await raw(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\n', { ms: 8000 });
  t.true(closed);
  t.deepEqual(statusLines(text), ['HTTP/1.1 408 Request Timeout']);
});

const LIMITS = [
  ['request line over 4094 bytes', `GET /${'a'.repeat(4094)} HTTP/1.1\r\nHost: x\r\n\r\n`, '414 URI Too Long'],
  ['101 header fields', `GET / HTTP/1.1\r\nHost: x\r\n${'X-F: y\r\n'.repeat(100)}\r\n`, '431 Request Header Fields Too Large'],
  ['a header field over 8190 bytes', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'y'.repeat(8190)}\r\n\r\n`, '431 Request Header Fields Too Large'],
];

for (const [name, request, status] of LIMITS) {
  test(`default limit: ${name} -> ${status.slice(0, 3)}`, async (t) => {
    const server = await serve(t, ROUTES);
    const { text, closed } = await raw(server.port, request);
    t.true(closed);
    t.deepEqual(statusLines(text), [`HTTP/1.1 ${status}`]);
    t.regex(text, /\r\nConnection: close\r\n/);
  });
}

test('limits are configurable and requests within them pass', async (t) => {
  const server = await serve(t, ROUTES, {
    args: ['--limit-request-line', '64', '--limit-request-fields', '3', '--limit-request-field_size', '40'],
  });
  const ok = await raw(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\nA: 1\r\nConnection: close\r\n\r\n');
  t.deepEqual(statusLines(ok.text), ['HTTP/1.1 200 OK']);
  const line = await raw(server.port, `GET /${'a'.repeat(60)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.deepEqual(statusLines(line.text), ['HTTP/1.1 414 URI Too Long']);
  const fields = await raw(server.port, 'GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n');
  t.deepEqual(statusLines(fields.text), ['HTTP/1.1 431 Request Header Fields Too Large']);
  const size = await raw(server.port, `GET / HTTP/1.1\r\nHost: x\r\nA: ${'v'.repeat(40)}\r\n\r\n`);
  t.deepEqual(statusLines(size.text), ['HTTP/1.1 431 Request Header Fields Too Large']);
});

const MALFORMED = [
  ['missing Host on HTTP/1.1', 'GET / HTTP/1.1\r\n\r\n'],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
  ['Content-Length with Transfer-Encoding', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['differing duplicate Content-Length', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'],
  ['non-numeric Content-Length', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc'],
  ['Transfer-Encoding not ending in chunked', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding in HTTP/1.0', 'POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['bad chunk size', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'],
  ['space before the colon', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n'],
  ['obs-fold', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n'],
  ['bare LF line endings', 'GET / HTTP/1.1\nHost: x\n\n'],
  ['bad version', 'GET / HTTP/1.x\r\nHost: x\r\n\r\n'],
  ['garbage request line', 'HELLO\r\n\r\n'],
  ['NUL in a header value', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n'],
];

for (const [name, request] of MALFORMED) {
  test(`malformed: ${name} -> one 400 and close`, async (t) => {
    const server = await serve(t, ROUTES);
    const { text, closed } = await raw(server.port, request);
    t.true(closed);
    t.deepEqual(statusLines(text), ['HTTP/1.1 400 Bad Request']);
    t.regex(text, /\r\nConnection: close\r\n/);
  });
}

test('a malformed request behind a valid one: the valid response first, then one 400', async (t) => {
  const server = await serve(t, ROUTES);
  const { text, closed } = await raw(server.port, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n');
  t.true(closed);
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK', 'HTTP/1.1 400 Bad Request']);
});


test('a client reset while its request runs does not spin the worker', async (t) => {
  const server = await serve(t, ROUTES);
  const worker = Number(/Booting worker with pid: (\d+)/.exec(server.log)[1]);
  const socket = connect(server.port, '127.0.0.1');
  await new Promise((resolve) => socket.on('connect', resolve));
  socket.write('GET /sleep?ms=1500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await waitFor(() => server.log.includes('sleep request started'), 5000, 'request in flight');
  socket.resetAndDestroy();
  const before = cpuSeconds(worker);
  const started = Date.now();
  await waitFor(() => Date.now() - started >= 1000, 5000, 'a measuring second');
  t.true(cpuSeconds(worker) - before < 0.5, 'the worker idles while the app runs');
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('a client that leaves mid-upload fails the body read, quietly', async (t) => {
  const server = await serve(t, ROUTES);
  const socket = connect(server.port, '127.0.0.1');
  await new Promise((resolve) => socket.on('connect', resolve));
  socket.write('POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789');
  await new Promise((resolve) => socket.end(resolve));
  await waitFor(() => /Client closed the connection during POST \/echo/.test(server.log), 5000, 'the app to see the close');
  t.notRegex(server.log, /\[ERROR\]/);
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('100 pipelined requests in one write pass the pipelining depth cap in order', async (t) => {
  const server = await serve(t, ROUTES);
  const requests = Array.from({ length: 99 }, (_, i) => `GET /ok?${i} HTTP/1.1\r\nHost: x\r\n\r\n`).join('');
  const { text, closed } = await raw(server.port, `${requests}GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { ms: 10_000 });
  t.true(closed);
  t.is(statusLines(text).length, 100);
  t.regex(text, /\r\n\r\n\d+$/, 'the last response is the last request’s');
});

for (const iface of ['wsgi', 'node']) {
  test(`${iface} interface: a lone answer leaves before the rest of its loop turn`, async (t) => {
    const marker = join(mkdtempSync(join(tmpdir(), 'rwsgi-spin-')), 'seen');
    t.teardown(() => rmSync(dirname(marker), { recursive: true, force: true }));
    const server = await serve(t, fixture('answer-then-spin.mjs'), { args: ['--interface', iface], env: { MARKER: marker } });
    // The handler spins after answering until the marker exists (or 10 s).
    t.is(await curl('--max-time', '8', `${server.url}/`), 'answered');
    writeFileSync(marker, '');
    t.is(await curl('--max-time', '15', `${server.url}/outcome`), 'seen');
  });
}

test('each request sees its own headers when a connection repeats or changes them', async (t) => {
  // The engine marks a header block equal to the connection's last one and
  // the interface reuses what it made of it; blocks over 2 KiB are not kept.
  const server = await serve(t, ECHO);
  const out = await python(
    `
import http.client, json
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
big = 'b' * 3000
for v, pad in [('a', ''), ('a', ''), ('b', ''), ('a', ''), ('a', big), ('a', big), ('c', big), ('a', '')]:
    c.request('GET', '/', headers={'X-V': v, 'X-Pad': pad})
    e = json.loads(c.getresponse().read())['environ']
    print(e['HTTP_X_V'], len(e.get('HTTP_X_PAD', '')))
`,
    server.port,
  );
  t.deepEqual(out.trim().split('\n'), ['a 0', 'a 0', 'b 0', 'a 0', 'a 3000', 'a 3000', 'c 3000', 'a 0']);
  const head = (v) => `GET / HTTP/1.1\r\nHost: x\r\nX-V: ${v}\r\n\r\n`;
  const { text } = await raw(server.port, ['a', 'a', 'b', 'b', 'a'].map(head).join('') + 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const seen = [...text.matchAll(/"HTTP_X_V":"(\w)"/g)].map((m) => m[1]);
  t.deepEqual(seen, ['a', 'a', 'b', 'b', 'a'], 'pipelined in one write');
});

test('each request sees its own path and query when targets repeat or change', async (t) => {
  // The last target's split and decoding is reused when the next is equal.
  const server = await serve(t, ECHO);
  const targets = ['/a%20b?x=1', '/a%20b?x=1', '/c', '/a%20b?x=2', '/a%20b', '/c#frag', '/c'];
  const head = (target, last) => `GET ${target} HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
  const { text } = await raw(server.port, targets.map((target, i) => head(target, i === targets.length - 1)).join(''));
  const seen = [...text.matchAll(/\{"environ":(\{.*?\}),"body"/g)].map((m) => {
    const e = JSON.parse(m[1]);
    return `${e.PATH_INFO}?${e.QUERY_STRING} ${e.RAW_URI}`;
  });
  t.deepEqual(seen, [
    '/a b?x=1 /a%20b?x=1',
    '/a b?x=1 /a%20b?x=1',
    '/c? /c',
    '/a b?x=2 /a%20b?x=2',
    '/a b? /a%20b',
    '/c? /c#frag',
    '/c? /c',
  ]);
});

test('each answer carries its own head and body when they change, repeat or are refused', async (t) => {
  const server = await serve(t, fixture('heads.mjs'));
  // One request at a time, then all of them in one write: a batch's answers
  // equal to the one before are listed for the engine, not passed, and must
  // still go out in order between the others.
  const out = await python(
    `
import http.client, socket
paths = ['/a', '/a', '/b', '/b-copy', '/a', '/split', '/a', '/number', '/number', '/b', '/split', '/split', '/b', '/a', '/a-bytes', '/a', '/a-bytes', '/a-bytes']
def show(path, r):
    body = r.read()
    print(path, r.status, r.getheader('X-Head'), r.getheader('X-Injected'), body.decode())
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
for path in paths:
    c.request('GET', path); show(path, c.getresponse())
class Kept:
    """One buffered reader for every response of the connection."""
    def __init__(self, f): self.f = f
    def __getattr__(self, name): return getattr(self.f, name)
    def close(self): pass
    def makefile(self, *args, **kwargs): return self
s = socket.create_connection(('127.0.0.1', port), timeout=10)
s.sendall(b''.join(b'GET %s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' % p.encode() for p in paths))
kept = Kept(s.makefile('rb'))
for path in paths:
    r = http.client.HTTPResponse(kept); r.begin(); show('pipelined ' + path, r)
`,
    server.port,
  );
  const lines = out.trim().split('\n');
  t.deepEqual(lines.slice(18).join('\n'), lines.slice(0, 18).map((l) => `pipelined ${l}`).join('\n'));
  t.deepEqual(lines.slice(0, 18), [
    '/a 200 a None /a',
    '/a 200 a None /a',
    '/b 201 b None /b',
    '/b-copy 201 b None /b-copy',
    '/a 200 a None /a',
    '/split 500 None None Internal Server Error',
    '/a 200 a None /a',
    '/number 500 None None Internal Server Error',
    '/number 500 None None Internal Server Error',
    '/b 201 b None /b',
    '/split 500 None None Internal Server Error',
    '/split 500 None None Internal Server Error',
    '/b 201 b None /b',
    '/a 200 a None /a',
    '/a-bytes 200 a None /a-bytes',
    '/a 200 a None /a',
    '/a-bytes 200 a None /a-bytes',
    '/a-bytes 200 a None /a-bytes',
  ]);
});

test('node interface: a header value outside ASCII goes out byte for byte as Node writes it', async (t) => {
  const server = await serve(t, fixture('latin1-header.mjs'), { args: ['--interface', 'node'] });
  const out = await python(
    `
import http.client
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
for path in ['/', '/chunked']:
    c.request('GET', path); r = c.getresponse(); r.read()
    print(r.status, r.getheader('X-Name').encode('latin-1').hex())
`,
    server.port,
  );
  t.deepEqual(out.trim().split('\n'), ['200 636166c3a9', '200 636166e9']);
});
