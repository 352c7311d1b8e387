// The kinds of setting (integer, seconds, choice, path, list of binds,
// hook ...): how each reads a flag's text and checks a config file's value,
// and how it says what is allowed when a value is not.

import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { inheritedFd, parseBind, unixPath } from './bind.js';

export const SECTIONS = [
  'Application',
  'Server socket',
  'Worker processes',
  'Timeouts',
  'Limits',
  'Logging',
  'Process',
  'Observability',
  'Proxies',
  'TLS',
  'Development',
  'Hooks',
] as const;
export type Section = (typeof SECTIONS)[number];

/** Which process reads a setting: the arbiter, each worker, or the Rust
 * engine inside each worker. */
export type Where = 'arbiter' | 'worker' | 'engine';

/** A value that is not allowed. `allowed` completes "must be ...";
 * `sentence`, when set, replaces the whole message. */
export class Invalid extends Error {
  constructor(
    readonly allowed: string,
    readonly sentence: ((label: string, shown: string) => string) | null = null,
  ) {
    super(allowed);
  }
}

/** The Rust engine's option names (crates/node/src/lib.rs, ServerOptions). */
export type EngineField =
  | 'limitRequestLine'
  | 'limitRequestFields'
  | 'limitRequestFieldSize'
  | 'keepAliveSeconds'
  | 'headerTimeoutSeconds'
  | 'limitRequestBody'
  | 'bodyTimeoutSeconds'
  | 'workerConnections'
  | 'busyPollMicroseconds'
  | 'forwardedAllowIps'
  | 'proxyProtocol'
  | 'proxyAllowFrom';

export interface Common {
  readonly section: Section;
  /** One paragraph: what it does, in the words of `--help` and the README. */
  readonly doc: string;
  readonly applies: readonly Where[];
  /** For engine settings: the field of the engine's options it fills. */
  readonly engine?: EngineField;
  /** Long flag without the dashes; none: config file only (hooks). */
  readonly flag?: string;
  readonly short?: string;
  /** More long flags that mean the same (gunicorn's spellings). */
  readonly aliases?: readonly string[];
  /** The value's placeholder in `--help`: N, S, FILE ... */
  readonly meta?: string;
  /** The default as `--help` and the README say it, when it is not a literal. */
  readonly defaultText?: string;
}

/** One setting: `T` is its resolved value, `I` what a config file may give. */
export interface Setting<T, I = T> extends Common {
  readonly kind: string;
  /** Repeatable flag: each occurrence adds one item. */
  readonly multiple: boolean;
  readonly default: () => T;
  /** The value of a flag's text (each item's, when repeatable). */
  fromText(text: string[]): T;
  /** The value of a config file's entry. */
  fromValue(value: unknown): T;
  /** How a value prints in --help, --print-config and the README. */
  show(value: T): string;
  /** Never instantiated: carries `I` for the config file type. */
  readonly input?: I;
}

type Options<T> = Common & { default: T | (() => T) };

const thunk = <T>(d: T | (() => T)): (() => T) => (typeof d === 'function' ? (d as () => T) : () => d);

export const quote = (v: unknown): string => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v) ?? String(v));

/** The last of a flag's occurrences wins, as on any command line. */
const last = (text: string[]): string => text[text.length - 1] ?? '';

function numeric(
  kind: string,
  o: Options<number> & { min: number; max: number },
  isValid: (n: number) => boolean,
  what: string,
  textPattern: RegExp,
): Setting<number> {
  // The message names the bound that was missed.
  const check = (n: unknown): number => {
    if (typeof n !== 'number' || !isValid(n) || n < o.min) throw new Invalid(`${what} >= ${o.min}`);
    if (n > o.max) throw new Invalid(`${what} <= ${o.max}`);
    return n;
  };
  return {
    ...o,
    kind,
    multiple: false,
    default: thunk(o.default),
    fromText: (text) => {
      const t = last(text).trim();
      if (!textPattern.test(t)) throw new Invalid(`${what} >= ${o.min}`);
      return check(Number(t));
    },
    fromValue: check,
    show: String,
  };
}

export function int(o: Options<number> & { min: number; max: number }): Setting<number> {
  return numeric('integer', o, Number.isSafeInteger, 'an integer', /^\d+$/);
}

/** Timers hold at most 2^31-1 ms; 24 days stays below that. */
export const MAX_SECONDS = 24 * 86_400;

export function seconds(o: Options<number>): Setting<number> {
  return numeric(
    'seconds',
    { ...o, min: 0, max: MAX_SECONDS },
    Number.isFinite,
    'a number of seconds',
    /^(\d+\.?\d*|\.\d+)$/,
  );
}

export function choice<const C extends readonly string[]>(choices: C, o: Options<C[number]>): Setting<C[number]> {
  const check = (v: unknown): C[number] => {
    if (typeof v !== 'string' || !choices.includes(v)) throw new Invalid(`one of ${choices.join(', ')}`);
    return v;
  };
  return { ...o, kind: 'choice', multiple: false, default: thunk(o.default), fromText: (t) => check(last(t)), fromValue: check, show: String };
}

/** A file path, made absolute against the working directory; null = none. */
export function path(o: Options<string | null>): Setting<string | null> {
  const check = (v: unknown): string | null => {
    if (v === null) return null;
    if (typeof v !== 'string' || v === '') throw new Invalid('a file path (a non-empty string)');
    return resolve(v);
  };
  return { ...o, kind: 'path', multiple: false, default: thunk(o.default), fromText: (t) => check(last(t)), fromValue: check, show: (v) => v ?? '' };
}

/** A file path made absolute, or `-` for standard output; null = none. */
export function pathOrDash(o: Options<string | null>): Setting<string | null> {
  const file = path(o);
  const check = (v: unknown): string | null => (v === '-' ? '-' : file.fromValue(v));
  return { ...file, kind: 'path', fromText: (t) => check(last(t)), fromValue: check };
}

/** Text that `why` checks: it returns what is wrong, or null. */
export function text(o: Options<string> & { why: (v: string) => string | null }): Setting<string> {
  const check = (v: unknown): string => {
    if (typeof v !== 'string') throw new Invalid('a string');
    const why = o.why(v);
    if (why !== null) throw new Invalid(why, (label) => `${label}: ${why}`);
    return v;
  };
  return { ...o, kind: 'text', multiple: false, default: thunk(o.default), fromText: (t) => check(last(t)), fromValue: check, show: String };
}

/** The app: MODULE[:EXPORT], kept as given (workers resolve it). */
export function module(o: Options<string | null>): Setting<string | null> {
  const check = (v: unknown): string | null => {
    if (v === null) return null;
    if (typeof v !== 'string' || v === '') throw new Invalid('MODULE[:EXPORT] (a non-empty string)');
    return v;
  };
  return { ...o, kind: 'module', multiple: false, default: thunk(o.default), fromText: (t) => check(last(t)), fromValue: check, show: (v) => v ?? '' };
}

/** On or off: the flag takes no value and turns it on; a file gives true or false. */
export function onOff(o: Options<boolean>): Setting<boolean> {
  const check = (v: unknown): boolean => {
    if (typeof v !== 'boolean') throw new Invalid('true or false');
    return v;
  };
  return { ...o, kind: 'switch', multiple: false, default: thunk(o.default), fromText: () => true, fromValue: check, show: String };
}

/** File paths or glob patterns (`*`, `**`, `?`), made absolute against the
 * working directory: repeatable flag, a string or a list in a file. */
export function patterns(o: Options<string[]>): Setting<string[], string | string[]> {
  const one = (v: unknown): string => {
    if (typeof v !== 'string' || v === '') throw new Invalid('a file path or glob (a non-empty string), or a list of them');
    return resolve(v);
  };
  return {
    ...o,
    kind: 'patterns',
    multiple: true,
    default: thunk(o.default),
    fromText: (t) => t.map(one),
    fromValue: (v) => (Array.isArray(v) ? v : [v]).map(one),
    show: (v) => v.join(' '),
  };
}

/** Whether `item` is an IP address, a CIDR range or `*`. */
function isAddressOrRange(item: string): boolean {
  if (item === '*') return true;
  const [addr = '', prefix, ...rest] = item.split('/');
  const family = isIP(addr);
  if (family === 0 || rest.length > 0) return false;
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128));
}

/** Peers to trust: addresses, CIDR ranges and `*`, comma-separated (or a
 * list in a file); kept as one comma-separated string, as the engine takes it. */
export function addresses(o: Options<string>): Setting<string, string | string[]> {
  const check = (v: unknown): string => {
    const items = (Array.isArray(v) ? v : [v]).flatMap((x: unknown) => (typeof x === 'string' ? x.split(',') : [null]));
    const allowed = 'IP addresses, CIDR ranges (10.0.0.0/8) or *, comma-separated';
    const bad = items.find((x) => x === null || !isAddressOrRange(x.trim()));
    if (bad !== undefined) throw new Invalid(allowed, bad === null ? null : (label) => `${label}: '${bad.trim()}' is not an IP address, a CIDR range or *`);
    return (items as string[]).map((x) => x.trim()).join(',');
  };
  return { ...o, kind: 'addresses', multiple: false, default: thunk(o.default), fromText: (t) => check(last(t)), fromValue: check, show: String };
}

/** Names separated by commas (or colons, as OpenSSL writes cipher lists):
 * a string or a list in a file; the last flag wins. */
export function names(o: Options<string[]>): Setting<string[], string | string[]> {
  const split = (v: unknown): string[] => {
    const items = Array.isArray(v) ? v : [v];
    if (!items.every((s) => typeof s === 'string')) throw new Invalid('names separated by commas, or a list of them');
    return (items as string[]).flatMap((s) => s.split(/[,:]/)).map((s) => s.trim()).filter((s) => s !== '');
  };
  return { ...o, kind: 'names', multiple: false, default: thunk(o.default), fromText: (t) => split(last(t)), fromValue: split, show: (v) => v.join(',') };
}

/** Listening addresses: repeatable flag, a string or a list in a file. */
export function binds(o: Options<string[]>): Setting<string[], string | string[]> {
  const one = (v: unknown): string => {
    if (typeof v !== 'string') throw new Invalid('HOST:PORT, or a list of them');
    try {
      if ((unixPath(v) === null || unixPath(v) === '') && inheritedFd(v) === null) parseBind(v);
    } catch {
      throw new Invalid('HOST:PORT', (label) => `${label} '${v}' is not HOST:PORT (IPv6 as [::1]:8000; port 0-65535)`);
    }
    return v;
  };
  const list = (v: unknown[]): string[] => {
    if (v.length === 0) throw new Invalid('at least one HOST:PORT');
    return v.map(one);
  };
  return {
    ...o,
    kind: 'binds',
    multiple: true,
    default: thunk(o.default),
    fromText: list,
    fromValue: (v) => list(Array.isArray(v) ? v : [v]),
    show: (v) => v.join(' '),
  };
}

/** One TCP address, HOST:PORT; null = off. */
export function address(o: Options<string | null>): Setting<string | null> {
  const check = (v: unknown): string | null => {
    if (v === null) return null;
    const text = typeof v === 'string' ? v : '';
    try {
      if (unixPath(text) !== null || inheritedFd(text) !== null) throw new Error('not TCP');
      parseBind(text);
    } catch {
      throw new Invalid('HOST:PORT', (label) => `${label} '${String(v)}' is not HOST:PORT (a TCP address; IPv6 as [::1]:9100; port 0-65535)`);
    }
    return text;
  };
  return { ...o, kind: 'address', multiple: false, default: thunk(o.default), fromText: (t) => check(last(t)), fromValue: check, show: (v) => v ?? '' };
}

/** Any function: hooks take typed arguments, the registry only checks it is one. */
type AnyFunction = (...args: never[]) => unknown;

/** A function in the config file, called at a point of the server's life. */
export function hook<F extends AnyFunction>(o: Common): Setting<F | null> {
  const check = (v: unknown): F | null => {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'function') throw new Invalid('a function');
    return v as F;
  };
  return {
    ...o,
    kind: 'hook',
    multiple: false,
    default: () => null,
    fromText: () => {
      throw new Invalid('a function in a config file');
    },
    fromValue: check,
    show: (v) => (v === null ? '' : `[function ${v.name || 'anonymous'}]`),
  };
}
