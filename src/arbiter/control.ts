// What each control command does, in terms of the arbiter's events: they
// change the wanted state exactly as the signals do (reload = HUP, stop =
// TERM or INT, scale = TTIN/TTOU to a count, restart-worker = the
// --max-requests replacement of one worker) and the reconcile step does
// the rest. Each reply says in a sentence what was done, or why not.

import { logger } from '../log.js';
import type { ControlReply, ControlRequest } from '../protocol/control.js';
import { Invalid } from '../settings/kinds.js';
import { setting } from '../settings/registry.js';
import type { Snapshot, WorkerSnapshot } from './snapshot.js';
import { describeStack, type StackReport } from './stack.js';

/** The arbiter, as the control commands drive it. */
export interface Controlled {
  snapshot(): Snapshot;
  /** HUP: resolves once the new generation's workers were asked for. */
  reload(): Promise<void>;
  stop(mode: 'graceful' | 'quick'): void;
  scale(workers: number): void;
  /** Replaces worker `pid` (a ready one): the new worker first, then it drains. */
  restartWorker(pid: number): void;
  /** Worker `pid`'s current JavaScript stack (see stack.ts). */
  stack(pid: number): Promise<StackReport>;
}

const refuse = (error: string): ControlReply => ({ ok: false, error });

function findWorker(snapshot: Snapshot, pid: number): WorkerSnapshot | string {
  const workers = snapshot.slots.flatMap((s) => s.workers);
  const w = workers.find((x) => x.pid === pid);
  return w ?? `no worker with pid ${pid} (workers: ${workers.map((x) => x.pid).join(', ') || 'none'})`;
}

/** `rwsgi dump PID`: the worker's JavaScript stack (read by its addon even
 * while its loop is blocked) and its in-flight requests (the oldest, as of
 * its last heartbeat). */
async function dumpWorker(worker: WorkerSnapshot, arbiter: Controlled): Promise<ControlReply> {
  const report = await arbiter.stack(worker.pid);
  if (report.state === 'exited') return refuse(`worker ${worker.pid} exited before it answered`);
  logger.info(`Control: dump ${worker.pid}`);
  return {
    ok: true,
    pid: worker.pid,
    state: report.state,
    stack: describeStack(report),
    frames: report.frames,
    inFlightCount: worker.inFlight,
    inFlight: worker.oldest ? [worker.oldest] : [],
  };
}

export async function answer(request: ControlRequest, arbiter: Controlled): Promise<ControlReply> {
  const before = arbiter.snapshot();
  if (request.cmd === 'status') return { ok: true, ...before };
  if (before.stopping && request.cmd !== 'stop' && request.cmd !== 'dump') return refuse(`the server (pid ${before.pid}) is stopping`);
  switch (request.cmd) {
    case 'reload': {
      logger.info('Control: reload');
      await arbiter.reload();
      const { generation } = arbiter.snapshot();
      return { ok: true, generation, did: `reloading rwsgi (pid ${before.pid}): generation ${generation} workers start, the others drain once they are ready` };
    }
    case 'stop': {
      const mode = request.quick ? 'quick' : 'graceful';
      logger.info(`Control: stop${request.quick ? ' --quick' : ''}`);
      arbiter.stop(mode);
      const how = request.quick ? 'quickly: workers exit now' : 'gracefully: workers finish the requests in flight, then exit';
      return { ok: true, did: `stopping rwsgi (pid ${before.pid}) ${how}` };
    }
    case 'scale': {
      try {
        setting('workers').fromValue(request.workers);
      } catch (err) {
        if (err instanceof Invalid) return refuse(`scale: the number of workers must be ${err.allowed}, got ${request.workers}`);
        throw err;
      }
      const was = before.workers;
      if (was === request.workers) return { ok: true, workers: was, was, did: `rwsgi (pid ${before.pid}) already runs ${was} workers` };
      logger.info(`Control: scale to ${request.workers}`);
      arbiter.scale(request.workers);
      return { ok: true, workers: request.workers, was, did: `scaling rwsgi (pid ${before.pid}) from ${was} to ${request.workers} workers` };
    }
    case 'restart-worker': {
      const w = findWorker(before, request.pid);
      if (typeof w === 'string') return refuse(w);
      if (w.replacing !== null) return refuse(`worker ${w.pid} is already being replaced (${w.replacing})`);
      if (w.state !== 'ready' && w.state !== 'late') return refuse(`worker ${w.pid} is ${w.state}: only a ready worker is replaced`);
      logger.info(`Control: restart-worker ${w.pid}`);
      arbiter.restartWorker(w.pid);
      return { ok: true, pid: w.pid, slot: w.slot, did: `replacing worker ${w.pid} (slot ${w.slot}): a new worker starts, then ${w.pid} drains` };
    }
    case 'dump': {
      const w = findWorker(before, request.pid);
      return typeof w === 'string' ? refuse(w) : dumpWorker(w, arbiter);
    }
  }
}
