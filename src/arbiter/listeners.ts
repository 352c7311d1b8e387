// The kinds of listening socket the arbiter holds. A TCP bind is a group of
// SO_REUSEPORT sockets, one per worker slot, that the kernel balances and
// the arbiter steers; a Unix bind is one socket every slot shares (the
// kernel does not balance Unix sockets), accepted with EPOLLEXCLUSIVE.

import { closeSync, fstatSync, unlinkSync } from 'node:fs';
import { EXIT_CONFIG, RwsgiError } from '../errors.js';
import { native } from '../native.js';
import { inheritedFd, socketAddress, unixPath } from '../settings/bind.js';

export interface Listener {
  bind: string;
  /** `host:port`, `unix:PATH` or `fd://N`. */
  address: string;
  /** The one socket all slots share, or null for a per-slot group. */
  shared: number | null;
  /** The socket file this arbiter created, removed when it closes. */
  path: string | null;
}

export interface Opened {
  listener: Listener;
  /** One descriptor per slot (the same one for a shared socket). */
  fds: number[];
}

const bindError = (bind: string, err: unknown): RwsgiError =>
  new RwsgiError('RWSGI_ERR_BIND', `cannot listen at ${bind}: ${(err as Error).message}`, EXIT_CONFIG);

/** Listens at `bind` for `slots` worker slots; the caller owns the sockets. */
export async function openListener(bind: string, slots: number, backlog: number, umask: number): Promise<Opened> {
  const inherited = inheritedFd(bind);
  if (inherited !== null) {
    let socket = false;
    try {
      socket = fstatSync(inherited).isSocket();
    } catch {
      // Not open: said below.
    }
    if (!socket) throw bindError(bind, new Error(`fd ${inherited} is not an open socket this process inherited`));
    if (!native().isListening(inherited)) throw bindError(bind, new Error(`fd ${inherited} is a socket but not a listening one`));
    return { listener: { bind, address: bind, shared: inherited, path: null }, fds: Array.from({ length: slots }, () => inherited) };
  }
  const path = unixPath(bind);
  if (path !== null) {
    const old = process.umask(umask);
    let fd: number;
    try {
      fd = native().bindUnix(path, backlog);
    } catch (err) {
      throw bindError(bind, err);
    } finally {
      process.umask(old);
    }
    return { listener: { bind, address: bind, shared: fd, path }, fds: Array.from({ length: slots }, () => fd) };
  }
  const requested = await socketAddress(bind);
  let group;
  try {
    group = native().bindListeners(requested, slots, backlog);
  } catch (err) {
    throw bindError(bind, err);
  }
  const host = group.host.includes(':') ? `[${group.host}]` : group.host;
  return { listener: { bind, address: `${host}:${group.port}`, shared: null, path: null }, fds: group.fds };
}

/** The socket a new slot gets for `listener`. */
export function slotSocket(listener: Listener, backlog: number): number {
  return listener.shared ?? native().joinListeners(listener.address, backlog);
}

/** Closes a slot's own socket of `listener` (a shared one stays open). */
export function closeSlotSocket(listener: Listener | undefined, fd: number): void {
  if (listener?.shared !== fd) closeSync(fd);
}

/** Closes what `listener` holds beyond the slots' own sockets, and removes
 * its socket file. */
/** Closes a shared socket, and removes its file unless `keepFile` (a USR2
 * upgrade: the new arbiter serves the same file). */
export function closeListener(listener: Listener, keepFile = false): void {
  if (listener.shared === null) return;
  closeSync(listener.shared);
  if (listener.path === null || keepFile) return;
  try {
    unlinkSync(listener.path);
  } catch {
    // Already gone.
  }
}

/** How a log line names the address (`tls`: it serves HTTPS). */
export const url = (l: Listener, tls = false): string => (l.shared === null ? `${tls ? 'https' : 'http'}://${l.address}` : l.address);
