// `rwsgi status` as a person reads it: one line about the server, one row
// per worker (grouped by slot), totals, then the listeners.

import type { Snapshot, SlotSnapshot, WorkerSnapshot } from '../arbiter/snapshot.js';

export function duration(seconds: number): string {
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor(s / 3600) % 24).padStart(2, '0')}h`;
}

export function megabytes(bytes: number): string {
  return bytes === 0 ? '-' : `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

const count = (n: number): string => n.toLocaleString('en-US');

function oldest(w: WorkerSnapshot): string {
  if (!w.oldest) return '-';
  const path = w.oldest.path.length > 32 ? `${w.oldest.path.slice(0, 31)}…` : w.oldest.path;
  return `${w.oldest.method} ${path} ${w.oldest.age.toFixed(1)}s`;
}

function lastExit(slot: SlotSnapshot): string {
  const e = slot.lastExit;
  if (!e) return '-';
  const how = e.signal ?? (e.exitCode !== null && e.exitCode !== 0 ? `code ${e.exitCode}` : null);
  return `${e.reason}${how ? ` (${how})` : ''} ${duration(e.ago)} ago`;
}

const steering = (slot: SlotSnapshot): string => (slot.steered ? 'yes' : `no: ${slot.notSteered}`);

const HEADER = ['SLOT', 'PID', 'STATE', 'AGE', 'SERVED', 'IN FLIGHT', 'OLDEST REQUEST', 'CONNS', 'RSS', 'HEAP', 'LAG', 'RESTARTS', 'LAST EXIT', 'STEERED'];

/** Columns padded to their widest cell; numbers right-aligned. */
function table(rows: string[][], rightAligned: ReadonlySet<number>): string[] {
  const widths = HEADER.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (rightAligned.has(i) ? cell.padStart(widths[i] as number) : cell.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd(),
  );
}

const RIGHT = new Set([3, 4, 5, 7, 8, 9, 10, 11]);

export function renderStatus(s: Snapshot): string {
  const stopping = s.stopping ? ` · STOPPING (${s.stopping})` : '';
  const head = `rwsgi ${s.version} · arbiter pid ${s.pid} · up ${duration(s.uptime)} · generation ${s.generation} · ${s.workers} worker${s.workers === 1 ? '' : 's'} wanted${stopping}`;
  const rows: string[][] = [HEADER];
  for (const slot of s.slots) {
    const perSlot = [String(slot.restarts), lastExit(slot), steering(slot)];
    if (slot.workers.length === 0) rows.push([String(slot.slot), '-', 'down', '', '', '', '', '', '', '', '', ...perSlot]);
    slot.workers.forEach((w, i) => {
      const state = w.replacing && w.state !== 'draining' ? `${w.state}, replacing (${w.replacing})` : w.state;
      rows.push([
        i === 0 ? String(slot.slot) : '',
        String(w.pid),
        state,
        duration(w.age),
        count(w.served),
        String(w.inFlight),
        oldest(w),
        String(w.connections),
        megabytes(w.rss),
        megabytes(w.heapUsed),
        `${w.lagMs}ms`,
        ...(i === 0 ? perSlot : ['', '', '']),
      ]);
    });
  }
  const t = s.totals;
  rows.push([
    'TOTAL',
    '',
    `${t.ready}/${t.workers} ready`,
    '',
    count(t.served),
    String(t.inFlight),
    '',
    String(t.connections),
    megabytes(t.rss),
    megabytes(t.heapUsed),
    '',
    '',
    '',
    '',
  ]);
  const listeners = s.listeners.map((l) => `  ${l.address} (${l.kind === 'tcp' ? 'one socket per slot, steered' : `${l.kind}, shared by all workers`})`);
  return [head, '', ...table(rows, RIGHT), '', 'listening:', ...listeners].join('\n');
}
