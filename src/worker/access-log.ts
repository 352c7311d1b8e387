// The access log in a worker: the engine writes the lines (crates/core
// access_log); here it is opened, reopened on USR1, flushed at exit, and
// lines dropped for a slow or full disk are reported once a minute.

import { logger } from '../log.js';
import type { NativeServer } from '../native.js';
import type { Config } from '../settings/registry.js';

const DROPPED_REPORT_MS = 60_000;

export function openAccessLog(server: NativeServer, config: Config): void {
  const path = config.accessLogfile;
  if (path === null) return;
  server.openAccessLog({ path, format: config.accessLogformat, json: config.accessLogJson });
  process.on('SIGUSR1', () => server.reopenAccessLog());
  // Every way out (stop, recycling, reload, a quick exit) passes here.
  process.on('exit', () => server.flushAccessLog());
  let reported = 0;
  setInterval(() => {
    const dropped = server.accessLogDropped();
    if (dropped > reported) {
      logger.error(`Access log: ${dropped - reported} lines dropped in the last minute (${path} is not keeping up)`);
      reported = dropped;
    }
  }, DROPPED_REPORT_MS).unref();
}
