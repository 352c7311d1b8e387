// What the arbiter hands a worker it spawns (in the RWSGI_WORKER
// environment variable, as JSON), one definition for both sides.

import type { Config } from '../config.js';

export const SPEC_VARIABLE = 'RWSGI_WORKER';

export interface WorkerSpec {
  /** The resolved settings; hooks do not cross (functions are not JSON). */
  config: Config;
  /** The config file the settings came from: the worker reads its hooks there. */
  configFile: string | null;
  /** How many listening sockets follow fd 3. */
  listeners: number;
  slot: number;
  generation: number;
  /** Sockets an old arbiter handed ours (USR2) without close-on-exec, so
   * every worker inherits them too: it closes those it does not serve, or
   * one the arbiter closes (TTOU, a removed bind) would stay open here. */
  strayFds: number[];
  /** The listeners (indexes) served over TLS and the session-ticket keys
   * (hex, the first seals); null: no TLS. */
  tls: { listeners: number[]; ticketKeys: string[] } | null;
}
