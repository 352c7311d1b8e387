// fetch-style apps: an object with `fetch(request, env, ctx)` returning a
// WHATWG Response (Hono, itty-router, Elysia-style apps, plain objects).
// Request bodies are real streams; response bodies stream with backpressure.

import { STATUS_CODES } from 'node:http';
import { describe, logger } from '../log.js';
import { FLAG_HAS_BODY } from '../native.js';
import type { Exchange } from '../worker/exchange.js';

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

/** A Request whose `signal` is the exchange's, made only if the app reads
 * it: handing undici a signal to follow costs an AbortController and
 * listeners on every request. */
class ExchangeRequest extends Request {
  readonly #ex: Exchange;

  constructor(ex: Exchange, url: string, init: RequestInit) {
    super(url, init);
    this.#ex = ex;
  }

  override get signal(): AbortSignal {
    return this.#ex.signal;
  }
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

function requestHeaders(joined: string): Array<[string, string]> {
  const parts = joined.split('\0');
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < parts.length; i += 2) pairs.push([parts[i] as string, parts[i + 1] as string]);
  return pairs;
}

function requestUrl(ex: Exchange, headers: Array<[string, string]>): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ex.url)) return ex.url;
  const host = headers.find(([name]) => name.toLowerCase() === 'host')?.[1] || `localhost:${ex.localPort}`;
  return `http://${host}${ex.url.startsWith('/') ? ex.url : `/${ex.url}`}`;
}

export class FetchRunner {
  private readonly env: Record<string, unknown> = {};

  constructor(
    private readonly app: FetchApp,
    private readonly tasks: BackgroundTasks,
  ) {}

  handle(ex: Exchange): void {
    let request: Request;
    try {
      const headers = requestHeaders(ex.rawHeaders);
      const hasBody = (ex.flags & FLAG_HAS_BODY) !== 0;
      request = new ExchangeRequest(ex, requestUrl(ex, headers), {
        method: ex.method,
        headers,
        ...(hasBody ? { body: bodyStream(ex.input), duplex: 'half' } : {}),
      } as RequestInit);
    } catch (err) {
      logger.warning(`Cannot make a Request for ${ex.method} ${ex.path}: ${(err as Error).message}`);
      ex.respond('400 Bad Request', [['Content-Type', 'text/plain'], ['Connection', 'close']], 'Bad Request');
      return;
    }
    const ctx: ExecutionContext = {
      waitUntil: (promise) => this.tasks.add(Promise.resolve(promise)),
      passThroughOnException: () => {},
    };
    let result: Response | Promise<Response>;
    try {
      result = this.app.fetch(request, this.env, ctx);
    } catch (err) {
      ex.fail(err);
      return;
    }
    Promise.resolve(result).then(
      (response) => this.send(ex, response).catch((err: unknown) => ex.fail(err)),
      (err: unknown) => ex.fail(err),
    );
  }

  private async send(ex: Exchange, response: unknown): Promise<void> {
    if (!(response instanceof Response)) {
      throw new TypeError(`fetch() returned ${response === null ? 'null' : typeof response}, not a Response`);
    }
    const status = `${response.status} ${response.statusText || STATUS_CODES[response.status] || ''}`.trimEnd();
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
