// Real processes over real sockets: start `rwsgi serve`, talk raw TCP, curl
// and Python's http.client to it, and always clean up.

import { spawn, execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
export const fixture = (name) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const run = promisify(execFile);

/** Resolves when `predicate()` is truthy; rejects after `ms`. */
export async function waitFor(predicate, ms = 10_000, what = 'condition') {
  const until = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Starts `rwsgi serve app` on an ephemeral loopback port and waits until
 * every worker is ready. `t.teardown` kills it if the test did not stop it.
 */
export async function serve(t, app, { workers = 1, args = [], bind = '127.0.0.1:0', ulimit = null, env = {} } = {}) {
  const argv = [CLI, 'serve', app, '-b', bind, '-w', String(workers), '--log-level', 'debug', ...args];
  // `ulimit` caps open files (through the shell's builtin) for fd-exhaustion tests.
  const [command, commandArgs] = ulimit
    ? ['sh', ['-c', `ulimit -n ${ulimit} && exec "$0" "$@"`, process.execPath, ...argv]]
    : [process.execPath, argv];
  // A quick stop (SIGINT) takes the workers down with the arbiter at teardown.
  const server = launch(t, command, commandArgs, { env, stopSignal: 'SIGINT' });
  const { child } = server;
  // With --error-logfile the log lines go to that file rather than stderr.
  const logFile = args.includes('--error-logfile') ? args[args.indexOf('--error-logfile') + 1] : null;
  const currentLog = () => (logFile ? (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '') : server.log);
  server.port = Number(
    (await waitFor(() => /Listening at: https?:\/\/\S+:(\d+)/.exec(currentLog()) ?? server.exit, 15_000, 'listening'))[1],
  );
  await waitFor(() => (currentLog().match(/Worker ready/g) ?? []).length >= workers || server.exit, 15_000, 'workers ready');
  if (server.exit) throw new Error(`server exited early:\n${server.log}`);
  server.url = `http://127.0.0.1:${server.port}`;
  server.stop = async (signal = 'SIGTERM') => {
    child.kill(signal);
    return server.exited;
  };
  return server;
}

/** Spawns `command` with its stdout and stderr gathered in `.log`; `.exited`
 * resolves once both end; `t.teardown` stops it with `stopSignal` (then
 * SIGKILL after 5 s) if it is still there. */
export function launch(t, command, args, { env = {}, stdio = [], stopSignal = 'SIGKILL' } = {}) {
  const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe', ...stdio], env: { ...process.env, ...env } });
  const launched = { child, log: '', exit: null };
  child.stdout.on('data', (d) => (launched.log += d));
  child.stderr.on('data', (d) => (launched.log += d));
  // 'close', not 'exit': the log is complete only once stdout/stderr end
  // (an arbiter's workers share its stderr, so this also waits for them).
  launched.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve((launched.exit = { code, signal }))));
  t.teardown(async () => {
    if (launched.exit) return;
    child.kill(stopSignal);
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await launched.exited;
    clearTimeout(killer);
  });
  return launched;
}

/** Sends raw bytes (from `localAddress` if given, e.g. 127.0.0.2); resolves with everything received until the peer closes,
 * or what was received matches `until` (then it hangs up), or `ms` passed. */
export function raw(port, data, { ms = 5000, host = '127.0.0.1', paceMs = 0, localAddress, until = null } = {}) {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host, localAddress });
    const chunks = [];
    let closed = false;
    const hangUp = () => {
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    };
    const timer = setTimeout(hangUp, ms);
    socket.setNoDelay(true);
    socket.on('connect', async () => {
      for (const part of Array.isArray(data) ? data : [data]) {
        if (socket.destroyed) return;
        socket.write(part);
        // Pacing makes each part its own TCP segment.
        if (paceMs) await new Promise((r) => setTimeout(r, paceMs));
      }
    });
    socket.on('data', (d) => {
      chunks.push(d);
      if (until && until.test(Buffer.concat(chunks).toString('latin1'))) {
        clearTimeout(timer);
        hangUp();
      }
    });
    socket.on('error', (e) => {
      if (e.code === 'ECONNRESET') return;
      clearTimeout(timer);
      reject(e);
    });
    socket.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed });
    });
  });
}

/** Status lines of every response in a raw byte stream. */
export const statusLines = (text) => text.match(/HTTP\/1\.1 \d{3}[^\r\n]*(?=\r\n)/g) ?? [];

export async function curl(...args) {
  const { stdout } = await run('curl', ['-sS', '--max-time', '10', ...args], { maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** Runs a Python 3 snippet with `port` in scope; resolves with its stdout. */
export async function python(code, port) {
  const { stdout } = await run('python3', ['-c', `port = ${port}\n${code}`], { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** GETs `path` on `n` fresh connections with http.client; resolves with how many got a 200. */
export async function freshRequests(port, n, { path = '/ok', timeout = 4 } = {}) {
  const out = await python(
    `
import http.client
ok = 0
for i in range(${n}):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=${timeout})
    c.request('GET', ${JSON.stringify(path)}); ok += c.getresponse().status == 200; c.close()
print(ok)
`,
    port,
  );
  return Number(out);
}

export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs `rwsgi ...args` to its exit; resolves with its status and output
 * (`out` is stdout and stderr together). Killed after `ms`. */
export function rwsgi(args, { cwd = ROOT, env = {}, ms = 30_000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const result = { code: null, signal: null, stdout: '', stderr: '', out: '' };
    child.stdout.on('data', (d) => ((result.stdout += d), (result.out += d)));
    child.stderr.on('data', (d) => ((result.stderr += d), (result.out += d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    // 'close', not 'exit': the output is complete only once stdout/stderr end.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      Object.assign(result, { code, signal });
      resolve(result);
    });
  });
}

/** A bounded Python load loop: fresh connections and one keep-alive connection, counting failures. */
const LOAD = `
import http.client, threading, sys, time
stop_at = time.time() + float(sys.argv[1]) if len(sys.argv) > 1 else None
results = {'ok': 0, 'fail': 0, 'errors': []}
lock = threading.Lock()
def record(ok, err=None):
    with lock:
        results['ok' if ok else 'fail'] += 1
        if not ok and len(results['errors']) < 5: results['errors'].append(err)
def fresh(n):
    for i in range(n):
        try:
            c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
            c.request('GET', '/ok'); r = c.getresponse(); record(r.status == 200 and r.read() == b'ok', r.status); c.close()
        except Exception as e: record(False, repr(e))
def keepalive(n):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    for i in range(n):
        try:
            c.request('GET', '/ok'); r = c.getresponse(); record(r.status == 200 and r.read() == b'ok', r.status)
        except Exception as e:
            record(False, repr(e)); c.close()
threads = [threading.Thread(target=fresh, args=(N,)), threading.Thread(target=keepalive, args=(N,)), threading.Thread(target=keepalive, args=(N,))]
[t.start() for t in threads]
open(MARK, 'w').write('started')
[t.join() for t in threads]
print(results['ok'], results['fail'], results['errors'])
`;

/** Runs the load loop with `n` requests per thread (3 threads) against
 * `port`; writes `mark` once started; resolves with "ok fail [errors]". */
export function load(port, n, mark) {
  return python(`N = ${n}\nMARK = ${JSON.stringify(mark)}\n${LOAD}`, port);
}
