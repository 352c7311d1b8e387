// What a worker reports for the arbiter's /metrics: the engine's counters,
// read once per heartbeat (nothing is counted in JavaScript per request).

import type { NativeServer } from '../native.js';
import type { WorkerMetrics } from '../protocol/messages.js';

/** Undefined (left out of the heartbeat) unless --metrics-bind turned counting on. */
export function workerMetrics(server: NativeServer): WorkerMetrics | undefined {
  const counters = server.requestMetrics();
  return counters ? { ...counters, rejected: server.rejectedCounts() } : undefined;
}
