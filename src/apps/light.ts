// Light stand-ins for WHATWG Request and Response on the fetch interface.
// undici's classes cost microseconds per request (header lists, a body
// stream per Response, an AbortController per Request); a router that reads
// `request.url` and answers `new Response('text')` needs none of it.
//
// LightRequest and LightResponse inherit from the real prototypes, so
// `instanceof`, `Object.prototype.toString` and every member work: the few
// members the hot path uses are answered directly, every other one makes
// the real object first and delegates to it. undici's own functions
// (`new Request(request)`, `fetch(request)`) read internal state from the
// objects they are given through symbol-keyed properties; those are found
// on a sample object at load and delegated the same way.
//
// `installLightClasses()` wires them up (touching the globals loads undici,
// so it runs only for fetch apps) and makes `globalThis.Response` the light class, as
// Hono's own Node adapter does, since apps construct responses by the
// global name; `instanceof Response` still holds for real responses.

import type { Exchange } from '../worker/exchange.js';

// Set by installLightClasses(): reading the globals loads undici (~8 MB),
// which only the fetch interface needs.
let RealRequest: typeof Request;
let RealResponse: typeof Response;

type Materialize<T> = (light: object) => T;

/** Defines on `proto` every member of `realProto` that `proto` does not
 * have, and every symbol-keyed own property of `sample`, as a delegation
 * to the real object `materialize` gives. */
function delegateRest<T extends object>(proto: object, realProto: object, sample: object, materialize: Materialize<T>): void {
  const keys: Array<string | symbol> = [...Reflect.ownKeys(realProto), ...Object.getOwnPropertySymbols(sample)];
  for (const key of keys) {
    if (key === 'constructor' || Object.prototype.hasOwnProperty.call(proto, key)) continue;
    const own = Object.getOwnPropertyDescriptor(realProto, key);
    if (own && !own.get && typeof own.value !== 'function') continue; // plain data (Symbol.toStringTag) is inherited
    if (own && typeof own.value === 'function') {
      Object.defineProperty(proto, key, {
        configurable: true,
        writable: true,
        value: function (this: object, ...args: unknown[]) {
          const real = materialize(this) as Record<string | symbol, (...a: unknown[]) => unknown>;
          return (real[key] as (...a: unknown[]) => unknown).apply(real, args);
        },
      });
    } else {
      Object.defineProperty(proto, key, {
        configurable: true,
        get(this: object) {
          return (materialize(this) as Record<string | symbol, unknown>)[key];
        },
      });
    }
  }
}

/** Makes the real Request for a light one (with its body stream and
 * signal); `bodyRead`: the body was already read through the light one. */
export type RequestFactory = (ex: Exchange, url: string, headers: HeadersInit, bodyRead?: boolean) => Request;

const utf8 = new TextDecoder();

/** A Request answering method, url, headers and signal itself, and reading
 * a whole body (text, json, arrayBuffer, bytes) straight from the exchange. */
export class LightRequest {
  readonly #ex: Exchange;
  readonly #url: string;
  /** Shared with other requests (see fetch.ts): read, never changed. */
  readonly #pairs: ReadonlyArray<[string, string]>;
  readonly #factory: RequestFactory;
  #headers: Headers | null = null;
  #real: Request | null = null;
  #bodyUsed = false;

  constructor(ex: Exchange, url: string, pairs: ReadonlyArray<[string, string]>, factory: RequestFactory) {
    this.#ex = ex;
    this.#url = url;
    this.#pairs = pairs;
    this.#factory = factory;
  }

  /** The exchange of a light request, else null. */
  static exchangeOf(value: object): Exchange | null {
    return #ex in value ? value.#ex : null;
  }

  get method(): string {
    return this.#ex.method;
  }

  get url(): string {
    return this.#url;
  }

  get headers(): Headers {
    if (this.#real) return this.#real.headers;
    this.#headers ??= new Headers(this.#pairs as Array<[string, string]>);
    return this.#headers;
  }

  /** Aborts on --request-timeout or client disconnect. */
  get signal(): AbortSignal {
    return this.#ex.signal;
  }

  get bodyUsed(): boolean {
    return this.#real ? this.#real.bodyUsed : this.#bodyUsed;
  }

  /** The whole body, once. */
  async #consume(): Promise<Uint8Array> {
    if (this.#bodyUsed) throw new TypeError('Body is unusable: Body has already been read');
    this.#bodyUsed = true;
    return this.#ex.input.bytes();
  }

  text(): Promise<string> {
    if (this.#real) return this.#real.text();
    return this.#consume().then((bytes) => utf8.decode(bytes));
  }

  json(): Promise<unknown> {
    if (this.#real) return this.#real.json();
    return this.text().then((text) => JSON.parse(text) as unknown);
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    if (this.#real) return this.#real.arrayBuffer();
    return this.#consume().then((bytes) => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
  }

  bytes(): Promise<Uint8Array> {
    if (this.#real) return (this.#real as Request & { bytes(): Promise<Uint8Array> }).bytes();
    return this.arrayBuffer().then((buffer) => new Uint8Array(buffer));
  }

  clone(): Request {
    if (this.#bodyUsed) throw new TypeError('Request.clone: Body has already been consumed.');
    return LightRequest.real(this).clone();
  }

  static real(light: object): Request {
    if (!(#real in light)) throw new TypeError('Illegal invocation');
    if (light.#bodyUsed && !light.#real) {
      // The body was read here: the real request gets none, and says it is used.
      light.#real = light.#factory(light.#ex, light.#url, light.#headers ?? (light.#pairs as Array<[string, string]>), true);
      return light.#real;
    }
    light.#real ??= light.#factory(light.#ex, light.#url, light.#headers ?? (light.#pairs as Array<[string, string]>));
    return light.#real;
  }
}

type LightBody = string | Uint8Array | null | undefined;

/** Statuses whose responses cannot have a body. */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Whether `new Response(body, init)` can be held as given: a string,
 * bytes (a Uint8Array or an ArrayBuffer) or no body, and a plain init the
 * real constructor would accept. */
function holdable(body: unknown, init: unknown): boolean {
  if (!(body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array || body instanceof ArrayBuffer)) return false;
  if (init === undefined) return true;
  if (!isPlainObject(init)) return false;
  const { status, statusText, headers } = init;
  if (status !== undefined && !(Number.isInteger(status) && (status as number) >= 200 && (status as number) <= 599)) return false;
  if (body !== undefined && body !== null && NULL_BODY.has((status as number | undefined) ?? 200)) return false;
  if (statusText !== undefined && !(typeof statusText === 'string' && /^[\t\x20-\x7e\x80-\xff]*$/.test(statusText))) return false;
  return headers === undefined || Array.isArray(headers) || isPlainObject(headers) || headers instanceof Headers;
}

/** The header pairs of a held init, as the real Response would have them. */
function pairsOf(headers: unknown): Array<[string, string]> {
  if (headers === undefined) return [];
  if (headers instanceof Headers) return [...headers];
  if (Array.isArray(headers)) {
    return headers.map((pair: unknown) => {
      if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError('Headers: each pair must be [name, value]');
      return [String(pair[0]), String(pair[1]).trim()];
    });
  }
  return Object.keys(headers as object).map((name) => [name, String((headers as Record<string, unknown>)[name]).trim()]);
}

function hasContentType(pairs: Array<[string, string]>): boolean {
  return pairs.some(([name]) => name.length === 12 && name.toLowerCase() === 'content-type');
}

/** What the fetch runner sends for a held response. */
export interface HeldResponse {
  status: number;
  statusText: string;
  headers: Array<[string, string]>;
  body: string | Uint8Array;
}

/** A Response holding a string or bytes as given, until something other
 * than status, ok, statusText, headers or bodyUsed is asked of it. */
export class LightResponse {
  #body: LightBody;
  #init: Record<string, unknown> | undefined;
  #headers: Headers | null = null;
  #real: Response | null = null;

  constructor(body?: unknown, init?: unknown) {
    if (holdable(body, init)) {
      // An ArrayBuffer is copied, as the real constructor does.
      this.#body = body instanceof ArrayBuffer ? new Uint8Array(body.slice(0)) : (body as LightBody);
      this.#init = init as Record<string, unknown> | undefined;
    } else {
      this.#real = new RealResponse(body as BodyInit | null | undefined, init as ResponseInit | undefined);
    }
  }

  static [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof RealResponse;
  }

  get status(): number {
    return this.#real ? this.#real.status : ((this.#init?.status as number | undefined) ?? 200);
  }

  get ok(): boolean {
    const status = this.status;
    return status >= 200 && status <= 299;
  }

  get statusText(): string {
    return this.#real ? this.#real.statusText : ((this.#init?.statusText as string | undefined) ?? '');
  }

  get headers(): Headers {
    if (this.#real) return this.#real.headers;
    if (!this.#headers) {
      const headers = new Headers(this.#init?.headers as HeadersInit | undefined);
      if (typeof this.#body === 'string' && !headers.has('content-type')) headers.set('content-type', 'text/plain;charset=UTF-8');
      this.#headers = headers;
    }
    return this.#headers;
  }

  get bodyUsed(): boolean {
    return this.#real ? this.#real.bodyUsed : false;
  }

  /** The response as given, or null once it is a real one. */
  static held(response: object): HeldResponse | null {
    if (!(#real in response) || response.#real) return null;
    const headers = response.#headers ? [...response.#headers] : pairsOf(response.#init?.headers);
    const body = response.#body ?? '';
    if (typeof body === 'string' && !response.#headers && !hasContentType(headers)) headers.push(['content-type', 'text/plain;charset=UTF-8']);
    return { status: response.status, statusText: response.statusText, headers, body };
  }

  static real(light: object): Response {
    if (!(#real in light)) throw new TypeError('Illegal invocation');
    light.#real ??= new RealResponse(light.#body as BodyInit | null | undefined, {
      status: light.status,
      statusText: light.statusText,
      headers: light.#headers ?? (light.#init?.headers as HeadersInit | undefined),
    });
    return light.#real;
  }
}

let installed: boolean | null = null;

/** Whether undici takes a light request where it takes a Request: it reads
 * its state through symbol-keyed properties in the undici Node 20 ships,
 * which the light class delegates; an undici keeping it in private fields
 * would refuse it. */
function undiciTakesLightRequests(): boolean {
  const probe = new LightRequest({ method: 'GET' } as Exchange, 'http://localhost/', [['x-probe', '1']], (_ex, url, headers) => new RealRequest(url, { headers }));
  try {
    return new RealRequest(probe as unknown as Request).headers.get('x-probe') === '1';
  } catch {
    return false;
  }
}

/** Puts the light classes on the real prototypes and makes the global
 * `Response` the light one (apps build responses by the global name).
 * Returns whether light requests may be handed to apps. */
export function installLightClasses(): boolean {
  if (installed !== null) return installed;
  RealRequest = globalThis.Request;
  RealResponse = globalThis.Response;
  Object.setPrototypeOf(LightRequest.prototype, RealRequest.prototype);
  delegateRest(LightRequest.prototype, RealRequest.prototype, new RealRequest('http://localhost/'), LightRequest.real);
  Object.setPrototypeOf(LightResponse, RealResponse);
  Object.setPrototypeOf(LightResponse.prototype, RealResponse.prototype);
  delegateRest(LightResponse.prototype, RealResponse.prototype, new RealResponse(''), LightResponse.real);
  globalThis.Response = LightResponse as unknown as typeof Response;
  installed = undiciTakesLightRequests();
  return installed;
}
