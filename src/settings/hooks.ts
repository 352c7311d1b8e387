// What server hooks receive: the types a config file's functions are
// checked against (through defineConfig), and what the arbiter and the
// workers build when they call them.

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
export type ExitReason = 'timeout' | 'crash' | 'boot-failure' | 'max-requests' | 'reload' | 'scale-down' | 'stop';

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
