// Node-style apps: `(req, res)` listeners and the frameworks built on them
// (Express, Koa's callback, Fastify's routing), unmodified. `req` and `res`
// are Node's own IncomingMessage and ServerResponse, so frameworks that patch
// their prototypes work; the socket under them is a Duplex per request that
// writes into the engine. ServerResponse writes its own head and framing,
// so the engine passes those bytes through (a "raw" response).

import { IncomingMessage, ServerResponse } from 'node:http';
import { Duplex } from 'node:stream';
import { FLAG_CLIENT_CERT, FLAG_HAS_BODY, FLAG_KEEP_ALIVE } from '../native.js';
import { type NodePeerCertificate, nodePeerCertificate } from './tls.js';
import type { Exchange } from '../worker/exchange.js';
import { isThenable } from './thenable.js';

export type RequestListener = (req: IncomingMessage, res: ServerResponse) => unknown;

/** What the listener sees as `req.socket`: one per request. */
class ExchangeSocket extends Duplex {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly remoteFamily: string;
  readonly localPort: number;
  readonly encrypted: boolean;
  /** Over TLS, a client certificate was verified (rustls refuses unverified ones). */
  readonly authorized: boolean;

  constructor(
    private readonly ex: Exchange,
    private readonly res: () => ServerResponse,
  ) {
    super({ allowHalfOpen: true, decodeStrings: false });
    this.remoteAddress = ex.peerIp;
    this.remotePort = ex.peerPort;
    this.remoteFamily = ex.peerIp.includes(':') ? 'IPv6' : 'IPv4';
    this.localPort = ex.localPort;
    // The connection's own TLS: Node apps judge forwarded headers themselves (`trust proxy`).
    this.encrypted = ex.tls;
    this.authorized = (ex.flags & FLAG_CLIENT_CERT) !== 0;
  }

  /** As `tls.TLSSocket.getProtocol()`: `TLSv1.3`, or null when not over TLS. */
  getProtocol(): string | null {
    return this.ex.tlsNegotiated()?.[0] ?? null;
  }

  /** As `tls.TLSSocket.getCipher()` (`name` is the IANA name, as `standardName`). */
  getCipher(): { name: string; standardName: string; version: string } | null {
    const negotiated = this.ex.tlsNegotiated();
    return negotiated && { name: negotiated[1], standardName: negotiated[1], version: negotiated[0] };
  }

  /** As `tls.TLSSocket.getPeerCertificate()`: `{}` without a client certificate. */
  getPeerCertificate(): NodePeerCertificate | Record<string, never> {
    const cert = this.ex.peerCertificate();
    return cert ? nodePeerCertificate(cert) : {};
  }

  override _read(): void {}

  override _write(chunk: Buffer | string, encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.settle(this.send(bytesOf(chunk, encoding)), done);
  }

  /** What ServerResponse corked (head, body, the empty write that ends
   * it) goes out in one write, as Node's socket sends it in one `writev`:
   * the engine sends a lone response's bytes as they are written. */
  override _writev(chunks: Array<{ chunk: Buffer | string; encoding: BufferEncoding }>, done: (error?: Error | null) => void): void {
    const parts = chunks.filter(({ chunk }) => chunk.length > 0);
    const [first] = parts;
    if (first === undefined) return done();
    if (parts.length === 1) return this._write(first.chunk, first.encoding, done);
    this.settle(this.send(Buffer.concat(parts.map(({ chunk, encoding }) => toBuffer(chunk, encoding)))), done);
  }

  private send(chunk: Buffer | string): Promise<void> | true {
    const ex = this.ex;
    // The first bytes are the head ServerResponse wrote: its keep-alive choice is final now.
    if (!ex.responseStarted) ex.startRaw(this.res().shouldKeepAlive, this.res().statusCode);
    return ex.write(chunk);
  }

  private settle(pending: Promise<void> | true, done: (error?: Error | null) => void): void {
    if (pending === true) done();
    else pending.then(() => done(), done);
  }

  override _destroy(error: Error | null, done: (error: Error | null) => void): void {
    if (!this.ex.done) this.ex.abort();
    done(error);
  }

  setTimeout(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  setKeepAlive(): this {
    return this;
  }

  address(): { address: string; family: string; port: number } {
    return { address: '0.0.0.0', family: 'IPv4', port: this.localPort };
  }
}

/** A chunk as the engine takes it: strings go over as UTF-8, so one in
 * another encoding (ServerResponse writes its head as Latin-1, where a
 * header value's byte 0xE9 is one byte, not two) is encoded here unless
 * it is ASCII, which reads the same either way. */
function bytesOf(chunk: Buffer | string, encoding: BufferEncoding): Buffer | string {
  if (typeof chunk !== 'string' || encoding === 'utf8' || encoding === 'utf-8') return chunk;
  return encoding === 'latin1' && Buffer.byteLength(chunk, 'utf8') === chunk.length ? chunk : toBuffer(chunk, encoding);
}

function toBuffer(chunk: Buffer | string, encoding: BufferEncoding): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk;
}

/** `_read` of a request without a body: it ends once the listener returns. */
function noRead(): void {}

/** `name\0value\0...` as Node's rawHeaders array. */
function rawHeaderList(joined: string): string[] {
  const parts = joined.split('\0');
  parts.pop();
  return parts;
}

export class NodeRunner {
  /** Set while the worker drains: every response then closes its connection. */
  draining = false;

  constructor(private readonly listener: RequestListener) {}

  handle(ex: Exchange): void {
    let res: ServerResponse | null = null;
    const socket = new ExchangeSocket(ex, () => res as ServerResponse);
    const req = new IncomingMessage(socket as never);
    req.method = ex.method;
    req.url = ex.url;
    req.httpVersionMajor = 1;
    req.httpVersionMinor = ex.httpVersion === 'HTTP/1.0' ? 0 : 1;
    req.httpVersion = ex.httpVersion.slice(5);
    const raw = rawHeaderList(ex.rawHeaders);
    (req as unknown as { _addHeaderLines(h: string[], n: number): void })._addHeaderLines(raw, raw.length);
    const hasBody = (ex.flags & FLAG_HAS_BODY) !== 0;
    if (hasBody) this.feedBody(ex, req);
    else req._read = noRead;

    res = new ServerResponse(req);
    res.shouldKeepAlive = (ex.flags & FLAG_KEEP_ALIVE) !== 0 && !this.draining;
    res.assignSocket(socket as never);
    const response = res;
    // What Node's http server does for its sockets: pass the socket's drain
    // on to a response whose write() returned false.
    socket.on('drain', () => {
      if (response.writableNeedDrain) response.emit('drain');
    });
    response.on('finish', () => {
      response.detachSocket(socket as never);
      ex.end();
    });
    ex.onAbort = () => {
      req.emit('aborted');
      req.destroy();
    };

    try {
      const result = this.listener(req, response);
      if (isThenable(result)) {
        result.then(undefined, (err: unknown) => ex.fail(err));
      }
    } catch (err) {
      ex.fail(err);
    }
    // Without a body the request is complete once its head is read: ended
    // right after the listener, as Node's parser does, with no body stream
    // to pump (its iterator and promises cost a GET as much as a body).
    if (!hasBody) {
      req.complete = true;
      req.push(null);
    }
  }

  /** Streams the request body into `req` as the listener reads it. */
  private feedBody(ex: Exchange, req: IncomingMessage): void {
    let iterator: AsyncIterator<Uint8Array> | null = null;
    let reading = false;
    const pump = async (): Promise<void> => {
      if (reading) return;
      reading = true;
      iterator ??= ex.input[Symbol.asyncIterator]();
      try {
        for (;;) {
          const step = await iterator.next();
          if (step.done) {
            req.complete = true;
            req.push(null);
            return;
          }
          if (!req.push(step.value)) break;
        }
      } catch (err) {
        req.destroy(err as Error);
      } finally {
        reading = false;
      }
    };
    req._read = () => void pump();
  }

}
