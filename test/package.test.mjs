// The packed packages, installed as a user would into a new project on a
// machine without Rust: `npm/pack.mjs` packs the main package and this
// platform's, they install offline with no cargo or C compiler on PATH,
// `npx rwsgi serve` serves, and the package's types check an app.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { ROOT, curl, waitFor } from './helpers.mjs';

const run = promisify(execFile);

/** A PATH holding node, npm, npx and sh only. */
function barePath(dir) {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const tool of ['node', 'npm', 'npx', 'sh']) {
    symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool));
  }
  return bin;
}

const TYPED_APP = `
import type { App, Environ } from 'rwsgi';
const app: App = async (environ: Environ, startResponse) => {
  const body = await environ['wsgi.input'].bytes();
  startResponse('200 OK', [['Content-Type', 'text/plain']]);
  return [\`\${environ.REQUEST_METHOD} \${environ.PATH_INFO} \${body.byteLength} \${environ.HTTP_HOST ?? ''}\`];
};
export default app;
`;
const MISTYPED_APP = `
import type { App } from 'rwsgi';
const app: App = (environ) => {
  const length: number = environ.PATH_INFO;
  return [String(length)];
};
export default app;
`;

test('the packed packages install without a toolchain, serve with npx, and type-check an app', async (t) => {
  t.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'tarballs');
  mkdirSync(out);
  const { stdout } = await run(process.execPath, [join(ROOT, 'npm/pack.mjs'), out], { cwd: ROOT, timeout: 120_000 });
  const tarballs = stdout.trim().split('\n');
  t.is(tarballs.length, 2);

  const project = join(dir, 'project');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), '{"name":"tryout","private":true,"type":"module"}\n');
  writeFileSync(join(project, 'app.js'), "export default (env, start) => { start('200 OK', [['Content-Type', 'text/plain']]); return ['installed ' + env.PATH_INFO]; };\n");
  const env = { ...process.env, PATH: barePath(dir), npm_config_update_notifier: 'false' };
  await t.throwsAsync(run('sh', ['-c', 'command -v cargo || command -v cc'], { env }), undefined, 'no cargo, no cc');
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', ...tarballs], { cwd: project, env, timeout: 120_000 });

  const server = spawn('npx', ['rwsgi', 'serve', 'app.js', '-b', '127.0.0.1:0', '-w', '1', '--log-level', 'debug'], { cwd: project, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  server.stdout.on('data', (d) => (log += d));
  server.stderr.on('data', (d) => (log += d));
  const exited = new Promise((resolve) => server.on('close', resolve));
  // npx does not pass signals on: stop the arbiter itself (its pid is in the log).
  let arbiter = 0;
  t.teardown(async () => {
    if (arbiter) process.kill(arbiter, 'SIGTERM');
    else server.kill('SIGKILL');
    await exited;
  });
  const [, port, pid] = await waitFor(() => /Listening at: http:\/\/\S+:(\d+) \((\d+)\)/.exec(log), 20_000, 'listening');
  arbiter = Number(pid);
  await waitFor(() => log.includes('Worker ready'), 20_000, 'worker ready');
  t.is(await curl(`http://127.0.0.1:${port}/x`), 'installed /x');
  t.regex(log, new RegExp(`Serving app\\.js with interface`));

  // One compiler run over both files: the typed app checks clean under
  // --strict, the mistyped one fails, so the types are real (not `any`).
  writeFileSync(join(project, 'typed.ts'), TYPED_APP);
  writeFileSync(join(project, 'mistyped.ts'), MISTYPED_APP);
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  const flags = ['--strict', '--skipLibCheck', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022'];
  const types = ['--typeRoots', join(ROOT, 'node_modules/@types'), '--types', 'node'];
  const failed = await run(process.execPath, [tsc, ...flags, ...types, 'typed.ts', 'mistyped.ts'], { cwd: project }).then(() => null, (e) => e);
  const errors = (failed?.stdout ?? '').trim().split('\n');
  t.is(errors.length, 1, errors.join('\n'));
  t.regex(errors[0] ?? '', /^mistyped\.ts\(\d+,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);
});
