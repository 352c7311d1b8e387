// The arbiter's Prometheus metrics (--metrics-bind). Workers count in the
// engine and report cumulative counters in each heartbeat; the book keeps
// each worker's last report, and a few seconds after a worker exited (its
// last report may still be in the pipe) adds that report into a retired
// base, so totals summed over workers never go backwards (they restart
// from zero only with the arbiter).

import { native } from '../native.js';
import type { WorkerMetrics } from '../protocol/messages.js';
import type { ExitReason } from '../settings/hooks.js';
import { type Family, histogramSamples, render, type Sample } from './exposition.js';
import { NOT_STEERED, type Snapshot } from './snapshot.js';
import type { WorkerProcess } from './worker-process.js';

/** The statuses the engine refuses requests with, always shown. */
const REJECTED_STATUSES = [400, 408, 413, 414, 431, 501, 505];

/** Worker exits that lead to a replacement, by the reason the label shows. */
const RESTART_REASONS: Partial<Record<ExitReason | 'memory', string>> = {
  timeout: 'timeout',
  crash: 'crash',
  'max-requests': 'max-requests',
  memory: 'memory',
  reload: 'reload',
  'scale-down': 'scale',
};

/** Whether a slot is in the steering set, or why not (an enum as a state set). */
const STEERING_STATES = ['steered', ...NOT_STEERED] as const;

/** One worker slot as the arbiter sees it at a scrape. */
export interface SlotView {
  index: number;
  /** Beyond the wanted count (TTOU): it drains and closes. */
  retiring: boolean;
  workers: WorkerProcess[];
  /** One listening socket per listener, in listener order. */
  fds: number[];
}

export interface ServerView {
  slots: SlotView[];
  /** Per listener: its URL and whether all slots share one socket. */
  listeners: Array<{ url: string; shared: boolean }>;
  /** The state `rwsgi status` shows: each slot's steering, and why not. */
  snapshot: Snapshot;
}

const zeros = (n: number): number[] => new Array<number>(n).fill(0);

/** Counters summed over workers: element-wise, with rejections by status. */
class Totals {
  requests: number[] = [];
  durations: number[] = [];
  durationSum = 0;
  received = 0;
  sent = 0;
  rejected = new Map<number, number>();

  add(m: WorkerMetrics): void {
    const sum = (into: number[], from: number[]): void => {
      from.forEach((n, i) => (into[i] = (into[i] ?? 0) + n));
    };
    sum(this.requests, m.requests);
    sum(this.durations, m.durations);
    this.durationSum += m.durationSum;
    this.received += m.received;
    this.sent += m.sent;
    for (const { status, count } of m.rejected) this.rejected.set(status, (this.rejected.get(status) ?? 0) + count);
  }
}

/** A worker's last report can be read from its pipe after its exit event:
 * its counters join the retired base only this long after it exited. */
const LATE_REPORT_MS = 5000;

/** A worker process, as the book tells them apart. */
type Worker = object;

export class MetricsBook {
  /** Each worker's last counters (keyed by its process object: a pid can be
   * reused), including workers that exited less than LATE_REPORT_MS ago. */
  private readonly last = new Map<Worker, WorkerMetrics>();
  private readonly exitedAt = new Map<Worker, number>();
  private readonly retired = new Totals();
  private readonly restarts = new Map<string, number>();
  private timeouts = 0;
  private bootFailures = 0;
  private readonly layout = native().metricsLayout();

  /** A heartbeat's counters (cumulative since that worker started). */
  heartbeat(worker: Worker, metrics: WorkerMetrics | undefined, now: number): void {
    if (metrics) this.last.set(worker, metrics);
    this.retire(now);
  }

  /** `worker` exited, for `reason`; its counters stay in the totals. */
  exited(worker: Worker, reason: ExitReason, now: number): void {
    this.exitedAt.set(worker, now);
    if (reason === 'timeout') this.timeouts++;
    if (reason === 'boot-failure') this.bootFailures++;
    const label = RESTART_REASONS[reason];
    if (label) this.restarts.set(label, (this.restarts.get(label) ?? 0) + 1);
  }

  /** Folds the last counters of workers long gone into the retired base. */
  private retire(now: number): void {
    for (const [worker, at] of this.exitedAt) {
      if (now - at < LATE_REPORT_MS) continue;
      const last = this.last.get(worker);
      if (last) this.retired.add(last);
      this.last.delete(worker);
      this.exitedAt.delete(worker);
    }
  }

  private totals(now: number): Totals {
    this.retire(now);
    const totals = new Totals();
    totals.add({ ...this.retired, rejected: [...this.retired.rejected].map(([status, count]) => ({ status, count })) });
    for (const m of this.last.values()) totals.add(m);
    return totals;
  }

  /** The exposition text of a scrape at `now`. */
  render(view: ServerView, now: number): string {
    return render(this.families(view, now));
  }

  private families(view: ServerView, now: number): Family[] {
    const { methods, buckets, statusClasses: classes } = this.layout;
    const t = this.totals(now);
    const requests: Sample[] = [];
    methods.forEach((method, m) => {
      for (let c = 0; c < classes; c++) {
        requests.push({ labels: { method, code: `${c + 1}xx` }, value: t.requests[m * classes + c] ?? 0 });
      }
    });
    const rejected = new Map(REJECTED_STATUSES.map((s) => [s, 0]));
    for (const [status, count] of t.rejected) rejected.set(status, count);
    const restarts = new Set(Object.values(RESTART_REASONS));
    const current = view.slots.map((slot) => ({ slot, w: newest(slot.workers) }));
    const perSlot = (value: (w: WorkerProcess) => number | undefined): Sample[] =>
      current.flatMap(({ slot, w }) => {
        const v = w ? value(w) : undefined;
        return v === undefined ? [] : [{ labels: { slot: String(slot.index) }, value: v }];
      });
    const reports = [...view.slots.flatMap((s) => s.workers)].map((w) => w.report).filter((r) => r !== null);
    return [
      counter('rwsgi_requests_total', 'Responses the app sent, by request method and status class.', requests),
      {
        name: 'rwsgi_request_duration_seconds',
        type: 'histogram',
        help: 'Seconds from a request being read to the end of its response.',
        samples: histogramSamples(buckets, zeros(buckets.length + 1).map((_, i) => t.durations[i] ?? 0), t.durationSum),
      },
      counter('rwsgi_request_bytes_total', 'Bytes received from clients (request heads and bodies).', [{ value: t.received }]),
      counter('rwsgi_response_bytes_total', 'Bytes sent to clients (response heads and bodies).', [{ value: t.sent }]),
      counter(
        'rwsgi_requests_rejected_total',
        'Requests the engine refused (malformed, over a limit, too slow), by status sent.',
        [...rejected].sort(([a], [b]) => a - b).map(([code, value]) => ({ labels: { code: String(code) }, value })),
      ),
      gauge('rwsgi_requests_in_flight', 'Requests the workers are answering, as of their last heartbeats.', [
        { value: reports.reduce((n, r) => n + r.inFlight, 0) },
      ]),
      gauge('rwsgi_connections_open', 'Client connections open in the workers, as of their last heartbeats.', [
        { value: reports.reduce((n, r) => n + r.connections, 0) },
      ]),
      counter(
        'rwsgi_worker_restarts_total',
        'Workers replaced, by reason.',
        [...restarts].map((reason) => ({ labels: { reason }, value: this.restarts.get(reason) ?? 0 })),
      ),
      counter('rwsgi_worker_timeouts_total', 'Workers killed for a missed heartbeat (WORKER TIMEOUT).', [{ value: this.timeouts }]),
      counter('rwsgi_worker_boot_failures_total', 'Workers that failed to boot.', [{ value: this.bootFailures }]),
      gauge('rwsgi_worker_resident_memory_bytes', 'Resident memory of each slot\'s worker.', perSlot((w) => w.report?.rss)),
      gauge('rwsgi_worker_heap_used_bytes', 'V8 heap used by each slot\'s worker.', perSlot((w) => w.report?.heapUsed)),
      gauge(
        'rwsgi_worker_event_loop_lag_seconds',
        'Event-loop lag of each slot\'s worker, measured by its heartbeat timer.',
        perSlot((w) => (w.report ? w.report.lagMs / 1000 : undefined)),
      ),
      gauge('rwsgi_worker_connections', 'Client connections open in each slot\'s worker.', perSlot((w) => w.report?.connections)),
      gauge(
        'rwsgi_worker_steering',
        'Whether new connections go to each slot (state "steered") and, if not, why, as rwsgi status says: full (at --worker-connections or out of descriptors), late (missed heartbeats), booting, draining, down (no worker), retiring (scaled down), stopping, handed-over (after USR2).',
        view.snapshot.slots.flatMap((slot) => {
          const state = slot.notSteered ?? 'steered';
          return STEERING_STATES.map((s) => ({ labels: { slot: String(slot.slot), state: s }, value: s === state ? 1 : 0 }));
        }),
      ),
      ...acceptQueues(view),
      gauge('rwsgi_workers_ready', 'Workers ready to serve.', [
        { value: view.slots.reduce((n, s) => n + s.workers.filter((w) => w.state === 'ready').length, 0) },
      ]),
    ];
  }
}

const counter = (name: string, help: string, samples: Sample[]): Family => ({ name, type: 'counter', help, samples });
const gauge = (name: string, help: string, samples: Sample[]): Family => ({ name, type: 'gauge', help, samples });

/** The worker a slot's gauges describe: its newest that is not draining away. */
function newest(workers: WorkerProcess[]): WorkerProcess | undefined {
  const serving = workers.filter((w) => w.state === 'ready' || w.state === 'booting');
  return (serving.length > 0 ? serving : workers).reduce<WorkerProcess | undefined>(
    (a, w) => (a && a.spawnedAt > w.spawnedAt ? a : w),
    undefined,
  );
}

/** Per TCP listening socket, its accept queue (Unix sockets have no such report). */
function acceptQueues(view: ServerView): Family[] {
  const length: Sample[] = [];
  const backlog: Sample[] = [];
  view.listeners.forEach(({ url, shared }, i) => {
    const slots = shared ? view.slots.slice(0, 1) : view.slots;
    for (const slot of slots) {
      const fd = slot.fds[i];
      if (fd === undefined) continue;
      let queue: [number, number] | null = null;
      try {
        queue = native().acceptQueue(fd);
      } catch {
        // Closed under us (a slot retired): nothing to show.
      }
      if (!queue) continue;
      const labels = { listener: url, slot: shared ? 'all' : String(slot.index) };
      length.push({ labels, value: queue[0] });
      backlog.push({ labels, value: queue[1] });
    }
  });
  return [
    gauge('rwsgi_listen_queue_length', 'Connections waiting in each TCP listening socket\'s accept queue.', length),
    gauge('rwsgi_listen_queue_max', 'The accept queue\'s limit (--backlog as the kernel applies it).', backlog),
  ];
}
