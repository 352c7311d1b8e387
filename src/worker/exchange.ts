// One request and its response, and the connection that orders them:
// responses go out strictly in request order, so an exchange that is not
// at the head of its connection's queue buffers its response until it is.

import type { NativeServer, ResponseCalls } from '../native.js';
import { FLAG_CLIENT_CERT, FLAG_EXPECT_CONTINUE, FLAG_HAS_BODY, FLAG_HTTP10, FLAG_HTTPS, FLAG_TLS, type PeerCertificate } from '../native.js';
import { describe, logger } from '../log.js';
import { type Body, EMPTY_BODY, RequestBody } from './body.js';

export type Chunk = string | Uint8Array;

type Op =
  | { kind: 'respond'; status: string; headers: string; fields: number; body: Chunk }
  | { kind: 'start'; status: string; headers: string; fields: number; length: number }
  | { kind: 'startRaw'; keepAlive: boolean; status: number }
  | { kind: 'write'; chunk: Chunk }
  | { kind: 'end' };

/** The response to an app that failed before its own response started. */
const INTERNAL_ERROR: Op = {
  kind: 'respond',
  status: '500 Internal Server Error',
  headers: 'Content-Type\0text/plain\0',
  fields: 1,
  body: 'Internal Server Error',
};

/** The last header list joined, as copies of its strings: apps tend to
 * answer with the same headers, and the engine reads a flat string faster
 * than a freshly concatenated one. */
let lastNames: string[] = [];
let lastValues: string[] = [];
let lastJoined = '';

function sameAsLast(headers: unknown[]): boolean {
  if (headers.length !== lastNames.length) return false;
  for (let i = 0; i < headers.length; i++) {
    const pair = headers[i];
    if (!Array.isArray(pair) || pair.length !== 2 || pair[0] !== lastNames[i] || pair[1] !== lastValues[i]) return false;
  }
  return true;
}

/** `[[name, value], ...]` as the engine takes them: `name\0value\0...`
 * (one field per pair: `headers.length` of them, once this returned). */
export function joinHeaders(headers: unknown): string {
  if (!Array.isArray(headers)) throw new TypeError('response headers must be an array of [name, value] pairs');
  if (sameAsLast(headers)) return lastJoined;
  const parts: string[] = [];
  const names: string[] = [];
  const values: string[] = [];
  for (const pair of headers) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string') {
      throw new TypeError(`response header ${JSON.stringify(pair)} is not a [name, value] pair of strings`);
    }
    const value = String(pair[1]);
    parts.push(pair[0], '\0', value, '\0');
    names.push(pair[0]);
    values.push(value);
  }
  // join makes a flat string, which the engine reads on its fast path.
  const joined = parts.join('');
  lastNames = names;
  lastValues = values;
  lastJoined = joined;
  return joined;
}

export class Connection {
  readonly queue: Exchange[] = [];
  /** The exchange whose request body is still arriving. */
  reading: Exchange | null = null;
  closed = false;
  private drainWaiters: Array<() => void> = [];

  constructor(
    readonly id: number,
    readonly server: NativeServer,
    readonly calls: ResponseCalls,
    readonly peerIp: string,
    readonly peerPort: number,
    readonly localPort: number,
  ) {
    this.peerPortText = String(peerPort);
    this.localPortText = String(localPort);
  }

  /** The ports as text, for interfaces that hand them over as strings. */
  readonly peerPortText: string;
  readonly localPortText: string;

  /** The header block of the last request received here. */
  lastHeaders: string | null = null;

  /** The last header block seen here and what an app interface derived from it. */
  private headerMemo: { raw: string; derived: unknown } | null = null;

  /** What `derive` makes of the header block `raw`, made once per distinct
   * block on this connection: clients tend to send the same headers on
   * every request. One app interface serves a worker, so one `derive`. */
  fromHeaders<T>(raw: string, derive: (raw: string) => T): T {
    const memo = this.headerMemo;
    if (memo !== null && memo.raw === raw) return memo.derived as T;
    const derived = derive(raw);
    this.headerMemo = { raw, derived };
    return derived;
  }

  waitForDrain(): Promise<void> {
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  drained(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  /** The head exchange finished: the next one may write. */
  advance(done: Exchange): void {
    if (this.queue[0] === done) this.queue.shift();
    this.queue[0]?.becomeHead();
  }

  /** The client stopped sending: the apps may stop work; responses may still go out. */
  peerShutdown(): void {
    const reason = new Error('client closed the connection');
    for (const ex of this.queue) ex.clientGone(reason);
  }

  close(): void {
    this.closed = true;
    const error = new Error('client connection closed');
    for (const ex of this.queue) ex.connectionClosed(error);
    this.reading?.input.fail(error);
    this.queue.length = 0;
    this.reading = null;
    this.drained();
  }
}

export interface ExchangeEvents {
  onDone(ex: Exchange): void;
}

export class Exchange {
  readonly input: Body;
  /** Links in the dispatcher's in-flight list. */
  older: Exchange | null = null;
  newer: Exchange | null = null;
  inFlight = false;
  /** The app began its response (head sent or queued). */
  responseStarted = false;
  done = false;
  /** Steps waiting until this exchange is at the head of its connection. */
  private ops: Op[] | null = null;
  private controller: AbortController | null = null;
  /** Called once, with `signal`'s reason, without making a signal (cheaper per request). */
  onAbort: ((reason: Error) => void) | null = null;
  /** A complete response (respond or end) is written or queued: nothing more may follow. */
  private ended = false;
  private timedOut = false;
  private headWaiters: Array<() => void> | null = null;

  constructor(
    readonly conn: Connection,
    readonly method: string,
    readonly url: string,
    readonly rawHeaders: string,
    readonly flags: number,
    readonly startedAt: number,
    private readonly events: ExchangeEvents,
  ) {
    const server = conn.server;
    const id = conn.id;
    this.input =
      flags & FLAG_HAS_BODY
        ? new RequestBody(
            { setReading: (on) => server.setReading(id, on), sendContinue: () => server.sendContinue(id) },
            (flags & FLAG_EXPECT_CONTINUE) !== 0,
          )
        : EMPTY_BODY;
  }

  get peerIp(): string {
    return this.conn.peerIp;
  }

  /** The client a trusted proxy named (see crates/core/src/forwarded.rs), if one did. */
  private forwarded: { ip: string; port: number } | null = null;

  forwardedFor(ip: string, port: number): void {
    this.forwarded = { ip, port };
  }

  /** The client address: the peer's, or the one a trusted proxy named. */
  get clientIp(): string {
    return this.forwarded === null ? this.conn.peerIp : this.forwarded.ip;
  }

  get clientPort(): number {
    return this.forwarded === null ? this.conn.peerPort : this.forwarded.port;
  }

  get clientPortText(): string {
    return this.forwarded === null ? this.conn.peerPortText : String(this.forwarded.port);
  }

  /** `https` when a trusted proxy said so, else when the connection is TLS. */
  get scheme(): 'http' | 'https' {
    return this.flags & FLAG_HTTPS ? 'https' : 'http';
  }

  /** The connection itself is TLS (whatever a proxy said of the scheme). */
  get tls(): boolean {
    return (this.flags & FLAG_TLS) !== 0;
  }

  get peerPort(): number {
    return this.conn.peerPort;
  }

  get localPort(): number {
    return this.conn.localPort;
  }

  /** `[version, suite]` of the TLS connection (asked of the engine on use), or null. */
  tlsNegotiated(): [string, string] | null {
    return this.tls ? this.conn.server.tlsNegotiated(this.conn.id) : null;
  }

  /** The client certificate the CAs verified (asked of the engine on use), or null. */
  peerCertificate(): PeerCertificate | null {
    return this.flags & FLAG_CLIENT_CERT ? this.conn.server.peerCertificate(this.conn.id) : null;
  }

  get httpVersion(): string {
    return this.flags & FLAG_HTTP10 ? 'HTTP/1.0' : 'HTTP/1.1';
  }

  get path(): string {
    const q = this.url.indexOf('?');
    return q === -1 ? this.url : this.url.slice(0, q);
  }

  /** Aborts when the request times out or the client goes away (made on first use). */
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    return this.controller.signal;
  }

  clientGone(reason: Error): void {
    this.abortSignal(reason);
  }

  private abortSignal(reason: Error): void {
    if (this.controller && !this.controller.signal.aborted) this.controller.abort(reason);
    const onAbort = this.onAbort;
    this.onAbort = null;
    onAbort?.(reason);
  }

  /** --request-timeout: a 504 if the response has not started, else the
   * connection is cut; either way the app's signal aborts. */
  timeOut(seconds: number): void {
    if (this.done || this.timedOut) return;
    this.timedOut = true;
    logger.error(`Request timed out after ${seconds}s: ${this.method} ${this.path}`);
    if (this.responseStarted) {
      this.abort();
    } else {
      this.respond('504 Gateway Timeout', [['Content-Type', 'text/plain'], ['Connection', 'close']], 'Gateway Timeout');
    }
    this.abortSignal(new Error(`request timed out after ${seconds}s`));
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  private get isHead(): boolean {
    return this.conn.queue[0] === this;
  }

  /** The whole response at once; the length is known. */
  respond(status: string, headers: unknown, body: Chunk): void {
    const joined = joinHeaders(headers);
    const fields = (headers as unknown[]).length;
    this.responseStarted = true;
    if (this.done || this.ended || this.closed || !this.isHead) {
      this.perform({ kind: 'respond', status, headers: joined, fields, body });
      return;
    }
    // What `perform` and `run` do, without making an Op for the usual case.
    this.ended = true;
    try {
      this.conn.calls.respond(this.conn.id, status, joined, fields, body);
    } catch (err) {
      this.refused(err, true);
      return;
    }
    this.complete();
  }

  /** Starts a streamed response; `length` < 0 when unknown. */
  start(status: string, headers: unknown, length = -1): void {
    const joined = joinHeaders(headers);
    this.responseStarted = true;
    this.perform({ kind: 'start', status, headers: joined, fields: (headers as unknown[]).length, length });
  }

  /** Starts a response whose head and framing come in the written bytes
   * (Node's ServerResponse); `keepAlive` and `status` are what that head says. */
  startRaw(keepAlive: boolean, status: number): void {
    this.responseStarted = true;
    this.perform({ kind: 'startRaw', keepAlive, status });
  }

  /** Resolves at once, or once the client has taken enough of the output. */
  write(chunk: Chunk): Promise<void> | true {
    if (this.done || this.ended || this.closed) return true;
    if (!this.isHead) {
      (this.ops ??= []).push({ kind: 'write', chunk });
      return new Promise((resolve) => (this.headWaiters ??= []).push(resolve));
    }
    const r = this.conn.calls.write(this.conn.id, chunk);
    return r === 0 ? this.conn.waitForDrain() : true;
  }

  end(): void {
    this.perform({ kind: 'end' });
  }

  /** The app failed on this request: log it, then a 500 if no response
   * has started, else cut the connection. `reason` replaces the stack. */
  fail(err: unknown, reason?: string): void {
    if (this.closed) {
      // The client went away; its request failing is expected, not an app error.
      logger.debug(`Client closed the connection during ${this.method} ${this.path}: ${describe(err)}`);
      return;
    }
    logger.error(`Error handling request ${this.path}${reason ? `: ${reason}` : ''}${err ? `\n${describe(err)}` : ''}`);
    if (this.done) return;
    if (this.responseStarted) {
      this.abort();
    } else {
      this.responseStarted = true;
      this.perform(INTERNAL_ERROR);
    }
  }

  /** The response cannot be completed: cut the connection. */
  abort(): void {
    if (this.done) return;
    this.finish();
    if (!this.closed) this.conn.server.abort(this.conn.id);
  }

  private perform(op: Op): void {
    if (this.done || this.ended || this.closed) return;
    if (op.kind === 'respond' || op.kind === 'end') this.ended = true;
    if (!this.isHead) {
      (this.ops ??= []).push(op);
      return;
    }
    this.run(op);
  }

  /** Runs one response step natively. A response the engine refuses
   * (bad status, CR/LF in a header, ...) becomes a logged 500, or a cut
   * connection if its head is already out. */
  private run(op: Op): void {
    try {
      this.runUnchecked(op);
    } catch (err) {
      this.refused(err, op.kind === 'respond' || op.kind === 'start' || op.kind === 'startRaw');
    }
  }

  /** The engine refused a step: a 500 instead if it was the head (`atHead`), else a cut. */
  private refused(err: unknown, atHead: boolean): void {
    logger.error(`Error handling request ${this.path}: invalid response: ${(err as Error).message}`);
    if (atHead) {
      this.runUnchecked(INTERNAL_ERROR);
    } else {
      this.abort();
    }
  }

  private runUnchecked(op: Op): void {
    const { server, calls, id } = this.conn;
    switch (op.kind) {
      case 'respond':
        calls.respond(id, op.status, op.headers, op.fields, op.body);
        this.complete();
        break;
      case 'start':
        calls.start(id, op.status, op.headers, op.fields, op.length);
        break;
      case 'startRaw':
        server.startRaw(id, op.keepAlive, op.status);
        break;
      case 'write':
        calls.write(id, op.chunk);
        break;
      case 'end':
        calls.end(id);
        this.complete();
        break;
    }
  }

  becomeHead(): void {
    const ops = this.ops;
    this.ops = null;
    if (ops !== null) {
      for (const op of ops) {
        if (this.done || this.closed) break;
        this.run(op);
      }
    }
    this.releaseHeadWaiters();
  }

  /** Writes waiting for this exchange's turn go on (or give up, if closed). */
  private releaseHeadWaiters(): void {
    const waiters = this.headWaiters;
    if (waiters === null) return;
    this.headWaiters = null;
    for (const w of waiters) w();
  }

  /** Once: the request is counted as served when it is done. */
  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.input.discard();
    this.events.onDone(this);
  }

  private complete(): void {
    this.finish();
    this.conn.advance(this);
  }

  connectionClosed(error: Error): void {
    this.input.fail(error);
    this.abortSignal(error);
    this.releaseHeadWaiters();
    this.finish();
  }
}
