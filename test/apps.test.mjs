// The native interface: app loading (ESM, CommonJS, named exports) and what
// happens when an app misbehaves. The worker must keep serving every time.

import test from 'ava';
import { curl, fixture, raw, serve, statusLines, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');

test('an ESM default export is served', async (t) => {
  const server = await serve(t, 'examples/hello.js');
  t.is(await curl(`${server.url}/`), 'Hello, World!');
});

test('a CommonJS module.exports app is served', async (t) => {
  const server = await serve(t, fixture('hello.cjs'));
  t.is(await curl(`${server.url}/`), 'hello from commonjs');
});

test('MODULE:NAME picks a named export', async (t) => {
  const server = await serve(t, `${fixture('named.mjs')}:handler`);
  t.is(await curl(`${server.url}/`), 'hello from handler');
});

async function expect500(t, server, path, logPattern) {
  const out = await curl('-i', `${server.url}${path}`);
  t.regex(out, /^HTTP\/1\.1 500 Internal Server Error\r\n/);
  await waitFor(() => logPattern.test(server.log), 5000, `log ${logPattern}`);
  t.is(await curl(`${server.url}/ok`), 'ok', 'the worker keeps serving');
}

test('a sync throw gets a 500 and an [ERROR] line with the stack', async (t) => {
  const server = await serve(t, ROUTES);
  await expect500(t, server, '/throw', /\[ERROR\] Error handling request \/throw\n.*Error: boom from \/throw\n\s+at /);
});

test('a rejected promise gets a 500 and an [ERROR] line with the stack', async (t) => {
  const server = await serve(t, ROUTES);
  await expect500(t, server, '/reject', /\[ERROR\] Error handling request \/reject\n.*Error: boom from \/reject/);
});

test('returning without startResponse gets a 500 that says so', async (t) => {
  const server = await serve(t, ROUTES);
  await expect500(t, server, '/nostart', /\[ERROR\] Error handling request \/nostart: the app returned without calling startResponse/);
});

test('a header with CR/LF is refused, never written', async (t) => {
  const server = await serve(t, ROUTES);
  const out = await curl('-i', `${server.url}/bad-header`);
  t.regex(out, /^HTTP\/1\.1 500 /);
  t.notRegex(out, /injected/);
  await waitFor(() => /Error handling request \/bad-header: invalid response: response header "X-Evil"/.test(server.log));
});

test('an invalid status is refused', async (t) => {
  const server = await serve(t, ROUTES);
  await expect500(t, server, '/bad-status', /Error handling request \/bad-status: invalid response: invalid status "2000 Nope"/);
});

test('startResponse twice is an error', async (t) => {
  const server = await serve(t, ROUTES);
  await expect500(t, server, '/twice', /startResponse\(\) called twice/);
});

test('sync and async generators stream', async (t) => {
  const server = await serve(t, ROUTES);
  t.is(await curl(`${server.url}/stream`), 'one,two,three');
  t.is(await curl(`${server.url}/async-stream`), 'part0;part1;part2;');
});

test('an app error on a pipelined request does not disturb its neighbours', async (t) => {
  const server = await serve(t, ROUTES);
  const { text } = await raw(
    server.port,
    'GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /reject HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  );
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK', 'HTTP/1.1 500 Internal Server Error', 'HTTP/1.1 200 OK']);
});

test('--request-timeout: 504, the signal aborts, the log names the request', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--request-timeout', '1'] });
  const out = await curl('-i', `${server.url}/forever`);
  t.regex(out, /^HTTP\/1\.1 504 Gateway Timeout\r\n/);
  t.regex(out, /\r\nConnection: close\r\n/);
  await waitFor(() => /forever aborted: request timed out after 1s/.test(server.log), 5000, 'the abort');
  t.regex(server.log, /\[ERROR\] Request timed out after 1s: GET \/forever/);
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('--request-timeout after the response started cuts the connection', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--request-timeout', '1'] });
  const { text, closed } = await raw(server.port, 'GET /stream-forever HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 8000 });
  t.true(closed);
  t.regex(text, /^HTTP\/1\.1 200 OK\r\n/);
  t.false(text.endsWith('0\r\n\r\n'), 'the chunked body is left incomplete');
});

test('a client disconnect aborts rwsgi.signal', async (t) => {
  const server = await serve(t, ROUTES);
  await raw(server.port, 'GET /forever HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 300 });
  await waitFor(() => /forever aborted: client closed the connection/.test(server.log), 5000, 'the abort');
  t.pass();
});

test('write() after the response ended is ignored with a warning', async (t) => {
  const server = await serve(t, ROUTES);
  t.is(await curl(`${server.url}/late-write`), 'done');
  await waitFor(() => /write\(\) after the response ended is ignored/.test(server.log), 5000, 'the warning');
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('huge response headers are refused with a 500', async (t) => {
  const server = await serve(t, ROUTES);
  await expect500(t, server, '/huge-header', /invalid response: response head over 65536 bytes/);
});
