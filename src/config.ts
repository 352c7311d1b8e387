// The resolved settings of one `rwsgi serve` (declared in src/settings/),
// and the values the arbiter and the workers both derive from them.

import type { Config } from './settings/registry.js';

export type { Config } from './settings/registry.js';

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
