// How new connections are spread over the healthy workers. By CPU (the
// default): the CPU that took a connection's SYN picks the worker, and each
// worker runs on the CPUs whose connections it gets, so all connections of
// one client thread (or one NIC queue) reach one worker on that client's
// core, and on a busy machine the two take turns there. With every worker
// serving every client thread instead, a client waits behind other
// threads' time slices (a p99 of two scheduler ticks). That only pays
// while the CPUs share the load evenly: the arbiter watches the accepts
// per slot and spreads at random, on any CPU, once the same slot is far
// off its share two windows running (one client thread, one NIC queue):
// otherwise one worker does all the work while the others idle, below
// any cap that would make it full.

import { logger } from '../log.js';
import type { SpreadChoice } from '../settings/registry.js';

/** A window spans at least this many accepts and milliseconds. Heartbeats
 * come about once a second per worker, unaligned, so each slot's accepts
 * are divided by the time its own heartbeats covered: one second is enough
 * to compare rates, and a single-thread client is spread within about two. */
const WINDOW_ACCEPTS = 64;
const WINDOW_MS = 1000;
/** A slot's share may be this many times its fair share, or its inverse. */
const SKEW = 1.5;
/** Windows running with the same slot off its share before the spread
 * turns random: a slot that got no new connection at all (one client
 * thread, one NIC queue: every SYN on one CPU) after two; a slot merely far
 * off its share after ten, since two client threads do share one CPU for a
 * few seconds at a time on a busy machine (measured: 95%/5% windows). */
const WINDOWS_IF_NONE = 2;
const WINDOWS_IF_SKEWED = 10;

export class Spread {
  private byCpu: boolean;
  /** Accepts per slot in the current window, and the milliseconds its
   * heartbeats covered (a slot is present once it reported). */
  private readonly accepts = new Map<number, { count: number; ms: number }>();
  /** When each slot last reported. */
  private readonly lastReport = new Map<number, number>();
  /** When the first accepts of the current window were reported; null: none yet. */
  private windowStart: number | null = null;
  /** The slot off its share in the last window, and which way ("1+"), and for how many windows running. */
  private lastSkew: string | null = null;
  private skewStreak = 0;
  /** The slot that got no new connection in the last window, and for how many windows running. */
  private lastNone: number | null = null;
  private noneStreak = 0;

  /** `cpus`: the CPU numbers the workers may run on. */
  constructor(
    choice: SpreadChoice,
    readonly cpus: readonly number[],
  ) {
    this.byCpu = choice === 'cpu';
  }

  /** Whether to pick among `count` healthy slots by CPU: the k-th gets
   * the CPUs numbered k mod count, so their number must divide evenly. */
  usesCpu(count: number): boolean {
    if (!this.byCpu || count < 2) return false;
    const share = this.cpusFor(0, count).length;
    for (let k = 1; k < count; k++) if (this.cpusFor(k, count).length !== share) return false;
    return share > 0;
  }

  /** The CPUs whose connections go to the `position`-th of `count` slots. */
  cpusFor(position: number, count: number): number[] {
    return this.cpus.filter((cpu) => cpu % count === position);
  }

  /** The CPUs a worker of `slot` is pinned to: those of its position among
   * the `healthy` slots when spreading by CPU; null: it may run on any. */
  pinnedCpus(slot: number, healthy: number[]): number[] | null {
    const position = healthy.indexOf(slot);
    return position >= 0 && this.usesCpu(healthy.length) ? this.cpusFor(position, healthy.length) : null;
  }

  /** Counts `count` accepts a worker of `slot` reported at `now`; may turn
   * the spread random for good (the arbiter's next steer applies it). */
  record(slot: number, count: number, healthy: number[], now: number): void {
    const since = this.lastReport.get(slot);
    this.lastReport.set(slot, now);
    if (since === undefined || !this.usesCpu(healthy.length) || !healthy.includes(slot)) return;
    // A window opens with accepts, so an idle spell before a burst does not
    // count as time every slot had to report its share of the burst.
    if (this.windowStart === null) {
      if (count <= 0) return;
      this.windowStart = now;
    }
    const seen = this.accepts.get(slot) ?? { count: 0, ms: 0 };
    seen.count += Math.max(0, count);
    seen.ms += now - since;
    this.accepts.set(slot, seen);
    if (now - this.windowStart < WINDOW_MS || !healthy.every((s) => this.accepts.has(s))) return;
    const seens = healthy.map((s) => this.accepts.get(s) ?? { count: 0, ms: 1 });
    const total = seens.reduce((a, b) => a + b.count, 0);
    if (total < WINDOW_ACCEPTS) return;
    this.accepts.clear();
    // The next window follows at once: a skew seen twice running takes two windows, not three.
    this.windowStart = now;
    const rates = seens.map(({ count, ms }) => count / Math.max(1, ms));
    const sum = rates.reduce((a, b) => a + b, 0);
    const fair = sum / healthy.length;
    const outlier = rates.findIndex((r) => r > fair * SKEW || r < fair / SKEW);
    const skew = outlier < 0 ? null : `${healthy[outlier]}${(rates[outlier] ?? 0) > fair ? '+' : '-'}`;
    // Once is a burst that one worker's heartbeat reported before the
    // others'; the same slot off its share windows running is the CPUs.
    this.skewStreak = skew === null ? 0 : skew === this.lastSkew ? this.skewStreak + 1 : 1;
    this.lastSkew = skew;
    const none = healthy[seens.findIndex((seen) => seen.count === 0)] ?? null;
    this.noneStreak = none === null ? 0 : none === this.lastNone ? this.noneStreak + 1 : 1;
    this.lastNone = none;
    const shares = rates.map((r) => `${Math.round((r / sum) * 100)}%`).join('/');
    if (this.noneStreak < WINDOWS_IF_NONE && this.skewStreak < WINDOWS_IF_SKEWED) {
      if (skew !== null) logger.debug(`New connections arrive unevenly across CPUs (slot shares ${shares}), ${this.skewStreak} windows running`);
      return;
    }
    this.byCpu = false;
    logger.info(`New connections arrive unevenly across CPUs (slot shares ${shares}): spreading them at random`);
  }
}
