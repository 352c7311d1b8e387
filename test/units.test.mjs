// Unit tests of the pure TypeScript pieces (compiled to dist/).

import test from 'ava';
import { Backoff } from '../dist/arbiter/backoff.js';
import { recycleFor } from '../dist/arbiter/recycle.js';
import { SlotRecords } from '../dist/arbiter/snapshot.js';
import { Spread } from '../dist/arbiter/spread.js';
import { parseRequest, socketDirectories } from '../dist/protocol/control.js';
import { describeStack } from '../dist/arbiter/stack.js';
import { parseBind } from '../dist/cli/args.js';
import { heartbeatMs, maxRequestsFor } from '../dist/config.js';
import { splitAppSpec } from '../dist/apps/load.js';
import { decodePath, splitTarget } from '../dist/apps/wsgi.js';
import { encode, LineDecoder } from '../dist/protocol/messages.js';
import { contractMismatches, native } from '../dist/native.js';
import { setLogLevel } from '../dist/log.js';
import { Dispatcher } from '../dist/worker/dispatcher.js';

test('protocol: messages round-trip through the line decoder, split anywhere', (t) => {
  const messages = [
    { type: 'ready', pid: 42 },
    { type: 'hb', served: 7, accepted: 3, inFlight: 1, oldest: { method: 'GET', path: '/slow', age: 1.5 }, lagMs: 3, rss: 1e6, heapUsed: 5e5, connections: 2 },
    { type: 'boot-error', reason: 'SyntaxError: x\n  at y' },
    { type: 'stop', graceful: true, deadlineMs: 30_000 },
  ];
  const wire = messages.map(encode).join('');
  for (let cut = 0; cut <= wire.length; cut += 7) {
    const decoder = new LineDecoder();
    t.deepEqual([...decoder.push(wire.slice(0, cut)), ...decoder.push(wire.slice(cut))], messages);
  }
});

test('protocol: torn or foreign lines are dropped', (t) => {
  const decoder = new LineDecoder();
  t.deepEqual(decoder.push('not json\n{"type":"nope"}\n[1]\n{"type":"ready","pid":1}\n'), [{ type: 'ready', pid: 1 }]);
});

test('backoff doubles to its cap and resets after a healthy minute', (t) => {
  const b = new Backoff(100, 1000, 60_000);
  t.deepEqual([0, 0, 0, 0, 0, 0].map(() => b.failed(5)), [100, 200, 400, 800, 1000, 1000]);
  t.is(b.failed(61_000), 100);
});

test('spread by CPU only where the healthy count divides the CPUs', (t) => {
  const spread = new Spread('cpu', [0, 1, 2, 3]);
  t.true(spread.usesCpu(2));
  t.true(spread.usesCpu(4));
  t.false(spread.usesCpu(3), '4 CPUs do not map evenly onto 3 slots');
  t.false(spread.usesCpu(1), 'one slot: nothing to pick');
  t.false(new Spread('random', [0, 1, 2, 3]).usesCpu(2));
  t.false(new Spread('cpu', [0, 2]).usesCpu(2), 'CPUs 0 and 2 both map to the first slot');
  t.true(new Spread('cpu', [2, 5]).usesCpu(2));
});

test('a worker runs on the CPUs whose connections its slot gets', (t) => {
  const spread = new Spread('cpu', [0, 1, 2, 3]);
  t.deepEqual(spread.pinnedCpus(3, [1, 3]), [1, 3], 'second of two healthy slots: odd CPUs');
  t.deepEqual(spread.pinnedCpus(1, [1, 3]), [0, 2]);
  t.is(spread.pinnedCpus(0, [1, 3]), null, 'not healthy: any CPU');
  t.is(spread.pinnedCpus(1, [1]), null, 'alone: any CPU');
  t.is(new Spread('random', [0, 1]).pinnedCpus(0, [0, 1]), null);
});

/** Feeds heartbeats: `perSecond[slot]` accepts per second from each slot, for `seconds`. */
function feed(spread, perSecond, seconds, start = 0) {
  const healthy = perSecond.map((_, slot) => slot);
  for (let s = 1; s <= seconds; s++) {
    perSecond.forEach((n, slot) => spread.record(slot, n, healthy, start + s * 1000 + slot * 300));
  }
}

test('spread by CPU stays while the slots share accepts evenly, then turns random on skew seen ten windows running', (t) => {
  const spread = new Spread('cpu', [0, 1]);
  feed(spread, [0, 0], 30);
  feed(spread, [600, 400], 30, 30_000);
  t.true(spread.usesCpu(2), '60/40 is within the allowed skew');
  // A burst one slot's heartbeat reports before the other's skews one window only.
  spread.record(0, 50_000, [0, 1], 60_500);
  feed(spread, [5000, 5000], 20, 60_500);
  t.true(spread.usesCpu(2), 'one skewed window is not enough');
  feed(spread, [900, 100], 9, 80_500);
  t.true(spread.usesCpu(2), 'nine one-second windows of 90%/10% are not enough: two client threads do share a CPU for seconds');
  feed(spread, [900, 100], 2, 89_500);
  t.false(spread.usesCpu(2), 'one client CPU sending 90% of connections, ten windows running, turns the spread random');
});

test('a few seconds of two client threads on one CPU, then apart, keep the spread by CPU', (t) => {
  const spread = new Spread('cpu', [0, 1]);
  feed(spread, [500, 500], 5);
  feed(spread, [950, 50], 5, 5000);
  feed(spread, [500, 500], 2, 10_000);
  feed(spread, [50, 950], 5, 12_000);
  t.true(spread.usesCpu(2));
});

test('spread by CPU compares rates: heartbeats at different moments and intervals are not skew', (t) => {
  const spread = new Spread('cpu', [0, 1]);
  // 500 accepts a second on each slot; slot 1 reports every 700 ms, with
  // what arrived since its last report, so a window holds more of its reports.
  let next1 = 350;
  for (let at = 1000; at <= 60_000; at += 1000) {
    for (; next1 < at; next1 += 700) spread.record(1, 350, [0, 1], next1);
    spread.record(0, 500, [0, 1], at);
  }
  t.true(spread.usesCpu(2));
});

test('one client thread (every new connection on one CPU) is spread within about two seconds', (t) => {
  const spread = new Spread('cpu', [0, 1]);
  feed(spread, [0, 0], 5);
  let seconds = 0;
  while (spread.usesCpu(2) && seconds < 10) feed(spread, [400, 0], 1, 5000 + seconds++ * 1000);
  t.true(seconds <= 3, `${seconds} s`);
});

test('spread by CPU turns random when a slot gets nothing', (t) => {
  const spread = new Spread('cpu', [0, 1]);
  feed(spread, [300, 0], 12);
  t.false(spread.usesCpu(2));
});

test('heartbeat interval fits the timeout', (t) => {
  t.is(heartbeatMs({ timeout: 30 }), 1000);
  t.is(heartbeatMs({ timeout: 2 }), 500);
  t.is(heartbeatMs({ timeout: 0 }), 1000);
});

test('max-requests jitter stays within its bound and is stable per pid', (t) => {
  for (let pid = 1; pid < 200; pid++) {
    const n = maxRequestsFor({ maxRequests: 100, maxRequestsJitter: 20 }, pid);
    t.true(n >= 100 && n <= 120);
    t.is(n, maxRequestsFor({ maxRequests: 100, maxRequestsJitter: 20 }, pid));
  }
  t.is(maxRequestsFor({ maxRequests: 0, maxRequestsJitter: 20 }, 5), 0);
});

test('bind addresses', (t) => {
  t.deepEqual(parseBind('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
  t.deepEqual(parseBind('[::1]:8080'), { host: '::1', port: 8080 });
  t.deepEqual(parseBind('localhost'), { host: 'localhost', port: 8000 });
  t.deepEqual(parseBind(':9000'), { host: '0.0.0.0', port: 9000 });
  t.throws(() => parseBind('a:b:c'));
});

test('app specs', (t) => {
  t.deepEqual(splitAppSpec('app.js'), { module: 'app.js', exportName: null });
  t.deepEqual(splitAppSpec('app.js:handler'), { module: 'app.js', exportName: 'handler' });
  t.deepEqual(splitAppSpec('./dir/app.mjs:$x'), { module: './dir/app.mjs', exportName: '$x' });
});

test('request targets: paths are percent-decoded as UTF-8, queries are not', (t) => {
  t.is(decodePath('/a%20b/%C3%A9'), '/a b/é');
  t.is(decodePath('/bad%zz%4'), '/bad%zz%4');
  t.deepEqual(splitTarget('/p?q=%20'), { path: '/p', query: 'q=%20' });
  t.deepEqual(splitTarget('http://example.com/x?y'), { path: '/x', query: 'y' });
  t.deepEqual(splitTarget('http://example.com'), { path: '/', query: '' });
  t.deepEqual(splitTarget('*'), { path: '*', query: '' });
});

test('native: the addon contract is the one src/native.ts was written for; a drift is named', (t) => {
  const contract = native().contract();
  t.deepEqual(contractMismatches(contract), []);
  const drifted = {
    slots: contract.slots.slice(1),
    flags: { ...contract.flags, FLAG_HAS_BODY: 16 },
    callbacks: [...contract.callbacks, 'onSomethingNew'],
    serverOptions: contract.serverOptions.filter((n) => n !== 'keepAliveSeconds'),
  };
  const problems = contractMismatches(drifted);
  t.is(problems.length, 4);
  t.regex(problems[0], /^request table slots: addon \[Flags, /);
  t.regex(problems[1], /^request flags: .*FLAG_HAS_BODY=16/);
  t.regex(problems[2], /^server callbacks: .*onSomethingNew/);
  t.regex(problems[3], /^ServerOptions fields: addon \[.*\], src\/native\.ts \[.*keepAliveSeconds/);
});

test('dispatcher: refused requests are traced at --log-level debug only', (t) => {
  const traced = [];
  const server = { responseCalls: () => ({}), setTraceRejections: (on) => traced.push(on) };
  for (const level of ['info', 'debug', 'warning']) {
    setLogLevel(level);
    new Dispatcher(() => {}).attach(server);
  }
  setLogLevel('info');
  t.deepEqual(traced, [false, true, false]);
});

test('recycling: max-requests first, then RSS, then V8 heap; 0 = off', (t) => {
  const MB = 1024 * 1024;
  const hb = { type: 'hb', served: 10, accepted: 10, inFlight: 0, oldest: null, lagMs: 0, rss: 200 * MB, heapUsed: 90 * MB, connections: 0 };
  const off = { maxRequests: 0, maxRequestsJitter: 0, maxWorkerMemory: 0, maxWorkerHeap: 0 };
  t.is(recycleFor(off, 1, hb), null);
  t.deepEqual(recycleFor({ ...off, maxRequests: 10 }, 1, hb), { reason: 'max-requests', why: 'served 10 requests (max 10)' });
  t.deepEqual(recycleFor({ ...off, maxWorkerMemory: 150 }, 1, hb), { reason: 'memory', why: 'uses 200.0 MB of memory (RSS; max-worker-memory 150 MB)' });
  t.is(recycleFor({ ...off, maxWorkerMemory: 250 }, 1, hb), null);
  t.deepEqual(recycleFor({ ...off, maxWorkerHeap: 64 }, 1, hb), { reason: 'memory', why: 'uses 90.0 MB of V8 heap (max-worker-heap 64 MB)' });
});

test('control protocol: requests parsed and checked; default directories', (t) => {
  t.deepEqual(parseRequest('{"cmd":"stop","quick":true}'), { cmd: 'stop', quick: true });
  t.deepEqual(parseRequest('{"cmd":"stop"}'), { cmd: 'stop', quick: false });
  t.deepEqual(parseRequest('{"cmd":"scale","workers":3}'), { cmd: 'scale', workers: 3 });
  t.regex(parseRequest('{"cmd":"scale","workers":1.5}').error, /whole number/);
  t.regex(parseRequest('{"cmd":"dump","pid":"12"}').error, /a worker's pid/);
  t.regex(parseRequest('"status"').error, /^malformed request/);
  t.regex(parseRequest('{"cmd":"rm"}').error, /^unknown command "rm"/);
  t.deepEqual(socketDirectories({ XDG_RUNTIME_DIR: '/run/user/7' }, 7), ['/run/user/7/rwsgi', '/tmp/rwsgi-7']);
  t.deepEqual(socketDirectories({}, 7), ['/tmp/rwsgi-7']);
  t.deepEqual(socketDirectories({ RWSGI_CONTROL_DIR: '/srv/ctl', XDG_RUNTIME_DIR: '/run/user/7' }, 7), ['/srv/ctl']);
});

test('slot records: restarts count replacements, not stops or scale-downs', (t) => {
  const records = new SlotRecords();
  records.exited(0, { pid: 5, reason: 'crash', exitCode: 1, signal: null }, 1000);
  records.exited(0, { pid: 6, reason: 'memory', exitCode: 0, signal: null }, 2000);
  records.exited(0, { pid: 7, reason: 'stop', exitCode: 0, signal: null }, 3000);
  records.exited(1, { pid: 8, reason: 'scale-down', exitCode: 0, signal: null }, 3000);
  t.is(records.record(0).restarts, 2);
  t.deepEqual(records.record(0).exits, { crash: 1, memory: 1, stop: 1 });
  t.is(records.record(0).lastExit.pid, 7);
  t.is(records.record(1).restarts, 0);
  t.is(records.record(2).lastExit, null);
});

test('stack reports read as Node prints a stack, or say why there is none', (t) => {
  const base = { pid: 7, frames: [], total: 0, error: null, inFlight: 1, oldest: 'GET /x running 3.0s' };
  const frames = [
    { function: 'spin', file: 'file:///app/a.mjs', line: 3, column: 9 },
    { function: '', file: '', line: 1, column: 1 },
  ];
  t.is(
    describeStack({ ...base, state: 'running', frames, total: 31 }),
    'JavaScript stack of worker 7 (top 2 of 31 frames):\n    at spin (file:///app/a.mjs:3:9)\n    at <anonymous> (<unknown>:1:1)',
  );
  t.is(describeStack({ ...base, state: 'running', frames, total: 2 }).split('\n')[0], 'JavaScript stack of worker 7 (2 frames):');
  t.regex(describeStack({ ...base, state: 'idle' }), /empty, the event loop was waiting/);
  t.regex(describeStack({ ...base, state: 'blocked' }), /^no JavaScript stack: the main thread did not reach JavaScript within 1 s/);
  t.is(describeStack({ ...base, state: 'unavailable', error: 'V8 12.4 is not supported' }), 'no JavaScript stack: V8 12.4 is not supported');
});
