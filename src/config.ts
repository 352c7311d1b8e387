// The settings of one `rwsgi serve`, shared by the arbiter and its workers.

import type { InterfaceChoice } from './apps/detect.js';
import type { SpreadChoice } from './arbiter/spread.js';
import type { Level } from './log.js';

export interface Config {
  /** MODULE[:EXPORT], as given on the command line. */
  app: string;
  binds: string[];
  workers: number;
  keepAlive: number;
  headerTimeout: number;
  limitRequestLine: number;
  limitRequestFields: number;
  limitRequestFieldSize: number;
  /** Largest request body in bytes; 0 = unlimited. */
  limitRequestBody: number;
  bodyTimeout: number;
  /** Which app interface to assume; 'auto' goes by the app's shape. */
  interface: InterfaceChoice;
  /** Seconds a request may run before a 504; 0 = off. */
  requestTimeout: number;
  workerConnections: number;
  backlog: number;
  /** How new connections are spread over the workers. */
  spread: SpreadChoice;
  logLevel: Level;
  gracefulTimeout: number;
  /** Seconds without a heartbeat before a worker is killed; 0 = never. */
  timeout: number;
  bootTimeout: number;
  /** Requests a worker serves before it is replaced; 0 = no limit. */
  maxRequests: number;
  maxRequestsJitter: number;
  pidfile: string | null;
  errorLogfile: string | null;
}

/** A worker's --max-requests share, with a stable per-process jitter so
 * replacements do not all come at once; 0 = no limit. */
export function maxRequestsFor(config: Pick<Config, 'maxRequests' | 'maxRequestsJitter'>, pid: number): number {
  if (config.maxRequests <= 0) return 0;
  return config.maxRequests + (config.maxRequestsJitter > 0 ? pid % (config.maxRequestsJitter + 1) : 0);
}

/** Heartbeats come often enough that a timeout sees several of them. */
export function heartbeatMs(config: Pick<Config, 'timeout'>): number {
  return config.timeout > 0 ? Math.min(1000, (config.timeout * 1000) / 4) : 1000;
}

export function defaults(cpus: number): Omit<Config, 'app'> {
  return {
    binds: ['127.0.0.1:8000'],
    workers: cpus,
    keepAlive: 5,
    headerTimeout: 10,
    limitRequestLine: 4094,
    limitRequestFields: 100,
    limitRequestFieldSize: 8190,
    limitRequestBody: 0,
    bodyTimeout: 30,
    interface: 'auto',
    requestTimeout: 0,
    workerConnections: 4096,
    backlog: 2048,
    spread: 'cpu',
    logLevel: 'info',
    gracefulTimeout: 30,
    timeout: 30,
    bootTimeout: 30,
    maxRequests: 0,
    maxRequestsJitter: 0,
    pidfile: null,
    errorLogfile: null,
  };
}
