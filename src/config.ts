// The settings of one `rwsgi serve`, shared by the arbiter and its workers.

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
  backlog: number;
  logLevel: Level;
  gracefulTimeout: number;
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
    backlog: 2048,
    logLevel: 'info',
    gracefulTimeout: 30,
  };
}
