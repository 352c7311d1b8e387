// The arbiter: binds one SO_REUSEPORT socket per worker slot and address
// (or one shared Unix socket, see listeners.ts) and keeps them for its lifetime; runs one worker per slot (fd 3 = pipe,
// fds 4.. = the slot's sockets). Policy is one reconcile step run after
// every event and on a short tick: signals and messages only change the
// wanted state (slot count, code generation, stopping); `reconcile` kills
// what timed out, starts and drains workers until the actual state matches,
// and steers new connections to the healthy slots.

import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { type Config, heartbeatMs } from '../config.js';
import { EXIT_APP_LOAD, EXIT_CONFIG, RwsgiError } from '../errors.js';
import { describe, logger, reopenLogFile, setLogFile, setLogLevel } from '../log.js';
import { native } from '../native.js';
import { handoffName, type WorkerMessage } from '../protocol/messages.js';
import { awaitHook, type ExitReason, fireHook, type ServerInfo } from '../settings/hooks.js';
import { inheritedFd, unixPath } from '../settings/bind.js';
import type { Resolved, Source } from '../settings/resolve.js';
import { VERSION } from '../version.js';
import { type Activated, activatedBinds, takeActivation } from './activation.js';
import { Backoff } from './backoff.js';
import { HealthServer } from './health-server.js';
import { answer, type Controlled } from './control.js';
import { type ControlSocket, openControlSocket } from './control-socket.js';
import { closeListener, closeSlotSocket, type Listener, type Opened, openListener, slotSocket, url } from './listeners.js';
import { MetricsBook, type ServerView } from './metrics.js';
import { appDirectory, Reloader } from './reload.js';
import { recycleFor } from './recycle.js';
import { type Snapshot, SlotRecords, takeSnapshot } from './snapshot.js';
import { announceReady, type Handover, takeHandover, Upgrade } from './upgrade.js';
import { Spread } from './spread.js';
import { STACK_WAIT_MS, type StackReport, StackRequests } from './stack.js';
import { Notifier, type Progress } from './systemd.js';
import { checkTls, TICKET_ROTATION_MS, TicketKeys } from './tls.js';
import { servesTls, tlsListenerIndexes } from '../settings/tls.js';
import { WorkerProcess } from './worker-process.js';

const TICK_MS = 100;
/** Queued connections passed from a full worker's socket per tick and socket. */
const QUEUE_PASS_MAX = 256;
const QUICK_STOP_MS = 2000;
const ABORT_GRACE_MS = 1000;
/** A retiring slot gets no new connections for this long before its worker drains. */
const RETIRE_SETTLE_MS = 200;
/** A new arbiter gets this long to start, on top of its workers' --boot-timeout. */
const UPGRADE_START_S = 10;
/** `/live` answers 503 once the reconcile loop has not run for this long. */
const LIVE_WITHIN_MS = 10_000;

const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGUSR1', 'SIGUSR2'] as const;
type Signal = (typeof SIGNALS)[number];

interface Slot {
  index: number;
  /** One socket per listener, in listener order. */
  fds: number[];
  backoff: Backoff;
  nextSpawnAt: number;
  retiringSince: number | null;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

export class Arbiter {
  private readonly listeners: Listener[] = [];
  private readonly slots: Slot[] = [];
  private workers: WorkerProcess[] = [];
  private wantedCount: number;
  private generation = 1;
  private stopping: 'graceful' | 'quick' | null = null;
  private stopDeadline = Infinity;
  private everReady = false;
  private exitCode = 0;
  private steeredTo = '';
  private readonly signals: Signal[] = [];
  private tick: NodeJS.Timeout | null = null;
  private finished: (code: number) => void = () => {};
  private hbMs: number;
  private readonly spread: Spread;
  private readonly stacks = new StackRequests();
  private reloader: Reloader | null = null;
  /** USR2: the upgrade this arbiter started. */
  private upgrading: Upgrade | null = null;
  /** Set once a new arbiter took over: it steers the shared sockets now. */
  private handedOver = false;
  /** The sockets an old arbiter handed this one (null: it bound its own). */
  private handover: Handover | null = null;
  /** The sockets systemd activated (or an old arbiter handed over as such). */
  private activated: Activated[] = [];
  /** Where the bind setting came from: activated sockets replace only the default. */
  private bindSource: Source;
  private notifier: Notifier | null = null;
  /** --metrics-bind: /metrics, /ready, /live. */
  private health: HealthServer | null = null;
  private readonly metrics = new MetricsBook();
  private lastTick = Date.now();
  /** The slots new connections went to at the last reconcile step. */
  private steered: number[] = [];
  /** TERM with --shutdown-delay: when the graceful stop begins (not ready meanwhile). */
  private stopAt: number | null = null;

  private config: Config;
  /** The config file the settings came from, for the workers' hooks. */
  private configFile: string | null;
  /** Set once the first full set of workers was ready (whenReady ran). */
  private wasReady = false;
  /** The arbiter, as its hooks see it. */
  private readonly info: ServerInfo;
  private readonly startedAt = Date.now();
  private readonly records = new SlotRecords();
  private control: ControlSocket | null = null;
  /** Session-ticket keys for TLS workers, made once certificates are set. */
  private ticketKeys: TicketKeys | null = null;

  /** `reread` resolves the settings again, for HUP. */
  constructor(
    settings: Resolved,
    private readonly reread: () => Promise<Resolved>,
  ) {
    const { config } = settings;
    this.config = config;
    this.configFile = settings.file?.path ?? null;
    this.wantedCount = config.workers;
    this.bindSource = settings.sources.bind;
    const self = this;
    this.info = {
      pid: process.pid,
      get config() {
        return self.config;
      },
      get addresses() {
        return self.listeners.map((l) => l.address);
      },
      get workers() {
        return self.wantedCount;
      },
    };
    this.hbMs = heartbeatMs(config);
    this.spread = new Spread(config.spread, native().allowedCpus());
  }

  async run(): Promise<number> {
    logger.info(`Starting rwsgi ${VERSION}`);
    this.activated = takeActivation();
    const { onStarting } = this.config;
    if (onStarting) {
      try {
        await awaitHook(() => onStarting(this.info), this.config.bootTimeout * 1000);
      } catch (err) {
        throw new RwsgiError('RWSGI_ERR_CONFIG', `onStarting hook failed: ${describe(err)}`, EXIT_CONFIG);
      }
    }
    try {
      this.handover = takeHandover();
    } catch (err) {
      throw new RwsgiError('RWSGI_ERR_CONFIG', (err as Error).message, EXIT_CONFIG);
    }
    if (this.handover) this.activated = this.handover.activated;
    this.config.bind = activatedBinds(this.activated, this.config.bind, this.bindSource);
    this.notifier = Notifier.take(process.env, this.handover !== null);
    const accessLog = this.config.accessLogfile;
    const unwritable = accessLog === null ? null : native().checkAccessLogFile(accessLog);
    if (unwritable !== null) throw new RwsgiError('RWSGI_ERR_CONFIG', `--access-logfile ${accessLog}: ${unwritable}`, EXIT_CONFIG);
    checkTls(this.config);
    this.writePidfile();
    try {
      this.control = await openControlSocket(this.config, this.handover !== null, (request) => answer(request, this.controlled));
      await this.bind();
      await this.serveHealth();
    } catch (err) {
      this.control?.close(false);
      this.removePidfile();
      throw err;
    }
    logger.info('Using worker: native');
    for (const signal of SIGNALS) {
      process.on(signal, () => {
        this.signals.push(signal);
        setImmediate(() => this.reconcile());
      });
    }
    this.tick = setInterval(() => this.reconcile(), TICK_MS);
    setInterval(() => this.rotateTicketKeys(), TICKET_ROTATION_MS).unref();
    this.watchCode();
    this.reconcile();
    return new Promise((resolve) => {
      this.finished = resolve;
    });
  }

  /** --metrics-bind. A new arbiter (USR2) waits for the old one to free the port. */
  private async serveHealth(): Promise<void> {
    const bind = this.config.metricsBind;
    if (bind === null) return;
    const probe = {
      // Once a new arbiter (USR2) took over, its ready workers serve the sockets.
      ready: () => this.handedOver || (!this.stopping && this.stopAt === null && this.workers.some((w) => w.state === 'ready')),
      live: () => Date.now() - this.lastTick < LIVE_WITHIN_MS,
      metrics: () => this.metrics.render(this.view(), Date.now()),
    };
    if (!this.handover) this.health = await HealthServer.start(bind, probe);
    else {
      void HealthServer.startWhenFree(bind, probe, () => this.stopping !== null).then((h) => {
        if (this.tick === null) h?.close();
        else this.health = h;
      });
    }
  }

  /** The slots, listeners and steering as /metrics shows them. */
  private view(): ServerView {
    return {
      slots: this.slots.map((slot) => ({
        index: slot.index,
        retiring: slot.index >= this.wantedCount,
        workers: this.workers.filter((w) => w.slot === slot.index),
        fds: slot.fds,
      })),
      listeners: this.listeners.map((l) => ({ url: url(l), shared: l.shared !== null })),
      snapshot: this.snapshot(),
    };
  }

  private writePidfile(): void {
    const file = this.config.pidfile;
    if (!file) return;
    if (existsSync(file)) {
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
        throw new RwsgiError('RWSGI_ERR_CONFIG', `already running on pid ${pid} (pidfile ${file})`, EXIT_CONFIG);
      }
    }
    writeFileSync(file, `${process.pid}\n`);
  }

  private removePidfile(): void {
    const file = this.config.pidfile;
    try {
      if (file && readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file);
    } catch {
      // Already gone.
    }
  }

  private async bind(): Promise<void> {
    if (this.handover) return this.adopt(this.handover);
    for (let i = 0; i < this.config.workers; i++) this.slots.push(this.newSlot(i, []));
    for (const bind of this.config.bind) this.addListener(await this.listen(bind));
  }

  /** USR2, in the new arbiter: the old one's sockets, in their slots (the
   * groups' order, which steering counts on), then the binds of the settings. */
  private async adopt(handover: Handover): Promise<void> {
    const count = handover.listeners[0]?.fds.length ?? 0;
    // A shared socket (unix:, fd://) came once per slot: every slot serves
    // the first copy (the others stay open: workers close them as strays).
    const listeners = handover.listeners.map(({ bind, address, fds }) => {
      const shared = unixPath(bind) !== null || inheritedFd(bind) !== null ? (fds[0] as number) : null;
      return { listener: { bind, address, shared, path: unixPath(bind) }, fds: shared === null ? fds : fds.map(() => shared) };
    });
    for (let i = 0; i < count; i++) this.slots.push(this.newSlot(i, listeners.map((l) => l.fds[i] as number)));
    for (const { listener } of listeners) {
      this.listeners.push(listener);
      logger.info(`Listening at: ${url(listener, servesTls(this.config, listener.bind))} (${process.pid}), handed over by pid ${handover.from}`);
    }
    try {
      await this.rebind(this.config.bind);
    } catch (err) {
      logger.error(`Upgrade: keeping the listeners handed over: ${(err as Error).message}`);
    }
  }

  /** The sockets of each slot at `bind`; the caller owns them. */
  private listen(bind: string): Promise<Opened> {
    return openListener(bind, this.slots.length, this.config.backlog, this.config.umask);
  }

  private addListener({ listener, fds }: Opened): void {
    fds.forEach((fd, i) => this.slots[i]?.fds.push(fd));
    this.listeners.push(listener);
    logger.info(`Listening at: ${url(listener, servesTls(this.config, listener.bind))} (${process.pid})`);
  }

  /** HUP with other binds: listens at the new ones and closes the removed
   * ones; the addresses that stay keep their sockets (and queued
   * connections). Workers of the next generation get the new set; the
   * draining ones keep their copies until they exit. All or nothing: if a
   * new address cannot be bound, the listeners stay as they were. */
  private async rebind(wanted: string[]): Promise<void> {
    const added = wanted.filter((b, i) => wanted.indexOf(b) === i && !this.listeners.some((l) => l.bind === b));
    const removed = this.listeners.filter((l) => !wanted.includes(l.bind));
    const opened: Opened[] = [];
    try {
      for (const bind of added) opened.push(await this.listen(bind));
    } catch (err) {
      for (const o of opened) {
        for (const fd of o.fds) closeSlotSocket(o.listener, fd);
        closeListener(o.listener);
      }
      throw err;
    }
    for (const listener of removed) {
      const i = this.listeners.indexOf(listener);
      for (const slot of this.slots) for (const fd of slot.fds.splice(i, 1)) closeSlotSocket(listener, fd);
      closeListener(listener);
      this.listeners.splice(i, 1);
      logger.info(`Stopped listening at: ${url(listener)}`);
    }
    for (const o of opened) this.addListener(o);
    // Steer the new sockets' groups too.
    if (opened.length > 0 || removed.length > 0) this.steeredTo = '';
  }

  private newSlot(index: number, fds: number[]): Slot {
    return { index, fds, backoff: new Backoff(), nextSpawnAt: 0, retiringSince: null };
  }

  // ---- events: they only change the wanted state ----

  private handleSignal(signal: Signal): void {
    logger.info(`Handling signal: ${signal.slice(3).toLowerCase()}`);
    switch (signal) {
      case 'SIGTERM':
        if (this.config.shutdownDelay > 0 && !this.stopping) this.delayStop();
        else this.stop('graceful');
        break;
      case 'SIGINT':
      case 'SIGQUIT':
        this.stop('quick');
        break;
      case 'SIGHUP':
        if (!this.stopping) void this.reload();
        break;
      case 'SIGTTIN':
        this.setWanted(this.wantedCount + 1);
        break;
      case 'SIGTTOU':
        this.setWanted(Math.max(1, this.wantedCount - 1));
        break;
      case 'SIGUSR1':
        reopenLogFile();
        for (const w of this.workers) w.kill('SIGUSR1');
        break;
      case 'SIGUSR2':
        this.upgrade();
        break;
    }
  }

  /** USR2: a new arbiter from the installed rwsgi and Node takes over the
   * sockets; once its workers are ready this one drains and exits. */
  private upgrade(): void {
    if (this.stopping || this.upgrading?.running) {
      logger.warning(`Ignoring signal usr2: ${this.stopping ? 'stopping' : 'an upgrade is under way'}`);
      return;
    }
    const readyWithinMs = (this.config.bootTimeout + UPGRADE_START_S) * 1000;
    this.upgrading = new Upgrade(this.config.pidfile, readyWithinMs, (pid) => {
      logger.info(`Upgrade: the new arbiter (pid:${pid}) is ready; this one (pid:${process.pid}) drains and exits`);
      this.handedOver = true;
      this.notifier?.handOver(pid);
      this.stop('graceful');
    });
    const listeners = this.listeners.map((l, i) => ({ ...l, fds: this.slots.map((slot) => slot.fds[i] as number) }));
    this.upgrading.start(listeners, this.activated, this.notifier?.successorEnv() ?? {});
  }

  /** --reload: an edit settled is a HUP (settings and code). */
  private watchCode(): void {
    const { reload, reloadExtraFiles, app } = this.config;
    if (!reload || app === null) return;
    this.reloader = new Reloader(appDirectory(app), reloadExtraFiles, (files) => {
      if (this.stopping) return;
      const more = files.length > 1 ? ` (and ${files.length - 1} more)` : '';
      logger.info(`Reload: ${files[0]}${more} changed`);
      void this.reload();
    });
    this.reloader.start();
  }

  private setWanted(count: number): void {
    const old = this.wantedCount;
    this.wantedCount = count;
    logger.info(`Number of workers: ${count}`);
    const { nworkersChanged } = this.config;
    if (nworkersChanged && count !== old) fireHook('nworkersChanged', () => nworkersChanged(this.info, count, old));
  }

  /** HUP: the settings read again (the config file included), then a new
   * generation of workers with them. Settings that do not resolve keep the
   * running ones; the code is reloaded either way. */
  private async reload(): Promise<void> {
    try {
      await this.apply(await this.reread());
    } catch (err) {
      const why = err instanceof RwsgiError ? err.message : describe(err);
      logger.error(`Reload: the settings do not resolve, keeping the running ones: ${why}`);
    }
    if (this.stopping) return;
    try {
      // New workers read the certificate files afresh: broken ones keep the running workers.
      checkTls(this.config);
    } catch (err) {
      logger.error(`Reload: TLS cannot be served, keeping the running workers: ${(err as Error).message}`);
      return;
    }
    this.generation++;
    this.notifier?.reloading();
    logger.info(`Reloading: starting generation ${this.generation} workers`);
    const { onReload } = this.config;
    if (onReload) fireHook('onReload', () => onReload(this.info));
    this.reconcile();
  }

  /** Takes reloaded settings: new workers get them, and the listeners
   * follow `bind`; what only a restart can change is said so and left as it is. */
  private async apply(next: Resolved): Promise<void> {
    next.config.bind = activatedBinds(this.activated, next.config.bind, next.sources.bind);
    try {
      await this.rebind(next.config.bind);
    } catch (err) {
      logger.error(`Reload: keeping the listeners as they were: ${(err as Error).message}`);
      next.config.bind = this.config.bind;
    }
    const fixed = (['backlog', 'spread', 'pidfile', 'reload', 'reloadExtraFiles', 'metricsBind', 'controlSocket', 'noControlSocket'] as const).filter(
      (name) => JSON.stringify(next.config[name]) !== JSON.stringify(this.config[name]),
    );
    for (const name of fixed) {
      logger.warning(`Reload: ${name} changed; it takes a restart, keeping ${JSON.stringify(this.config[name])}`);
      (next.config as Record<string, unknown>)[name] = this.config[name];
    }
    const workers = next.config.workers;
    this.config = next.config;
    this.configFile = next.file?.path ?? null;
    this.hbMs = heartbeatMs(this.config);
    setLogLevel(this.config.logLevel);
    setLogFile(this.config.errorLogfile);
    if (workers !== this.wantedCount) this.setWanted(workers);
  }

  /** --shutdown-delay: not ready at once, serving on until the graceful stop. */
  private delayStop(): void {
    if (this.stopAt !== null) return;
    this.stopAt = Date.now() + this.config.shutdownDelay * 1000;
    logger.info(`Shutdown delay: /ready says 503, workers serve ${this.config.shutdownDelay}s more before draining`);
  }

  private stop(mode: 'graceful' | 'quick'): void {
    if (this.stopping === 'quick' || this.stopping === mode) return;
    this.stopping = mode;
    this.notifier?.stopping();
    this.reloader?.close();
    const now = Date.now();
    if (mode === 'graceful') {
      this.stopDeadline = now + this.config.gracefulTimeout * 1000 + 1000;
      for (const w of this.workers) w.drain(this.config.gracefulTimeout * 1000, now, 'stop');
    } else {
      this.stopDeadline = now + QUICK_STOP_MS;
      for (const w of this.workers) w.kill('SIGQUIT');
    }
  }

  private onMessage = (w: WorkerProcess, message: WorkerMessage): void => {
    const now = Date.now();
    switch (message.type) {
      case 'ready':
        w.lastBeat = now;
        w.readyAt = now;
        if (w.state === 'booting') w.state = 'ready';
        this.everReady = true;
        logger.debug(`Worker ready (pid:${w.pid}, slot ${w.slot}, generation ${w.generation})`);
        this.maybeReady();
        break;
      case 'hb': {
        this.spread.record(w.slot, message.accepted - (w.report?.accepted ?? 0), this.healthySlots(now), now);
        w.heartbeat(message, now);
        this.metrics.heartbeat(w, message.metrics, now);
        const recycle = w.recycle === null && w.state === 'ready' ? recycleFor(this.config, w.pid, message) : null;
        if (recycle) {
          w.recycle = recycle.reason;
          logger.info(`Worker (pid:${w.pid}) ${recycle.why}: replacing it`);
        }
        break;
      }
      case 'busy':
        w.busy(message.oldest, now);
        break;
      case 'boot-error':
        w.bootError = message.reason;
        break;
      case 'capacity':
        w.full = message.full;
        logger.debug(`Worker (pid:${w.pid}) ${w.full ? 'is full: new connections go to the others' : 'has room again'}`);
        break;
      case 'stack':
        this.stacks.answer(w, message);
        break;
    }
    this.reconcile();
  };

  /** The current JavaScript stack and in-flight requests of worker `pid`
   * (for `rwsgi dump`); rejects if no worker of this server has that pid. */
  requestStack(pid: number): Promise<StackReport> {
    const w = this.workers.find((x) => x.pid === pid);
    if (!w) return Promise.reject(new Error(`no worker with pid ${pid}`));
    return this.stacks.ask(w);
  }

  /** whenReady: once, when the first full set of workers is ready. */
  private maybeReady(): void {
    if (this.wasReady || this.workers.filter((x) => x.state === 'ready').length < this.wantedCount) return;
    this.wasReady = true;
    const { whenReady } = this.config;
    if (whenReady) fireHook('whenReady', () => whenReady(this.info));
    if (this.handover) announceReady(this.handover);
  }

  private onExit = (w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): void => {
    this.workers = this.workers.filter((x) => x !== w);
    this.stacks.exited(w);
    const { workerExit } = this.config;
    const reason: ExitReason = w.bootError !== null ? 'boot-failure' : (w.exitReason ?? (this.stopping ? 'stop' : 'crash'));
    // A spawn that failed started no process: nothing exited.
    if (!spawnError) this.metrics.exited(w, reason, Date.now());
    if (!spawnError) this.records.exited(w.slot, { pid: w.pid, reason, exitCode: code, signal }, Date.now());
    if (workerExit && !spawnError) {
      const exit = { pid: w.pid, slot: w.slot, generation: w.generation, exitCode: code, signal, reason };
      fireHook('workerExit', () => workerExit(this.info, exit));
    }
    const how = signal ? `was killed by signal ${signal}` : `exited with code ${code}`;
    const slot = this.slots[w.slot];
    if (spawnError) {
      if (slot) this.spawnFailed(slot, spawnError);
    } else if (w.bootError !== null) {
      this.bootFailed(w, w.bootError);
    } else if (this.stopping || w.state === 'draining') {
      // Its replacement (if any) is already there; a death by a signal the
      // arbiter did not send while draining is still a crash to report.
      if (signal && signal !== w.signalled) logger.error(`Worker (pid:${w.pid}) ${how} while ${this.stopping ? 'stopping' : 'draining'}`);
      else logger.info(`Worker exiting (pid: ${w.pid})`);
    } else if (slot) {
      const now = Date.now();
      const delay = slot.backoff.failed(w.readyAt ? now - w.readyAt : 0);
      slot.nextSpawnAt = now + delay;
      logger.error(`Worker (pid:${w.pid}) ${how}; respawning in ${(delay / 1000).toFixed(1)}s (backoff step ${slot.backoff.step})`);
    }
    this.reconcile();
  };

  private bootFailed(w: WorkerProcess, reason: string): void {
    const serving = this.workers.filter((x) => x.state === 'ready' && x.generation < w.generation);
    if (!this.everReady) {
      // The app cannot load at all: say why once and stop, no respawn storm.
      if (this.exitCode !== EXIT_APP_LOAD) {
        logger.error(`Exception in worker process (pid:${w.pid}):\n${reason}`);
        logger.error('App failed to load');
      }
      this.exitCode = EXIT_APP_LOAD;
      this.stop('quick');
    } else if (serving.length > 0 && w.generation === this.generation) {
      const keep = Math.max(...serving.map((x) => x.generation));
      logger.error(`Reload failed, generation ${keep} workers keep serving. New workers cannot load the app:\n${reason}`);
      this.generation = keep;
    } else {
      const slot = this.slots[w.slot];
      if (!slot) return;
      const delay = slot.backoff.failed(0);
      slot.nextSpawnAt = Date.now() + delay;
      logger.error(`Worker (pid:${w.pid}) failed to boot; retrying in ${(delay / 1000).toFixed(1)}s:\n${reason}`);
    }
  }

  // ---- the reconcile step ----

  private reconcile(): void {
    for (let s = this.signals.shift(); s !== undefined; s = this.signals.shift()) this.handleSignal(s);
    const now = Date.now();
    this.notifier?.tick(this.progress(), now);
    this.lastTick = now;
    if (this.stopAt !== null && now >= this.stopAt && !this.stopping) {
      logger.info('Shutdown delay over: draining');
      this.stop('graceful');
    }
    this.murderWorkers(now);
    if (this.stopping) {
      if (now >= this.stopDeadline) for (const w of this.workers) w.kill('SIGKILL');
      if (this.workers.length === 0) this.shutdown();
      return;
    }
    this.manageWorkers(now);
    if (this.handedOver) return;
    const steered = this.roomySlots(this.healthySlots(now));
    this.steered = steered;
    this.steer(steered);
    this.pin(steered);
    this.passQueued(steered);
  }

  /** How far the workers are, for systemd's STATUS and READY. */
  private progress(): Progress {
    const ready = this.workers.filter((w) => w.state === 'ready');
    const slots = (ws: WorkerProcess[]): number => new Set(ws.filter((w) => w.slot < this.wantedCount).map((w) => w.slot)).size;
    const fresh = slots(ready.filter((w) => w.generation >= this.generation));
    const { wantedCount: wanted, workers } = this;
    // An activated socket by where it listens rather than by its descriptor.
    const addresses = this.listeners.map((l) => this.activated.find((a) => a.bind === l.bind)?.address ?? url(l));
    return { ready: slots(ready), fresh, wanted, running: workers.length, addresses, stopping: this.stopping !== null };
  }

  /** Kills workers whose heartbeat stopped or that never booted. */
  private murderWorkers(now: number): void {
    const timeoutMs = this.config.timeout * 1000;
    for (const w of this.workers) {
      if (now >= w.killAt) {
        w.kill('SIGKILL');
        continue;
      }
      if (w.state === 'booting') {
        if (now - w.spawnedAt > this.config.bootTimeout * 1000) {
          logger.error(`Worker (pid:${w.pid}) did not boot within ${this.config.bootTimeout}s`);
          w.bootError = `no 'ready' within --boot-timeout ${this.config.bootTimeout}s`;
          w.state = 'aborting';
          w.kill('SIGKILL');
        }
      } else if (w.state !== 'aborting' && timeoutMs > 0 && now - w.lastBeat > timeoutMs) {
        logger.critical(`WORKER TIMEOUT (pid:${w.pid}) ${w.describeOldest(now)}`);
        w.state = 'aborting';
        w.exitReason = 'timeout';
        // Its JavaScript stack first (at most STACK_WAIT_MS), then SIGABRT.
        w.killAt = now + STACK_WAIT_MS + ABORT_GRACE_MS;
        this.stacks.abort(w, ABORT_GRACE_MS);
      }
    }
  }

  /** Makes the workers match the wanted slot count and generation. */
  private manageWorkers(now: number): void {
    while (this.slots.length < this.wantedCount) this.addSlot();
    for (const slot of [...this.slots]) {
      const mine = this.workers.filter((w) => w.slot === slot.index);
      if (slot.index >= this.wantedCount) {
        this.retire(slot, mine, now);
        continue;
      }
      slot.retiringSince = null;
      const live = mine.filter((w) => w.state === 'booting' || w.state === 'ready');
      const ready = live.filter((w) => w.state === 'ready');
      const booting = live.some((w) => w.state === 'booting');
      const isFresh = (w: WorkerProcess): boolean => w.generation >= this.generation && w.recycle === null;
      const fresh = ready.filter(isFresh);
      const needed = live.length === 0 || (fresh.length === 0 && !booting);
      if (needed && now >= slot.nextSpawnAt) this.spawn(slot, now);
      // A current worker is ready: every other one of the slot drains.
      const keep = fresh.reduce<WorkerProcess | null>((a, w) => (a && a.spawnedAt > w.spawnedAt ? a : w), null);
      if (keep) for (const w of ready) if (w !== keep) w.drain(this.config.gracefulTimeout * 1000, now, w.recycle ?? 'reload');
    }
  }

  private spawn(slot: Slot, now: number): void {
    const { preSpawn } = this.config;
    if (preSpawn) fireHook('preSpawn', () => preSpawn(this.info, { pid: null, slot: slot.index, generation: this.generation }));
    const spec = {
      config: this.config,
      configFile: this.configFile,
      listeners: slot.fds.length,
      slot: slot.index,
      generation: this.generation,
      strayFds: this.handover?.listeners.flatMap((l) => l.fds) ?? [],
      tls: this.tlsSpec(),
    };
    let w: WorkerProcess;
    try {
      w = new WorkerProcess(spec, slot.fds, now, this.onMessage, this.onExit);
    } catch (err) {
      this.spawnFailed(slot, err as Error);
      return;
    }
    this.workers.push(w);
    // Without a pid the spawn failed; its 'error' event reports it (onExit).
    if (w.pid !== -1) logger.info(`Booting worker with pid: ${w.pid}`);
  }

  /** Which of this arbiter's listeners serve TLS, with the ticket keys. */
  private tlsSpec(): { listeners: number[]; ticketKeys: string[] } | null {
    const listeners = tlsListenerIndexes(this.config, this.listeners.map((l) => l.bind));
    if (listeners.length === 0) return null;
    this.ticketKeys ??= new TicketKeys();
    return { listeners, ticketKeys: this.ticketKeys.current() };
  }

  private rotateTicketKeys(): void {
    if (!this.ticketKeys) return;
    const keys = this.ticketKeys.rotate();
    for (const w of this.workers) w.send({ type: 'tls-keys', keys });
  }

  /** The system would not start a process (out of processes, memory or
   * descriptors): retry with the slot's backoff, as after a crash. */
  private spawnFailed(slot: Slot, err: Error): void {
    const delay = slot.backoff.failed(0);
    slot.nextSpawnAt = Date.now() + delay;
    logger.error(`Cannot start a worker (${err.message}); retrying in ${(delay / 1000).toFixed(1)}s (backoff step ${slot.backoff.step})`);
  }

  private addSlot(): void {
    const fds = this.listeners.map((l) => slotSocket(l, this.config.backlog));
    this.slots.push(this.newSlot(this.slots.length, fds));
  }

  /** TTOU: steer new connections away, then drain, then close the sockets. */
  private retire(slot: Slot, mine: WorkerProcess[], now: number): void {
    slot.retiringSince ??= now;
    if (now - slot.retiringSince < RETIRE_SETTLE_MS) return;
    for (const w of mine) w.drain(this.config.gracefulTimeout * 1000, now, 'scale-down');
    const last = this.slots[this.slots.length - 1];
    if (mine.length === 0 && last === slot) {
      this.closeSlot(slot);
      this.slots.pop();
    }
  }

  private closeSlot(slot: Slot): void {
    slot.fds.forEach((fd, i) => closeSlotSocket(this.listeners[i], fd));
  }

  /** A ready worker whose heartbeat is older than this gets no new connections. */
  private get lateMs(): number {
    return this.hbMs * 2.5;
  }

  /** Slots with a ready, punctual worker. */
  private healthySlots(now: number): number[] {
    const { lateMs } = this;
    return this.slots
      .filter(
        (slot) =>
          slot.index < this.wantedCount &&
          this.workers.some((w) => w.slot === slot.index && w.state === 'ready' && now - w.lastBeat <= lateMs),
      )
      .map((slot) => slot.index);
  }

  /** The healthy slots whose worker has room; all healthy ones if none has. */
  private roomySlots(healthy: number[]): number[] {
    const full = new Set(this.workers.filter((w) => w.full && w.state === 'ready').map((w) => w.slot));
    const roomy = healthy.filter((slot) => !full.has(slot));
    return roomy.length > 0 ? roomy : healthy;
  }

  /** Connections already queued on a full worker's sockets go to a worker
   * with room, rather than wait there (bounded per tick). */
  private passQueued(steered: number[]): void {
    const target = this.workers.find((w) => w.state === 'ready' && !w.full && steered.includes(w.slot));
    if (!target) return;
    for (const w of this.workers) {
      if (!w.full || w.state !== 'ready' || steered.includes(w.slot)) continue;
      for (const fd of this.slots[w.slot]?.fds ?? []) {
        try {
          const passed = native().passQueued(fd, handoffName(process.pid, target.pid), QUEUE_PASS_MAX);
          if (passed > 0) logger.debug(`Passed ${passed} connections queued for full worker ${w.pid} to worker ${target.pid}`);
        } catch (err) {
          logger.warning(`cannot pass queued connections: ${(err as Error).message}`);
        }
      }
    }
  }

  /** New connections go only to the healthy slots. */
  private steer(healthy: number[]): void {
    const byCpu = this.spread.usesCpu(healthy.length);
    const key = `${healthy.join(',')}/${this.slots.length}/${byCpu}`;
    if (key === this.steeredTo) return;
    this.steeredTo = key;
    const addon = native();
    for (let i = 0; i < this.listeners.length; i++) {
      const fd = this.slots[0]?.fds[i];
      // A shared socket has no group to steer: every worker accepts from it.
      if (fd === undefined || this.listeners[i]?.shared !== null) continue;
      try {
        addon.steer(fd, healthy, this.slots.length, byCpu);
      } catch (err) {
        logger.warning(`cannot steer connections: ${(err as Error).message}`);
      }
    }
    logger.debug(`Accepting on slots [${healthy.join(', ')}] of ${this.slots.length}${byCpu ? ' by CPU' : ''}`);
  }

  /** Each ready worker runs on the CPUs whose connections its slot gets,
   * and learns which worker serves each CPU, to hand idle connections on. */
  private pin(healthy: number[]): void {
    const owners: number[] = [];
    for (const w of this.workers) {
      const pinned = w.state === 'ready' ? this.spread.pinnedCpus(w.slot, healthy) : null;
      for (const cpu of pinned ?? []) owners[cpu] = w.pid;
      const cpus = pinned ?? this.spread.cpus;
      const key = cpus.join(',');
      if (w.cpus === key) continue;
      w.cpus = key;
      try {
        native().setAffinity(w.pid, [...cpus]);
      } catch (err) {
        // It exited meanwhile; its exit event follows.
        logger.debug(`cannot set the CPUs of worker ${w.pid}: ${(err as Error).message}`);
      }
    }
    const pids = Array.from(owners, (pid) => pid ?? 0);
    const key = pids.join(',');
    for (const w of this.workers) {
      if (w.state !== 'ready' || w.owners === key) continue;
      w.owners = key;
      w.send({ type: 'owners', pids });
    }
  }

  // ---- the control socket's view and commands (see control.ts) ----

  snapshot(): Snapshot {
    const view = {
      pid: process.pid,
      startedAt: this.startedAt,
      generation: this.generation,
      wanted: this.wantedCount,
      stopping: this.stopping,
      handedOver: this.handedOver,
      slots: this.slots,
      workers: this.workers,
      steered: this.steered,
      lateMs: this.lateMs,
      listeners: this.listeners,
    };
    return takeSnapshot(view, this.records, Date.now());
  }

  private readonly controlled: Controlled = {
    snapshot: () => this.snapshot(),
    reload: () => this.reload(),
    stop: (mode) => {
      this.stop(mode);
      this.reconcile();
    },
    scale: (count) => {
      this.setWanted(count);
      this.reconcile();
    },
    stack: (pid) => this.requestStack(pid),
    restartWorker: (pid) => {
      const w = this.workers.find((x) => x.pid === pid);
      if (!w) return;
      w.recycle = 'restart';
      logger.info(`Worker (pid:${pid}) is to be restarted: replacing it`);
      this.reconcile();
    },
  };

  private shutdown(): void {
    if (this.tick === null) return;
    clearInterval(this.tick);
    this.tick = null;
    for (const slot of this.slots) this.closeSlot(slot);
    for (const listener of this.listeners) closeListener(listener, this.handedOver);
    this.health?.close();
    this.control?.close(this.handedOver);
    this.removePidfile();
    this.upgrading?.finish();
    logger.info('Shutting down: Master');
    const { onExit } = this.config;
    if (!onExit) return this.finished(this.exitCode);
    awaitHook(() => onExit(this.info), this.config.gracefulTimeout * 1000).then(
      () => this.finished(this.exitCode),
      (err: unknown) => {
        logger.error(`onExit hook failed: ${describe(err)}`);
        this.finished(this.exitCode);
      },
    );
  }
}
