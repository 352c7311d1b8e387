// Worker process entry: fd 3 is the pipe to the arbiter, fds 4.. are this
// slot's listening sockets. Loads the app, serves, heartbeats, and stops
// gracefully on `stop`, SIGTERM or the arbiter's death (pipe EOF).

import { loadApp } from '../apps/load.js';
import { type WsgiApp, WsgiRunner } from '../apps/wsgi.js';
import { type Config, heartbeatMs, maxRequestsFor } from '../config.js';
import { EXIT_APP_LOAD, RwsgiError } from '../errors.js';
import { describe, logger, reopenLogFile, setLogFile, setLogLevel } from '../log.js';
import { native } from '../native.js';
import type { WorkerMessage } from '../protocol/messages.js';
import { Dispatcher } from './dispatcher.js';
import { ArbiterLink } from './link.js';

export interface WorkerSpec {
  config: Config;
  /** How many listening sockets follow fd 3. */
  listeners: number;
}

const FIRST_LISTENER_FD = 4;
/** A request reaching an idle worker is reported at once (if the last report
 * is older than this), so a handler that blocks the loop right away is still
 * named in the WORKER TIMEOUT line. */
const BUSY_REPORT_MS = 100;

function readSpec(): WorkerSpec {
  const raw = process.env.RWSGI_WORKER;
  if (!raw) throw new Error('rwsgi worker started without RWSGI_WORKER; run `rwsgi serve` instead');
  return JSON.parse(raw) as WorkerSpec;
}

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

async function main(): Promise<void> {
  const spec = readSpec();
  const { config } = spec;
  setLogLevel(config.logLevel);
  setLogFile(config.errorLogfile);
  const link = new ArbiterLink();
  const send = (message: WorkerMessage): void => link.send(message);

  let app: unknown;
  try {
    app = await loadApp(config.app);
    if (typeof app !== 'function') {
      throw new RwsgiError(
        'RWSGI_ERR_APP_EXPORT',
        `${config.app} exports a ${typeof app}, not an app(environ, startResponse) function`,
        EXIT_APP_LOAD,
      );
    }
  } catch (err) {
    const reason = err instanceof RwsgiError ? err.message : describe(err);
    send({ type: 'boot-error', reason });
    process.exit(EXIT_APP_LOAD);
  }

  const runner = new WsgiRunner(app as WsgiApp);
  const hbMs = heartbeatMs(config);
  let lagMs = 0;
  let lastReport = -Infinity;
  const report = (): void => {
    lastReport = performance.now();
    send({
      type: 'hb',
      served: dispatcher.served,
      inFlight: dispatcher.inFlightCount,
      oldest: dispatcher.oldest(),
      lagMs,
      rss: residentBytes(),
    });
  };
  const maxRequests = maxRequestsFor(config, process.pid);
  const dispatcher = new Dispatcher(
    (ex) => runner.handle(ex),
    () => {
      if (performance.now() - lastReport > BUSY_REPORT_MS) report();
    },
    // Reaching --max-requests is reported at once, so the replacement starts now.
    (served) => {
      if (served === maxRequests) report();
    },
  );
  const fds = Array.from({ length: spec.listeners }, (_, i) => FIRST_LISTENER_FD + i);
  const addon = native();
  const server = new addon.NativeServer(
    fds,
    {
      limitRequestLine: config.limitRequestLine,
      limitRequestFields: config.limitRequestFields,
      limitRequestFieldSize: config.limitRequestFieldSize,
      keepAliveSeconds: config.keepAlive,
      headerTimeoutSeconds: config.headerTimeout,
      limitRequestBody: config.limitRequestBody,
      bodyTimeoutSeconds: config.bodyTimeout,
      workerConnections: config.workerConnections,
    },
    dispatcher,
  );
  dispatcher.attach(server);

  let expected = performance.now() + hbMs;
  const heartbeat = setInterval(() => {
    const now = performance.now();
    lagMs = Math.max(0, now - expected);
    expected = now + hbMs;
    addon.beat();
    report();
  }, hbMs);
  addon.watchParent(3 * hbMs);
  if (config.requestTimeout > 0) {
    const tickMs = Math.min(250, config.requestTimeout * 250);
    setInterval(() => dispatcher.expire(config.requestTimeout), tickMs).unref();
  }

  let stopping = false;
  const stop = async (deadlineMs: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    server.drain();
    const deadline = setTimeout(() => process.exit(0), deadlineMs);
    await dispatcher.whenIdle();
    // Responses are out of the app; give the engine a moment to flush them.
    const poll = setInterval(() => {
      if (server.connectionCount() === 0) {
        clearInterval(poll);
        clearTimeout(deadline);
        clearInterval(heartbeat);
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
  // Terminal job-control and reload signals are for the arbiter only.
  for (const signal of ['SIGHUP', 'SIGTTIN', 'SIGTTOU'] as const) process.on(signal, () => {});

  send({ type: 'ready', pid: process.pid });
}

main().catch((err: unknown) => {
  logger.critical(`worker failed: ${describe(err)}`);
  process.exit(1);
});
