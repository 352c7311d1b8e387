// The arbiter: binds one SO_REUSEPORT socket per worker slot and address,
// keeps them for its lifetime, spawns a worker per slot with fd 3 = pipe and
// fds 4.. = the slot's sockets, respawns workers that exit, and stops them
// on TERM (graceful) or INT/QUIT (quick).

import { type ChildProcess, spawn } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { closeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseBind } from '../cli/args.js';
import type { Config } from '../config.js';
import { EXIT_APP_LOAD, EXIT_CONFIG, RwsgiError } from '../errors.js';
import { logger } from '../log.js';
import { native } from '../native.js';
import { encode, LineDecoder, type WorkerMessage } from '../protocol/messages.js';
import type { WorkerSpec } from '../worker/main.js';
import { VERSION } from '../version.js';

const WORKER_ENTRY = fileURLToPath(new URL('../worker/main.js', import.meta.url));
const RESPAWN_DELAY_MS = 100;
const QUICK_STOP_MS = 2000;

interface Slot {
  index: number;
  fds: number[];
  worker: ChildProcess | null;
}

/** `host:port` as the addon parses it, resolving names like `localhost`. */
async function socketAddress(bind: string): Promise<string> {
  const { host, port } = parseBind(bind);
  let ip = host;
  if (!/^[\d.]+$/.test(host) && !host.includes(':')) {
    try {
      ip = (await lookup(host)).address;
    } catch {
      throw new RwsgiError('RWSGI_ERR_BIND', `cannot resolve bind host '${host}'`, EXIT_CONFIG);
    }
  }
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

export class Arbiter {
  private readonly slots: Slot[] = [];
  private stopping = false;
  private exitCode = 0;
  private bootFailureLogged = false;
  private shutDown = false;

  constructor(private readonly config: Config) {}

  async run(): Promise<number> {
    logger.info(`Starting rwsgi ${VERSION}`);
    await this.bind();
    logger.info('Using worker: native');
    for (const slot of this.slots) this.spawnWorker(slot);
    process.on('SIGTERM', () => this.stop('term', true));
    process.on('SIGINT', () => this.stop('int', false));
    process.on('SIGQUIT', () => this.stop('quit', false));
    return new Promise((resolve) => {
      this.finished = resolve;
    });
  }

  private finished: (code: number) => void = () => {};

  private async bind(): Promise<void> {
    const { workers, backlog } = this.config;
    const addon = native();
    for (let i = 0; i < workers; i++) this.slots.push({ index: i, fds: [], worker: null });
    for (const bind of this.config.binds) {
      const address = await socketAddress(bind);
      let group;
      try {
        group = addon.bindListeners(address, workers, backlog);
      } catch (err) {
        throw new RwsgiError('RWSGI_ERR_BIND', `cannot listen at ${bind}: ${(err as Error).message}`, EXIT_CONFIG);
      }
      group.fds.forEach((fd, i) => this.slots[i]?.fds.push(fd));
      const shown = group.host.includes(':') ? `[${group.host}]` : group.host;
      logger.info(`Listening at: http://${shown}:${group.port} (${process.pid})`);
    }
  }

  private spawnWorker(slot: Slot): void {
    const spec: WorkerSpec = { config: this.config, listeners: slot.fds.length };
    const child = spawn(process.execPath, [WORKER_ENTRY], {
      stdio: ['ignore', 'inherit', 'inherit', 'pipe', ...slot.fds],
      env: { ...process.env, RWSGI_WORKER: JSON.stringify(spec) },
    });
    slot.worker = child;
    logger.info(`Booting worker with pid: ${child.pid}`);
    const pipe = child.stdio[3] as Readable | null;
    const decoder = new LineDecoder();
    pipe?.setEncoding('utf8');
    pipe?.on('data', (chunk: string) => {
      for (const message of decoder.push(chunk)) this.onMessage(slot, child, message as WorkerMessage);
    });
    pipe?.on('error', () => {});
    child.on('exit', (code, signal) => this.onExit(slot, child, code, signal));
  }

  private onMessage(slot: Slot, child: ChildProcess, message: WorkerMessage): void {
    switch (message.type) {
      case 'boot-error':
        if (!this.bootFailureLogged) {
          this.bootFailureLogged = true;
          logger.error(`Exception in worker process (pid:${child.pid}):\n${message.reason}`);
        }
        this.exitCode = EXIT_APP_LOAD;
        if (!this.stopping) {
          logger.error('App failed to load');
          this.stop(null, false);
        }
        break;
      case 'ready':
        logger.debug(`Worker ready (pid:${child.pid}, slot ${slot.index})`);
        break;
      case 'hb':
        break;
    }
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.worker === child) slot.worker = null;
    if (this.stopping) {
      logger.info(`Worker exiting (pid: ${child.pid})`);
      if (this.slots.every((s) => s.worker === null)) this.shutdown();
      return;
    }
    logger.error(`Worker (pid:${child.pid}) ${signal ? `was killed by signal ${signal}` : `exited with code ${code}`}`);
    setTimeout(() => {
      if (!this.stopping && slot.worker === null) this.spawnWorker(slot);
    }, RESPAWN_DELAY_MS);
  }

  private stop(signal: string | null, graceful: boolean): void {
    if (signal) logger.info(`Handling signal: ${signal}`);
    if (this.stopping && graceful) return;
    this.stopping = true;
    const deadlineMs = graceful ? this.config.gracefulTimeout * 1000 : 0;
    for (const slot of this.slots) {
      const child = slot.worker;
      if (!child) continue;
      if (graceful) {
        (child.stdio[3] as NodeJS.WritableStream | null)?.write(encode({ type: 'stop', graceful, deadlineMs }));
      } else {
        child.kill('SIGQUIT');
      }
    }
    const limit = setTimeout(
      () => {
        for (const slot of this.slots) slot.worker?.kill('SIGKILL');
      },
      graceful ? deadlineMs + 1000 : QUICK_STOP_MS,
    );
    limit.unref();
    if (this.slots.every((s) => s.worker === null)) this.shutdown();
  }

  private shutdown(): void {
    if (this.shutDown) return;
    this.shutDown = true;
    for (const slot of this.slots) for (const fd of slot.fds) closeSync(fd);
    logger.info('Shutting down: Master');
    this.finished(this.exitCode);
  }
}
