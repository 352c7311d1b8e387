// One worker process as the arbiter sees it: its slot, code generation,
// lifecycle state and the last heartbeat it reported.

import { type ChildProcess, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type ArbiterMessage, encode, type InFlight, LineDecoder, type WorkerMessage } from '../protocol/messages.js';
import { SPEC_VARIABLE, type WorkerSpec } from '../protocol/spec.js';
import type { ExitReason } from '../settings/hooks.js';

const WORKER_ENTRY = fileURLToPath(new URL('../worker/main.js', import.meta.url));
/** A bench tool, not a setting: workers run under this command line (e.g.
 * `valgrind --tool=callgrind`, `strace -c -f`), see bench/README.md. */
const WRAPPER = (process.env.RWSGI_WORKER_WRAPPER ?? '').split(' ').filter(Boolean);

export type WorkerState = 'booting' | 'ready' | 'draining' | 'aborting';

export type HeartbeatReport = Extract<WorkerMessage, { type: 'hb' }>;

export class WorkerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  state: WorkerState = 'booting';
  readonly spawnedAt: number;
  readyAt = 0;
  lastBeat: number;
  report: HeartbeatReport | null = null;
  /** The oldest request in flight as last reported (heartbeat or busy), and when. */
  private oldest: InFlight | null = null;
  private oldestAt = 0;
  bootError: string | null = null;
  /** Replace it, and why: its --max-requests share, --max-worker-memory, `rwsgi restart-worker`. */
  recycle: ExitReason | null = null;
  /** The CPUs it was last allowed to run on ("" = as spawned: the arbiter's). */
  cpus = '';
  /** The CPU owners it was last told (see the 'owners' message). */
  owners = '';
  /** When to SIGKILL it if it is still there (draining or aborting). */
  killAt = Infinity;
  exited = false;
  /** At --worker-connections or out of descriptors, as it last said. */
  full = false;
  /** The last signal the arbiter sent it. */
  signalled: NodeJS.Signals | null = null;
  /** Why the arbiter ended it, once it decided to (null: it was not asked to go). */
  exitReason: ExitReason | null = null;

  readonly slot: number;
  readonly generation: number;

  constructor(
    spec: WorkerSpec,
    fds: number[],
    now: number,
    onMessage: (w: WorkerProcess, m: WorkerMessage) => void,
    onExit: (w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => void,
  ) {
    this.slot = spec.slot;
    this.generation = spec.generation;
    // Throws when fork itself fails (ENOMEM); the caller handles that.
    const [command, ...args] = [...WRAPPER, process.execPath, WORKER_ENTRY];
    this.child = spawn(command, args, {
      stdio: ['ignore', 'inherit', 'inherit', 'pipe', ...fds],
      env: { ...process.env, [SPEC_VARIABLE]: JSON.stringify(spec) },
    });
    this.pid = this.child.pid ?? -1;
    this.spawnedAt = now;
    this.lastBeat = now;
    // Without a listener an 'error' would end the arbiter: a process that
    // never started (EAGAIN, EMFILE: no pid, no 'exit' event follows) counts
    // as an exit; a failed kill of a live one is followed by its 'exit' anyway.
    this.child.on('error', (err) => {
      if (this.pid !== -1 || this.exited) return;
      this.exited = true;
      onExit(this, null, null, err);
    });
    // Absent when the spawn failed before the pipes were made (EMFILE).
    const pipe = (this.child.stdio?.[3] ?? null) as Readable | null;
    const decoder = new LineDecoder();
    pipe?.setEncoding('utf8');
    pipe?.on('data', (chunk: string) => {
      for (const message of decoder.push(chunk)) onMessage(this, message as WorkerMessage);
    });
    pipe?.on('error', () => {});
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      onExit(this, code, signal);
    });
  }

  send(message: ArbiterMessage): void {
    const pipe = (this.child.stdio?.[3] ?? null) as Writable | null;
    if (pipe && !pipe.destroyed) pipe.write(encode(message));
  }

  kill(signal: NodeJS.Signals): void {
    if (this.exited) return;
    this.signalled = signal;
    this.child.kill(signal);
  }

  /** Stop accepting, finish what is in flight, exit; killed after `graceMs`. */
  drain(graceMs: number, now: number, reason: ExitReason): void {
    if (this.state === 'draining' || this.state === 'aborting') return;
    this.state = 'draining';
    this.exitReason = reason;
    this.killAt = now + graceMs + 1000;
    this.send({ type: 'stop', graceful: true, deadlineMs: graceMs });
  }

  heartbeat(report: HeartbeatReport, now: number): void {
    this.report = report;
    this.lastBeat = now;
    this.noteOldest(report.oldest, now);
  }

  /** The loop turned when that request arrived: the timeout counts from
   * then, so a request is never timed out before it ran --timeout seconds. */
  busy(oldest: InFlight, now: number): void {
    this.lastBeat = Math.max(this.lastBeat, now - oldest.age * 1000);
    this.noteOldest(oldest, now);
  }

  private noteOldest(oldest: InFlight | null, now: number): void {
    this.oldest = oldest;
    this.oldestAt = now;
  }

  /** The oldest request in flight as last reported, aged to `now`. */
  oldestNow(now: number): InFlight | null {
    const { oldest } = this;
    return oldest && { ...oldest, age: Math.round((oldest.age + (now - this.oldestAt) / 1000) * 10) / 10 };
  }

  /** "GET /slow running 31.2s", from the last report, aged to `now`. */
  describeOldest(now: number): string {
    const oldest = this.oldestNow(now);
    if (!oldest) return 'no request was in flight at its last heartbeat';
    return `${oldest.method} ${oldest.path} running ${oldest.age.toFixed(1)}s`;
  }
}
