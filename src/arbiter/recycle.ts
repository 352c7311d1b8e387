// When a worker is replaced for what its heartbeat says: it served its
// --max-requests share, or it holds more memory than --max-worker-memory
// (RSS) or --max-worker-heap (V8's used heap) allow. The replacement starts
// first, then the worker drains: nothing in flight fails.

import { type Config, maxRequestsFor } from '../config.js';
import type { WorkerMessage } from '../protocol/messages.js';

const MB = 1024 * 1024;

export interface Recycle {
  reason: 'max-requests' | 'memory';
  /** What the log line says, as "served 1000 requests (max 1000)". */
  why: string;
}

type Limits = Pick<Config, 'maxRequests' | 'maxRequestsJitter' | 'maxWorkerMemory' | 'maxWorkerHeap'>;
type Heartbeat = Extract<WorkerMessage, { type: 'hb' }>;

const mb = (bytes: number): string => (bytes / MB).toFixed(1);

/** Why worker `pid` is due for replacement after heartbeat `hb`, or null. */
export function recycleFor(config: Limits, pid: number, hb: Heartbeat): Recycle | null {
  const limit = maxRequestsFor(config, pid);
  if (limit > 0 && hb.served >= limit) return { reason: 'max-requests', why: `served ${hb.served} requests (max ${limit})` };
  if (config.maxWorkerMemory > 0 && hb.rss > config.maxWorkerMemory * MB) {
    return { reason: 'memory', why: `uses ${mb(hb.rss)} MB of memory (RSS; max-worker-memory ${config.maxWorkerMemory} MB)` };
  }
  if (config.maxWorkerHeap > 0 && hb.heapUsed > config.maxWorkerHeap * MB) {
    return { reason: 'memory', why: `uses ${mb(hb.heapUsed)} MB of V8 heap (max-worker-heap ${config.maxWorkerHeap} MB)` };
  }
  return null;
}
