// Abuse limits: slow clients, stalled bodies, connection caps and running
// out of file descriptors must not stop normal clients or spin the CPU.

import { connect } from 'node:net';
import test from 'ava';
import { curl, fixture, raw, serve, statusLines, waitFor, cpuSeconds } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');


/** Opens `n` connections that each send `prefix` and then nothing. */
async function openSlow(t, port, n, prefix) {
  const sockets = [];
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < n; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => {});
    sockets.push(s);
    await new Promise((resolve) => s.once('connect', resolve));
    if (prefix) s.write(prefix);
  }
  return sockets;
}

test('1000 slowloris connections do not stop a normal client being served within 1 s', async (t) => {
  const server = await serve(t, ROUTES);
  await openSlow(t, server.port, 1000, 'GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ');
  t.is(await curl('--max-time', '1', `${server.url}/ok`), 'ok');
});

test('a stalled request body gets 408 after --body-timeout', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--body-timeout', '1'] });
  const { text, closed } = await raw(server.port, 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc', { ms: 8000 });
  t.true(closed);
  t.deepEqual(statusLines(text), ['HTTP/1.1 408 Request Timeout']);
  t.is(await curl(`${server.url}/ok`), 'ok');
});

test('a refused request leaves one debug line with the peer, the status and the reason', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--log-level', 'debug'] });
  const bad = 'GET /ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n';
  t.deepEqual(statusLines((await raw(server.port, bad)).text), ['HTTP/1.1 400 Bad Request']);
  const line = /\[DEBUG\] 400 from 127\.0\.0\.1:\d+: HTTP\/1\.1 request needs exactly one Host header\n/;
  await waitFor(() => line.test(server.log), 5000, 'the debug line');
  t.is(server.log.match(/ 400 from /g).length, 1);
});

test('--worker-connections caps open connections; the next waits in the queue, not refused', async (t) => {
  const server = await serve(t, ROUTES, { args: ['--worker-connections', '2', '--keep-alive', '30'] });
  const idle = await openSlow(t, server.port, 2, '');
  await t.throwsAsync(curl('--max-time', '1', `${server.url}/ok`), undefined, 'the third connection is not served yet');
  const waiting = curl('--max-time', '10', `${server.url}/ok`);
  idle[0].destroy();
  t.is(await waiting, 'ok', 'served once a connection closes');
});

test('running out of file descriptors backs off without spinning and logs once', async (t) => {
  // Room for the processes to load their modules, not for 120 connections.
  const server = await serve(t, ROUTES, { args: ['--keep-alive', '60'], ulimit: 80 });
  const worker = Number(/Booting worker with pid: (\d+)/.exec(server.log)[1]);
  const sockets = await openSlow(t, server.port, 120, '');
  await waitFor(() => /Cannot accept connections \(EMFILE\)/.test(server.log), 5000, 'the EMFILE warning');
  const before = cpuSeconds(worker);
  const started = Date.now();
  await waitFor(() => Date.now() - started >= 1000, 5000, 'a measuring second');
  t.true(cpuSeconds(worker) - before < 0.3, 'no busy loop on the listening socket');
  t.is(server.log.match(/Cannot accept connections/g).length, 1);
  sockets.forEach((s) => s.destroy());
  t.is(await curl('--max-time', '5', `${server.url}/ok`), 'ok', 'accepting resumes');
});
