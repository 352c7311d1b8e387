// A worker's JavaScript stack, asked for with STACK_SIGNAL and answered by
// its addon's native thread (crates/node/src/js_stack.rs), so it comes even
// from a handler stuck in `while (true) {}`. Bounded: a main thread blocked
// in a system call never reaches the interrupt, and the answer then says so
// after STACK_WAIT_MS. A WORKER TIMEOUT logs it before the abort; `rwsgi
// dump PID` shows it for a live worker.

import { logger } from '../log.js';
import { STACK_SIGNAL, type StackFrame, type WorkerMessage } from '../protocol/messages.js';
import type { WorkerProcess } from './worker-process.js';

/** How long a stack request waits for the worker's answer. */
export const STACK_WAIT_MS = 1000;

type StackMessage = Extract<WorkerMessage, { type: 'stack' }>;

export interface StackReport {
  pid: number;
  /**
   * running: JavaScript was running; `frames` are its top ones.
   * idle: no JavaScript was running, the event loop was waiting (an idle worker).
   * blocked: no answer within STACK_WAIT_MS: the main thread did not reach
   *   JavaScript (blocked in a system call, or a native call).
   * unavailable: this worker cannot read stacks, or not yet (`error` says why).
   * exited: the worker exited before it answered.
   */
  state: 'running' | 'idle' | 'blocked' | 'unavailable' | 'exited';
  /** Top first, at most 20. */
  frames: StackFrame[];
  /** Frames on the stack, of which `frames` are the top ones. */
  total: number;
  error: string | null;
  /** Requests in flight at its last heartbeat (null: none came yet). */
  inFlight: number | null;
  /** The oldest request in flight, as the WORKER TIMEOUT line says it ("GET /x running 3.2s"). */
  oldest: string;
}

/** `    at name (file:line:column)`, as Node prints a stack. */
function frameLine(f: StackFrame): string {
  return `    at ${f.function || '<anonymous>'} (${f.file || '<unknown>'}:${f.line}:${f.column})`;
}

/** The log text for a report: a heading line and one line per frame. */
export function describeStack(report: StackReport): string {
  const { pid, frames, total } = report;
  switch (report.state) {
    case 'running': {
      const shown = frames.length < total ? `top ${frames.length} of ${total} frames` : `${total} frames`;
      return [`JavaScript stack of worker ${pid} (${shown}):`, ...frames.map(frameLine)].join('\n');
    }
    case 'idle':
      return `JavaScript stack of worker ${pid}: empty, the event loop was waiting (no JavaScript running)`;
    case 'blocked':
      return `no JavaScript stack: the main thread did not reach JavaScript within ${STACK_WAIT_MS / 1000} s (blocked in a system call?)`;
    case 'unavailable':
      return `no JavaScript stack: ${report.error ?? 'unknown reason'}`;
    case 'exited':
      return 'no JavaScript stack: the worker exited before it answered';
  }
}

/** The stack requests out, per worker. */
export class StackRequests {
  private readonly waiting = new Map<WorkerProcess, Array<(message: StackMessage | null) => void>>();

  /** The worker's current stack and in-flight requests, within STACK_WAIT_MS. */
  ask(w: WorkerProcess): Promise<StackReport> {
    // It handles the signal only once its app is loaded.
    if (w.state === 'booting') return Promise.resolve(report(w, { type: 'stack', frames: null, error: 'the worker is still booting' }));
    return new Promise((resolve) => {
      const queue = this.waiting.get(w) ?? [];
      const first = queue.length === 0;
      const timer = setTimeout(() => settle(null), STACK_WAIT_MS);
      const settle = (message: StackMessage | null): void => {
        clearTimeout(timer);
        const list = this.waiting.get(w);
        const i = list?.indexOf(settle) ?? -1;
        if (list && i >= 0) list.splice(i, 1);
        if (list?.length === 0) this.waiting.delete(w);
        resolve(report(w, message));
      };
      queue.push(settle);
      this.waiting.set(w, queue);
      // One signal answers every request waiting on it.
      if (first) w.kill(STACK_SIGNAL);
    });
  }

  /** A `stack` message came: it answers the requests waiting (none: a late answer, dropped). */
  answer(w: WorkerProcess, message: StackMessage): void {
    for (const settle of [...(this.waiting.get(w) ?? [])]) settle(message);
  }

  /** The worker exited: its requests are answered so. */
  exited(w: WorkerProcess): void {
    for (const settle of [...(this.waiting.get(w) ?? [])]) settle(null);
  }

  /** WORKER TIMEOUT: its stack (or why none) is logged, then it is aborted
   * (SIGABRT: 503s to its clients) and killed `graceMs` later if still there. */
  abort(w: WorkerProcess, graceMs: number): void {
    void this.ask(w).then((stack) => {
      // Other lines may come between (its replacement booting): this one says whose it is.
      logger.critical(`WORKER TIMEOUT (pid:${w.pid}) ${describeStack(stack)}`);
      w.kill('SIGABRT');
      w.killAt = Math.min(w.killAt, Date.now() + graceMs);
    });
  }
}

function report(w: WorkerProcess, message: StackMessage | null): StackReport {
  const base = {
    pid: w.pid,
    frames: [],
    total: 0,
    error: null,
    inFlight: w.report?.inFlight ?? null,
    oldest: w.describeOldest(Date.now()),
  };
  if (message === null) return { ...base, state: w.exited ? 'exited' : 'blocked' };
  if (message.frames === null) return { ...base, state: 'unavailable', error: message.error };
  const { frames, total } = message;
  return { ...base, state: frames.length === 0 ? 'idle' : 'running', frames, total };
}
