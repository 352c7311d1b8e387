// What apps see of a TLS connection beyond the scheme: the client
// certificate, as mod_ssl's environ variables (wsgi) and in the shape of
// Node's `getPeerCertificate()` (node).

import type { PeerCertificate } from '../native.js';
import type { Exchange } from '../worker/exchange.js';

/** A DER certificate as PEM. */
export function pem(der: Uint8Array): string {
  const lines = Buffer.from(der).toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** `CN=client, O=Example` as `{ CN: 'client', O: 'Example' }`. */
export function dnFields(dn: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of dn.split(/,\s*(?=[A-Za-z0-9.]+=)/)) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

/** `HTTPS=on` and, with a verified client certificate, `SSL_CLIENT_S_DN`,
 * `SSL_CLIENT_I_DN`, `SSL_CLIENT_M_SERIAL`, `SSL_CLIENT_CERT` (PEM) and
 * `SSL_CLIENT_VERIFY=SUCCESS`, as Apache's mod_ssl names them. */
export function addTlsVariables(environ: Record<string, unknown>, ex: Exchange): void {
  environ.HTTPS = 'on';
  const cert = ex.peerCertificate();
  if (cert === null) return;
  environ.SSL_CLIENT_S_DN = cert.subject;
  environ.SSL_CLIENT_I_DN = cert.issuer;
  environ.SSL_CLIENT_M_SERIAL = cert.serialNumber;
  environ.SSL_CLIENT_CERT = pem(cert.raw);
  environ.SSL_CLIENT_VERIFY = 'SUCCESS';
}

export interface NodePeerCertificate {
  subject: Record<string, string>;
  issuer: Record<string, string>;
  serialNumber: string;
  valid_from: string;
  valid_to: string;
  raw: Buffer;
}

export function nodePeerCertificate(cert: PeerCertificate): NodePeerCertificate {
  return {
    subject: dnFields(cert.subject),
    issuer: dnFields(cert.issuer),
    serialNumber: cert.serialNumber,
    valid_from: cert.validFrom,
    valid_to: cert.validTo,
    raw: cert.raw,
  };
}
