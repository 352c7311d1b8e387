// The preRequest and postRequest hooks. Only a worker whose config sets
// them builds any of this: without them the dispatcher keeps its plain
// handler and Exchange class, and requests pay nothing.

import { describe, logger } from '../log.js';
import type { PostRequestHook, PreRequestHook, RequestInfo, WorkerSelf } from '../settings/hooks.js';
import { type Chunk, Exchange } from './exchange.js';

export interface RequestHooks {
  worker: WorkerSelf;
  preRequest: PreRequestHook | null;
  postRequest: PostRequestHook | null;
}

const size = (chunk: Chunk): number => (typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength);

/** An Exchange that notes its response's status and size, for postRequest. */
export class MeasuredExchange extends Exchange {
  status = 0;
  bytes = 0;

  override respond(status: string, headers: unknown, body: Chunk): void {
    this.status ||= parseInt(status, 10) || 0;
    this.bytes += size(body);
    super.respond(status, headers, body);
  }

  override start(status: string, headers: unknown, length = -1): void {
    this.status ||= parseInt(status, 10) || 0;
    super.start(status, headers, length);
  }

  override startRaw(keepAlive: boolean, status: number): void {
    this.status ||= status;
    super.startRaw(keepAlive, status);
  }

  override write(chunk: Chunk): Promise<void> | true {
    this.bytes += size(chunk);
    return super.write(chunk);
  }

  override fail(err: unknown, reason?: string): void {
    if (!this.responseStarted && !this.done && !this.closed) this.status = 500;
    super.fail(err, reason);
  }
}

export function requestInfo(ex: Exchange): RequestInfo {
  return { method: ex.method, path: ex.path, url: ex.url, remoteAddress: ex.clientIp };
}

/** Logs a hook's error the first time it is seen, not on every request. */
function onceEach(name: string): (err: unknown) => void {
  const seen = new Set<string>();
  return (err) => {
    const key = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    if (seen.has(key)) return;
    seen.add(key);
    logger.error(`${name} hook failed (logged once per distinct error; the request goes on): ${describe(err)}`);
  };
}

/** Request hooks are synchronous; one that returns a promise anyway has its rejection logged. */
function settle(result: unknown, failed: (err: unknown) => void): void {
  if (result instanceof Promise) result.catch(failed);
}

/** Runs preRequest before `handler`; a throw is logged and the request goes on. */
export function withPreRequest(handler: (ex: Exchange) => void, worker: WorkerSelf, hook: PreRequestHook): (ex: Exchange) => void {
  const failed = onceEach('preRequest');
  return (ex) => {
    try {
      settle(hook(worker, requestInfo(ex)), failed);
    } catch (err) {
      failed(err);
    }
    handler(ex);
  };
}

/** Calls postRequest once a request is done (answered, or its client gone). */
export function postRequestCall(worker: WorkerSelf, hook: PostRequestHook): (ex: Exchange) => void {
  const failed = onceEach('postRequest');
  return (ex) => {
    const m = ex as MeasuredExchange;
    try {
      settle(hook(worker, requestInfo(ex), { status: m.status, duration: performance.now() - ex.startedAt, bytes: m.bytes }), failed);
    } catch (err) {
      failed(err);
    }
  };
}
