// Unmodified apps of every interface, from the real frameworks on npm:
// routing, params, JSON bodies, middleware, their own error handlers,
// streaming, SSE, timeouts and disconnects.

import test from 'ava';
import { curl, fixture, python, raw, serve, statusLines, waitFor } from './helpers.mjs';

const FRAMEWORKS = [
  ['Hono', 'hono-app.mjs', {}],
  ['Express 5', 'express-app.mjs', {}],
  ['Express 4', 'express-app.mjs', { EXPRESS: 'express4' }],
  ['Koa', 'koa-app.mjs', {}],
  ['Fastify', 'fastify-app.mjs', {}],
];

for (const [name, app, env] of FRAMEWORKS) {
  test(`${name}: routing, params, JSON, middleware, its own error handler`, async (t) => {
    const server = await serve(t, fixture(app), { env });
    t.regex(server.log, /with interface (fetch|node \((Express|Koa|Fastify)\))/);
    const user = await curl('-i', `${server.url}/users/42?q=x`);
    t.regex(user, /^HTTP\/1\.1 200 OK\r\n/);
    t.regex(user, /\r\nx-middleware: \w+\r\n/i);
    t.like(JSON.parse(user.slice(user.indexOf('\r\n\r\n') + 4)), { id: '42', q: 'x' });
    const json = await curl('-H', 'Content-Type: application/json', '--data-binary', '{"a":[1,2]}', `${server.url}/json`);
    t.deepEqual(JSON.parse(json), { got: { a: [1, 2] } });
    const boom = await curl('-i', `${server.url}/boom`);
    t.regex(boom, /^HTTP\/1\.1 500 /);
    t.regex(boom, /handled: \w+ boom$/);
    const missing = await curl('-s', '-o', '/dev/null', '-w', '%{http_code}', `${server.url}/nope`);
    t.is(missing, '404');
    // Keep-alive across framework responses, checked by http.client.
    const out = await python(
      `
import http.client
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
ok = 0
for i in range(50):
    c.request('GET', '/users/%d' % i); r = c.getresponse(); ok += r.status == 200 and b'"%d"' % i in r.read()
print(ok)
`,
      server.port,
    );
    t.is(out, '50\n');
  });
}

for (const [name, app, env] of FRAMEWORKS.slice(0, 3)) {
  test(`${name}: streamed response, request body stream, SSE ending on disconnect`, async (t) => {
    const server = await serve(t, fixture(app), { env });
    const stream = await curl('-i', `${server.url}/stream`);
    t.regex(stream, /\r\nTransfer-Encoding: chunked\r\n/i);
    t.true(stream.endsWith('part0;part1;part2;'));
    t.is(await curl('--data-binary', 'body bytes', `${server.url}/echo`), 'body bytes');
    // Hangs up once two events came (the handler must then see the close).
    const sse = await raw(server.port, 'GET /sse HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 10_000, until: /data: tick 1\n\n/ });
    t.regex(sse.text, /data: tick 0\n\n/);
    t.regex(sse.text, /data: tick 1\n\n/);
    if (name.startsWith('Express')) await waitFor(() => server.log.includes('express sse closed'), 5000, 'the SSE handler to see the close');
    t.is(await curl(`${server.url}/users/1`).then((b) => JSON.parse(b).id), '1', 'still serving');
  });
}

test('Hono: --request-timeout answers 504 and aborts request.signal', async (t) => {
  const server = await serve(t, fixture('hono-app.mjs'), { args: ['--request-timeout', '1'] });
  const out = await curl('-i', `${server.url}/forever`);
  t.regex(out, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
  await waitFor(() => server.log.includes('hono signal aborted'), 5000, 'the signal');
  t.regex(server.log, /Request timed out after 1s: GET \/forever/);
});

test('Hono: a client disconnect aborts request.signal', async (t) => {
  const server = await serve(t, fixture('hono-app.mjs'));
  await raw(server.port, 'GET /forever HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 300 });
  await waitFor(() => server.log.includes('hono signal aborted'), 5000, 'the signal');
  t.pass();
});

test('Express: --request-timeout answers 504 and closes req', async (t) => {
  const server = await serve(t, fixture('express-app.mjs'), { args: ['--request-timeout', '1'] });
  const out = await curl('-i', `${server.url}/forever`);
  t.regex(out, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
  await waitFor(() => server.log.includes('express req closed'), 5000, 'req close');
});

test('fetch: ctx.waitUntil holds a stopping worker until it settles', async (t) => {
  const server = await serve(t, fixture('hono-app.mjs'));
  t.is(await curl(`${server.url}/wait-until`), 'ok');
  const exit = await server.stop('SIGTERM');
  t.is(exit.code, 0);
  t.regex(server.log, /waitUntil done[\s\S]*Worker exiting/);
});

test('a plain (req, res) listener with --interface node', async (t) => {
  const server = await serve(t, fixture('listener.mjs'), { args: ['--interface', 'node'] });
  t.is(await curl(`${server.url}/a?b`), 'listener saw GET /a?b');
});

test('a (req, res) listener served as native says which interface it assumed', async (t) => {
  const server = await serve(t, fixture('listener.mjs'));
  const out = await curl('-i', `${server.url}/`);
  t.regex(out, /^HTTP\/1\.1 500 /);
  await waitFor(() => /interface: native WSGI-style .*run rwsgi with --interface node/.test(server.log), 5000, 'the hint');
});

for (const [name, app] of [
  ['native', 'routes.mjs'],
  ['fetch (Hono)', 'hono-app.mjs'],
  ['node (Express)', 'express-app.mjs'],
]) {
  test(`${name}: 1 GiB up and 1 GiB down with flat worker memory`, async (t) => {
    const server = await serve(t, fixture(app), { env: { BIG_MIB: '1024' } });
    const worker = Number(/Booting worker with pid: (\d+)/.exec(server.log)[1]);
    const out = await python(
      `
import http.client, re
def rss():
    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/${worker}/status').read()).group(1))
before = rss(); peak = before
chunk = b'x' * (1 << 20)
def body():
    global peak
    for i in range(1024):
        if i % 64 == 0: peak = max(peak, rss())
        yield chunk
c = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
c.request('POST', '/count', body=body(), encode_chunked=True, headers={'Transfer-Encoding': 'chunked'})
r = c.getresponse(); up = r.read().decode()
c.request('GET', '/big'); r = c.getresponse(); down = 0
while True:
    b = r.read(1 << 20)
    if not b: break
    down += len(b)
    if down % (64 << 20) == 0: peak = max(peak, rss())
print(up, down, (peak - before) // 1024)
`,
      server.port,
    );
    const [up, down, growthMiB] = out.trim().split(' ').map(Number);
    t.is(up, 1 << 30);
    t.is(down, 1 << 30);
    t.true(growthMiB < 64, `worker RSS grew ${growthMiB} MiB`);
  });
}

test('fetch: the light Request and Response behave as the WHATWG ones', async (t) => {
  const server = await serve(t, fixture('fetch-objects.mjs'));
  const request = JSON.parse(await curl('-H', 'X-A: 1', '--data-binary', 'sent', `${server.url}/request?q`));
  t.deepEqual(request, {
    isRequest: true,
    tag: '[object Request]',
    method: 'POST',
    url: `http://127.0.0.1:${server.port}/request?q`,
    header: '1',
    copyUrl: `http://127.0.0.1:${server.port}/request?q`,
    copyHeader: '1',
    clone: 'sent',
    body: 'sent',
    signal: true,
  });
  t.deepEqual(JSON.parse(await curl('--data-binary', '{"a":[1,"é"]}', `${server.url}/body`)), {
    first: { a: [1, 'é'] },
    used: true,
    again: 'TypeError',
    realUsed: false,
  });
  t.is(await curl('--data-binary', 'raw bytes', `${server.url}/bytes`), 'raw bytes');
  t.deepEqual(JSON.parse(await curl(`${server.url}/response`)), {
    heldIsResponse: true,
    realIsResponse: true,
    tag: '[object Response]',
    type: 'text/plain;charset=UTF-8',
    text: 'def',
    cloned: 'ghi',
    bytesType: null,
    nullBody: 'TypeError',
    badStatus: 'RangeError',
  });
  const held = await curl('-i', `${server.url}/held`);
  t.regex(held, /^HTTP\/1\.1 201 Made It\r\n/);
  t.regex(held, /\r\nX-B: 2\r\n/i);
  t.regex(held, /\r\ncontent-type: text\/plain;charset=UTF-8\r\n/i);
  t.regex(held, /\r\nContent-Length: 4\r\n\r\nmade$/);
  const mutated = await curl('-i', `${server.url}/mutated`);
  t.regex(mutated, /\r\nx-c: 3\r\n/i);
  t.regex(mutated, /\r\nx-d: 4\r\n/i);
  t.notRegex(mutated, /content-type/i);
  t.true(mutated.endsWith('\r\n\r\nbytes'));
  t.regex(await curl('-i', `${server.url}/empty`), /^HTTP\/1\.1 204 No Content\r\n/);
  t.true((await curl('-i', `${server.url}/read-then-sent`)).endsWith('\r\n\r\ntwice'));
});
