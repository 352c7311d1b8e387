// Receives the engine's events, keeps one Connection per client socket and
// one Exchange per request, and hands each request to the app interface.

import type { InFlight } from '../protocol/messages.js';
import { FLAG_HAS_BODY, FLAG_SAME_HEADERS, type NativeServer, REQUEST_STRIDE, repeatingHeads, type ResponseCalls, type ServerCallbacks, Slot } from '../native.js';
import { enabled, logger } from '../log.js';
import { Connection, Exchange } from './exchange.js';
import { MeasuredExchange, postRequestCall, type RequestHooks, withPreRequest } from './request-hooks.js';

export type RequestHandler = (ex: Exchange) => void;

/** Requests per batch the engine can hand over at once. */
const TABLE_ROWS = 1024;

export class Dispatcher implements ServerCallbacks {
  readonly requestTable = new Float64Array(TABLE_ROWS * REQUEST_STRIDE);
  /** The repeat table (see `repeatingHeads`): room for an answer to each
   * request of a batch, and to as many earlier ones as those unblock. */
  readonly repeatTable = new Float64Array(2 * TABLE_ROWS + 1);
  private readonly methods: string[] = [];
  private readonly conns = new Map<number, Connection>();
  /** Requests without a finished response, oldest first. */
  private readonly inflight = new InFlightList();
  private server: NativeServer | null = null;
  private calls: ResponseCalls | null = null;
  served = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly handler: RequestHandler;
  /** Exchange, or with a postRequest hook the kind that measures its response. */
  private readonly ExchangeType: typeof Exchange = Exchange;

  /** `onBusy` runs when a request arrives at an idle worker, before its
   * handler (`row`: its place in the batch), and `onIdle` when the last one
   * in flight is done. */
  constructor(
    handler: RequestHandler,
    private readonly onBusy: (row: number) => void = () => {},
    private readonly onIdle: () => void = () => {},
    private readonly onServed: (served: number) => void = () => {},
    hooks: RequestHooks | null = null,
  ) {
    this.handler = hooks?.preRequest ? withPreRequest(handler, hooks.worker, hooks.preRequest) : handler;
    if (hooks?.postRequest) {
      const done = this.events.onDone;
      const post = postRequestCall(hooks.worker, hooks.postRequest);
      this.events.onDone = (ex) => {
        done(ex);
        post(ex);
      };
      this.ExchangeType = MeasuredExchange;
    }
  }

  attach(server: NativeServer): void {
    this.server = server;
    this.calls = repeatingHeads(server.responseCalls(), this.repeatTable);
    // One line per refused request is for debugging, not for a server scanners reach.
    server.setTraceRejections(enabled('debug'));
  }

  get inFlightCount(): number {
    return this.inflight.size;
  }

  oldest(): InFlight | null {
    const ex = this.inflight.oldest;
    return ex && { method: ex.method, path: ex.path, age: (performance.now() - ex.startedAt) / 1000 };
  }

  /** Times out requests older than `seconds`; called on a short tick. */
  expire(seconds: number): void {
    const cutoff = performance.now() - seconds * 1000;
    // Oldest first: the first one young enough ends the scan.
    for (let ex = this.inflight.oldest; ex !== null && ex.startedAt <= cutoff; ) {
      const next = ex.newer;
      ex.timeOut(seconds);
      ex = next;
    }
  }

  /** Resolves when no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private readonly events = {
    onDone: (ex: Exchange): void => {
      // A request answered inside its handler call was never listed.
      this.inflight.delete(ex);
      this.onServed(++this.served);
      if (this.inflight.size === 0) this.onIdle();
      if (this.inflight.size === 0 && this.idleWaiters.length > 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    },
  };

  onMethod = (index: number, method: string): void => {
    this.methods[index] = method;
  };

  onRequests = (count: number, text: string): void => {
    const { server, calls, requestTable: t, ExchangeType } = this;
    if (!server || !calls) return;
    // One clock read per batch: the requests in it arrived together.
    const startedAt = performance.now();
    // A pipelined batch is runs of one connection's requests: look each up once.
    let conn: Connection | undefined;
    for (let row = 0; row < count * REQUEST_STRIDE; row += REQUEST_STRIDE) {
      const id = t[row + Slot.Conn] as number;
      if (conn?.id !== id) conn = this.conns.get(id);
      if (conn === undefined) {
        const peerIp = text.substring(t[row + Slot.PeerIpStart] as number, t[row + Slot.PeerIpEnd] as number);
        conn = new Connection(id, server, calls, peerIp, t[row + Slot.PeerPort] as number, t[row + Slot.LocalPort] as number);
        this.conns.set(id, conn);
      }
      const flags = t[row + Slot.Flags] as number;
      // A client a proxy named is stashed after the peer's address: its range ends elsewhere.
      const clientEnd = t[row + Slot.ClientIpEnd] as number;
      // The same string as last time, when the block is: what an interface
      // derived from it is then found by identity, not by comparing text.
      const headers =
        flags & FLAG_SAME_HEADERS && conn.lastHeaders !== null
          ? conn.lastHeaders
          : text.substring(t[row + Slot.HeadersStart] as number, t[row + Slot.HeadersEnd] as number);
      conn.lastHeaders = headers;
      const ex = new ExchangeType(
        conn,
        this.methods[t[row + Slot.Method] as number] as string,
        text.substring(t[row + Slot.UrlStart] as number, t[row + Slot.UrlEnd] as number),
        headers,
        flags,
        startedAt,
        this.events,
      );
      if (clientEnd !== t[row + Slot.PeerIpEnd]) {
        ex.forwardedFor(text.substring(t[row + Slot.ClientIpStart] as number, clientEnd), t[row + Slot.ClientPort] as number);
      }
      conn.queue.push(ex);
      if (flags & FLAG_HAS_BODY) conn.reading = ex;
      if (this.inflight.size === 0) this.onBusy(row / REQUEST_STRIDE);
      try {
        this.handler(ex);
      } catch (err) {
        // Handlers do not throw; if one does, the rest of the batch still runs.
        ex.fail(err);
      }
      // Listed only if still in flight: most answers come within the call,
      // and listing and unlisting each was a fifth of a request's JavaScript.
      if (!ex.done) this.inflight.add(ex);
    }
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

  /** Set by the worker: tells the arbiter at once, so it steers around a full worker. */
  capacityChanged: (full: boolean) => void = () => {};

  onCapacity = (full: number): void => {
    this.capacityChanged(full === 1);
  };

  onRejected = (status: number, reason: string, peerIp: string, peerPort: number): void => {
    const host = peerIp.includes(':') ? `[${peerIp}]` : peerIp;
    logger.debug(`${status === 0 ? 'closed unanswered' : status} from ${host}:${peerPort}: ${reason}`);
  };

  onPeerShutdown = (id: number): void => {
    this.conns.get(id)?.peerShutdown();
  };

  onDrain = (id: number): void => {
    this.conns.get(id)?.drained();
  };
}

/** Exchanges in arrival order, linked through their own fields: adding
 * and removing cost no hashing, and the oldest is at hand. */
class InFlightList {
  oldest: Exchange | null = null;
  private newest: Exchange | null = null;
  size = 0;

  add(ex: Exchange): void {
    ex.older = this.newest;
    ex.newer = null;
    if (this.newest) this.newest.newer = ex;
    else this.oldest = ex;
    this.newest = ex;
    ex.inFlight = true;
    this.size++;
  }

  /** Does nothing if `ex` is not in the list. */
  delete(ex: Exchange): void {
    if (!ex.inFlight) return;
    ex.inFlight = false;
    if (ex.older) ex.older.newer = ex.newer;
    else this.oldest = ex.newer;
    if (ex.newer) ex.newer.older = ex.older;
    else this.newest = ex.older;
    ex.older = ex.newer = null;
    this.size--;
  }
}
