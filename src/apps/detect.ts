// Which interface an app speaks, by its shape: fetch objects (Hono, plain
// `{ fetch }`), Fastify and Koa instances, Express apps, and plain functions
// (the native `app(environ, startResponse)` unless --interface node).

import { RwsgiError, EXIT_APP_LOAD } from '../errors.js';
import type { FetchApp } from './fetch.js';
import type { RequestListener } from './node.js';
import type { WsgiApp } from './wsgi.js';

export const INTERFACES = ['auto', 'wsgi', 'node', 'fetch'] as const;
export type InterfaceChoice = (typeof INTERFACES)[number];

export type DetectedApp =
  | { kind: 'wsgi'; app: WsgiApp; label: string }
  | { kind: 'node'; listener: RequestListener; label: string }
  | { kind: 'fetch'; app: FetchApp; label: string };

type Shape = Record<string, unknown>;

const isFunction = (v: unknown): v is (...args: never[]) => unknown => typeof v === 'function';

export async function detectApp(app: unknown, choice: InterfaceChoice, spec: string): Promise<DetectedApp> {
  const shape = (app ?? {}) as Shape;
  const fail = (what: string): never => {
    throw new RwsgiError('RWSGI_ERR_APP_EXPORT', `${spec}: ${what}`, EXIT_APP_LOAD);
  };
  if (choice === 'fetch' || (choice === 'auto' && typeof app === 'object' && isFunction(shape.fetch))) {
    if (!isFunction(shape.fetch)) fail('--interface fetch needs an object with a fetch(request) method');
    return { kind: 'fetch', app: app as FetchApp, label: 'fetch' };
  }
  if (typeof app === 'object' && app !== null && isFunction(shape.routing) && isFunction(shape.ready)) {
    // Fastify: routes are registered once ready() resolves.
    await (shape.ready as () => Promise<unknown>)();
    return { kind: 'node', listener: shape.routing as RequestListener, label: 'node (Fastify)' };
  }
  if (typeof app === 'object' && app !== null && isFunction(shape.callback) && isFunction(shape.use)) {
    return { kind: 'node', listener: (shape.callback as () => RequestListener)(), label: 'node (Koa)' };
  }
  if (!isFunction(app)) {
    return fail(`exports a ${app === null ? 'null' : typeof app}, not an app: expected app(environ, startResponse), a (req, res) listener, or an object with fetch(request)`);
  }
  const express = isFunction(shape.handle) && isFunction(shape.set) && isFunction(shape.use);
  if (choice === 'node' || (choice === 'auto' && express)) {
    return { kind: 'node', listener: app as RequestListener, label: express ? 'node (Express)' : 'node' };
  }
  return { kind: 'wsgi', app: app as WsgiApp, label: 'wsgi' };
}
