// The package entry: types for apps on rwsgi's native interface, and for
// config files (`defineConfig` lets an editor complete and check the keys).

import type { UserConfig } from './settings/registry.js';

export type { Environ, StartResponse, WsgiApp } from './apps/wsgi.js';
export type { Config, UserConfig } from './settings/registry.js';
export type {
  ExitReason,
  RequestInfo,
  ResponseInfo,
  ServerInfo,
  WorkerExit,
  WorkerInfo,
  WorkerSelf,
} from './settings/hooks.js';

/** A config file's export, unchanged: an object of settings, or a
 * function (sync or async) returning one. Only there for the types. */
export function defineConfig<C extends UserConfig | (() => UserConfig | Promise<UserConfig>)>(config: C): C {
  return config;
}
