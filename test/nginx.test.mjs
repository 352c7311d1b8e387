// deploy/nginx/rwsgi.conf for real: nginx (unprivileged, its own prefix, a
// loopback port) in front of rwsgi on a Unix socket, with upstream keep-alive.

import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { CLI, curl, fixture, launch, ROOT, waitFor } from './helpers.mjs';

const run = promisify(execFile);

const nginxPath = (() => {
  for (const candidate of ['nginx', '/usr/sbin/nginx']) {
    try {
      execFileSync(candidate, ['-v'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // Not this one.
    }
  }
  return null;
})();

/** A free loopback port (closed again for nginx to take). */
const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** The server-side ends of the connections open on the Unix socket at
 * `path`, by inode (`ss` lists them with the socket's path as their address). */
async function upstreamConnections(path) {
  const { stdout } = await run('ss', ['-xnH']);
  return new Set(
    stdout
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .filter((f) => f[1] === 'ESTAB' && f[4] === path)
      .map((f) => f[5]),
  );
}

test('nginx in front of rwsgi on a Unix socket: requests pass with X-Forwarded-*, on reused upstream connections', async (t) => {
  if (nginxPath === null) {
    if (process.env.CI) t.fail('nginx is not installed (.ci/run installs it)');
    else t.log('nginx is not installed (apt-get install nginx): skipped');
    t.pass();
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-nginx-'));
  const socket = join(dir, 'rwsgi.sock');
  t.timeout(90_000);
  const server = launch(t, process.execPath, [CLI, 'serve', fixture('echo.mjs'), '-w', '1', '-b', `unix:${socket}`, '--log-level', 'debug']);
  await waitFor(() => server.log.includes('Worker ready') || server.exit, 20_000, 'rwsgi ready');
  t.is(server.exit, null, server.log);

  const port = await freePort();
  const site = readFileSync(join(ROOT, 'deploy', 'nginx', 'rwsgi.conf'), 'utf8')
    .replace('server unix:/run/rwsgi.sock;', `server unix:${socket};`)
    .replace('listen 80;', `listen 127.0.0.1:${port};`);
  t.true(site.includes(socket) && site.includes(`127.0.0.1:${port}`), 'the example names the socket and port the test replaces');
  writeFileSync(join(dir, 'rwsgi.conf'), site);
  for (const temp of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, temp));
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
# As root, nginx's workers would run as nobody and could not reach the
# socket; as anyone else this is ignored (with a warning).
user ${userInfo().username};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 64; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/rwsgi.conf;
}
`,
  );
  const nginx = launch(t, nginxPath, ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stopSignal: 'SIGTERM' });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => nginx.exit || (await curl('-o', '/dev/null', '-w', '%{http_code}', `${url}/`).catch(() => '')) === '200',
    20_000,
    'nginx answering',
  );
  t.is(nginx.exit, null, `${nginx.log}\n${readFileSync(join(dir, 'error.log'), 'utf8')}`);

  const { environ, body } = JSON.parse(await curl('-H', 'Host: app.example', '--data-binary', 'hello', `${url}/path?q=1`));
  t.is(body, 'hello');
  t.like(environ, {
    REQUEST_METHOD: 'POST',
    PATH_INFO: '/path',
    QUERY_STRING: 'q=1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    HTTP_HOST: 'app.example',
    HTTP_X_FORWARDED_FOR: '127.0.0.1',
    HTTP_X_FORWARDED_PROTO: 'http',
    HTTP_X_FORWARDED_HOST: 'app.example',
  });
  t.is(environ.HTTP_CONNECTION, undefined, 'nginx sends no Connection header upstream');

  // 20 client connections to nginx, one after the other, then 20 more: the
  // same idle upstream connection(s) carry both batches.
  const batch = async () => {
    for (let i = 0; i < 20; i++) t.is(JSON.parse(await curl(`${url}/n${i}`)).environ.PATH_INFO, `/n${i}`);
    return upstreamConnections(socket);
  };
  const first = await batch();
  const second = await batch();
  t.true(first.size >= 1, 'nginx keeps an idle connection to rwsgi open');
  t.true([...second].some((inode) => first.has(inode)), `a connection served both batches: ${[...first]} / ${[...second]}`);
  t.true(new Set([...first, ...second]).size < 41, 'rwsgi saw fewer connections than requests');

  nginx.child.kill('SIGQUIT');
  await nginx.exited;
  server.child.kill('SIGTERM');
  t.is((await server.exited).code, 0);
});
