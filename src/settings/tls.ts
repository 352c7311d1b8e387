// The TLS settings as the engine takes them, and which binds serve TLS.

import type { TlsOptions } from '../native.js';
import type { Config } from './registry.js';
import { bindScheme, tlsBinds } from './bind.js';

/** The engine's TLS options, or null when no certificate is set. */
export function tlsOptions(config: Config): TlsOptions | null {
  if (config.certfile === null) return null;
  return {
    certfile: config.certfile,
    keyfile: config.keyfile ?? '',
    ...(config.caCerts === null ? {} : { caCerts: config.caCerts }),
    certReqs: config.certReqs,
    minVersion: config.tlsMinVersion,
    ciphers: config.ciphers,
    alpn: config.alpn,
  };
}

/** What is wrong with the TLS settings short of reading the files, or null. */
export function tlsSettingsProblem(config: Config, binds: readonly string[]): string | null {
  if ((config.certfile === null) !== (config.keyfile === null)) {
    return config.certfile === null ? '--keyfile is set without --certfile' : '--certfile is set without --keyfile';
  }
  if (config.certfile === null) {
    const https = binds.find((b) => bindScheme(b) === 'https');
    if (https !== undefined) return `--bind ${https} serves TLS: set --certfile and --keyfile`;
    if (config.certReqs !== 'none' || config.caCerts !== null) return '--cert-reqs and --ca-certs need --certfile and --keyfile';
  } else if (config.proxyProtocol !== 'off' && tlsBinds(binds, true).some((tls) => tls)) {
    // The PROXY header comes before the ClientHello; the engine reads it only on plain connections yet.
    return `--proxy-protocol ${config.proxyProtocol} with a TLS bind is not supported yet: terminate TLS in the proxy, or turn --proxy-protocol off`;
  }
  return null;
}

/** Whether `bind`, one of `config.bind`, serves TLS. */
export function servesTls(config: Config, bind: string): boolean {
  return tlsBinds(config.bind, config.certfile !== null)[config.bind.indexOf(bind)] ?? false;
}

/** The indexes of the listeners among `binds` that serve TLS. */
export function tlsListenerIndexes(config: Config, binds: readonly string[]): number[] {
  return tlsBinds(binds, config.certfile !== null).flatMap((tls, i) => (tls ? [i] : []));
}
