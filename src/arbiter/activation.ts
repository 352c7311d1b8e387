// systemd socket activation: the listening sockets systemd (or anything
// speaking its protocol) passed on fds 3.. with LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES. They are served like `fd://N` binds (one socket every
// worker shares). Unlike gunicorn, which then ignores --bind, binds given
// explicitly are served too, except one naming an address an activated
// socket already listens on (so a unit may keep `-b unix:/run/rwsgi.sock`);
// the default bind and PORT are not used when sockets were activated.

import { fstatSync } from 'node:fs';
import { EXIT_CONFIG, RwsgiError } from '../errors.js';
import { logger } from '../log.js';
import { native } from '../native.js';
import { parseBind, unixPath } from '../settings/bind.js';
import type { Source } from '../settings/resolve.js';

/** sd_listen_fds(3): the first passed descriptor. */
const FIRST_FD = 3;
const VARIABLES = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as const;

export interface Activated {
  /** The bind it is served as: `fd://N`. */
  bind: string;
  /** Its LISTEN_FDNAMES entry (systemd's default: the .socket unit's name). */
  name: string;
  /** Where it listens, as a bind is written: `HOST:PORT` or `unix:PATH`. */
  address: string;
}

const refuse = (why: string): RwsgiError => new RwsgiError('RWSGI_ERR_BIND', `systemd socket activation: ${why}`, EXIT_CONFIG);

/** The sockets passed to this process, checked; the variables are removed
 * from `env` whoever they were meant for, so no worker or later arbiter
 * takes them for its own. */
export function takeActivation(env: NodeJS.ProcessEnv = process.env, pid = process.pid): Activated[] {
  const [listenPid, listenFds, names] = VARIABLES.map((name) => env[name]);
  for (const name of VARIABLES) delete env[name];
  if (listenFds === undefined) return [];
  if (listenPid !== String(pid)) {
    logger.debug(`Ignoring LISTEN_FDS=${listenFds}: LISTEN_PID=${listenPid ?? ''} is not this process (${pid})`);
    return [];
  }
  if (!/^\d+$/.test(listenFds)) throw refuse(`LISTEN_FDS must be a count of descriptors, got '${listenFds}'`);
  const nameList = names?.split(':') ?? [];
  return Array.from({ length: Number(listenFds) }, (_, i) => {
    const fd = FIRST_FD + i;
    const name = nameList[i] || 'unknown';
    const what = `fd ${fd} (${name})`;
    let socket = false;
    try {
      socket = fstatSync(fd).isSocket();
    } catch {
      // Not open: said below.
    }
    if (!socket) throw refuse(`${what} is not an open socket`);
    if (!native().isListening(fd)) throw refuse(`${what} is a socket but not a listening one`);
    native().closeOnExec(fd);
    const address = native().socketName(fd);
    logger.info(`systemd socket activation: ${what} listens at ${address}`);
    return { bind: `fd://${fd}`, name, address };
  });
}

/** Whether `bind` names the address that `socket` listens on. */
function covers(socket: Activated, bind: string): boolean {
  if (bind === socket.bind) return true;
  const path = unixPath(bind);
  if (path !== null) return socket.address === bind;
  if (unixPath(socket.address) !== null) return false;
  try {
    const wanted = parseBind(bind);
    const got = parseBind(socket.address);
    return wanted.port === got.port && wanted.host.replace(/^\[|\]$/g, '') === got.host;
  } catch {
    return false;
  }
}

/** What the arbiter listens at: the activated sockets, then the binds set
 * explicitly (flag, RWSGI_CMD_ARGS, config file) that they do not cover. */
export function activatedBinds(sockets: Activated[], bind: string[], source: Source): string[] {
  if (sockets.length === 0) return bind;
  const explicit = source.kind !== 'default' && !(source.kind === 'env' && source.name === 'PORT');
  const more = explicit ? bind.filter((b) => !sockets.some((s) => covers(s, b))) : [];
  return [...sockets.map((s) => s.bind), ...more];
}
