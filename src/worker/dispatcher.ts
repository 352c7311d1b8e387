// Receives the engine's events, keeps one Connection per client socket and
// one Exchange per request, and hands each request to the app interface.

import type { InFlight } from '../protocol/messages.js';
import { FLAG_HAS_BODY, type NativeServer, type ResponseCalls, type ServerCallbacks } from '../native.js';
import { logger } from '../log.js';
import { Connection, Exchange } from './exchange.js';

export type RequestHandler = (ex: Exchange) => void;

export class Dispatcher implements ServerCallbacks {
  private readonly conns = new Map<number, Connection>();
  /** Requests without a finished response, oldest first (Set keeps insertion order). */
  private readonly inflight = new Set<Exchange>();
  private server: NativeServer | null = null;
  private calls: ResponseCalls | null = null;
  served = 0;
  private idleWaiters: Array<() => void> = [];

  /** `onBusy` runs when a request arrives at an idle worker. */
  constructor(
    private readonly handler: RequestHandler,
    private readonly onBusy: () => void = () => {},
    private readonly onServed: (served: number) => void = () => {},
  ) {}

  attach(server: NativeServer): void {
    this.server = server;
    this.calls = server.responseCalls();
  }

  get inFlightCount(): number {
    return this.inflight.size;
  }

  oldest(): InFlight | null {
    for (const ex of this.inflight) {
      return { method: ex.method, path: ex.path, age: (performance.now() - ex.startedAt) / 1000 };
    }
    return null;
  }

  /** Times out requests older than `seconds`; called on a short tick. */
  expire(seconds: number): void {
    const cutoff = performance.now() - seconds * 1000;
    for (const ex of this.inflight) {
      // Oldest first: the first one young enough ends the scan.
      if (ex.startedAt > cutoff) break;
      ex.timeOut(seconds);
    }
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private readonly events = {
    onDone: (ex: Exchange): void => {
      if (this.inflight.delete(ex)) this.onServed(++this.served);
      if (this.inflight.size === 0 && this.idleWaiters.length > 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    },
  };

  onRequest: ServerCallbacks['onRequest'] = (id, method, url, headers, flags, peerIp, peerPort, localPort) => {
    const { server, calls } = this;
    if (!server || !calls) return;
    let conn = this.conns.get(id);
    if (!conn) {
      conn = new Connection(id, server, calls);
      this.conns.set(id, conn);
    }
    const ex = new Exchange(conn, method, url, headers, flags, peerIp, peerPort, localPort, this.events);
    conn.queue.push(ex);
    if (flags & FLAG_HAS_BODY) conn.reading = ex;
    this.inflight.add(ex);
    if (this.inflight.size === 1) this.onBusy();
    this.handler(ex);
  };

  onBody = (id: number, chunk: Buffer): void => {
    this.conns.get(id)?.reading?.input.push(chunk);
  };

  onBodyEnd = (id: number): void => {
    const conn = this.conns.get(id);
    if (!conn?.reading) return;
    conn.reading.input.end();
    conn.reading = null;
  };

  onClose = (id: number): void => {
    const conn = this.conns.get(id);
    if (!conn) return;
    this.conns.delete(id);
    conn.close();
  };

  private lastAcceptWarning = -Infinity;

  onAcceptPaused = (reason: string): void => {
    const now = performance.now();
    if (now - this.lastAcceptWarning < 60_000) return;
    this.lastAcceptWarning = now;
    logger.warning(`Cannot accept connections (${reason}): retrying every second; raise the open-file limit (ulimit -n) or lower --worker-connections`);
  };

  onPeerShutdown = (id: number): void => {
    this.conns.get(id)?.peerShutdown();
  };

  onDrain = (id: number): void => {
    this.conns.get(id)?.drained();
  };
}
