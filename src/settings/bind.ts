// Listening addresses as people write them: `HOST:PORT`, `[V6]:PORT`,
// `HOST`, `:PORT`, `unix:PATH` or `fd://N`; a TCP address may say
// `https://` (served over TLS) or `http://` (plain), see `tlsBinds`.

import { lookup } from 'node:dns/promises';
import { EXIT_CONFIG, RwsgiError } from '../errors.js';

export const DEFAULT_PORT = 8000;

/** The path of a `unix:PATH` bind, else null. */
export function unixPath(bind: string): string | null {
  return bind.startsWith('unix:') ? bind.slice('unix:'.length) : null;
}

/** The descriptor of an `fd://N` bind (a listening socket inherited on N), else null. */
export function inheritedFd(bind: string): number | null {
  const m = /^fd:\/\/(\d+)$/.exec(bind);
  return m ? Number(m[1]) : null;
}

const SCHEME = /^(https?):\/\//;

/** `https` or `http` when the bind says so, else null. */
export function bindScheme(bind: string): 'https' | 'http' | null {
  return (SCHEME.exec(bind)?.[1] as 'https' | 'http' | undefined) ?? null;
}

/** Which of `binds` serve TLS. `https://` binds always (a certificate is
 * needed); with a certificate set and no bind saying `https://`, every TCP
 * bind not saying `http://` (gunicorn's rule: a cert makes the server
 * HTTPS); Unix and inherited sockets stay plain. */
export function tlsBinds(binds: readonly string[], certSet: boolean): boolean[] {
  const explicit = binds.some((b) => bindScheme(b) === 'https');
  return binds.map((b) => {
    const scheme = bindScheme(b);
    if (scheme !== null) return scheme === 'https';
    return certSet && !explicit && unixPath(b) === null && inheritedFd(b) === null;
  });
}

/** Splits a bind; the port defaults to 8000, an empty host is 0.0.0.0.
 * Throws on anything else. */
export function parseBind(bind: string): { host: string; port: number } {
  bind = bind.replace(SCHEME, '');
  if (unixPath(bind) === '') throw new Error(`--bind '${bind}' names no socket path (unix:/run/app.sock)`);
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(bind) ?? /^([^:[\]]*)(?::(\d+))?$/.exec(bind);
  const port = m?.[2] === undefined ? DEFAULT_PORT : Number(m[2]);
  if (!m || port > 65535) throw new Error(`--bind '${bind}' is not HOST:PORT (IPv6 as [::1]:8000)`);
  return { host: m[1] === '' ? '0.0.0.0' : (m[1] as string), port };
}

/** `host:port` as the addon parses it, resolving names like `localhost`. */
export async function socketAddress(bind: string): Promise<string> {
  const { host, port } = parseBind(bind);
  let ip = host;
  if (!/^[\d.]+$/.test(host) && !host.includes(':')) {
    try {
      ip = (await lookup(host)).address;
    } catch {
      throw new RwsgiError('RWSGI_ERR_BIND', `cannot resolve bind host '${host}'`, EXIT_CONFIG);
    }
  }
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
