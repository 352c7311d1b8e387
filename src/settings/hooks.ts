// Server hooks: the types a config file's functions are checked against
// (through defineConfig), and how the arbiter and the workers call them.

import { describe, logger } from '../log.js';
import type { Config } from './registry.js';

type Awaitable<T> = T | Promise<T>;

/** The arbiter, as its hooks see it. */
export interface ServerInfo {
  readonly pid: number;
  readonly config: Readonly<Config>;
  /** The addresses listened at, `host:port` (after port 0 was given one). */
  readonly addresses: readonly string[];
  /** How many workers are wanted now. */
  readonly workers: number;
}

/** A worker, as the arbiter's hooks see it; `pid` is null before it starts. */
export interface WorkerInfo {
  readonly pid: number | null;
  readonly slot: number;
  /** Counts reloads: HUP starts generation + 1. */
  readonly generation: number;
}

/** Why a worker exited, as far as rwsgi knows. */
export type ExitReason =
  | 'timeout'
  | 'crash'
  | 'boot-failure'
  | 'max-requests'
  | 'memory'
  | 'restart'
  | 'reload'
  | 'scale-down'
  | 'stop';

export interface WorkerExit extends WorkerInfo {
  readonly pid: number;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly reason: ExitReason;
}

/** The worker process a worker hook runs in. */
export interface WorkerSelf {
  readonly pid: number;
  readonly slot: number;
  readonly generation: number;
  readonly config: Readonly<Config>;
}

export interface RequestInfo {
  readonly method: string;
  /** The path, without the query. */
  readonly path: string;
  /** The request target as sent. */
  readonly url: string;
  readonly remoteAddress: string;
}

export interface ResponseInfo {
  /** 0 if no response started (the client left first). */
  readonly status: number;
  /** Milliseconds from the request head's arrival to the response's end. */
  readonly duration: number;
  /** Response bytes the app wrote (the body, and the head for Node apps). */
  readonly bytes: number;
}

export type ServerHook = (server: ServerInfo) => Awaitable<void>;
export type PreSpawnHook = (server: ServerInfo, worker: WorkerInfo) => Awaitable<void>;
export type WorkerExitHook = (server: ServerInfo, worker: WorkerExit) => Awaitable<void>;
export type WorkersChangedHook = (server: ServerInfo, newCount: number, oldCount: number) => Awaitable<void>;
export type WorkerHook = (worker: WorkerSelf) => Awaitable<void>;
export type PreRequestHook = (worker: WorkerSelf, request: RequestInfo) => void;
export type PostRequestHook = (worker: WorkerSelf, request: RequestInfo, response: ResponseInfo) => void;

/** Calls a hook and waits for it, up to `ms`; rejects with what went wrong. */
export async function awaitHook(call: () => unknown, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`it did not finish within ${ms / 1000}s`)), ms);
  });
  try {
    await Promise.race([Promise.resolve().then(call), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Calls a hook without waiting for it; a throw or a rejection is logged. */
export function fireHook(name: string, call: () => unknown): void {
  const failed = (err: unknown): void => logger.error(`${name} hook failed: ${describe(err)}`);
  try {
    const result = call();
    if (result instanceof Promise) result.catch(failed);
  } catch (err) {
    failed(err);
  }
}
