// --reload: edits under the app's directory replace the workers as HUP does,
// under load with zero failed requests; a broken edit keeps the old workers.

import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { curl, load, serve, waitFor } from './helpers.mjs';

const version = (v) => `const text = [['Content-Type', 'text/plain']];
export default function app(env, start) {
  start('200 OK', text);
  return [env.PATH_INFO === '/version' ? '${v}' : 'ok'];
}
`;

test('--reload under load: a good edit, a broken one (old workers keep serving), a good one; zero failed requests', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-reload-'));
  const app = join(dir, 'app.mjs');
  writeFileSync(app, version('v1'));
  mkdirSync(join(dir, 'node_modules', 'dep'), { recursive: true });
  mkdirSync(join(dir, '.cache'));
  const extra = mkdtempSync(join(tmpdir(), 'rwsgi-extra-'));
  const server = await serve(t, app, { workers: 2, args: ['--reload', '--reload-extra-file', join(extra, '*.json')] });
  t.regex(server.log, /\[INFO\] Reload is on: watching \S+rwsgi-reload-\S+ and \S+rwsgi-extra-\S+\*\.json/);

  const mark = join(dir, '.cache', 'mark');
  const running = load(server.port, 2000, mark);
  await waitFor(() => existsSync(mark), 10_000, 'load to start');

  writeFileSync(app, version('v2'));
  await waitFor(() => served(server, 'v2'), 20_000, 'v2 served');
  t.regex(server.log, new RegExp(`Reload: ${app} changed`));

  writeFileSync(app, "throw new Error('half-written edit');\n");
  await waitFor(() => /Reload failed, generation \d+ workers keep serving/.test(server.log), 20_000, 'the broken edit to fail');
  t.regex(server.log, /half-written edit/);
  t.true(await served(server, 'v2'), 'the running workers keep serving after a broken edit');

  writeFileSync(app, version('v3'));
  await waitFor(() => served(server, 'v3'), 20_000, 'v3 served');

  const [ok, fail, ...errors] = (await running).split(' ');
  t.is(Number(fail), 0, errors.join(' '));
  t.is(Number(ok), 6000);

  // Writes in node_modules and dot-directories are not changes; an extra
  // file is. They land within one debounce window, so a seen ignored write
  // would show as "(and N more)".
  const reloads = () => (server.log.match(/\[INFO\] Reload: /g) ?? []).length;
  const before = reloads();
  writeFileSync(join(dir, 'node_modules', 'dep', 'index.js'), 'export {};\n');
  writeFileSync(join(dir, '.cache', 'state'), 'x');
  const json = join(extra, 'settings.json');
  writeFileSync(json, '{}');
  await waitFor(() => reloads() > before, 10_000, 'the extra file to reload');
  t.regex(server.log, new RegExp(`\\[INFO\\] Reload: ${json} changed\\n`));
  t.is(server.exit, null);
});

test('without --reload nothing is watched', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-reload-'));
  const app = join(dir, 'app.mjs');
  writeFileSync(app, version('v1'));
  const server = await serve(t, app, { workers: 1 });
  t.notRegex(server.log, /Reload is on/);
  writeFileSync(app, version('v2'));
  // A HUP after the edit is the marker: the edit alone started nothing before it.
  server.child.kill('SIGHUP');
  await waitFor(() => served(server, 'v2'), 15_000, 'the HUP reload');
  t.notRegex(server.log, /Reload: .* changed/);
});

/** Whether every one of a few fresh connections (spread over the slots) gets version `v`. */
async function served(server, v) {
  const got = await Promise.all(Array.from({ length: 8 }, () => curl(`${server.url}/version`)));
  return got.every((g) => g === v);
}
