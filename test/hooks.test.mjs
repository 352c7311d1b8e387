// Server hooks in a config file, and HUP re-reading that file (settings,
// workers, binds): each hook appends `name pid ...` to a trace file, so the test sees which hook ran,
// in which process and in what order.

import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, ROOT, curl, fixture, python, rwsgi, serve, waitFor } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');

/** A config file (ESM text) in a fresh directory, and its trace file. */
function config(text) {
  const d = mkdtempSync(join(tmpdir(), 'rwsgi-hooks-'));
  const trace = join(d, 'trace');
  const file = join(d, 'rwsgi.config.mjs');
  writeFileSync(file, `import { appendFileSync } from 'node:fs';\nconst note = (...words) => appendFileSync(${JSON.stringify(trace)}, words.join(' ') + '\\n');\n${text}`);
  return { file, trace, lines: () => (existsSync(trace) ? readFileSync(trace, 'utf8').trim().split('\n') : []) };
}

const EVERY_HOOK = `
export default {
  onStarting: async (s) => { await new Promise((r) => setTimeout(r, 50)); note('onStarting', process.pid, s.pid, s.addresses.length); },
  whenReady: (s) => note('whenReady', process.pid, s.workers, s.addresses.length),
  onReload: () => note('onReload', process.pid),
  preSpawn: (s, w) => note('preSpawn', process.pid, w.slot, w.generation, String(w.pid)),
  workerExit: (s, w) => note('workerExit', process.pid, w.pid, w.reason),
  nworkersChanged: (s, n, o) => note('nworkersChanged', process.pid, n, o),
  onExit: async () => { await new Promise((r) => setTimeout(r, 50)); note('onExit', process.pid); },
  workerInit: async (w) => { await new Promise((r) => setTimeout(r, 50)); note('workerInit', process.pid, w.slot, w.generation); },
  postWorkerInit: (w) => note('postWorkerInit', process.pid, w.config.maxRequests),
  preRequest: (w, req) => note('preRequest', process.pid, req.method, req.path),
  postRequest: (w, req, res) => note('postRequest', process.pid, req.path, res.status, res.bytes, res.duration >= 0),
  workerShutdown: (w) => note('workerShutdown', process.pid),
  maxRequests: 1000,
};
`;

const field = (line, i) => line.split(' ')[i];

test('every hook fires once, in order, in the process it belongs to', async (t) => {
  const c = config(EVERY_HOOK);
  const server = await serve(t, ROUTES, { args: ['-c', c.file] });
  const arbiter = String(server.child.pid);
  await waitFor(() => c.lines().some((l) => l.startsWith('whenReady')), 10_000, 'whenReady');
  t.is(await curl(`${server.url}/ok`), 'ok');
  await waitFor(() => c.lines().some((l) => l.startsWith('postRequest')), 5000, 'postRequest');
  const first = c.lines();
  t.deepEqual(first.map((l) => field(l, 0)), ['onStarting', 'preSpawn', 'workerInit', 'postWorkerInit', 'whenReady', 'preRequest', 'postRequest']);
  const worker = field(first[2], 1);
  t.not(worker, arbiter);
  t.deepEqual(first.map((l) => field(l, 1)), [arbiter, arbiter, worker, worker, arbiter, worker, worker]);
  t.is(first[0], `onStarting ${arbiter} ${arbiter} 0`, 'before binding: no addresses yet');
  t.is(first[1], `preSpawn ${arbiter} 0 1 null`);
  t.is(first[3], `postWorkerInit ${worker} 1000`, 'worker hooks see the settings');
  t.is(first[4], `whenReady ${arbiter} 1 1`);
  t.is(first[5], `preRequest ${worker} GET /ok`);
  t.is(first[6], `postRequest ${worker} /ok 200 2 true`);

  // HUP: onReload, a new worker, the old one drains and exits as 'reload'.
  server.child.kill('SIGHUP');
  await waitFor(() => c.lines().some((l) => l.startsWith('workerExit')), 15_000, 'old worker exit');
  const reload = c.lines().slice(first.length);
  const second = field(reload.find((l) => l.startsWith('workerInit')), 1);
  t.deepEqual(reload.map((l) => field(l, 0)), ['onReload', 'preSpawn', 'workerInit', 'postWorkerInit', 'workerShutdown', 'workerExit']);
  t.is(reload[1], `preSpawn ${arbiter} 0 2 null`);
  t.is(reload[4], `workerShutdown ${worker}`);
  t.is(reload[5], `workerExit ${arbiter} ${worker} reload`);

  // TTIN: nworkersChanged; TERM: the workers drain, exit as 'stop', then onExit.
  server.child.kill('SIGTTIN');
  await waitFor(() => c.lines().filter((l) => l.startsWith('postWorkerInit')).length === 3, 15_000, 'third worker');
  const before = c.lines().length;
  t.true(c.lines().includes(`nworkersChanged ${arbiter} 2 1`));
  t.deepEqual(await server.stop('SIGTERM'), { code: 0, signal: null });
  const end = c.lines().slice(before);
  t.is(end.filter((l) => l.startsWith('workerShutdown')).length, 2);
  t.deepEqual(end.filter((l) => l.startsWith('workerExit')).map((l) => field(l, 3)), ['stop', 'stop']);
  t.is(end[end.length - 1], `onExit ${arbiter}`);
  t.is(c.lines().filter((l) => l.startsWith('whenReady')).length, 1, 'whenReady once');
});

test('a throwing onStarting stops startup with exit 3; a failing workerInit or postWorkerInit exits 4', async (t) => {
  const starting = config("export default { onStarting() { throw new Error('no database'); } };\n");
  const r1 = await rwsgi(['serve', ROUTES, '-b', '127.0.0.1:0', '-w', '1', '-c', starting.file]);
  t.is(r1.code, 3);
  t.regex(r1.out, /onStarting hook failed: Error: no database/);
  t.notRegex(r1.out, /Listening at/, 'stopped before binding');

  const init = config("export default { workerInit() { throw new Error('init broke'); } };\n");
  const r2 = await rwsgi(['serve', ROUTES, '-b', '127.0.0.1:0', '-w', '2', '-c', init.file]);
  t.is(r2.code, 4);
  t.is(r2.out.match(/workerInit hook failed: Error: init broke/g)?.length, 1, 'said once');
  t.regex(r2.out, /App failed to load/);

  const post = config("export default { postWorkerInit: async () => { throw new Error('warmup failed'); } };\n");
  const r3 = await rwsgi(['serve', ROUTES, '-b', '127.0.0.1:0', '-w', '1', '-c', post.file]);
  t.is(r3.code, 4);
  t.regex(r3.out, /postWorkerInit hook failed: Error: warmup failed/);
});

test('a throwing request hook is logged once per distinct error and the requests go on', async (t) => {
  const c = config(`
let n = 0;
export default {
  preRequest: () => { n++; throw new Error('pre broke'); },
  postRequest: (w, req, res) => { note('post', res.status); throw new Error('post broke ' + (n > 2 ? 'again' : 'first')); },
  workerExit: () => { throw new Error('exit hook broke'); },
};
`);
  const server = await serve(t, ROUTES, { args: ['-c', c.file] });
  for (let i = 0; i < 4; i++) t.is(await curl(`${server.url}/ok`), 'ok');
  t.is(await curl('-o', '/dev/null', '-w', '%{http_code}', `${server.url}/throw`), '500');
  await waitFor(() => c.lines().length === 5, 5000, 'five postRequest calls');
  t.deepEqual(c.lines(), ['post 200', 'post 200', 'post 200', 'post 200', 'post 500']);
  t.is(server.log.match(/preRequest hook failed/g)?.length, 1);
  t.is(server.log.match(/postRequest hook failed/g)?.length, 2, "'first' and 'again' are two distinct errors");
  t.is((await server.stop('SIGTERM')).code, 0, 'a throwing workerExit does not stop the arbiter from stopping');
  t.regex(server.log, /workerExit hook failed: Error: exit hook broke/);
});

test('HUP re-reads the config file: new settings reach the new workers; a broken file keeps the running ones', async (t) => {
  const c = config('export default { requestTimeout: 0 };\n');
  const server = await serve(t, ROUTES, { args: ['-c', c.file] });
  const status = (path) => curl('-o', '/dev/null', '-w', '%{http_code}', `${server.url}${path}`);
  t.is(await status('/sleep?ms=1500'), '200');

  // (serve() gives -w on the command line, which beats the file's workers.)
  writeFileSync(c.file, 'export default { requestTimeout: 0.5, workers: 3 };\n');
  server.child.kill('SIGHUP');
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 2, 15_000, 'a new worker');
  t.notRegex(server.log, /Number of workers/);
  await waitFor(() => /Worker exiting/.test(server.log), 15_000, 'old worker gone');
  t.is(await status('/sleep?ms=1500'), '504', 'the new requestTimeout applies');

  writeFileSync(c.file, 'export default { requestTimeout: "soon" };\n');
  server.child.kill('SIGHUP');
  await waitFor(() => /keeping the running ones/.test(server.log), 10_000, 'reload refused');
  t.regex(server.log, /Reload: the settings do not resolve, keeping the running ones: requestTimeout in .*rwsgi\.config\.mjs must be a number of seconds >= 0, got 'soon'/);
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 3, 15_000, 'generation 3 worker');
  t.is(await status('/sleep?ms=1500'), '504', 'still the last good settings');
  t.is(await curl(`${server.url}/ok`), 'ok');
});

/** `rwsgi serve` with only the config file's settings (serve() would add -b and -w). */
async function serveFromFile(t, file) {
  const child = spawn(process.execPath, [CLI, 'serve', '-c', file, '--log-level', 'debug'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { child, log: '' };
  child.stdout.on('data', (d) => (server.log += d));
  child.stderr.on('data', (d) => (server.log += d));
  server.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    child.kill('SIGINT');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await server.exited;
    clearTimeout(killer);
  });
  await waitFor(() => /Worker ready/.test(server.log), 15_000, 'a ready worker');
  return server;
}

const listening = (log, host) => Number(new RegExp(`Listening at: http://${host.replace(/\./g, '\\.')}:(\\d+)`).exec(log)?.[1] ?? 0);

test('HUP with other binds and workers in the file: new listeners open, removed ones close, the staying address drops nothing', async (t) => {
  const c = config(`export default { app: ${JSON.stringify(ROUTES)}, bind: ['127.0.0.1:0', '127.0.0.2:0'], workers: 1 };\n`);
  const server = await serveFromFile(t, c.file);
  const [stays, goes] = [listening(server.log, '127.0.0.1'), listening(server.log, '127.0.0.2')];
  t.true(stays > 0 && goes > 0);
  t.is(await curl(`http://127.0.0.2:${goes}/ok`), 'ok');

  writeFileSync(c.file, `export default { app: ${JSON.stringify(ROUTES)}, bind: ['127.0.0.1:0', '127.0.0.3:0'], workers: 2 };\n`);
  // Fresh connections to the staying address throughout the reload.
  const load = python(
    `
import http.client, time
ok = 0
for i in range(300):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    c.request('GET', '/ok'); ok += c.getresponse().status == 200; c.close()
    time.sleep(0.005)
print(ok)
`,
    stays,
  );
  server.child.kill('SIGHUP');
  await waitFor(() => /Stopped listening at: http:\/\/127\.0\.0\.2/.test(server.log) && listening(server.log, '127.0.0.3') > 0, 15_000, 'rebound');
  await waitFor(() => (server.log.match(/Worker ready/g) ?? []).length >= 3 && /Worker exiting/.test(server.log), 15_000, 'two new workers');
  t.regex(server.log, /Number of workers: 2/);
  t.is(Number(await load), 300, 'no request to the staying address failed');
  t.is(await curl(`http://127.0.0.3:${listening(server.log, '127.0.0.3')}/ok`), 'ok');
  await t.throwsAsync(curl(`http://127.0.0.2:${goes}/ok`), undefined, 'the removed address is closed');
  t.is(listening(server.log, '127.0.0.1'), stays);
  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
});
