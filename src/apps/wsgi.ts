// The native interface, WSGI (PEP 3333) in JavaScript:
//   app(environ, startResponse) -> iterable | async iterable | Promise of one
// where startResponse(status, [[name, value], ...]) is called before the
// first body chunk and chunks are strings or Uint8Arrays.

import { logger } from '../log.js';
import type { Exchange } from '../worker/exchange.js';
import { isThenable } from './thenable.js';
import { addTlsVariables } from './tls.js';

/** A piece of a request or response body. */
export type Chunk = string | Uint8Array;

/** `environ['wsgi.input']`: the request body, read once. */
export interface WsgiInput extends AsyncIterable<Uint8Array> {
  /** The whole body in one buffer. */
  bytes(): Promise<Uint8Array>;
}

/** What a native app gets for each request: PEP 3333's names. */
export interface Environ {
  REQUEST_METHOD: string;
  SCRIPT_NAME: string;
  /** Percent-decoded. */
  PATH_INFO: string;
  QUERY_STRING: string;
  /** The request target as sent. */
  RAW_URI: string;
  SERVER_NAME: string;
  SERVER_PORT: string;
  SERVER_PROTOCOL: string;
  REMOTE_ADDR: string;
  REMOTE_PORT: string;
  CONTENT_TYPE?: string;
  CONTENT_LENGTH?: string;
  'wsgi.version': readonly number[];
  'wsgi.url_scheme': string;
  'wsgi.input': WsgiInput;
  'wsgi.errors': { write(message: string): void; flush(): void };
  'wsgi.multithread': boolean;
  'wsgi.multiprocess': boolean;
  'wsgi.run_once': boolean;
  /** Aborts when the request exceeds --request-timeout or the client goes away. */
  'rwsgi.signal': AbortSignal;
  /** Every other request header: `HTTP_` and its name upper-cased, `-` as `_`. */
  [header: `HTTP_${string}`]: string | undefined;
  [key: string]: unknown;
}

/** Starts the response; the returned `write` is PEP 3333's legacy one. */
export type StartResponse = (
  status: string,
  headers: Array<[string, string]>,
  excInfo?: unknown,
) => (chunk: Chunk) => void;

/** The response body: chunks, all at once or as they come. */
export type WsgiBody = Chunk | Iterable<Chunk> | AsyncIterable<Chunk>;

export type WsgiApp = (environ: Environ, startResponse: StartResponse) => WsgiBody | Promise<WsgiBody>;

const errorsStream = {
  write(message: string): void {
    process.stderr.write(message);
  },
  flush(): void {},
};

/** %XX-decodes a path; the bytes are read as UTF-8, bad escapes kept as-is. */
export function decodePath(raw: string): string {
  if (!raw.includes('%')) return raw;
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(raw.slice(i + 1, i + 3))) {
      bytes.push(parseInt(raw.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(c & 0xff);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Splits the request target into path and query; absolute-form loses its authority. */
export function splitTarget(url: string): { path: string; query: string } {
  let target = url;
  // Origin-form (`/path?query`) is nearly every request: no pattern needed.
  const scheme = target.charCodeAt(0) === 0x2f ? null : /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(target);
  if (scheme) target = target.slice(scheme[0].length) || '/';
  const hash = target.indexOf('#');
  if (hash !== -1) target = target.slice(0, hash);
  const q = target.indexOf('?');
  return q === -1 ? { path: target, query: '' } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

const WSGI_VERSION = Object.freeze([1, 0]);

/** `Content-Type` -> `CONTENT_TYPE`, `X-Id` -> `HTTP_X_ID`; null for names with '_'. */
const environKeys = new Map<string, string | null>();
const KEY_CACHE_LIMIT = 1024;

/** `key` as V8's one copy of it: a property name made at run time is a
 * plain string, and a store under it goes through V8's megamorphic keyed
 * store (a lookup per request); under the internalized copy the store's
 * cache keeps the name. With one header that was a fifth of the native
 * interface's JavaScript per request. */
function internalized(key: string): string {
  return Object.keys({ [key]: 0 })[0] as string;
}

function environKey(name: string): string | null {
  let key = environKeys.get(name);
  if (key !== undefined) return key;
  // Names with '_' would alias '-' names once mapped (gunicorn and nginx drop them).
  if (name.includes('_')) {
    key = null;
  } else {
    const upper = name.toUpperCase().replace(/-/g, '_');
    key = internalized(upper === 'CONTENT_TYPE' || upper === 'CONTENT_LENGTH' ? upper : `HTTP_${upper}`);
  }
  if (environKeys.size < KEY_CACHE_LIMIT) environKeys.set(name, key);
  return key;
}

const EXCHANGE = Symbol('exchange');

/** environ: plain data fields, plus `rwsgi.signal` made only when read.
 * The fixed names are set in the constructor, always in this order, so V8
 * keeps them inside the object (headers added after it stay fast too: see
 * addHeaders). */
class EnvironRecord {
  [key: string]: unknown;
  declare [EXCHANGE]: Exchange;

  /** `path`: percent-decoded. */
  constructor(ex: Exchange, path: string, query: string) {
    this[EXCHANGE] = ex;
    this.REQUEST_METHOD = ex.method;
    this.SCRIPT_NAME = '';
    this.PATH_INFO = path;
    this.QUERY_STRING = query;
    this.RAW_URI = ex.url;
    this.SERVER_PROTOCOL = ex.httpVersion;
    this.REMOTE_ADDR = ex.clientIp;
    this.REMOTE_PORT = ex.clientPortText;
    this.SERVER_NAME = 'localhost';
    this.SERVER_PORT = ex.conn.localPortText;
    this['wsgi.version'] = WSGI_VERSION;
    this['wsgi.url_scheme'] = ex.scheme;
    this['wsgi.input'] = ex.input;
    this['wsgi.errors'] = errorsStream;
    this['wsgi.multithread'] = false;
    this['wsgi.multiprocess'] = true;
    this['wsgi.run_once'] = false;
  }

  /** Aborts on --request-timeout or client disconnect. */
  get 'rwsgi.signal'(): AbortSignal {
    return this[EXCHANGE].signal;
  }
}

/** Adds `pairs` (key, value, ...) to `environ`. One store per position for
 * the first twelve: each then sees the same name request after request
 * (clients send their headers in a fixed order) and V8 keeps it a fast
 * transition; a single store in a loop sees every name, and past a few
 * headers that turned the whole environ into a hash table (buildEnviron
 * with 10 headers: 0.78 µs instead of 0.19). */
function addHeaders(environ: EnvironRecord, pairs: string[]): void {
  const p = pairs;
  const n = p.length;
  if (n < 2) return;
  environ[p[0] as string] = p[1];
  if (n < 4) return;
  environ[p[2] as string] = p[3];
  if (n < 6) return;
  environ[p[4] as string] = p[5];
  if (n < 8) return;
  environ[p[6] as string] = p[7];
  if (n < 10) return;
  environ[p[8] as string] = p[9];
  if (n < 12) return;
  environ[p[10] as string] = p[11];
  if (n < 14) return;
  environ[p[12] as string] = p[13];
  if (n < 16) return;
  environ[p[14] as string] = p[15];
  if (n < 18) return;
  environ[p[16] as string] = p[17];
  if (n < 20) return;
  environ[p[18] as string] = p[19];
  if (n < 22) return;
  environ[p[20] as string] = p[21];
  if (n < 24) return;
  environ[p[22] as string] = p[23];
  for (let i = 24; i < n; i += 2) environ[p[i] as string] = p[i + 1];
}

/** The request headers as environ entries. */
interface EnvironHeaders {
  /** key, value, key, value, ...: repeated headers joined with ','. */
  pairs: string[];
  /** From Host, if it has one. */
  serverName: string | null;
  serverPort: string;
}

function parseHeaders(raw: string): EnvironHeaders {
  const pairs: string[] = [];
  const index = new Map<string, number>();
  let start = 0;
  while (start < raw.length) {
    const nameEnd = raw.indexOf('\0', start);
    const valueEnd = raw.indexOf('\0', nameEnd + 1);
    if (nameEnd === -1 || valueEnd === -1) break;
    const key = environKey(raw.slice(start, nameEnd));
    if (key !== null) {
      const value = raw.slice(nameEnd + 1, valueEnd);
      const prior = index.get(key);
      if (prior === undefined) {
        index.set(key, pairs.length + 1);
        pairs.push(key, value);
      } else {
        pairs[prior] = `${pairs[prior] as string},${value}`;
      }
    }
    start = valueEnd + 1;
  }
  const hostAt = index.get('HTTP_HOST');
  const host = hostAt === undefined ? '' : (pairs[hostAt] as string);
  if (host === '') return { pairs, serverName: null, serverPort: '' };
  // `name`, `name:port`, `[v6]` or `[v6]:port`; the parser checked the characters.
  const colon = host.lastIndexOf(':');
  const bracket = host.lastIndexOf(']');
  const hasPort = colon > bracket && /^\d+$/.test(host.slice(colon + 1));
  return { pairs, serverName: hasPort ? host.slice(0, colon) : host, serverPort: hasPort ? host.slice(colon + 1) : '80' };
}

/** The last request target split and decoded: clients ask for the same
 * few again and again, and comparing with the last one costs less than
 * the scans for `#`, `?` and `%`. */
const lastTarget = { url: '', path: '', query: '' };

export function buildEnviron(ex: Exchange): EnvironRecord {
  const url = ex.url;
  if (url !== lastTarget.url) {
    const { path, query } = splitTarget(url);
    lastTarget.path = decodePath(path);
    lastTarget.query = query;
    lastTarget.url = url;
  }
  const environ = new EnvironRecord(ex, lastTarget.path, lastTarget.query);
  if (ex.scheme === 'https') addTlsVariables(environ, ex);
  const fields = ex.conn.fromHeaders(ex.rawHeaders, parseHeaders);
  addHeaders(environ, fields.pairs);
  if (fields.serverName !== null) {
    environ.SERVER_NAME = fields.serverName;
    environ.SERVER_PORT = fields.serverPort;
  }
  return environ;
}

function isChunk(value: unknown): value is Chunk {
  return typeof value === 'string' || value instanceof Uint8Array;
}

function checkChunk(value: unknown): Chunk {
  if (!isChunk(value)) throw new TypeError(`body chunks must be strings or Uint8Arrays, got ${typeof value}`);
  return value;
}

function concat(chunks: Chunk[]): Chunk {
  if (chunks.length === 0) return '';
  if (chunks.length === 1) return chunks[0] as Chunk;
  if (chunks.every((c) => typeof c === 'string')) return chunks.join('');
  return Buffer.concat(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c) : c)));
}

const INTERFACE_HINT =
  'interface: native WSGI-style app(environ, startResponse); ' +
  'if it is a Node (req, res) listener, run rwsgi with --interface node';
const NO_START = `the app returned without calling startResponse(status, headers) (${INTERFACE_HINT})`;

/** Runs one request through a WSGI-style app. Never throws. */
export class WsgiRunner {
  constructor(private readonly app: WsgiApp) {}

  handle(ex: Exchange): void {
    const state = new ResponseState(ex);
    let result: unknown;
    try {
      result = this.app(buildEnviron(ex) as unknown as Environ, state.startResponse);
    } catch (err) {
      state.fail(err);
      return;
    }
    if (isThenable(result)) {
      result.then(
        (value) => state.finish(value),
        (err: unknown) => state.fail(err),
      );
    } else {
      state.finish(result);
    }
  }
}

class ResponseState {
  status: string | null = null;
  headers: Array<[string, string]> = [];
  /** Chunks given to the legacy `write` callable before the iterable (rarely any). */
  early: Chunk[] | null = null;

  constructor(private readonly ex: Exchange) {}

  readonly startResponse: StartResponse = (status, headers, excInfo) => {
    if (this.status !== null && excInfo === undefined) {
      throw new Error('startResponse() called twice without excInfo');
    }
    if (this.ex.responseStarted && excInfo !== undefined) throw excInfo;
    if (typeof status !== 'string') throw new TypeError('status must be a string like "200 OK"');
    this.status = status;
    this.headers = headers;
    return (chunk) => {
      if (this.ex.done) {
        logger.warning(`Request ${this.ex.path}: write() after the response ended is ignored`);
        return;
      }
      (this.early ??= []).push(checkChunk(chunk));
    };
  };

  fail(err: unknown, reason?: string): void {
    // A TypeError before startResponse is what a (req, res) listener served
    // as a native app hits first (res.writeHead is not a function).
    const misfit = reason === undefined && this.status === null && err instanceof TypeError;
    this.ex.fail(err, misfit ? INTERFACE_HINT : reason);
  }

  finish(result: unknown): void {
    try {
      if (isChunk(result)) return this.whole([result]);
      if (Array.isArray(result)) {
        result.forEach(checkChunk);
        return this.whole(result as Chunk[]);
      }
      const iterable = result as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null | undefined;
      if (iterable && (iterable[Symbol.asyncIterator] || iterable[Symbol.iterator])) {
        this.stream(iterable as AsyncIterable<unknown> | Iterable<unknown>).catch((err: unknown) => this.fail(err));
        return;
      }
      if (this.status === null) return this.fail(null, NO_START);
      throw new TypeError(`the app returned ${result === null ? 'null' : typeof result}; expected an iterable of body chunks`);
    } catch (err) {
      this.fail(err);
    }
  }

  private whole(chunks: Chunk[]): void {
    if (this.status === null) return this.fail(null, NO_START);
    this.ex.respond(this.status, this.headers, concat(this.early ? [...this.early, ...chunks] : chunks));
  }

  private async stream(iterable: AsyncIterable<unknown> | Iterable<unknown>): Promise<void> {
    const ex = this.ex;
    const asyncIt = (iterable as AsyncIterable<unknown>)[Symbol.asyncIterator];
    const it: AsyncIterator<unknown> | Iterator<unknown> = asyncIt
      ? asyncIt.call(iterable)
      : (iterable as Iterable<unknown>)[Symbol.iterator]();
    let finished = false;
    try {
      let step = await it.next();
      if (this.status === null) return this.fail(null, NO_START);
      if (step.done) {
        finished = true;
        return this.whole([]);
      }
      ex.start(this.status, this.headers, -1);
      for (const chunk of this.early ?? []) await ex.write(chunk);
      while (!step.done) {
        const pending = ex.write(checkChunk(step.value));
        if (pending !== true) await pending;
        if (ex.closed) return;
        step = await it.next();
      }
      finished = true;
      ex.end();
    } finally {
      if (!finished) await it.return?.();
    }
  }
}

