// TypeScript apps: loaded through the project's tsx on a Node that does not
// strip types itself, and a clear exit 4 when there is no loader.

import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { CLI, ROOT, curl, fixture, serve } from './helpers.mjs';

const run = promisify(execFile);

for (const [file, expected] of [
  ['app.ts', 'typed /hello'],
  ['app.mts', 'mts /hello'],
  ['app.cts', 'cts /hello'],
]) {
  test(`a ${file.slice(4)} app is served (types stripped by the project's tsx)`, async (t) => {
    const server = await serve(t, fixture(`typescript/${file}`), { workers: 1 });
    t.is(await curl(`${server.url}/hello`), expected);
  });
}

test('a .ts app in a project without a TypeScript loader: exit 4, naming what to install', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const app = join(dir, 'app.ts');
  copyFileSync(fixture('typescript/app.mts'), app);
  const err = await run(process.execPath, [CLI, 'serve', app, '-b', '127.0.0.1:0', '-w', '1'], { cwd: ROOT, timeout: 30_000 }).then(
    () => null,
    (e) => e,
  );
  t.is(err?.code, 4);
  t.regex(err.stderr, new RegExp(`${app.replace(/[.]/g, '\\.')} is TypeScript, which Node v[\\d.]+ does not run by itself: install a loader in the project \\(npm i -D tsx\\)`));
  t.is(err.stderr.match(/is TypeScript/g).length, 1, 'said once');
});

test('a rwsgi.config.ts is read from the working directory', async (t) => {
  const { stdout } = await run(process.execPath, [CLI, 'serve', '--print-config', '--json'], { cwd: fixture('typescript/config'), timeout: 30_000 });
  const settings = JSON.parse(stdout);
  t.deepEqual(settings.workers, { value: 3, source: 'file', file: 'rwsgi.config.ts' });
  t.is(settings.maxRequests.value, 77);
  t.is(settings.app.value, '../app.ts');
});
