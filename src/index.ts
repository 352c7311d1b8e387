// The package entry: types for apps on rwsgi's native interface, and for
// config files (`defineConfig` lets an editor complete and check the keys).

import type { UserConfig } from './settings/registry.js';

export type { Chunk, Environ, StartResponse, WsgiApp, WsgiApp as App, WsgiBody, WsgiInput } from './apps/wsgi.js';
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

type ConfigExport = UserConfig | (() => UserConfig | Promise<UserConfig>);

/** A config file's export, unchanged: an object of settings, or a
 * function (sync or async) returning one. There for the types: an editor
 * completes the keys and flags unknown ones. */
export function defineConfig(config: UserConfig): UserConfig;
export function defineConfig(config: () => UserConfig | Promise<UserConfig>): () => UserConfig | Promise<UserConfig>;
export function defineConfig(config: ConfigExport): ConfigExport {
  return config;
}
