// TLS in a worker: the listeners the arbiter marked served over TLS, with
// the certificate files read afresh, and the ticket keys kept current.

import type { Config } from '../config.js';
import type { NativeServer } from '../native.js';
import { tlsOptions } from '../settings/tls.js';
import type { ArbiterLink } from './link.js';

const keyBuffers = (keys: string[]): Buffer[] => keys.map((k) => Buffer.from(k, 'hex'));

export function serveTls(server: NativeServer, config: Config, spec: { listeners: number[]; ticketKeys: string[] }, link: ArbiterLink): void {
  const options = tlsOptions(config);
  if (options === null) throw new Error('TLS listeners without --certfile');
  server.enableTls(options, spec.listeners, keyBuffers(spec.ticketKeys));
  link.onTicketKeys((keys) => server.setTicketKeys(keyBuffers(keys)));
}
