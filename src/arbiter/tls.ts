// TLS in the arbiter: the certificate and settings checked before any
// worker starts (exit 3) and before each HUP's new workers (a broken file
// keeps the running ones), and the session-ticket keys every worker seals
// tickets with, so a client resumes on any worker; rotated every 12 hours,
// the previous key still accepted.

import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { EXIT_CONFIG, RwsgiError } from '../errors.js';
import { native } from '../native.js';
import { tlsOptions, tlsSettingsProblem } from '../settings/tls.js';

export const TICKET_ROTATION_MS = 12 * 3600 * 1000;

/** Throws a config error naming the file or setting when TLS cannot be served. */
export function checkTls(config: Config): void {
  const problem = tlsSettingsProblem(config, config.bind);
  if (problem !== null) throw new RwsgiError('RWSGI_ERR_CONFIG', problem, EXIT_CONFIG);
  const options = tlsOptions(config);
  if (options === null) return;
  try {
    native().checkTls(options);
  } catch (err) {
    throw new RwsgiError('RWSGI_ERR_CONFIG', (err as Error).message, EXIT_CONFIG);
  }
}

/** The ticket keys, newest first, as hex (they cross to workers in their spec). */
export class TicketKeys {
  private keys: string[] = [];

  constructor() {
    this.rotate();
  }

  /** A new sealing key; the previous one still opens tickets. */
  rotate(): string[] {
    const fresh = randomBytes(native().TICKET_KEY_BYTES).toString('hex');
    this.keys = [fresh, ...this.keys.slice(0, 1)];
    return this.current();
  }

  current(): string[] {
    return [...this.keys];
  }
}
