// Settings as an operator meets them: config files of every kind, the four
// layers and their precedence, every mistake with its exit status and
// message, `rwsgi check`, `--print-config`, and the README's table.

import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { curl, fixture, ROOT, rwsgi, serve } from './helpers.mjs';

const ROUTES = fixture('routes.mjs');
const INDEX = join(ROOT, 'dist/index.js');

/** A fresh directory holding `files` (name -> text). */
function dir(files = {}) {
  const d = mkdtempSync(join(tmpdir(), 'rwsgi-settings-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

/** `--print-config --json` in `cwd`: each setting's { value, source, ... }. */
async function resolved(args, { cwd = ROOT, env = {} } = {}) {
  const r = await rwsgi(['serve', ...args, '--print-config', '--json'], { cwd, env });
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.out}`);
  return JSON.parse(r.stdout);
}

test('each config file kind is read: .mjs (default export), .js (named exports), .cjs, .json', async (t) => {
  const d = dir({
    'a.mjs': `import { defineConfig } from ${JSON.stringify(INDEX)};\nexport default defineConfig({ workers: 3, bind: ['127.0.0.1:0', '[::1]:0'] });\n`,
    'b.js': 'export const maxRequests = 7;\nexport const logLevel = "debug";\n',
    'package.json': '{"type":"module"}',
    'c.cjs': 'module.exports = async () => ({ keepAlive: 2.5, interface: "node" });\n',
    'd.json': '{ "limitRequestBody": 1024, "pidfile": "run/x.pid" }',
  });
  const a = await resolved(['-c', join(d, 'a.mjs')]);
  t.deepEqual([a.workers.value, a.workers.source, a.workers.file], [3, 'file', join(d, 'a.mjs')]);
  t.deepEqual(a.bind.value, ['127.0.0.1:0', '[::1]:0']);
  const b = await resolved(['-c', 'b.js'], { cwd: d });
  t.deepEqual([b.maxRequests.value, b.logLevel.value, b.maxRequests.file], [7, 'debug', 'b.js']);
  const c = await resolved(['-c', 'c.cjs'], { cwd: d });
  t.deepEqual([c.keepAlive.value, c.interface.value], [2.5, 'node']);
  const j = await resolved(['--config=d.json'], { cwd: d });
  t.is(j.limitRequestBody.value, 1024);
  t.is(j.pidfile.value, join(d, 'run/x.pid'), 'paths are made absolute');
});

test('./rwsgi.config.mjs is read when no -c is given; the app may be named in it', async (t) => {
  const d = dir({ 'rwsgi.config.mjs': `export default { app: ${JSON.stringify(ROUTES)}, workers: 2 };\n` });
  const r = await resolved([], { cwd: d });
  t.deepEqual([r.app.value, r.app.source, r.app.file], [ROUTES, 'file', 'rwsgi.config.mjs']);
  const other = dir({ 'rwsgi.config.json': '{"workers": 5}' });
  t.is((await resolved(['x.js'], { cwd: other })).workers.value, 5);
});

test('a config file really configures the server (app, workers, timeout from the file)', async (t) => {
  const d = dir({ 'conf.mjs': `export default { app: ${JSON.stringify(ROUTES)}, workers: 2, requestTimeout: 1 };\n` });
  // serve() passes -b and -w; no MODULE on the command line: it comes from the file.
  const server = await serve(t, `--config=${join(d, 'conf.mjs')}`, { workers: 2 });
  t.is(await curl(`${server.url}/ok`), 'ok');
  t.is(await curl('-o', '/dev/null', '-w', '%{http_code}', `${server.url}/sleep?ms=3000`), '504');
});

test('precedence: defaults < config file < RWSGI_CMD_ARGS < flags, and PORT only when nothing binds', async (t) => {
  const d = dir({ 'rwsgi.config.json': '{"workers": 2, "keepAlive": 7, "timeout": 9, "backlog": 11}' });
  const env = { RWSGI_CMD_ARGS: "--keep-alive 8 -t 10 --error-logfile '/tmp/with space.log'" };
  const r = await resolved(['x.js', '-t', '12'], { cwd: d, env });
  t.deepEqual([r.headerTimeout.value, r.headerTimeout.source], [10, 'default']);
  t.deepEqual([r.workers.value, r.workers.source], [2, 'file']);
  t.deepEqual([r.keepAlive.value, r.keepAlive.source, r.keepAlive.name], [8, 'env', 'RWSGI_CMD_ARGS']);
  t.deepEqual([r.timeout.value, r.timeout.source], [12, 'flag']);
  t.is(r.errorLogfile.value, '/tmp/with space.log', 'RWSGI_CMD_ARGS is split as a shell would');

  const port = await resolved(['x.js'], { env: { PORT: '5555' } });
  t.deepEqual([port.bind.value, port.bind.source, port.bind.name], [['0.0.0.0:5555'], 'env', 'PORT']);
  const bound = await resolved(['x.js', '-b', '127.0.0.1:1'], { env: { PORT: '5555' } });
  t.deepEqual(bound.bind.value, ['127.0.0.1:1'], 'a bind anywhere beats PORT');
  const filed = dir({ 'rwsgi.config.json': '{"bind": "127.0.0.1:2"}' });
  t.deepEqual((await resolved(['x.js'], { cwd: filed, env: { PORT: '5555' } })).bind.value, ['127.0.0.1:2']);
});

test('--print-config lists every setting with its value and source', async (t) => {
  const d = dir({ 'rwsgi.config.mjs': 'export default { workers: 2, onStarting() {} };\n' });
  const r = await rwsgi(['serve', 'x.js', '--print-config', '--keep-alive', '3'], { cwd: d, env: { RWSGI_CMD_ARGS: '--backlog 9' } });
  t.is(r.code, 0);
  t.regex(r.stdout, /^app +=  ?x\.js +# command line$/m);
  t.regex(r.stdout, /^workers += 2 +# file rwsgi\.config\.mjs$/m);
  t.regex(r.stdout, /^keepAlive += 3 +# command line$/m);
  t.regex(r.stdout, /^backlog += 9 +# env RWSGI_CMD_ARGS$/m);
  t.regex(r.stdout, /^limitRequestLine += 4094 +# default$/m);
  t.regex(r.stdout, /^onStarting += \[function onStarting\] +# file rwsgi\.config\.mjs$/m);
  const json = await resolved(['x.js']);
  t.true(['app', 'bind', 'workers', 'keepAlive', 'postRequest'].every((k) => k in json));
});

/** Runs `cases` (functions returning promises) two at a time: quicker than
 * one by one, without a burst of processes that starves other tests. */
async function twoAtATime(cases) {
  const queue = [...cases];
  const lane = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) await next();
  };
  await Promise.all([lane(), lane()]);
}

/** Runs rwsgi; asserts exit 3 and a single-line message matching `pattern`. */
async function mistake(t, args, pattern, opts) {
  const r = await rwsgi(args, opts);
  t.is(r.code, 3, `${args.join(' ')}: ${r.out}`);
  t.regex(r.stderr, pattern);
  t.is(r.stderr.trim().split('\n').length, 2, `one line and the hint: ${r.stderr}`);
  t.regex(r.stderr, /\nsee 'rwsgi (serve|check) --help'\n$/);
  t.false(/usage:/.test(r.out), 'not the whole usage text');
}

test('config file mistakes exit 3 with one line naming the setting, file, value and what is allowed', async (t) => {
  const d = dir({
    'rwsgi.config.mjs': 'export default { maxRequest: 5 };\n',
    'type.json': '{"workers": "4"}',
    'range.mjs': 'export default { keepAlive: -1 };\n',
    'big.cjs': 'module.exports = { workers: 100000 };\n',
    'choice.json': '{"spread": "hash"}',
    'throws.mjs': 'throw new Error("config exploded");\n',
    'rejects.mjs': 'export default async () => { throw new TypeError("no secret"); };\n',
    'array.json': '[1, 2]',
    'hook.mjs': 'export default { onStarting: "yes" };\n',
    'bad.json': '{ "workers": ',
    'conf.yaml': 'workers: 2',
  });
  const at = { cwd: d };
  await twoAtATime([
    () => mistake(t, ['serve', 'x.js'], /^rwsgi: unknown setting 'maxRequest' in rwsgi\.config\.mjs; did you mean 'maxRequests'\?$/m, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'type.json'], /workers in type\.json must be an integer >= 1, got '4'/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'range.mjs'], /keepAlive in range\.mjs must be a number of seconds >= 0, got -1/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'big.cjs'], /workers in big\.cjs must be an integer <= 1024, got 100000/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'choice.json'], /spread in choice\.json must be one of cpu, random, got 'hash'/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'throws.mjs'], /cannot load config file throws\.mjs: Error: config exploded/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'rejects.mjs'], /cannot load config file rejects\.mjs: TypeError: no secret/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'array.json'], /array\.json must export an object of settings .*got an array/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'hook.mjs'], /onStarting in hook\.mjs must be a function, got 'yes'/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'bad.json'], /cannot load config file bad\.json: SyntaxError/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'conf.yaml'], /config file 'conf\.yaml' \(from -c\) must end in \.mjs, \.js, \.cjs, \.json/, at),
    () => mistake(t, ['serve', 'x.js', '-c', 'nope.mjs'], /config file 'nope\.mjs' \(from -c\) not found/, at),
  ]);
});

test('flag and environment mistakes exit 3 the same way', async (t) => {
  const env = (v) => ({ env: { RWSGI_CMD_ARGS: v } });
  await twoAtATime([
    () => mistake(t, ['serve', 'x.js', '--max-request', '3'], /^rwsgi: Unknown option '--max-request'; did you mean '--max-requests'\?$/m),
    () => mistake(t, ['serve', 'x.js', '--workers'], /--workers needs a value/),
    () => mistake(t, ['serve', 'x.js', '--limit-request-line', '8'], /--limit-request-line must be an integer >= 16, got '8'/),
    () => mistake(t, ['serve', 'x.js', '--help=yes'], /--help takes no value/),
    () => mistake(t, ['check', 'x.js', '-b', ':70000'], /--bind ':70000' is not HOST:PORT/),
    () => mistake(t, ['serve', 'x.js'], /--timeout in RWSGI_CMD_ARGS must be a number of seconds >= 0, got 'soon'/, env('-t soon')),
    () => mistake(t, ['serve', 'x.js'], /Unknown option '--wrokers' in RWSGI_CMD_ARGS; did you mean '--workers'\?/, env('--wrokers 2')),
    () => mistake(t, ['serve', 'x.js'], /RWSGI_CMD_ARGS holds flags only, got 'app\.js'/, env('app.js')),
    () => mistake(t, ['serve', 'x.js'], /RWSGI_CMD_ARGS has an unclosed ' quote/, env("--pid 'x")),
    () => mistake(t, ['serve', 'x.js'], /PORT must be a port number 0-65535, got 'http'/, { env: { PORT: 'http' } }),
    () => mistake(t, ['serve'], /missing MODULE\[:EXPORT\] to serve/),
  ]);
});

test('rwsgi --help lists the commands; rwsgi serve --help lists settings by section', async (t) => {
  const top = await rwsgi(['--help']);
  t.is(top.code, 0);
  t.regex(top.stdout, /^ {2}serve +\S.*$/m);
  t.regex(top.stdout, /^ {2}check +\S.*$/m);
  const serveHelp = await rwsgi(['serve', '--help']);
  t.is(serveHelp.code, 0);
  const sections = [...serveHelp.stdout.matchAll(/^(\S[^:\n]*):$/gm)].map((m) => m[1]);
  t.deepEqual(sections.slice(0, 7), ['Application', 'Server socket', 'Worker processes', 'Timeouts', 'Limits', 'Logging', 'Process']);
  t.regex(serveHelp.stdout, /^ {2}-w, --workers N +The number of worker processes\. \(default number of CPUs\)$/m);
  t.regex(serveHelp.stdout, /^ {2}-c, --config FILE/m);
  t.regex(serveHelp.stdout, /onStarting, whenReady/);
});

test('rwsgi check: 0 when the settings and the app are good, 3 for settings, 4 for an app that does not load', async (t) => {
  const ok = await rwsgi(['check', ROUTES, '-w', '2']);
  t.is(ok.code, 0, ok.out);
  t.regex(ok.stdout, /app: ok \(.*routes\.mjs loads, interface wsgi\)/);
  const d = dir({ 'rwsgi.config.json': JSON.stringify({ app: fixture('express-app.mjs') }) });
  const fromFile = await rwsgi(['check'], { cwd: d });
  t.is(fromFile.code, 0, fromFile.out);
  t.regex(fromFile.stdout, /config file: rwsgi\.config\.json/);
  t.regex(fromFile.stdout, /interface node \(Express\)/);

  const broken = await rwsgi(['check', fixture('broken.mjs')]);
  t.is(broken.code, 4);
  t.regex(broken.stderr, /does not load: .*this app is broken at import time/s);
  const missing = await rwsgi(['check', 'no/such/app.js']);
  t.is(missing.code, 4);
  t.regex(missing.stderr, /app module 'no\/such\/app\.js' not found/);
  const notAnApp = await rwsgi(['check', `${ROUTES}:nothing`]);
  t.is(notAnApp.code, 4);
  t.regex(notAnApp.stderr, /has no export 'nothing'/);
  const hangs = await rwsgi(['check', fixture('never-boots.mjs'), '--boot-timeout', '1']);
  t.is(hangs.code, 4);
  t.regex(hangs.stderr, /did not load within --boot-timeout 1s/);

  const settings = await rwsgi(['check', ROUTES, '--keep-alive', 'long']);
  t.is(settings.code, 3);
  t.regex(settings.stderr, /--keep-alive must be a number of seconds/);
  const noApp = await rwsgi(['check']);
  t.is(noApp.code, 3);
  t.regex(noApp.stderr, /no app to check/);
});

test('defineConfig: TypeScript checks a config file\'s keys and values', async (t) => {
  const d = dir({
    'good.ts': `import { defineConfig } from ${JSON.stringify(INDEX)};\nexport default defineConfig({ workers: 2, bind: '127.0.0.1:0', onStarting: (server) => { server.pid.toFixed(); } });\n`,
    'bad.ts': `import { defineConfig } from ${JSON.stringify(INDEX)};\nexport default defineConfig({ workers: 2, maxRequest: 5 });\n`,
    'wrong.ts': `import { defineConfig } from ${JSON.stringify(INDEX)};\nexport default defineConfig(async () => ({ spread: 'hash' }));\n`,
  });
  const tsc = (file) =>
    promisify(execFile)(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--skipLibCheck', join(d, file)], { cwd: d }).then(
      () => '',
      (err) => err.stdout,
    );
  t.is(await tsc('good.ts'), '');
  t.regex(await tsc('bad.ts'), /'maxRequest' does not exist/);
  t.regex(await tsc('wrong.ts'), /property 'spread' are incompatible/);
});

test('the README settings table is the registry\'s', async (t) => {
  const { settingsTable } = await import('../dist/settings/table.js');
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /<!-- settings:start -->\n([\s\S]*?)<!-- settings:end -->/.exec(readme);
  t.truthy(m, 'README has the settings markers');
  t.is(m[1], settingsTable(), "README and registry disagree: run 'npm run docs:settings'");
});

test("the engine's options are the Rust ServerOptions fields, each filled by one engine setting", async (t) => {
  const { SETTINGS, defaults, engineOptions } = await import('../dist/settings/registry.js');
  const rust = readFileSync(join(ROOT, 'crates/node/src/lib.rs'), 'utf8');
  const body = /pub struct ServerOptions \{([^}]*)\}/.exec(rust)[1];
  const fields = [...body.matchAll(/pub (\w+):\s*([\w<>]+)/g)].map(([, name, type]) => {
    t.false(type.startsWith('Option'), `${name} is required on the Rust side`);
    return name.replace(/_(\w)/g, (_, c) => c.toUpperCase());
  });
  const options = engineOptions(defaults());
  t.deepEqual(Object.keys(options).sort(), fields.sort());
  const engineSettings = Object.entries(SETTINGS).filter(([, s]) => s.applies.includes('engine'));
  t.deepEqual(engineSettings.map(([, s]) => s.engine).sort(), fields.sort(), 'applies: engine <=> an engine field');
  for (const value of Object.values(options)) t.true(typeof value === 'number' || typeof value === 'string');
});

test('the engine refuses options that are missing or invalid instead of defaulting them', async (t) => {
  // In a child process: constructing a server installs the engine's signal handlers.
  const script = `
import { native } from ${JSON.stringify(join(ROOT, 'dist/native.js'))};
import { defaults, engineOptions } from ${JSON.stringify(join(ROOT, 'dist/settings/registry.js'))};
const good = engineOptions(defaults());
const { keepAliveSeconds, ...missing } = good;
for (const options of [missing, { ...good, headerTimeoutSeconds: -1 }, { ...good, limitRequestBody: 0.5 }]) {
  try {
    new (native().NativeServer)([], options, {});
    console.log('accepted');
  } catch (err) {
    console.log(err.message);
  }
}
`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
  const [missing, negative, fractional] = stdout.trim().split('\n');
  t.regex(missing, /keepAliveSeconds/);
  t.regex(negative, /headerTimeoutSeconds must be a number of seconds >= 0, got -1/);
  t.regex(fractional, /limitRequestBody must be an integer >= 0, got 0.5/);
});
