// sd_notify: what the arbiter tells systemd when NOTIFY_SOCKET is set
// (Type=notify). READY=1 once a full set of workers is ready, at start and
// again after a HUP reload (announced with RELOADING=1 and MONOTONIC_USEC);
// STOPPING=1 at shutdown; STATUS= whenever the ready count changes;
// WATCHDOG=1 every half WATCHDOG_USEC from the arbiter's loop; MAINPID= when
// a USR2 upgrade hands over to a new arbiter. Sent by the arbiter itself, so
// the unit can keep NotifyAccess=main. The variables are taken out of the
// environment so workers never talk to systemd.

import { logger } from '../log.js';
import { native } from '../native.js';

const VARIABLES = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'] as const;

/** What the arbiter is doing, as a STATUS line says it. */
export interface Progress {
  /** Slots with a ready worker, of any generation. */
  ready: number;
  /** Slots whose worker of the current generation is ready. */
  fresh: number;
  wanted: number;
  /** Worker processes alive, draining ones included. */
  running: number;
  /** Where it serves, as the log names the listeners. */
  addresses: string[];
  stopping: boolean;
}

/** CLOCK_MONOTONIC in microseconds (libuv's hrtime reads that clock). */
const monotonicUsec = (): bigint => process.hrtime.bigint() / 1000n;

export class Notifier {
  /** Half of WATCHDOG_USEC in ms, or null when the watchdog is not ours. */
  private readonly pingMs: number | null;
  private readonly watchdogUsec: string | null;
  private lastPing = 0;
  private status = '';
  /** READY=1 is owed once the next full set of workers is ready: at start, or after a reload. */
  private readyOwed: 'start' | 'reload' | null;
  /** Another arbiter is main now (USR2): nothing more to say. */
  private handedOver = false;
  private failed = false;

  /** The notifier when NOTIFY_SOCKET is set, else null; either way the
   * variables leave `env`. `successor`: this arbiter was started by a USR2
   * upgrade, and the old one tells systemd when it takes over. */
  static take(env: NodeJS.ProcessEnv, successor: boolean): Notifier | null {
    const [socket, usec, pid] = VARIABLES.map((name) => env[name]);
    for (const name of VARIABLES) delete env[name];
    return socket ? new Notifier(socket, usec, pid, successor) : null;
  }

  private constructor(
    private readonly socket: string,
    usec: string | undefined,
    pid: string | undefined,
    successor: boolean,
  ) {
    const watchdog = /^\d+$/.test(usec ?? '') && Number(usec) > 0 && (pid === undefined || pid === String(process.pid));
    this.watchdogUsec = watchdog ? (usec as string) : null;
    this.pingMs = watchdog ? Number(usec) / 2000 : null;
    this.readyOwed = successor ? null : 'start';
    if (this.pingMs !== null) logger.info(`systemd watchdog: pinging every ${this.pingMs / 1000}s`);
  }

  /** For a new arbiter started on USR2: it talks to systemd once it is the
   * main process, and keeps the watchdog (WATCHDOG_PID would name this one). */
  successorEnv(): Record<string, string> {
    return { NOTIFY_SOCKET: this.socket, ...(this.watchdogUsec ? { WATCHDOG_USEC: this.watchdogUsec } : {}) };
  }

  /** From every turn of the arbiter's loop. */
  tick(progress: Progress, now: number): void {
    if (this.handedOver) return;
    const lines: string[] = [];
    if (this.pingMs !== null && now - this.lastPing >= this.pingMs) {
      this.lastPing = now;
      lines.push('WATCHDOG=1');
    }
    if (this.readyOwed !== null && !progress.stopping && progress.fresh >= progress.wanted) {
      this.readyOwed = null;
      lines.push('READY=1');
    }
    const status = describe(progress, this.readyOwed === 'reload');
    if (status !== this.status) {
      this.status = status;
      lines.push(`STATUS=${status}`);
    }
    this.send(lines);
  }

  /** HUP: a new generation is starting; READY=1 follows once it is ready. */
  reloading(): void {
    this.readyOwed = 'reload';
    this.send(['RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`]);
  }

  stopping(): void {
    this.send(['STOPPING=1']);
  }

  /** USR2: the new arbiter `pid` is ready and becomes the service's main process. */
  handOver(pid: number): void {
    this.send([`MAINPID=${pid}`, 'READY=1', `STATUS=upgraded: arbiter pid ${pid} took over`]);
    this.handedOver = true;
  }

  private send(lines: string[]): void {
    if (this.handedOver || lines.length === 0) return;
    try {
      native().sdNotify(this.socket, lines.join('\n'));
      this.failed = false;
    } catch (err) {
      // Said once per run of failures, not at every watchdog ping.
      if (!this.failed) logger.warning(`cannot notify systemd: ${(err as Error).message}`);
      this.failed = true;
    }
  }
}

/** The STATUS line: `2/2 workers ready, serving http://127.0.0.1:8000`. */
function describe({ ready, fresh, wanted, running, addresses, stopping }: Progress, reloading: boolean): string {
  if (stopping) return `stopping: ${running} workers still running`;
  const serving = `${ready}/${wanted} workers ready, serving ${addresses.join(', ')}`;
  return reloading && ready > 0 ? `${serving}; reloading: ${fresh}/${wanted} new workers ready` : serving;
}
