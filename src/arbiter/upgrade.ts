// In-place upgrade on USR2 (gunicorn's and nginx's binary upgrade): the
// arbiter starts a new arbiter from the rwsgi and Node now installed, with
// the same command line, handing it every listening socket (fds 4.., listed
// in RWSGI_UPGRADE) and a pipe at fd 3. The new one adopts the sockets
// instead of binding (same SO_REUSEPORT groups, same slot order, so its
// steering means what the old one's did), boots its workers and writes
// "ready" on the pipe once the first full set is ready; the old one then
// stops steering and drains like on TERM. If the new one exits or does not
// say ready in time, the old one keeps serving. The old one tells systemd
// the new main pid (see systemd.ts).

import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { logger } from '../log.js';
import type { Activated } from './activation.js';

export const UPGRADE_VARIABLE = 'RWSGI_UPGRADE';
/** The new arbiter's end of the ready pipe. */
const READY_FD = 3;
const FIRST_SOCKET_FD = 4;

export interface HandedListener {
  bind: string;
  address: string;
  /** One socket per slot, in slot order (the group's order). */
  fds: number[];
}

export interface Handover {
  /** The old arbiter's pid. */
  from: number;
  listeners: HandedListener[];
  /** The listeners systemd activated (their binds name the old fds). */
  activated: Activated[];
}

/** In a new arbiter: the sockets handed over, or null when started fresh.
 * The variable is removed so its workers and successors do not see it. */
export function takeHandover(env: NodeJS.ProcessEnv = process.env): Handover | null {
  const text = env[UPGRADE_VARIABLE];
  delete env[UPGRADE_VARIABLE];
  if (text === undefined) return null;
  const h = JSON.parse(text) as Handover;
  const slots = h.listeners[0]?.fds.length ?? 0;
  if (!Number.isInteger(h.from) || slots === 0 || h.listeners.some((l) => l.fds.length !== slots)) {
    throw new Error(`${UPGRADE_VARIABLE} does not describe a set of listening sockets: ${text}`);
  }
  // An arbiter from before socket activation hands over none.
  return { ...h, activated: h.activated ?? [] };
}

/** In a new arbiter, once its workers are ready: tells the old one. */
export function announceReady(handover: Handover): void {
  try {
    writeSync(READY_FD, 'ready\n');
    closeSync(READY_FD);
  } catch (err) {
    logger.warning(`Upgrade: cannot tell the old arbiter (pid:${handover.from}) we are ready: ${(err as Error).message}`);
  }
}

/** The old arbiter's side of one upgrade. */
export class Upgrade {
  private child: ChildProcess | null = null;
  private timer: NodeJS.Timeout | null = null;
  private settled = false;

  constructor(
    private readonly pidfile: string | null,
    private readonly readyWithinMs: number,
    private readonly onReady: (pid: number) => void,
  ) {}

  get running(): boolean {
    return this.child !== null && !this.settled;
  }

  /** `env`: what the new arbiter gets on top of this one's environment. */
  start(listeners: HandedListener[], activated: Activated[], env: Record<string, string>): void {
    const fds = listeners.flatMap((l) => l.fds);
    let next = FIRST_SOCKET_FD;
    const handed = listeners.map((l) => ({ ...l, fds: l.fds.map(() => next++) }));
    const handover: Handover = { from: process.pid, listeners: handed, activated };
    // process.argv[1] and process.execPath name the files now installed,
    // so an updated rwsgi or Node is what starts.
    const [script = '', ...args] = process.argv.slice(1);
    this.renamePidfile(false);
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...process.execArgv, script, ...args], {
        stdio: ['inherit', 'inherit', 'inherit', 'pipe', ...fds],
        env: { ...process.env, ...env, [UPGRADE_VARIABLE]: JSON.stringify(handover) },
      });
    } catch (err) {
      return this.fail(`cannot start a new arbiter: ${(err as Error).message}`);
    }
    this.child = child;
    child.on('error', (err) => this.fail(`cannot start a new arbiter: ${err.message}`));
    child.on('exit', (code, signal) => this.fail(`the new arbiter (pid:${child.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before its workers were ready`));
    const pipe = child.stdio[3] as Readable | null;
    pipe?.setEncoding('utf8');
    pipe?.on('data', (text: string) => {
      if (!text.includes('ready') || this.settled) return;
      this.settled = true;
      this.clear();
      child.unref();
      pipe.destroy();
      this.onReady(child.pid ?? -1);
    });
    pipe?.on('error', () => {});
    this.timer = setTimeout(() => {
      this.fail(`the new arbiter (pid:${child.pid}) was not ready within ${this.readyWithinMs / 1000}s; stopping it`);
      child.kill('SIGQUIT');
    }, this.readyWithinMs);
    logger.info(`Upgrade: started a new arbiter with pid: ${child.pid} (${process.execPath} ${script})`);
  }

  /** The old arbiter exits: its renamed pid file goes with it. */
  finish(): void {
    const old = this.oldbin();
    try {
      if (old && readFileSync(old, 'utf8').trim() === String(process.pid)) unlinkSync(old);
    } catch {
      // Already gone.
    }
  }

  private fail(why: string): void {
    if (this.settled) return;
    this.settled = true;
    this.clear();
    this.renamePidfile(true);
    logger.error(`Upgrade failed, this arbiter keeps serving: ${why}`);
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private oldbin(): string | null {
    return this.pidfile === null ? null : `${this.pidfile}.oldbin`;
  }

  /** `<pidfile>.oldbin` while both arbiters run; back when the new one failed. */
  private renamePidfile(back: boolean): void {
    const old = this.oldbin();
    if (this.pidfile === null || old === null) return;
    try {
      if (back) renameSync(old, this.pidfile);
      else renameSync(this.pidfile, old);
    } catch (err) {
      logger.warning(`Upgrade: cannot rename the pid file: ${(err as Error).message}`);
    }
  }
}
