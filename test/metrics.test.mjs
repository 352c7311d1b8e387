// --metrics-bind: /metrics parsed by the Prometheus client's own text
// parser and compared with the traffic sent; /ready and /live; TERM with
// --shutdown-delay watched from /ready; a scrape while a worker hangs.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { alive, curl, fixture, python, raw, rwsgi, serve, statusLines, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');

/** Serves the routes app with metrics on a free port; `server.metricsPort` is it. */
async function serveWithMetrics(t, options = {}, app = ROUTES) {
  const args = ['--metrics-bind', '127.0.0.1:0', ...(options.args ?? [])];
  const server = await serve(t, app, { ...options, args });
  server.metricsPort = Number(/Metrics and health checks at: http:\/\/127\.0\.0\.1:(\d+)/.exec(server.log)?.[1]);
  return server;
}

/** Scrapes /metrics and parses it with prometheus_client: `{ 'name{k="v",...}': value }`. */
async function scrape(port) {
  const out = await python(
    `
import json, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10) as r:
    assert r.headers['Content-Type'].startswith('text/plain; version=0.0.4'), r.headers['Content-Type']
    text = r.read().decode()
samples = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ','.join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f'{s.name}{{{labels}}}'] = s.value
print(json.dumps(samples))
`,
    port,
  );
  return JSON.parse(out);
}

/** Sends `n` requests of `method` to `path` on one keep-alive connection; resolves with their statuses. */
async function send(port, method, path, n) {
  const out = await python(
    `
import http.client
c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
codes = []
for i in range(${n}):
    c.request('${method}', '${path}', body=${method === 'POST' ? "b'x' * 10" : 'None'})
    r = c.getresponse(); r.read(); codes.append(r.status)
print(' '.join(map(str, codes)))
`,
    port,
  );
  return out.trim().split(' ').map(Number);
}

const get200 = 'rwsgi_requests_total{code="2xx",method="GET"}';
const post404 = 'rwsgi_requests_total{code="4xx",method="POST"}';
const requestCount = (m) => Object.entries(m).reduce((n, [k, v]) => (k.startsWith('rwsgi_requests_total{') ? n + v : n), 0);

test('/metrics counts what was sent, summed over workers, and never goes back when a worker dies', async (t) => {
  const server = await serveWithMetrics(t, { workers: 2 });
  const [gets, posts] = await Promise.all([send(server.port, 'GET', '/ok', 30), send(server.port, 'POST', '/missing', 7)]);
  t.deepEqual(new Set(gets), new Set([200]));
  t.deepEqual(new Set(posts), new Set([404]));
  // Counters arrive with the heartbeats: wait for them, then they must be exact.
  let m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    return s[get200] >= 30 && s[post404] >= 7 ? s : null;
  }, 20_000, 'the counters');
  t.is(m[get200], 30);
  t.is(m[post404], 7);
  t.is(requestCount(m), 37);
  t.is(m['rwsgi_request_duration_seconds_count{}'], 37);
  t.is(m['rwsgi_request_duration_seconds_bucket{le="+Inf"}'], 37);
  t.true(m['rwsgi_request_bytes_total{}'] > 37 * 20);
  t.true(m['rwsgi_response_bytes_total{}'] > 37 * 40);
  t.is(m['rwsgi_workers_ready{}'], 2);
  t.is(m['rwsgi_worker_steering{slot="0",state="steered"}'], 1);
  t.is(m['rwsgi_worker_steering{slot="1",state="steered"}'], 1);
  t.true(m['rwsgi_worker_resident_memory_bytes{slot="0"}'] > 1e6);
  t.true(m['rwsgi_worker_heap_used_bytes{slot="1"}'] > 1e5);
  t.is(m['rwsgi_listen_queue_max{listener="' + server.url + '",slot="0"}'], 2048);

  // A worker killed: its counts stay in the totals, the restart is counted.
  const pids = [...server.log.matchAll(/Booting worker with pid: (\d+)/g)].map((x) => Number(x[1]));
  process.kill(pids[0], 'SIGKILL');
  m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    t.true(requestCount(s) >= 37, 'totals never go back');
    return s['rwsgi_worker_restarts_total{reason="crash"}'] === 1 && s['rwsgi_workers_ready{}'] === 2 ? s : null;
  }, 20_000, 'the replacement');
  t.is(m[get200], 30);
  t.deepEqual(new Set(await send(server.port, 'GET', '/ok', 5)), new Set([200]));
  m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    return s[get200] >= 35 ? s : null;
  }, 20_000, 'the counters after the restart');
  t.is(m[get200], 35);
  t.is(m[post404], 7);
});

test('requests the engine refuses are counted by status', async (t) => {
  const server = await serveWithMetrics(t);
  t.deepEqual(statusLines((await raw(server.port, 'NOT HTTP AT ALL\r\n\r\n')).text), ['HTTP/1.1 400 Bad Request']);
  const longUri = `GET /${'a'.repeat(9000)} HTTP/1.1\r\nHost: x\r\n\r\n`;
  t.deepEqual(statusLines((await raw(server.port, longUri)).text), ['HTTP/1.1 414 URI Too Long']);
  const m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    return s['rwsgi_requests_rejected_total{code="400"}'] >= 1 && s['rwsgi_requests_rejected_total{code="414"}'] >= 1 ? s : null;
  }, 20_000, 'the rejections');
  t.is(m['rwsgi_requests_rejected_total{code="400"}'], 1);
  t.is(m['rwsgi_requests_rejected_total{code="414"}'], 1);
  t.is(m['rwsgi_requests_rejected_total{code="431"}'], 0);
  t.is(requestCount(m), 0, 'refused requests are not app responses');
});

test('/ready and /live answer 200; other paths 404, other methods 405', async (t) => {
  const server = await serveWithMetrics(t);
  const base = `http://127.0.0.1:${server.metricsPort}`;
  const status = (...args) => curl('-o', '/dev/null', '-w', '%{http_code}', ...args);
  t.is(await status(`${base}/ready`), '200');
  t.is(await status(`${base}/live`), '200');
  t.is(await status('-I', `${base}/ready`), '200');
  t.is(await status(`${base}/ready?verbose=1`), '200');
  t.is(await status(`${base}/`), '404');
  t.is(await status('-X', 'POST', `${base}/metrics`), '405');
  t.is(await status('-X', 'DELETE', `${base}/ready`), '405');
});

test('TERM with --shutdown-delay: /ready turns 503 at once while requests are still served, then a graceful stop', async (t) => {
  const server = await serveWithMetrics(t, { args: ['--shutdown-delay', '2'] });
  const ready = `http://127.0.0.1:${server.metricsPort}/ready`;
  const status = () => curl('-o', '/dev/null', '-w', '%{http_code}', ready);
  t.is(await status(), '200');
  const termAt = Date.now();
  server.child.kill('SIGTERM');
  await waitFor(async () => (await status()) === '503', 10_000, '/ready 503');
  // Still served during the delay (the drain has not begun: its log line is not there yet).
  const { text } = await raw(server.port, 'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.deepEqual(statusLines(text), ['HTTP/1.1 200 OK']);
  const servedWhileDelayed = !server.log.includes('Shutdown delay over');
  await waitFor(() => server.log.includes('Shutdown delay over'), 20_000, 'the end of the delay');
  t.true(Date.now() - termAt >= 1900, 'the delay lasted its 2 s');
  t.true(servedWhileDelayed);
  const exit = await server.exited;
  t.is(exit.code, 0);
});

test('/metrics and /live answer while the only worker hangs; its slot shows as late, its accept queue fills', async (t) => {
  const server = await serveWithMetrics(t, { args: ['--timeout', '60'] });
  // The busy loop never returns: fire and forget, the teardown ends it.
  raw(server.port, 'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 30_000 }).catch(() => {});
  await waitFor(() => server.log.includes('spin request started'), 10_000, 'the hang');
  // Connections to the hung worker wait in its socket's accept queue.
  const waiting = Array.from({ length: 3 }, () => connect(server.port, '127.0.0.1').on('error', () => {}));
  t.teardown(() => waiting.forEach((c) => c.destroy()));
  const queued = `rwsgi_listen_queue_length{listener="${server.url}",slot="0"}`;
  const m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    return s['rwsgi_worker_steering{slot="0",state="late"}'] === 1 && s[queued] >= 3 ? s : null;
  }, 20_000, 'the late slot and its queue');
  t.is(m['rwsgi_worker_steering{slot="0",state="steered"}'], 0);
  t.is(m[queued], 3);
  t.is(await curl('-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${server.metricsPort}/live`), '200');
});

test('a Node listener\'s responses are counted by the status its own head carries', async (t) => {
  const server = await serveWithMetrics(t, { args: ['--interface', 'node'] }, fixture('listener.mjs'));
  const { metricsPort } = server;
  t.deepEqual(await send(server.port, 'DELETE', '/x', 2), [200, 200]);
  const m = await waitFor(async () => {
    const s = await scrape(metricsPort);
    return requestCount(s) >= 2 ? s : null;
  }, 20_000, 'the counters');
  t.is(m['rwsgi_requests_total{code="2xx",method="DELETE"}'], 2);
  t.is(requestCount(m), 2);
});

test('a --metrics-bind address in use stops the start with exit 3, naming the setting', async (t) => {
  const server = await serveWithMetrics(t);
  const taken = await rwsgi(['serve', ROUTES, '-b', '127.0.0.1:0', '--metrics-bind', `127.0.0.1:${server.metricsPort}`]);
  t.is(taken.code, 3);
  t.regex(taken.out, /--metrics-bind 127\.0\.0\.1:\d+: cannot listen \(.*EADDRINUSE/);
});

test('/ready is 503 while no worker is ready (the only one died, its replacement still boots), 200 again after', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gate = join(dir, 'gate');
  writeFileSync(gate, '');
  const server = await serveWithMetrics(t, { env: { BOOT_GATE: gate } }, fixture('gated-boot.mjs'));
  const ready = `http://127.0.0.1:${server.metricsPort}/ready`;
  const status = () => curl('-o', '/dev/null', '-w', '%{http_code}', ready);
  t.is(await status(), '200');
  rmSync(gate);
  const [pid] = [...server.log.matchAll(/Booting worker with pid: (\d+)/g)].map((x) => Number(x[1]));
  process.kill(pid, 'SIGKILL');
  await waitFor(async () => (await status()) === '503', 20_000, '/ready 503');
  const m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    return s['rwsgi_worker_steering{slot="0",state="booting"}'] === 1 ? s : null;
  }, 20_000, 'the booting slot');
  t.is(m['rwsgi_workers_ready{}'], 0);
  t.is(await curl('-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${server.metricsPort}/live`), '200');
  writeFileSync(gate, '');
  await waitFor(async () => (await status()) === '200', 20_000, '/ready 200 again');
});

test('after USR2 the new arbiter serves the metrics port once the old one lets it go', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A fixed port: with port 0 each arbiter would pick its own.
  const free = createServer().listen(0, '127.0.0.1');
  await once(free, 'listening');
  const { port } = free.address();
  free.close();
  const args = ['--pid', join(dir, 'pid'), '--metrics-bind', `127.0.0.1:${port}`, '--graceful-timeout', '6', '--timeout', '60'];
  const server = await serveWithMetrics(t, { args });
  const old = server.child.pid;
  // A request that never ends keeps the old arbiter draining for --graceful-timeout.
  raw(server.port, 'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 30_000 }).catch(() => {});
  await waitFor(() => server.log.includes('spin request started'), 20_000, 'the endless request');
  server.child.kill('SIGUSR2');
  const pid = await waitFor(() => Number(/Upgrade: started a new arbiter with pid: (\d+)/.exec(server.log)?.[1] ?? 0), 20_000, 'the new arbiter');
  const status = () => curl('-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/ready`);
  t.teardown(() => {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  // While the old arbiter drains it still answers: ready, as the new one serves.
  await waitFor(() => server.log.includes('drains and exits'), 30_000, 'the handover');
  t.true(alive(old));
  t.is(await status(), '200');
  await waitFor(() => server.log.includes(`[${pid}] [INFO] Metrics and health checks at: http://127.0.0.1:${server.metricsPort}/`), 30_000, 'the new arbiter on the metrics port');
  t.false(alive(old));
  t.is(await status(), '200');
  const m = await scrape(server.metricsPort);
  t.is(m['rwsgi_workers_ready{}'], 1);
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !alive(pid), 20_000, 'the new arbiter to stop');
});

test('a WORKER TIMEOUT is counted as a timeout and as a restart for that reason', async (t) => {
  const server = await serveWithMetrics(t, { args: ['--timeout', '2'] });
  raw(server.port, 'GET /spin HTTP/1.1\r\nHost: x\r\n\r\n', { ms: 30_000 }).catch(() => {});
  const m = await waitFor(async () => {
    const s = await scrape(server.metricsPort);
    return s['rwsgi_worker_timeouts_total{}'] >= 1 && s['rwsgi_workers_ready{}'] === 1 ? s : null;
  }, 30_000, 'the timeout and the replacement');
  t.regex(server.log, /WORKER TIMEOUT/);
  t.is(m['rwsgi_worker_timeouts_total{}'], 1);
  t.is(m['rwsgi_worker_restarts_total{reason="timeout"}'], 1);
  t.is(m['rwsgi_worker_restarts_total{reason="crash"}'], 0);
});
