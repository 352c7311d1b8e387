// The arbiter's control socket: a Unix socket (mode 0600) answering one
// JSON reply line per JSON request line (src/protocol/control.ts), to its
// own user and root only — each connection's peer is checked with
// SO_PEERCRED, whatever the file's mode. A bad line gets an error reply;
// a line over the size bound or a connection idle too long is closed.

import { chmodSync, lstatSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import type { Config } from '../config.js';
import { EXIT_CONFIG, RwsgiError } from '../errors.js';
import { describe, logger } from '../log.js';
import { native } from '../native.js';
import {
  answers,
  type ControlReply,
  type ControlRequest,
  defaultSocketPath,
  encodeLine,
  IDLE_TIMEOUT_MS,
  MAX_REQUEST_BYTES,
  parseRequest,
  privateDirectoryProblem,
  SOCKET_NAME,
  socketDirectories,
} from '../protocol/control.js';

export type Answer = (request: ControlRequest) => Promise<ControlReply>;

/** The descriptor under a net.Socket: Node has no SO_PEERCRED, the addon reads it. */
function socketFd(socket: Socket): number | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

export class ControlSocket {
  private readonly server: Server;
  private readonly connections = new Set<Socket>();
  private listening = false;

  /** `passedOn`: a USR2 successor listens at the same path (an explicit
   * --control-socket), so the file stays when this arbiter hands over. */
  constructor(
    readonly path: string,
    private readonly passedOn: boolean,
    private readonly answer: Answer,
  ) {
    this.server = createServer((socket) => this.serve(socket));
  }

  /** Listens at `path`. A stale socket file is replaced; a live one only
   * when `takeOver` (a USR2 successor takes its parent's explicit path). */
  async listen(takeOver: boolean): Promise<void> {
    let existing = null;
    try {
      existing = lstatSync(this.path);
    } catch {
      // Free.
    }
    if (existing) {
      if (!existing.isSocket()) throw new Error('the path exists and is not a socket');
      if ((await answers(this.path)) && !takeOver) throw new Error('another server answers on it');
      unlinkSync(this.path);
    }
    const listening = new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.once('listening', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    // Made 0600 from the start (a pipe is bound within listen()), so it is
    // never open to others; the chmod only makes sure.
    const umask = process.umask(0o177);
    try {
      this.server.listen(this.path);
    } finally {
      process.umask(umask);
    }
    await listening;
    chmodSync(this.path, 0o600);
    this.listening = true;
    this.server.on('error', (err) => logger.error(`Control socket ${this.path}: ${describe(err)}`));
  }

  /** Stops answering and removes the file, unless `handedOver` and it is
   * the successor's now: then the listening socket is left for the exit to
   * close, as libuv unlinks a listening pipe's path when it closes one. */
  close(handedOver: boolean): void {
    for (const socket of this.connections) socket.destroy();
    if (!this.listening || (handedOver && this.passedOn)) return;
    this.server.close();
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }

  private serve(socket: Socket): void {
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => {});
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    const refusal = this.refusal(socket);
    if (refusal !== null) {
      logger.warning(`Control socket: ${refusal}`);
      socket.end(encodeLine({ ok: false, error: refusal }));
      return;
    }
    socket.setEncoding('utf8');
    let partial = '';
    // Replies go out in the order the requests came.
    let replies = Promise.resolve();
    socket.on('data', (chunk: string) => {
      if (socket.writableEnded) return;
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      if (Buffer.byteLength(partial) > MAX_REQUEST_BYTES) {
        socket.end(encodeLine({ ok: false, error: `request too long (over ${MAX_REQUEST_BYTES} bytes without a newline)` }));
        return;
      }
      for (const line of lines) {
        if (line.trim() === '') continue;
        replies = replies.then(async () => {
          const reply = await this.reply(line);
          if (!socket.destroyed) socket.write(encodeLine(reply));
        });
      }
    });
  }

  /** Why the peer may not talk to this server, or null if it may. */
  private refusal(socket: Socket): string | null {
    const fd = socketFd(socket);
    if (fd === null) return 'refused a connection: cannot tell who is at the other end';
    try {
      const peer = native().peerCredentials(fd);
      const own = process.getuid?.() ?? 0;
      if (peer.uid === own || peer.uid === 0) return null;
      return `refused a connection from uid ${peer.uid} (pid ${peer.pid}): only uid ${own} and root may control this server`;
    } catch (err) {
      return `refused a connection: ${(err as Error).message}`;
    }
  }

  private async reply(line: string): Promise<ControlReply> {
    const request = parseRequest(line);
    if ('error' in request) return { ok: false, error: request.error };
    try {
      return await this.answer(request);
    } catch (err) {
      return { ok: false, error: describe(err) };
    }
  }
}

/** Servers killed with SIGKILL leave their sockets: nothing answers there. */
async function removeStale(dir: string): Promise<void> {
  for (const name of readdirSync(dir).filter((n) => SOCKET_NAME.test(n))) {
    const path = join(dir, name);
    try {
      if (!(await answers(path))) unlinkSync(path);
    } catch {
      // Not ours to judge (no access): left alone.
    }
  }
}

/** The control socket of this arbiter, or null with --no-control-socket or
 * when the default directory cannot be used (said in a warning: the server
 * runs without it). A `--control-socket` that cannot be listened at stops
 * startup (exit 3). */
export async function openControlSocket(config: Config, upgrading: boolean, answer: Answer): Promise<ControlSocket | null> {
  if (config.noControlSocket) return null;
  if (config.controlSocket !== null) {
    const control = new ControlSocket(config.controlSocket, true, answer);
    try {
      await control.listen(upgrading);
    } catch (err) {
      throw new RwsgiError('RWSGI_ERR_BIND', `cannot listen at --control-socket ${config.controlSocket}: ${(err as Error).message}`, EXIT_CONFIG);
    }
    return control;
  }
  const problems: string[] = [];
  for (const dir of socketDirectories()) {
    const problem = privateDirectoryProblem(dir, true);
    if (problem !== null) {
      problems.push(problem);
      continue;
    }
    await removeStale(dir);
    const control = new ControlSocket(defaultSocketPath(process.pid, dir), false, answer);
    try {
      await control.listen(false);
      return control;
    } catch (err) {
      problems.push(`${control.path}: ${(err as Error).message}`);
    }
  }
  logger.warning(`No control socket (${problems.join('; ')}): set --control-socket PATH, or --no-control-socket`);
  return null;
}
