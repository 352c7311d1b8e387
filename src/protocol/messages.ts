// The arbiter <-> worker messages on fd 3: newline-delimited JSON, one
// definition for both sides. EOF on the pipe means the peer died.

export interface InFlight {
  method: string;
  path: string;
  /** Seconds since the request head arrived. */
  age: number;
}

/** A worker's request counters, cumulative since it started (--metrics-bind). */
export interface WorkerMetrics {
  /** Per method (the addon's metricsLayout), per status class 1xx..5xx. */
  requests: number[];
  /** Responses per duration bucket, then the rest (not cumulative). */
  durations: number[];
  durationSum: number;
  received: number;
  sent: number;
  /** Requests the engine refused, by status sent. */
  rejected: Array<{ status: number; count: number }>;
}

/** One frame of a worker's JavaScript stack (line and column from 1). */
export interface StackFrame {
  /** Empty for an anonymous function. */
  function: string;
  file: string;
  line: number;
  column: number;
}

/** The signal that asks a worker for its JavaScript stack: its addon
 * handles it natively (the JavaScript may be stuck), and it is ignored by
 * default, so one that reaches a worker still booting does no harm. */
export const STACK_SIGNAL = 'SIGURG';

export type WorkerMessage =
  | { type: 'ready'; pid: number }
  | {
      type: 'hb';
      /** Requests answered since boot. */
      served: number;
      /** Connections accepted since boot. */
      accepted: number;
      inFlight: number;
      oldest: InFlight | null;
      /** Event-loop lag in milliseconds, measured by the heartbeat timer. */
      lagMs: number;
      rss: number;
      /** V8 heap used, in bytes. */
      heapUsed: number;
      /** Open client connections. */
      connections: number;
      /** Present with --metrics-bind. */
      metrics?: WorkerMetrics;
    }
  /** The request the worker turned busy with, sent by the addon's thread
   * when the heartbeat after it is late: a handler that blocked the loop
   * right after a heartbeat is still named in the WORKER TIMEOUT line. */
  | { type: 'busy'; oldest: InFlight }
  | { type: 'boot-error'; reason: string }
  /** At --worker-connections or out of descriptors (full), or below nine tenths again. */
  | { type: 'capacity'; full: boolean }
  /** Its main thread's JavaScript stack, top first (at most 20 of `total`
   * frames; none: the event loop was waiting), sent by the addon's thread
   * after STACK_SIGNAL; `frames` null: it cannot read stacks (`error` says why). */
  | { type: 'stack'; frames: StackFrame[]; total: number }
  | { type: 'stack'; frames: null; error: string };

export type ArbiterMessage =
  | { type: 'stop'; graceful: boolean; deadlineMs: number }
  /** Per CPU number, the pid of the worker serving connections that arrive
   * there (0: none); idle connections move to it. Empty: none move. */
  | { type: 'owners'; pids: number[] }
  /** New session-ticket keys (hex, the first seals, all open). */
  | { type: 'tls-keys'; keys: string[] };

export type Message = WorkerMessage | ArbiterMessage;

export function encode(message: Message): string {
  return `${JSON.stringify(message)}\n`;
}

const TYPES = new Set(['ready', 'hb', 'busy', 'boot-error', 'capacity', 'stack', 'stop', 'owners', 'tls-keys']);

/** The abstract socket name a worker receives handed-off connections at. */
export function handoffName(arbiterPid: number, workerPid: number): string {
  return `rwsgi.${arbiterPid}.${workerPid}`;
}

function parse(line: string): Message | null {
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value === 'object' && value !== null && TYPES.has((value as { type?: unknown }).type as string)) {
      return value as Message;
    }
  } catch {
    // A torn or foreign line is dropped, never fatal.
  }
  return null;
}

/** Splits a byte stream into messages, keeping a partial last line. */
export class LineDecoder {
  private partial = '';

  push(chunk: string): Message[] {
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    const out: Message[] = [];
    for (const line of lines) {
      const message = line.length > 0 ? parse(line) : null;
      if (message) out.push(message);
    }
    return out;
  }
}
