// Worker process entry: fd 3 is the pipe to the arbiter, fds 4.. are this
// slot's listening sockets. Loads the app, serves, heartbeats, and stops
// gracefully on `stop`, SIGTERM or the arbiter's death (pipe EOF).

import { closeSync, fstatSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { constants } from 'node:os';
import { loadApp } from '../apps/load.js';
import { openAccessLog } from './access-log.js';
import { type DetectedApp, detectApp } from '../apps/detect.js';
import { BackgroundTasks, FetchRunner } from '../apps/fetch.js';
import { NodeRunner } from '../apps/node.js';
import { WsgiRunner } from '../apps/wsgi.js';
import type { Exchange } from './exchange.js';
import { heartbeatMs, maxRequestsFor } from '../config.js';
import { EXIT_APP_LOAD, RwsgiError } from '../errors.js';
import { exitOnUncaught, reportFatalSignals } from '../last-words.js';
import { describe, enabled, logger, reopenLogFile, setLogFile, setLogLevel } from '../log.js';
import { native } from '../native.js';
import { Dispatcher } from './dispatcher.js';
import { ArbiterLink, PIPE_FD } from './link.js';
import { handoffName, STACK_SIGNAL } from '../protocol/messages.js';
import { workerMetrics } from './metrics.js';
import { SPEC_VARIABLE, type WorkerSpec } from '../protocol/spec.js';
import { fireHook, type WorkerSelf } from '../settings/hooks.js';
import { engineOptions } from '../settings/registry.js';
import { serveTls } from './tls.js';
import { hooksIn } from '../settings/resolve.js';

const FIRST_LISTENER_FD = 4;

function readSpec(): WorkerSpec {
  const raw = process.env[SPEC_VARIABLE];
  if (!raw) throw new Error('rwsgi worker started without RWSGI_WORKER; run `rwsgi serve` instead');
  // It holds the TLS session-ticket keys: not for the app or what it spawns.
  delete process.env[SPEC_VARIABLE];
  return JSON.parse(raw) as WorkerSpec;
}

/** Read by the addon's busy-note thread (crates/node/src/busy_note.rs):
 * [0] non-zero while a request is in flight, [1] the row of the batch being
 * handed over whose request turned the worker busy. */
const busy = new Int32Array(new SharedArrayBuffer(8));

let lastRss = 0;

/** RSS, or the last value read: reading it opens /proc, which fails with EMFILE
 * when the process is out of descriptors, and must not kill the worker then. */
function residentBytes(): number {
  try {
    lastRss = process.memoryUsage.rss();
  } catch {
    // Keep the last value.
  }
  return lastRss;
}

interface Runner {
  handle: (ex: Exchange) => void;
  /** The worker stops: responses from now on close their connections. */
  drain(): void;
}

function makeRunner(detected: DetectedApp, tasks: BackgroundTasks): Runner {
  switch (detected.kind) {
    case 'wsgi': {
      const runner = new WsgiRunner(detected.app);
      return { handle: (ex) => runner.handle(ex), drain: () => {} };
    }
    case 'fetch': {
      const runner = new FetchRunner(detected.app, tasks);
      return { handle: (ex) => runner.handle(ex), drain: () => {} };
    }
    case 'node': {
      const runner = new NodeRunner(detected.listener);
      return {
        handle: (ex) => runner.handle(ex),
        drain: () => {
          runner.draining = true;
        },
      };
    }
  }
}

/** Per CPU, where connections arriving there are handed (null: kept here). */
function ownerNames(pids: number[]): (string | null)[] {
  const other = (pid: number): boolean => pid > 0 && pid !== process.pid;
  return pids.some(other) ? pids.map((pid) => (other(pid) ? handoffName(process.ppid, pid) : null)) : [];
}

/** A boot step that fails is a boot failure: the arbiter hears why, and
 * the worker exits 4, as for an app that does not load. */
async function bootStep<T>(send: ArbiterLink['send'], what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    const why = err instanceof RwsgiError ? err.message : describe(err);
    send({ type: 'boot-error', reason: what === '' ? why : `${what}: ${why}` });
    process.exit(EXIT_APP_LOAD);
  }
}

/** Closes the sockets inherited past this worker's own (see WorkerSpec.strayFds). */
function closeStrays(spec: WorkerSpec): void {
  for (const fd of spec.strayFds) {
    if (fd < FIRST_LISTENER_FD + spec.listeners) continue;
    try {
      // Only a socket: a number that was not inherited may be Node's own
      // descriptor by now (libuv's signal pipe, its epoll fd).
      if (fstatSync(fd).isSocket()) closeSync(fd);
    } catch {
      // Not open here.
    }
  }
}

async function main(): Promise<void> {
  const spec = readSpec();
  const { config } = spec;
  closeStrays(spec);
  setLogLevel(config.logLevel);
  setLogFile(config.errorLogfile);
  reportFatalSignals('worker');
  exitOnUncaught('worker', () => process.exit(1));
  const link = new ArbiterLink();
  const send = link.send.bind(link);

  // Hooks are functions, which the spec cannot carry: read them from the file.
  const { configFile } = spec;
  if (configFile !== null) Object.assign(config, await bootStep(send, 'cannot read the worker hooks', () => hooksIn(configFile, 'worker')));
  const self: WorkerSelf = { pid: process.pid, slot: spec.slot, generation: spec.generation, config };
  const { workerInit, postWorkerInit, preRequest, postRequest, workerShutdown } = config;
  if (workerInit) await bootStep(send, 'workerInit hook failed', async () => workerInit(self));
  const app = config.app ?? '';
  logger.debug(`Loading ${app}`);
  const detected = await bootStep(send, '', async () => detectApp(await loadApp(app), config.interface, app));

  const tasks = new BackgroundTasks();
  const runner = makeRunner(detected, tasks);
  logger.debug(`Serving ${config.app} with interface ${detected.label}`);
  const hbMs = heartbeatMs(config);
  let lagMs = 0;
  const report = (): void => {
    send({
      type: 'hb',
      served: dispatcher.served,
      accepted: server.acceptedCount(),
      inFlight: dispatcher.inFlightCount,
      oldest: dispatcher.oldest(),
      lagMs,
      rss: residentBytes(),
      heapUsed: getHeapStatistics().used_heap_size,
      connections: server.connectionCount(),
      metrics: workerMetrics(server),
    });
  };
  const maxRequests = maxRequestsFor(config, process.pid);
  const addon = native();
  const dispatcher = new Dispatcher(
    runner.handle,
    // Every change from idle to busy is noted, or a handler blocking the loop
    // right after a heartbeat would go unnamed in the WORKER TIMEOUT line;
    // the addon sends the note only if the next heartbeat is late, and has
    // each row's request from the engine (no call per request).
    (row) => {
      busy[1] = row;
      busy[0] = 1;
    },
    () => {
      busy[0] = 0;
    },
    // Reaching --max-requests is reported at once, so the replacement starts now.
    (served) => {
      if (served === maxRequests) report();
    },
    preRequest || postRequest ? { worker: self, preRequest, postRequest } : null,
  );
  const fds = Array.from({ length: spec.listeners }, (_, i) => FIRST_LISTENER_FD + i);
  const server = new addon.NativeServer(fds, engineOptions(config), dispatcher);
  dispatcher.attach(server);
  await bootStep(send, 'cannot open the access log', async () => openAccessLog(server, config));
  if (config.metricsBind !== null) server.enableMetrics();
  if (spec.tls) await bootStep(send, 'cannot serve TLS', async () => serveTls(server, config, spec.tls!, link));
  dispatcher.capacityChanged = (full) => send({ type: 'capacity', full });
  try {
    server.enableHandoff(handoffName(process.ppid, process.pid));
    link.onOwners((pids) => server.setCpuOwners(ownerNames(pids)));
  } catch (err) {
    logger.warning(`Connections stay with the worker that accepted them: ${(err as Error).message}`);
  }

  let expected = performance.now() + hbMs;
  // Handoffs cost both workers a wake-up: each heartbeat says how many there were.
  let handoffs: [number, number] = [0, 0];
  const traceHandoffs = (): void => {
    const [sent, received] = server.handoffCounts();
    if (sent !== handoffs[0] || received !== handoffs[1]) {
      logger.debug(`Handed ${sent - handoffs[0]} idle connections to other workers, received ${received - handoffs[1]}`);
      handoffs = [sent, received];
    }
  };
  const heartbeat = setInterval(() => {
    const now = performance.now();
    lagMs = Math.max(0, now - expected);
    expected = now + hbMs;
    addon.beat();
    report();
    addon.busyNoteTick();
    if (enabled('debug')) traceHandoffs();
  }, hbMs);
  addon.watchParent(3 * hbMs);
  addon.watchBusyNotes(PIPE_FD, 1.5 * hbMs, busy);
  try {
    addon.enableStackReports(constants.signals[STACK_SIGNAL]);
  } catch (err) {
    logger.warning(`WORKER TIMEOUT will show no JavaScript stack: ${(err as Error).message}`);
  }
  if (config.requestTimeout > 0) {
    const tickMs = Math.min(250, config.requestTimeout * 250);
    setInterval(() => dispatcher.expire(config.requestTimeout), tickMs).unref();
  }

  let stopping = false;
  const stop = async (deadlineMs: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (workerShutdown) fireHook('workerShutdown', () => workerShutdown(self));
    runner.drain();
    server.drain();
    const deadline = setTimeout(() => process.exit(0), deadlineMs);
    await dispatcher.whenIdle();
    await tasks.settled();
    // Responses are out of the app; give the engine a moment to flush them.
    const poll = setInterval(() => {
      if (server.connectionCount() === 0) {
        clearInterval(poll);
        clearTimeout(deadline);
        clearInterval(heartbeat);
        // The final counters, so the arbiter's totals miss nothing of this worker.
        report();
        server.close();
        link.close();
        process.exit(0);
      }
    }, 20);
  };
  const graceMs = config.gracefulTimeout * 1000;

  link.onStop(({ graceful, deadlineMs }) => {
    if (graceful) void stop(deadlineMs ?? graceMs);
    else process.exit(0);
  });
  process.on('SIGTERM', () => void stop(graceMs));
  process.on('SIGINT', () => process.exit(0));
  process.on('SIGQUIT', () => process.exit(0));
  process.on('SIGUSR1', reopenLogFile);
  // A listener's stray promise must not take the worker and every request on it down.
  process.on('unhandledRejection', (reason) => logger.error(`Unhandled promise rejection\n${describe(reason)}`));
  // Terminal job-control and reload signals are for the arbiter only.
  for (const signal of ['SIGHUP', 'SIGTTIN', 'SIGTTOU'] as const) process.on(signal, () => {});

  if (postWorkerInit) await bootStep(send, 'postWorkerInit hook failed', async () => postWorkerInit(self));
  send({ type: 'ready', pid: process.pid });
}

main().catch((err: unknown) => {
  logger.critical(`worker failed: ${describe(err)}`);
  process.exit(1);
});
