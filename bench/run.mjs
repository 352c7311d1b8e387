// rwsgi side by side with its peers, one run, interleaved rounds (A B C ... A B C ...),
// median of each. Usage:
//   node bench/run.mjs [--peers rwsgi,rwsgi-metrics,rwsgi-hono,hono-node-cluster,uws.js,node-cluster,fastify-cluster,nginx,bun,gunicorn]
//                      [--scenarios keepalive,latency,pipeline,json,post,close]
//                      [--workers 2] [--pin] [--rounds 3] [--seconds 5] [--app hello|express]
//                      [--loadgen wrk|rwsgi-load] [--before DIR] [--tls] [--preset NAME]
// --preset NAME: one of the committed runs (PRESETS below), written to
// bench/results/NAME.{md,json,png} as well as latest.*.
// --before DIR: also run the rwsgi built in DIR (another checkout, after its
// `npm run build`) as the peer rwsgi-before, in the same interleaved rounds,
// to compare a change with the code before it.
// --tls: HTTPS (an ECDSA P-256 certificate made here, TLS 1.3 with
// AES-128-GCM) for the peers that terminate TLS themselves: rwsgi, nginx
// (`ssl`), uWS.js (SSLApp), Bun (`tls`), node:cluster (`https`); the others
// are skipped. Scenarios keepalive, latency and close (a full handshake per
// request) are the ones that say something about TLS.
// --pin: one worker per server pinned to core 0, wrk pinned to core 1.
// Peers that are not installed are skipped with a note (bench/install-peers.sh
// installs them). Writes bench/results/latest.{md,json} (and .png when
// matplotlib is there). Reports server CPU time per request from /proc next
// to requests/s: on 2 cores wrk saturates before the fastest servers do.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { nginxConfig } from './nginx.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH = join(ROOT, 'bench');
const DEFAULTS = {
  peers: 'rwsgi,rwsgi-hono,hono-node-cluster,uws.js,node-cluster,fastify-cluster,nginx,bun,gunicorn',
  scenarios: 'keepalive,latency,pipeline,json,post,close',
  workers: '2',
  pin: false,
  rounds: '3',
  seconds: '5',
  app: 'hello',
  loadgen: 'wrk',
};
/** The committed runs (`--preset NAME` writes bench/results/NAME.*): each
 * one's options, which flags given with it still override. */
const PRESETS = {
  '2-workers': {},
  'express-2-workers': { app: 'express' },
  '1-worker-pinned': { pin: true },
  '1-worker-pinned-rwsgi-load': { pin: true, loadgen: 'rwsgi-load' },
  // wrk's pipelined batches are smaller per loop turn than rwsgi-load's: the
  // fixed cost per turn shows here.
  '1-worker-pinned-wrk-pipeline': { pin: true, scenarios: 'pipeline,latency', peers: 'rwsgi,rwsgi-hono,uws.js,nginx,node-cluster', rounds: '5' },
  // The lightly loaded case at 2 workers, with each framework on its own Node server beside it.
  '2-workers-light-load': { scenarios: 'latency,keepalive', peers: 'rwsgi,rwsgi-hono,hono-node-cluster,uws.js,nginx,node-cluster', rounds: '5' },
};
const { values: given } = parseArgs({
  options: {
    peers: { type: 'string' },
    scenarios: { type: 'string' },
    workers: { type: 'string' },
    pin: { type: 'boolean' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    app: { type: 'string' },
    loadgen: { type: 'string' },
    before: { type: 'string' },
    tls: { type: 'boolean' },
    preset: { type: 'string' },
  },
});
if (given.preset !== undefined && !PRESETS[given.preset]) {
  console.error(`unknown --preset ${given.preset} (one of ${Object.keys(PRESETS).join(', ')})`);
  process.exit(2);
}
const values = { ...DEFAULTS, ...(PRESETS[given.preset] ?? {}), ...given };
/** --tls: the certificate and key the peers serve (made once per run). */
const TLS = values.tls ? makeCertificate() : null;
const TLS_PEERS = ['rwsgi', 'rwsgi-before', 'nginx', 'uws.js', 'bun', 'node-cluster'];

function makeCertificate() {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-bench-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'], { stdio: 'ignore' });
  return { cert, key };
}
/** wrk, or rwsgi-load (crates/loadgen): lighter, GET scenarios only, no latency figures. */
const LOADGEN = values.loadgen;
const LOADGEN_BIN = join(ROOT, 'target/release/rwsgi-load');
const workers = values.pin ? 1 : Number(values.workers);
const express = values.app === 'express';

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const honoServerInstalled = existsSync(join(BENCH, 'peers/node_modules/@hono/node-server'));
const uwsInstalled = existsSync(join(BENCH, 'peers/node_modules/@trufflesuite/uws-js-unofficial'));
const bunPath = [join(BENCH, 'peers/node_modules/.bin/bun')].find(existsSync) ?? (has('bun') ? 'bun' : null);

/** name -> how to start it for `port`, or why it is skipped. */
const rwsgiIn = (dir, extra = []) => ({
  cmd: [
    process.execPath,
    join(dir, 'dist/cli/main.js'),
    'serve',
    express ? 'bench/apps/express-app.js' : 'bench/apps/rwsgi-app.js',
    '-b',
    '',
    '-w',
    String(workers),
    '--log-level',
    'warning',
    ...extra,
    ...(TLS ? ['--certfile', TLS.cert, '--keyfile', TLS.key, '--tls-min-version', '1.3', '--ciphers', 'TLS13_AES_128_GCM_SHA256'] : []),
  ],
  bindArg: true,
});
const PEERS = {
  rwsgi: () => rwsgiIn(ROOT),
  // The same build with an access log (gunicorn's default format) to a file: its cost, side by side.
  'rwsgi-access-log': () => rwsgiIn(ROOT, ['--access-logfile', join(mkdtempSync(join(tmpdir(), 'rwsgi-access-')), 'access.log')]),
  // The same build with --metrics-bind: what counting for /metrics costs.
  'rwsgi-metrics': () => {
    const peer = rwsgiIn(ROOT);
    peer.cmd.push('--metrics-bind', '127.0.0.1:0');
    return peer;
  },
  'rwsgi-before': () =>
    values.before && existsSync(join(values.before, 'dist/cli/main.js'))
      ? rwsgiIn(values.before)
      : { skip: `no build of the code before (--before DIR, after \`npm run build\` there)` },
  // The same routes as a Hono app on rwsgi's fetch interface.
  'rwsgi-hono': () =>
    express
      ? { skip: 'not an Express peer' }
      : { cmd: [process.execPath, 'dist/cli/main.js', 'serve', 'bench/apps/hono-app.js', '-b', '', '-w', String(workers), '--log-level', 'warning'], bindArg: true },
  // The same Hono app on @hono/node-server (bench/install-peers.sh), node:cluster.
  'hono-node-cluster': () =>
    express
      ? { skip: 'not an Express peer' }
      : honoServerInstalled
        ? { cmd: [process.execPath, 'bench/peers/hono-node-cluster.mjs'] }
        : { skip: '@hono/node-server not installed (bench/install-peers.sh)' },
  'node-cluster': () => ({ cmd: [process.execPath, 'bench/peers/node-cluster.mjs'], env: express ? { APP: 'bench/apps/express-app.js' } : {} }),
  'fastify-cluster': () => (express ? { skip: 'not an Express peer' } : { cmd: [process.execPath, 'bench/peers/fastify-cluster.mjs'] }),
  nginx: (port) => (express ? { skip: 'not an Express peer' } : has('nginx') ? { cmd: ['nginx', '-c', nginxConfig(mkdtempSync(join(tmpdir(), 'rwsgi-nginx-')), port, workers, false, TLS)], noEcho: true } : { skip: 'nginx not installed' }),
  bun: () => (express ? { skip: 'not an Express peer' } : bunPath ? { cmd: [bunPath, 'bench/peers/bun-server.js'], copies: workers } : { skip: 'bun not installed' }),
  gunicorn: () =>
    express
      ? { skip: 'not an Express peer' }
      : has('gunicorn')
        ? { cmd: ['gunicorn', '-w', String(workers), '--chdir', 'bench/peers', '--log-level', 'warning', '-b', '', 'gunicorn_app:app'], bindArg: true }
        : { skip: 'gunicorn not installed' },
  'uws.js': () => (express ? { skip: 'not an Express peer' } : uwsInstalled ? { cmd: [process.execPath, 'bench/peers/uws-server.mjs'], copies: workers } : { skip: 'uWebSockets.js not installed (bench/install-peers.sh)' }),
};

const SCENARIOS = {
  keepalive: { label: 'keep-alive c=64', args: ['-t2', '-c64'], path: '/', own: 1 },
  // perRequest: also timed request by request with rwsgi-load (see perRequestLatency).
  latency: { label: 'c=1 (latency)', args: ['-t1', '-c1'], path: '/', perRequest: true },
  pipeline: { label: '16-deep pipelining c=64', args: ['-t2', '-c64', '-s', join(BENCH, 'lua/pipeline.lua')], path: '/', own: 16 },
  json: { label: '4 KiB JSON c=64', args: ['-t2', '-c64'], path: '/json', own: 1 },
  post: { label: '1 KiB POST echo c=64', args: ['-t2', '-c64', '-s', join(BENCH, 'lua/post.lua')], path: '/', echo: true },
  close: { label: 'Connection: close c=64', args: ['-t2', '-c64', '-H', 'Connection: close'], path: '/' },
};

const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

function childrenOf(pid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {}
  }
  return out;
}

/** CPU seconds of a process tree. */
function treeCpu(pid) {
  let total = 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += (Number(f[11]) + Number(f[12])) / TICKS;
  } catch {}
  for (const child of childrenOf(pid)) total += treeCpu(child);
  return total;
}

async function waitForPort(port, ms = 20_000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.end(() => resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} never opened`);
}

function toMs(s) {
  const m = /([\d.]+)(us|ms|s)/.exec(s ?? '');
  if (!m) return null;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000 }[m[2]];
}

/** The light client: one thread, responses counted by bytes. */
function ownLoad(port, scenario) {
  const cmd = [LOADGEN_BIN, '--port', String(port), '--path', scenario.path, '--connections', '64', '--pipeline', String(scenario.own), '--seconds', values.seconds];
  const full = values.pin ? ['taskset', '-c', '1', ...cmd] : cmd;
  const r = JSON.parse(execFileSync(full[0], full.slice(1)).toString());
  return { rps: r.requests_per_second, total: r.requests, p50: null, p99: null, non2xx: 0, socketErrors: null };
}

/** One connection, one request at a time, every request timed (rwsgi-load):
 * wrk 4.1's percentiles are sampled, and each sampling interval that
 * completed fewer requests than wrk's calibrated rate is filled with the
 * run's maximum, so at c=1 they follow the longest pause (a GC) and charge
 * a faster server more such samples. */
function perRequestLatency(port, scenario) {
  const cmd = [LOADGEN_BIN, '--port', String(port), '--path', scenario.path, '--connections', '1', '--pipeline', '1', '--seconds', values.seconds];
  const full = values.pin ? ['taskset', '-c', '1', ...cmd] : cmd;
  const r = JSON.parse(execFileSync(full[0], full.slice(1)).toString());
  return { p99: r.latency_p99_us / 1000, p999: r.latency_p999_us / 1000 };
}

function wrk(port, scenario) {
  if (LOADGEN === 'rwsgi-load' && !TLS) return ownLoad(port, scenario);
  const cmd = ['wrk', ...scenario.args, '-d', `${values.seconds}s`, '--latency', `${TLS ? 'https' : 'http'}://127.0.0.1:${port}${scenario.path}`];
  const full = values.pin ? ['taskset', '-c', '1', ...cmd] : cmd;
  const out = execFileSync(full[0], full.slice(1)).toString();
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    total: Number(/(\d+) requests in/.exec(out)?.[1]),
    // Anchored: the Stdev column above can end in "50%" too.
    p50: toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
    p99: toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    socketErrors: /Socket errors: (.*)/.exec(out)?.[1] ?? null,
  };
}

const median = (xs) => {
  const s = xs.filter((x) => x !== null && !Number.isNaN(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};

if (!has('wrk')) {
  console.error('wrk is not installed: apt-get install wrk (or bench/install-peers.sh)');
  process.exit(1);
}

const notes = [];
const timesRequests = (scenario) => scenario.perRequest && LOADGEN === 'wrk' && !TLS;
if (LOADGEN === 'rwsgi-load' || values.scenarios.split(',').some((key) => SCENARIOS[key] && timesRequests(SCENARIOS[key]))) {
  execFileSync('cargo', ['build', '--release', '-q', '-p', 'rwsgi-load'], { cwd: ROOT, stdio: 'inherit' });
}
if (LOADGEN === 'rwsgi-load') notes.push('load from rwsgi-load (GET scenarios only; no latency figures)');
const running = [];
const peers = [];
let port = 8300;
try {
  const names = values.peers.split(',');
  if (values.before && !names.includes('rwsgi-before')) names.splice(names.indexOf('rwsgi') + 1, 0, 'rwsgi-before');
  for (const name of names) {
    const make = PEERS[name];
    if (!make) {
      notes.push(`${name}: unknown peer`);
      continue;
    }
    const p = port++;
    const spec = TLS && !TLS_PEERS.includes(name) ? { skip: 'no TLS variant here' } : make(p);
    if (spec.skip) {
      notes.push(`${name}: skipped (${spec.skip})`);
      continue;
    }
    const cmd = spec.bindArg ? spec.cmd.map((a) => (a === '' ? `127.0.0.1:${p}` : a)) : spec.cmd;
    const full = values.pin ? ['taskset', '-c', '0', ...cmd] : cmd;
    const pids = [];
    for (let i = 0; i < (spec.copies ?? 1); i++) {
      const child = spawn(full[0], full.slice(1), {
        cwd: ROOT,
        env: { ...process.env, WORKERS: String(workers), PORT: String(p), ...(TLS ? { TLS_CERT: TLS.cert, TLS_KEY: TLS.key } : {}), ...(spec.env ?? {}) },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      running.push(child);
      pids.push(child.pid);
    }
    await waitForPort(p);
    peers.push({ name, port: p, pids, noEcho: spec.noEcho ?? false });
  }
  const results = {};
  const scenarios = values.scenarios.split(',').filter((s) => SCENARIOS[s] && (LOADGEN !== 'rwsgi-load' || SCENARIOS[s].own));
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const key of scenarios) {
      const scenario = SCENARIOS[key];
      for (const peer of peers) {
        if (scenario.echo && peer.noEcho) continue;
        const before = peer.pids.reduce((a, pid) => a + treeCpu(pid), 0);
        let r;
        try {
          r = wrk(peer.port, scenario);
        } catch (err) {
          // One failed run (a peer answering in a way the client cannot count) is noted, not fatal.
          const why = (err.stderr?.toString() || err.message).trim().split('\n')[0];
          const note = `${peer.name} ${key}: load run failed (${why})`;
          if (!notes.includes(note)) notes.push(note);
          console.error(`round ${round + 1} ${key} ${peer.name}: failed (${why})`);
          continue;
        }
        const cpu = peer.pids.reduce((a, pid) => a + treeCpu(pid), 0) - before;
        const slot = ((results[key] ??= {})[peer.name] ??= { rps: [], cpuUs: [], p50: [], p99: [], p99Request: [], p999Request: [], non2xx: 0, socketErrors: [] });
        if (timesRequests(scenario)) {
          try {
            const timed = perRequestLatency(peer.port, scenario);
            slot.p99Request.push(timed.p99);
            slot.p999Request.push(timed.p999);
          } catch (err) {
            const note = `${peer.name} ${key}: requests not timed (${(err.stderr?.toString() || err.message).trim().split('\n')[0]})`;
            if (!notes.includes(note)) notes.push(note);
          }
        }
        slot.rps.push(r.rps);
        slot.cpuUs.push(r.total ? (cpu / r.total) * 1e6 : null);
        slot.p50.push(r.p50);
        slot.p99.push(r.p99);
        slot.non2xx += r.non2xx;
        if (r.socketErrors) slot.socketErrors.push(r.socketErrors);
        console.error(`round ${round + 1} ${key} ${peer.name}: ${r.rps.toFixed(0)} req/s`);
      }
    }
  }
  const summary = {
    machine: `${execFileSync('nproc').toString().trim()} cores, ${process.version}${TLS ? ', HTTPS (TLS 1.3, AES-128-GCM, ECDSA P-256)' : ''}`,
    date: new Date().toISOString(),
    options: { ...values, workers },
    notes,
    scenarios: {},
  };
  let md = `# rwsgi benchmark — ${summary.date}\n\n${summary.machine}; ${workers} worker(s) per server${values.pin ? ', server pinned to core 0, wrk to core 1' : ''}; ${values.rounds} interleaved rounds of ${values.seconds}s, medians.\n`;
  for (const key of scenarios) {
    const rows = results[key] ?? {};
    const base = (n) => median(rows[n]?.rps ?? []);
    const timed = timesRequests(SCENARIOS[key]);
    md += `\n## ${SCENARIOS[key].label}\n\n| server | req/s | vs nginx | vs uWS.js | vs node:cluster | vs rwsgi | CPU µs/req | p50 ms | p99 ms |${timed ? ' p99 ms per request | p99.9 ms per request |' : ''} non-2xx |\n|---|---|---|---|---|---|---|---|---|${timed ? '---|---|' : ''}---|\n`;
    summary.scenarios[key] = {};
    for (const [name, r] of Object.entries(rows)) {
      const rps = median(r.rps);
      const ratio = (b) => (b ? `${(rps / b).toFixed(2)}×` : '–');
      const row = { rps, cpuUsPerRequest: median(r.cpuUs), p50ms: median(r.p50), p99ms: median(r.p99), non2xx: r.non2xx, socketErrors: r.socketErrors };
      if (timed) Object.assign(row, { p99msPerRequest: median(r.p99Request), p999msPerRequest: median(r.p999Request) });
      summary.scenarios[key][name] = row;
      const fixed = (v) => (v === null ? '–' : v.toFixed(2));
      md += `| ${name} | ${rps?.toFixed(0)} | ${ratio(base('nginx'))} | ${ratio(base('uws.js'))} | ${ratio(base('node-cluster'))} | ${ratio(base('rwsgi'))} | ${fixed(row.cpuUsPerRequest)} | ${fixed(row.p50ms)} | ${fixed(row.p99ms)} |${timed ? ` ${fixed(row.p99msPerRequest)} | ${fixed(row.p999msPerRequest)} |` : ''} ${r.non2xx} |\n`;
    }
  }
  if (notes.length) md += `\nNotes: ${notes.join('; ')}.\n`;
  const outDir = join(BENCH, 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(join(outDir, 'latest.md'), md);
  const chart = spawnSync('python3', [join(BENCH, 'chart.py'), join(outDir, 'latest.json'), join(outDir, 'latest.png')], { stdio: 'inherit' });
  if (chart.status !== 0) console.error('no chart: python3 with matplotlib is needed (bash bench/install-peers.sh installs it)');
  if (values.preset) {
    for (const ext of ['json', 'md', 'png']) {
      if (existsSync(join(outDir, `latest.${ext}`)) && (ext !== 'png' || chart.status === 0)) copyFileSync(join(outDir, `latest.${ext}`), join(outDir, `${values.preset}.${ext}`));
    }
  }
  console.log(md);
} finally {
  for (const child of running) child.kill('SIGTERM');
}
