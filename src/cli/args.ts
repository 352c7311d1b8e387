// `rwsgi` command-line parsing into a Config. Every mistake becomes an
// RwsgiError naming the flag at fault.

import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type Config, defaults } from '../config.js';
import { RwsgiError } from '../errors.js';
import { INTERFACES, type InterfaceChoice } from '../apps/detect.js';
import { isLevel, LEVELS } from '../log.js';
import { SPREADS, type SpreadChoice } from '../arbiter/spread.js';

export const USAGE = `usage: rwsgi serve MODULE[:EXPORT] [options]

Serves the application exported by MODULE (default export, or EXPORT).

options:
  -b, --bind HOST:PORT           address to listen on, repeatable (default 127.0.0.1:8000;
                                 IPv6 as [::1]:8000)
  -w, --workers N                worker processes (default: number of CPUs)
      --keep-alive S             seconds an idle keep-alive connection stays open (default 5)
      --header-timeout S         seconds a client may take to send a request head (default 10)
      --limit-request-line N     longest request line in bytes, else 414 (default 4094)
      --limit-request-fields N   most header fields, else 431 (default 100)
      --limit-request-field_size N
                                 longest header field in bytes, else 431 (default 8190)
      --limit-request-body N     largest request body in bytes, else 413; 0 = unlimited (default 0)
      --body-timeout S           seconds a request body may stall, then 408 (default 30)
  -i, --interface I              auto, wsgi, node or fetch: the app interface (default auto:
                                 fetch objects, Fastify, Koa and Express by shape, other
                                 functions as wsgi)
      --request-timeout S        seconds a request may run: then 504 (or a cut connection if the
                                 response started) and environ['rwsgi.signal'] aborts; 0 = off (default 0)
      --worker-connections N     open connections per worker before accepting pauses (default 4096)
      --backlog N                listen queue length per socket (default 2048)
      --spread HOW               cpu or random: how new connections are spread over the workers
                                 (default cpu: by the CPU that received the connection, so one
                                 client thread's connections share a worker; random as soon as
                                 that loads the workers unevenly)
      --graceful-timeout S       seconds workers get to finish on TERM (default 30)
  -t, --timeout S                seconds without a heartbeat before a worker is killed and
                                 replaced, 0 = never (default 30)
      --boot-timeout S           seconds a worker gets to load the app (default 30)
      --max-requests N           replace a worker after N requests, 0 = never (default 0)
      --max-requests-jitter N    add 0..N to each worker's --max-requests (default 0)
  -p, --pid FILE                 write the arbiter's pid to FILE
      --error-logfile FILE       log to FILE instead of stderr (USR1 reopens it)
      --log-level LEVEL          ${LEVELS.join(', ')} (default info)
  -h, --help                     this text
  -v, --version                  the version`;

export type Command = { kind: 'serve'; config: Config } | { kind: 'help' } | { kind: 'version' };

function usageError(message: string): RwsgiError {
  return new RwsgiError('RWSGI_ERR_USAGE', `${message}\n\n${USAGE}`);
}

function integer(flag: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min || !Number.isSafeInteger(Number(value))) {
    throw usageError(`${flag} must be an integer >= ${min}, got '${value}'`);
  }
  return Number(value);
}

function seconds(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw usageError(`${flag} must be a number of seconds >= 0, got '${value}'`);
  }
  return n;
}

/** Splits `HOST:PORT`, `[V6]:PORT`, `HOST` or `:PORT`; the port defaults to 8000. */
export function parseBind(bind: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(bind) ?? /^([^:[\]]*)(?::(\d+))?$/.exec(bind);
  const port = m?.[2] === undefined ? 8000 : Number(m[2]);
  if (!m || port > 65535) {
    throw usageError(`--bind '${bind}' is not HOST:PORT (IPv6 as [::1]:8000)`);
  }
  return { host: m[1] === '' ? '0.0.0.0' : (m[1] as string), port };
}

export function parseCommand(argv: string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        bind: { type: 'string', short: 'b', multiple: true },
        workers: { type: 'string', short: 'w' },
        'keep-alive': { type: 'string' },
        'header-timeout': { type: 'string' },
        'limit-request-line': { type: 'string' },
        'limit-request-fields': { type: 'string' },
        'limit-request-field_size': { type: 'string' },
        'limit-request-field-size': { type: 'string' },
        'limit-request-body': { type: 'string' },
        'body-timeout': { type: 'string' },
        'request-timeout': { type: 'string' },
        interface: { type: 'string', short: 'i' },
        'worker-connections': { type: 'string' },
        backlog: { type: 'string' },
        spread: { type: 'string' },
        'graceful-timeout': { type: 'string' },
        timeout: { type: 'string', short: 't' },
        'boot-timeout': { type: 'string' },
        'max-requests': { type: 'string' },
        'max-requests-jitter': { type: 'string' },
        pid: { type: 'string', short: 'p' },
        'error-logfile': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (err) {
    throw usageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };
  const [command, app, ...extra] = positionals;
  if (command === undefined) throw usageError('missing command');
  if (command !== 'serve') throw usageError(`unknown command '${command}'`);
  if (app === undefined || app === '') throw usageError('missing MODULE[:EXPORT] to serve');
  if (extra.length > 0) throw usageError(`unexpected argument '${extra[0]}'`);

  const base = defaults(availableParallelism());
  const logLevel = values['log-level'] ?? base.logLevel;
  if (!isLevel(logLevel)) throw usageError(`--log-level must be one of ${LEVELS.join(', ')}, got '${logLevel}'`);
  const iface = values.interface ?? base.interface;
  if (!(INTERFACES as readonly string[]).includes(iface)) {
    throw usageError(`--interface must be one of ${INTERFACES.join(', ')}, got '${iface}'`);
  }
  const spread = values.spread ?? base.spread;
  if (!(SPREADS as readonly string[]).includes(spread)) {
    throw usageError(`--spread must be one of ${SPREADS.join(', ')}, got '${spread}'`);
  }
  const binds = values.bind ?? base.binds;
  binds.forEach(parseBind);
  const fieldSize = values['limit-request-field_size'] ?? values['limit-request-field-size'];
  return {
    kind: 'serve',
    config: {
      app,
      binds,
      workers: integer('--workers', values.workers, base.workers, 1),
      keepAlive: seconds('--keep-alive', values['keep-alive'], base.keepAlive),
      headerTimeout: seconds('--header-timeout', values['header-timeout'], base.headerTimeout),
      limitRequestLine: integer('--limit-request-line', values['limit-request-line'], base.limitRequestLine, 16),
      limitRequestFields: integer('--limit-request-fields', values['limit-request-fields'], base.limitRequestFields, 1),
      limitRequestFieldSize: integer('--limit-request-field_size', fieldSize, base.limitRequestFieldSize, 16),
      limitRequestBody: integer('--limit-request-body', values['limit-request-body'], base.limitRequestBody, 0),
      bodyTimeout: seconds('--body-timeout', values['body-timeout'], base.bodyTimeout),
      interface: iface as InterfaceChoice,
      requestTimeout: seconds('--request-timeout', values['request-timeout'], base.requestTimeout),
      workerConnections: integer('--worker-connections', values['worker-connections'], base.workerConnections, 1),
      backlog: integer('--backlog', values.backlog, base.backlog, 1),
      spread: spread as SpreadChoice,
      gracefulTimeout: seconds('--graceful-timeout', values['graceful-timeout'], base.gracefulTimeout),
      timeout: seconds('--timeout', values.timeout, base.timeout),
      bootTimeout: seconds('--boot-timeout', values['boot-timeout'], base.bootTimeout),
      maxRequests: integer('--max-requests', values['max-requests'], base.maxRequests, 0),
      maxRequestsJitter: integer('--max-requests-jitter', values['max-requests-jitter'], base.maxRequestsJitter, 0),
      pidfile: values.pid === undefined ? null : resolve(values.pid),
      errorLogfile: values['error-logfile'] === undefined ? null : resolve(values['error-logfile']),
      logLevel,
    },
  };
}
