// How new connections are spread over the healthy workers. By CPU (the
// default): the CPU that took a connection's SYN picks the worker, and each
// worker runs on the CPUs whose connections it gets, so all connections of
// one client thread (or one NIC queue) reach one worker on that client's
// core, and on a busy machine the two take turns there. With every worker
// serving every client thread instead, a client waits behind other
// threads' time slices (a p99 of two scheduler ticks). That only pays
// while the CPUs share the load evenly: the arbiter watches the accepts
// per slot and spreads at random, on any CPU, once the same slot is far
// off its share two windows running (one client thread, one NIC queue).

import { logger } from '../log.js';
import type { SpreadChoice } from '../settings/registry.js';

/** A window spans at least this many accepts and milliseconds: heartbeats
 * come about once a second per worker, unaligned, so a short window would
 * count one worker's last second against another's half second. */
const WINDOW_ACCEPTS = 256;
const WINDOW_MS = 5000;
/** A slot's share may be this many times its fair share, or its inverse. */
const SKEW = 1.5;

export class Spread {
  private byCpu: boolean;
  /** Accepts per slot in the current window (a slot is present once it reported). */
  private readonly accepts = new Map<number, number>();
  /** When the first accepts of the current window were reported; null: none yet. */
  private windowStart: number | null = null;
  /** The slot off its share in the last window, and which way ("1+"). */
  private lastSkew: string | null = null;

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
    if (!this.usesCpu(healthy.length) || !healthy.includes(slot)) return;
    // A window opens with accepts, so an idle spell before a burst does not
    // count as time every slot had to report its share of the burst.
    if (this.windowStart === null) {
      if (count <= 0) return;
      this.windowStart = now;
    }
    this.accepts.set(slot, (this.accepts.get(slot) ?? 0) + Math.max(0, count));
    if (now - this.windowStart < WINDOW_MS || !healthy.every((s) => this.accepts.has(s))) return;
    const counts = healthy.map((s) => this.accepts.get(s) ?? 0);
    const total = counts.reduce((a, b) => a + b, 0);
    if (total < WINDOW_ACCEPTS) return;
    this.accepts.clear();
    this.windowStart = null;
    const fair = total / healthy.length;
    const outlier = counts.findIndex((c) => c > fair * SKEW || c < fair / SKEW);
    const skew = outlier < 0 ? null : `${healthy[outlier]}${(counts[outlier] ?? 0) > fair ? '+' : '-'}`;
    // Once is a burst that one worker's heartbeat reported before the
    // others'; the same slot off its share twice running is the CPUs.
    const again = skew !== null && skew === this.lastSkew;
    this.lastSkew = skew;
    if (!again) return;
    this.byCpu = false;
    const shares = counts.map((c) => `${Math.round((c / total) * 100)}%`).join('/');
    logger.info(`New connections arrive unevenly across CPUs (slot shares ${shares}): spreading them at random`);
  }
}
