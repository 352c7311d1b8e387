// The arbiter's state as plain JSON, for `rwsgi status` (over the control
// socket) and anything else that reports on a running server: per slot its
// workers and their last heartbeat, whether new connections are steered to
// it (and why not), its restarts and last exit; then totals and listeners.
// The per-slot history the arbiter does not otherwise keep lives here too.

import type { InFlight } from '../protocol/messages.js';
import type { ExitReason } from '../settings/hooks.js';
import { VERSION } from '../version.js';
import { type Listener, url } from './listeners.js';
import type { WorkerProcess } from './worker-process.js';

/** `late`: ready, but its heartbeat is overdue (out of the steering set);
 * `aborting`: timed out, being killed. */
export type WorkerStatus = 'booting' | 'ready' | 'late' | 'draining' | 'aborting';

/** Why a slot gets no new connections. */
/** Why a slot gets no new connections (`rwsgi status` and /metrics say it). */
export const NOT_STEERED = ['full', 'late', 'booting', 'draining', 'down', 'retiring', 'stopping', 'handed-over'] as const;
export type NotSteered = (typeof NOT_STEERED)[number];

export interface LastExit {
  pid: number;
  reason: ExitReason;
  exitCode: number | null;
  signal: string | null;
  /** Seconds ago. */
  ago: number;
}

export interface WorkerSnapshot {
  pid: number;
  slot: number;
  generation: number;
  state: WorkerStatus;
  /** Seconds since it was started. */
  age: number;
  served: number;
  inFlight: number;
  /** The oldest request in flight, its age as of now. */
  oldest: InFlight | null;
  connections: number;
  /** Bytes, as of its last heartbeat (0 before the first). */
  rss: number;
  heapUsed: number;
  lagMs: number;
  /** Seconds since its last heartbeat (or since it was started). */
  lastBeat: number;
  /** Being replaced: a new worker is starting, then this one drains. */
  replacing: ExitReason | null;
}

export interface SlotSnapshot {
  slot: number;
  /** In the set of slots new connections are steered to. */
  steered: boolean;
  notSteered: NotSteered | null;
  /** Workers of this slot replaced since the server started (not counting stop and scale-down). */
  restarts: number;
  /** Every exit of the slot's workers since the server started, by reason. */
  exits: Partial<Record<ExitReason, number>>;
  lastExit: LastExit | null;
  workers: WorkerSnapshot[];
}

export interface ListenerSnapshot {
  address: string;
  /** `tcp`: one SO_REUSEPORT socket per slot, steered; `unix`, `fd`: one socket all workers share. */
  kind: 'tcp' | 'unix' | 'fd';
}

export interface Snapshot {
  pid: number;
  version: string;
  /** Seconds since the arbiter started. */
  uptime: number;
  generation: number;
  /** The number of workers wanted. */
  workers: number;
  stopping: 'graceful' | 'quick' | null;
  slots: SlotSnapshot[];
  totals: { workers: number; ready: number; served: number; inFlight: number; connections: number; rss: number; heapUsed: number };
  listeners: ListenerSnapshot[];
}

/** What the snapshot is taken from: the arbiter's state, read-only. */
export interface ArbiterView {
  pid: number;
  startedAt: number;
  generation: number;
  wanted: number;
  stopping: 'graceful' | 'quick' | null;
  handedOver: boolean;
  slots: readonly { index: number }[];
  workers: readonly WorkerProcess[];
  /** The slots new connections went to at the last reconcile step. */
  steered: readonly number[];
  /** A ready worker is late once its last heartbeat is older than this. */
  lateMs: number;
  listeners: readonly Listener[];
}

/** Exits that do not count as a restart: the slot was meant to go. */
const NOT_RESTARTS: ReadonlySet<ExitReason> = new Set(['stop', 'scale-down']);

interface SlotRecord {
  restarts: number;
  exits: Partial<Record<ExitReason, number>>;
  lastExit: (Omit<LastExit, 'ago'> & { at: number }) | null;
}

/** Per slot: how many of its workers were replaced, and the last exit. */
export class SlotRecords {
  private readonly bySlot = new Map<number, SlotRecord>();

  exited(slot: number, exit: Omit<LastExit, 'ago'>, now: number): void {
    const record = this.record(slot);
    if (!NOT_RESTARTS.has(exit.reason)) record.restarts++;
    record.exits[exit.reason] = (record.exits[exit.reason] ?? 0) + 1;
    record.lastExit = { ...exit, at: now };
  }

  record(slot: number): SlotRecord {
    let record = this.bySlot.get(slot);
    if (!record) {
      record = { restarts: 0, exits: {}, lastExit: null };
      this.bySlot.set(slot, record);
    }
    return record;
  }
}

const seconds = (ms: number): number => Math.round(ms / 100) / 10;

function workerStatus(w: WorkerProcess, view: ArbiterView, now: number): WorkerStatus {
  if (w.state === 'ready' && now - w.lastBeat > view.lateMs) return 'late';
  return w.state;
}

function workerSnapshot(w: WorkerProcess, view: ArbiterView, now: number): WorkerSnapshot {
  const r = w.report;
  const oldest = w.oldestNow(now);
  // A request the worker turned busy with after its last heartbeat (a
  // blocked loop sends no more) is in flight on an open connection.
  const busy = oldest ? 1 : 0;
  return {
    pid: w.pid,
    slot: w.slot,
    generation: w.generation,
    state: workerStatus(w, view, now),
    age: seconds(now - w.spawnedAt),
    served: r?.served ?? 0,
    inFlight: Math.max(r?.inFlight ?? 0, busy),
    oldest,
    connections: Math.max(r?.connections ?? 0, busy),
    rss: r?.rss ?? 0,
    heapUsed: r?.heapUsed ?? 0,
    lagMs: Math.round(r?.lagMs ?? 0),
    lastBeat: seconds(now - w.lastBeat),
    replacing: w.recycle,
  };
}

function whyNotSteered(slot: number, workers: WorkerSnapshot[], view: ArbiterView): NotSteered {
  if (view.stopping) return 'stopping';
  if (view.handedOver) return 'handed-over';
  if (slot >= view.wanted) return 'retiring';
  const has = (state: WorkerStatus): boolean => workers.some((w) => w.state === state);
  if (has('ready')) return 'full';
  if (has('late')) return 'late';
  if (has('booting')) return 'booting';
  if (has('draining') || has('aborting')) return 'draining';
  return 'down';
}

function listenerKind(l: Listener): ListenerSnapshot['kind'] {
  if (l.shared === null) return 'tcp';
  return l.path !== null ? 'unix' : 'fd';
}

export function takeSnapshot(view: ArbiterView, records: SlotRecords, now: number): Snapshot {
  const workers = view.workers.map((w) => workerSnapshot(w, view, now));
  const slots = view.slots.map(({ index }): SlotSnapshot => {
    const mine = workers.filter((w) => w.slot === index);
    const steered = !view.stopping && !view.handedOver && view.steered.includes(index);
    const { restarts, exits, lastExit } = records.record(index);
    return {
      slot: index,
      steered,
      notSteered: steered ? null : whyNotSteered(index, mine, view),
      restarts,
      exits: { ...exits },
      lastExit: lastExit && {
        pid: lastExit.pid,
        reason: lastExit.reason,
        exitCode: lastExit.exitCode,
        signal: lastExit.signal,
        ago: seconds(now - lastExit.at),
      },
      workers: mine,
    };
  });
  const sum = (f: (w: WorkerSnapshot) => number): number => workers.reduce((a, w) => a + f(w), 0);
  return {
    pid: view.pid,
    version: VERSION,
    uptime: seconds(now - view.startedAt),
    generation: view.generation,
    workers: view.wanted,
    stopping: view.stopping,
    slots,
    totals: {
      workers: workers.length,
      ready: workers.filter((w) => w.state === 'ready').length,
      served: sum((w) => w.served),
      inFlight: sum((w) => w.inFlight),
      connections: sum((w) => w.connections),
      rss: sum((w) => w.rss),
      heapUsed: sum((w) => w.heapUsed),
    },
    listeners: view.listeners.map((l) => ({ address: url(l), kind: listenerKind(l) })),
  };
}
