// fetch-style apps: an object with `fetch(request, env, ctx)` returning a
// WHATWG Response (Hono, itty-router, Elysia-style apps, plain objects).
// Request bodies are real streams; response bodies stream with backpressure.

import { STATUS_CODES } from 'node:http';
import { describe, logger } from '../log.js';
import { FLAG_HAS_BODY } from '../native.js';
import type { Exchange } from '../worker/exchange.js';
import { installLightClasses, LightRequest, LightResponse } from './light.js';
import { isThenable } from './thenable.js';

export interface FetchApp {
  fetch(request: Request, env: unknown, ctx: ExecutionContext): Response | Promise<Response>;
}

export interface ExecutionContext {
  /** Keeps the worker from being recycled or stopped until `promise` settles. */
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
}

/** Promises handed to `ctx.waitUntil`, which a stopping worker waits for. */
export class BackgroundTasks {
  private readonly pending = new Set<Promise<unknown>>();

  add(promise: Promise<unknown>): void {
    const tracked = promise.then(
      () => {},
      (err: unknown) => logger.error(`waitUntil task failed\n${describe(err)}`),
    );
    this.pending.add(tracked);
    void tracked.finally(() => this.pending.delete(tracked));
  }

  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all(this.pending);
  }
}

const NOT_YET = Symbol('not yet');

/** Resolves after `ticks` microtask turns: long enough for a finished
 * stream (a string or buffer body) to report done, short of any I/O. */
function afterMicrotasks(ticks: number): Promise<typeof NOT_YET> {
  let p: Promise<unknown> = Promise.resolve();
  for (let i = 0; i < ticks; i++) p = p.then(() => {});
  return p.then(() => NOT_YET);
}

type ExchangeRequestClass = new (ex: Exchange, url: string, init: RequestInit) => Request;
let ExchangeRequest: ExchangeRequestClass | null = null;

/** A Request whose `signal` is the exchange's, made only if the app reads
 * it: handing undici a signal to follow costs an AbortController and
 * listeners on every request. Defined on first use: reading the global
 * `Request` loads undici, which apps of the other interfaces never need. */
function exchangeRequestClass(): ExchangeRequestClass {
  ExchangeRequest ??= class extends Request {
    readonly #ex: Exchange;

    constructor(ex: Exchange, url: string, init: RequestInit) {
      super(url, init);
      this.#ex = ex;
    }

    override get signal(): AbortSignal {
      return this.#ex.signal;
    }
  };
  return ExchangeRequest;
}

/** The request body as a ReadableStream that pulls only when read. */
function bodyStream(input: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const iterator = input[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const step = await iterator.next();
      if (step.done) controller.close();
      else controller.enqueue(step.value);
    },
    async cancel() {
      await iterator.return?.();
    },
  });
}

/** The request's header pairs and Host. */
interface RequestFields {
  pairs: Array<[string, string]>;
  host: string;
}

function requestFields(raw: string): RequestFields {
  const parts = raw.split('\0');
  const pairs: Array<[string, string]> = [];
  let host = '';
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const name = parts[i] as string;
    const value = parts[i + 1] as string;
    if (host === '' && name.length === 4 && name.toLowerCase() === 'host') host = value;
    pairs.push([name, value]);
  }
  return { pairs, host };
}

function requestUrl(ex: Exchange, host: string): string {
  const url = ex.url;
  if (url.charCodeAt(0) !== 0x2f && /^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return url;
  return `${ex.scheme}://${host || `localhost:${ex.localPort}`}${url.charCodeAt(0) === 0x2f ? url : `/${url}`}`;
}

/** The real Request, made when the app asks for more than a light one has. */
function makeRequest(ex: Exchange, url: string, headers: HeadersInit, bodyRead = false): Request {
  const hasBody = (ex.flags & FLAG_HAS_BODY) !== 0;
  const request = new (exchangeRequestClass())(ex, url, {
    method: ex.method,
    headers,
    ...(hasBody ? { body: bodyRead ? new ReadableStream({ start: (c) => c.close() }) : bodyStream(ex.input), duplex: 'half' } : {}),
  } as RequestInit);
  // A read marks the body used, as reading it through the light request did.
  if (bodyRead && request.body) void request.body.getReader().read();
  return request;
}

/** `ctx`, the third argument of fetch(). */
class Context implements ExecutionContext {
  constructor(private readonly tasks: BackgroundTasks) {}

  waitUntil(promise: Promise<unknown>): void {
    this.tasks.add(Promise.resolve(promise));
  }

  passThroughOnException(): void {}
}

/** "200 OK" and friends, made once per status. */
const statusLines = new Map<number, string>();

function statusLine(status: number, text: string): string {
  if (text !== '') return `${status} ${text}`;
  let line = statusLines.get(status);
  if (line === undefined) {
    line = `${status} ${STATUS_CODES[status] ?? ''}`.trimEnd();
    if (statusLines.size < 1000) statusLines.set(status, line);
  }
  return line;
}

export class FetchRunner {
  private readonly env: Record<string, unknown> = {};
  private readonly ctx: Context;
  /** False where this Node's undici could not take a light request. */
  private readonly lightRequests: boolean;

  constructor(
    private readonly app: FetchApp,
    tasks: BackgroundTasks,
  ) {
    this.ctx = new Context(tasks);
    this.lightRequests = installLightClasses();
  }

  handle(ex: Exchange): void {
    const fields = ex.conn.fromHeaders(ex.rawHeaders, requestFields);
    const url = requestUrl(ex, fields.host);
    let request: Request;
    try {
      request = this.lightRequests
        ? (new LightRequest(ex, url, fields.pairs, makeRequest) as unknown as Request)
        : makeRequest(ex, url, fields.pairs);
    } catch (err) {
      // undici refuses some valid HTTP (a TRACE, a GET with a body).
      logger.warning(`Cannot make a Request for ${ex.method} ${ex.path}: ${(err as Error).message}`);
      ex.respond('400 Bad Request', [['Content-Type', 'text/plain'], ['Connection', 'close']], 'Bad Request');
      return;
    }
    let result: Response | Promise<Response>;
    try {
      result = this.app.fetch(request, this.env, this.ctx);
    } catch (err) {
      ex.fail(err);
      return;
    }
    if (isThenable<Response>(result)) {
      result.then(
        (response) => this.deliver(ex, response),
        (err: unknown) => ex.fail(err),
      );
    } else {
      this.deliver(ex, result as Response);
    }
  }

  private deliver(ex: Exchange, response: unknown): void {
    const held = typeof response === 'object' && response !== null ? LightResponse.held(response) : null;
    if (held === null) {
      this.send(ex, response).catch((err: unknown) => ex.fail(err));
      return;
    }
    try {
      ex.respond(statusLine(held.status, held.statusText), held.headers, held.body);
    } catch (err) {
      ex.fail(err);
    }
  }

  private async send(ex: Exchange, response: unknown): Promise<void> {
    if (!(response instanceof Response)) {
      throw new TypeError(`fetch() returned ${response === null ? 'null' : typeof response}, not a Response`);
    }
    const status = statusLine(response.status, response.statusText);
    const headers = [...response.headers] as Array<[string, string]>;
    if (!response.body) {
      ex.respond(status, headers, '');
      return;
    }
    const reader = response.body.getReader();
    try {
      const first = await reader.read();
      if (first.done) {
        ex.respond(status, headers, '');
        return;
      }
      // A body that is already complete (a string or buffer) goes out with a
      // Content-Length; one still producing is streamed. Waiting a loop turn
      // to tell would cost every pipelined response a turn.
      const second = reader.read();
      const early = await Promise.race([second, afterMicrotasks(8)]);
      if (early !== NOT_YET && early.done) {
        ex.respond(status, headers, first.value);
        return;
      }
      ex.start(status, headers, -1);
      let step: ReadableStreamReadResult<Uint8Array> = first;
      let upcoming: Promise<ReadableStreamReadResult<Uint8Array>> = second;
      while (!step.done) {
        const pending = ex.write(step.value);
        if (pending !== true) await pending;
        if (ex.closed || ex.done) return;
        step = await upcoming;
        if (!step.done) upcoming = reader.read();
      }
      ex.end();
    } finally {
      if (ex.closed || ex.done) await reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }

}
