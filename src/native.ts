// Loads the Rust addon (this checkout's build, else the platform package's),
// after checking that this node's llhttp has the struct layout the binding
// was written for, and that the addon's contract (request table layout,
// flag bits, callback and option names; defined in
// crates/node/src/contract.rs) is the one this file was written for.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { RwsgiError } from './errors.js';
import type { EngineOptions } from './settings/registry.js';

export interface BoundGroup {
  fds: number[];
  host: string;
  port: number;
}

/** Every field required (the engine has no defaults of its own); built
 * from the settings registry by `engineOptions`. */
export type ServerOptions = EngineOptions;

/** Every `ServerOptions` field, checked against the addon's at load. */
const SERVER_OPTION_NAMES = {
  limitRequestLine: true,
  limitRequestFields: true,
  limitRequestFieldSize: true,
  keepAliveSeconds: true,
  headerTimeoutSeconds: true,
  limitRequestBody: true,
  bodyTimeoutSeconds: true,
  workerConnections: true,
  busyPollMicroseconds: true,
  forwardedAllowIps: true,
  proxyProtocol: true,
  proxyAllowFrom: true,
} satisfies Record<keyof ServerOptions, true>;

/** Slots per request in `ServerCallbacks.requestTable` (checked against the addon at load). */
export const REQUEST_STRIDE = 14;
/** Slot offsets within one request's row; string slots are offsets into `onRequests`' text. */
export const enum Slot {
  Conn = 0,
  Flags = 1,
  Method = 2,
  UrlStart = 3,
  UrlEnd = 4,
  HeadersStart = 5,
  HeadersEnd = 6,
  PeerIpStart = 7,
  PeerIpEnd = 8,
  /** The client address: the peer's very range unless a trusted proxy named another, stashed after it (so its end differs). */
  ClientIpStart = 9,
  ClientIpEnd = 10,
  PeerPort = 11,
  LocalPort = 12,
  ClientPort = 13,
}

/** `Slot`'s members by name (a const enum has no runtime names). */
const SLOT_NAMES = {
  Conn: Slot.Conn,
  Flags: Slot.Flags,
  Method: Slot.Method,
  UrlStart: Slot.UrlStart,
  UrlEnd: Slot.UrlEnd,
  HeadersStart: Slot.HeadersStart,
  HeadersEnd: Slot.HeadersEnd,
  PeerIpStart: Slot.PeerIpStart,
  PeerIpEnd: Slot.PeerIpEnd,
  ClientIpStart: Slot.ClientIpStart,
  ClientIpEnd: Slot.ClientIpEnd,
  PeerPort: Slot.PeerPort,
  LocalPort: Slot.LocalPort,
  ClientPort: Slot.ClientPort,
};

export interface ServerCallbacks {
  /** Where the engine writes each batch of requests, `REQUEST_STRIDE` slots per request. */
  readonly requestTable: Float64Array;
  /** `[count, conn, conn, ...]`: during `onRequests`, the connections
   * answered with the very response of the last `respond` (see
   * `repeatingHeads`); the addon sets `count` to -1 outside it. */
  readonly repeatTable: Float64Array;
  /** `count` requests are in `requestTable`; their strings are cut from `text`
   * (headers as `name\0value\0...`). */
  onRequests(count: number, text: string): void;
  /** Requests will name `method` by `index` from now on. */
  onMethod(index: number, method: string): void;
  onBody(conn: number, chunk: Buffer): void;
  onBodyEnd(conn: number): void;
  onClose(conn: number): void;
  onDrain(conn: number): void;
  /** The client stopped sending while requests are in flight. */
  onPeerShutdown(conn: number): void;
  /** Accepting backs off for a second: out of descriptors or memory. */
  onAcceptPaused(reason: string): void;
  /** A request was refused with `status`, or a connection closed unanswered before HTTP (status 0: its PROXY header), only while `setTraceRejections(true)`. */
  onRejected(status: number, reason: string, peerIp: string, peerPort: number): void;
  /** The worker became full (1: at --worker-connections, or out of descriptors) or has room again (0). */
  onCapacity(full: number): void;
}

/** Every `ServerCallbacks` member, checked against the addon's at load. */
const CALLBACK_NAMES = {
  requestTable: true,
  repeatTable: true,
  onRequests: true,
  onMethod: true,
  onBody: true,
  onBodyEnd: true,
  onClose: true,
  onDrain: true,
  onPeerShutdown: true,
  onAcceptPaused: true,
  onRejected: true,
  onCapacity: true,
} satisfies Record<keyof ServerCallbacks, true>;

/** The per-response calls, plain functions bound to one server (cheaper
 * per call than methods). A `status`, `headers` or string `body` of
 * `undefined` repeats the last one the server decoded (`repeatingHeads`
 * passes it). */
export interface ResponseCalls {
  /** A whole response with a known body; false if the connection is gone. */
  respond(conn: number, status: string | undefined, headers: string | undefined, fields: number, body: string | Uint8Array | undefined): boolean;
  /** Starts a streamed response; `bodyLength` < 0 when unknown. */
  start(conn: number, status: string | undefined, headers: string | undefined, fields: number, bodyLength: number): boolean;
  /** 1: written; 0: written, wait for onDrain; -1: connection gone. */
  write(conn: number, chunk: string | Uint8Array): number;
  end(conn: number): boolean;
}

/** Bodies up to this many characters are compared with the last one: a
 * longer text of equal length would cost a scan each time. */
const REPEATED_BODY_LIMIT = 1024;

/** `calls` passing a response's status, joined headers and short string
 * body only when they differ from the last call's: apps answer with a few
 * heads (and small bodies) over and over, and decoding the same strings
 * again was a tenth of a pipelined hello world's CPU. Remembered only after
 * a call returns, so a call that throws halfway never leaves a stale one to
 * repeat. A response equal to the last in all of them, while `repeats` is
 * open (during `onRequests`), is only listed there: the addon answers it
 * when `onRequests` returns, or before the next call that writes. */
export function repeatingHeads(calls: ResponseCalls, repeats: Float64Array): ResponseCalls {
  // What reaches the server: a string, undefined (it holds it), or what an app passed (refused there).
  type HeadCall = (conn: number, status: unknown, headers: unknown, fields: number, last: unknown) => boolean;
  let lastStatus: unknown;
  let lastHeaders: unknown;
  let lastFields = -1;
  let lastBody: unknown;
  const held = (value: unknown, last: unknown, limit = Infinity): unknown =>
    typeof value !== 'string' ? (value ?? null) : value.length <= limit && value === last ? undefined : value;
  const withHead = (call: HeadCall, conn: number, status: unknown, headers: unknown, fields: number, last: unknown): boolean => {
    const s = held(status, lastStatus);
    const h = held(headers, lastHeaders);
    lastStatus = lastHeaders = undefined;
    lastFields = -1;
    const sent = call(conn, s, h, fields, last);
    lastStatus = status;
    lastHeaders = headers;
    lastFields = fields;
    return sent;
  };
  const listed = (conn: number): boolean => {
    const count = repeats[0] as number;
    if (count < 0 || count + 1 >= repeats.length) return false;
    repeats[count + 1] = conn;
    repeats[0] = count + 1;
    return true;
  };
  return {
    respond: (conn, status, headers, fields, body) => {
      const b = held(body, lastBody, REPEATED_BODY_LIMIT);
      if (b === undefined && status === lastStatus && headers === lastHeaders && fields === lastFields && listed(conn)) return true;
      lastBody = undefined;
      const sent = withHead(calls.respond as HeadCall, conn, status, headers, fields, b);
      lastBody = body;
      return sent;
    },
    start: (conn, status, headers, fields, length) => withHead(calls.start as HeadCall, conn, status, headers, fields, length),
    write: calls.write,
    end: calls.end,
  };
}

/** One worker's request counters, cumulative (crates/core/src/metrics.rs). */
export interface RequestMetrics {
  /** Per method of `metricsLayout().methods` (row), per status class 1xx..5xx. */
  requests: number[];
  /** Responses per duration bucket of `metricsLayout().buckets`, then the rest (not cumulative). */
  durations: number[];
  /** Seconds, summed over the responses. */
  durationSum: number;
  /** Bytes read from clients, and written to them. */
  received: number;
  sent: number;
}

export interface NativeServer {
  responseCalls(): ResponseCalls;
  startRaw(conn: number, keepAlive: boolean, status: number): boolean;
  abort(conn: number): void;
  sendContinue(conn: number): void;
  setReading(conn: number, on: boolean): void;
  drain(): void;
  connectionCount(): number;
  /** Connections accepted since start. */
  acceptedCount(): number;
  /** Idle connections handed to other workers, and received from them, since start. */
  handoffCounts(): [number, number];
  /** Requests the engine refused (malformed, over a limit, too slow), by status sent. */
  rejectedCounts(): Array<{ status: number; count: number }>;
  /** Counts requests and bytes from now on (--metrics-bind). */
  enableMetrics(): void;
  /** The counters; null until enabled. */
  requestMetrics(): RequestMetrics | null;
  /** Reports each refused request to `onRejected` (for --log-level debug). */
  setTraceRejections(on: boolean): void;
  /** Receives connections other workers hand over, under `name`. */
  enableHandoff(name: string): void;
  /** Per CPU, the handoff name of the worker serving connections arriving there (null: this one). */
  setCpuOwners(owners: (string | null)[]): void;
  /** Writes an access log line per request from now on (see src/worker/access-log.ts). */
  openAccessLog(options: { path: string; format: string; json: boolean }): void;
  /** The access log file is reopened by its path before the next write (USR1). */
  reopenAccessLog(): void;
  /** Writes out every access log line so far; blocks on the file. */
  flushAccessLog(): void;
  /** Access log lines dropped since start (the buffer was full, or a write failed). */
  accessLogDropped(): number;
  /** Serves the listeners at `listeners` (indexes) over TLS; tickets sealed with `ticketKeys`. */
  enableTls(options: TlsOptions, listeners: number[], ticketKeys: Buffer[]): void;
  /** Replaces the session-ticket keys (the first seals, all open). */
  setTicketKeys(ticketKeys: Buffer[]): void;
  /** `[version, suite]` (`TLSv1.3`, `TLS_AES_128_GCM_SHA256`) of `conn`, or null when not over TLS. */
  tlsNegotiated(conn: number): [string, string] | null;
  /** The verified client certificate of `conn`, or null. */
  peerCertificate(conn: number): PeerCertificate | null;
  close(): void;
}

/** crates/node/src/tls.rs's TlsOptions. */
export interface TlsOptions {
  certfile: string;
  keyfile: string;
  caCerts?: string;
  certReqs: string;
  minVersion: string;
  ciphers: string[];
  alpn: string[];
}

/** A client certificate, named as Node's `getPeerCertificate()` names it. */
export interface PeerCertificate {
  subject: string;
  issuer: string;
  serialNumber: string;
  validFrom: string;
  validTo: string;
  raw: Buffer;
}

/** What the addon says the contract is (crates/node/src/contract.rs). */
export interface Contract {
  slots: string[];
  flags: Record<string, number>;
  callbacks: string[];
  serverOptions: string[];
}

interface Addon {
  checkLlhttp(version: string): void;
  contract(): Contract;
  /** Loads the TLS files and settings as a worker would; throws naming the file or setting at fault. */
  checkTls(options: TlsOptions): void;
  /** Bytes of one session-ticket key. */
  TICKET_KEY_BYTES: number;
  bindListeners(address: string, count: number, backlog: number): BoundGroup;
  joinListeners(address: string, backlog: number): number;
  /** A Unix listening socket all workers share; a stale file is replaced, a live one refused. */
  bindUnix(path: string, backlog: number): number;
  /** New connections of `fd`'s group go to `slots`, picked by the SYN's CPU or at random. */
  steer(fd: number, slots: number[], groupSize: number, byCpu: boolean): void;
  /** The CPUs this process may run on. */
  allowedCpus(): number[];
  /** Lets process `pid`'s main thread run on `cpus` only. */
  setAffinity(pid: number, cpus: number[]): void;
  /** Whether `fd` is a listening socket. */
  isListening(fd: number): boolean;
  /** Sends one sd_notify datagram to `$NOTIFY_SOCKET` `socket` (a path or `@name`). */
  sdNotify(socket: string, message: string): void;
  /** The address listening socket `fd` was given: `HOST:PORT`, `unix:PATH` or `unix:@NAME`. */
  socketName(fd: number): string;
  /** Keeps inherited socket `fd` out of the processes this one starts. */
  closeOnExec(fd: number): void;
  /** Passes up to `max` connections queued on listening socket `fd` to the worker receiving handoffs under `to`. */
  passQueued(fd: number, to: string, max: number): number;
  /** How `RequestMetrics` is laid out: the methods counted, the status classes per method (1xx..), the duration buckets' upper bounds (seconds). */
  metricsLayout(): { methods: string[]; statusClasses: number; buckets: number[] };
  /** A TCP listening socket's `[queue length, backlog]`; null for a Unix socket. */
  acceptQueue(fd: number): [number, number] | null;
  /** Who connected to Unix socket `fd` (SO_PEERCRED). */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  /** Fatal signals end this process with a CRITICAL line and a native backtrace on `logFd`. */
  reportFatalSignals(role: 'arbiter' | 'worker', logFd: number): void;
  beat(): void;
  watchParent(stallMs: number): void;
  /** A heartbeat went out: the note so far is stale. */
  busyNoteTick(): void;
  /** Writes the note to `fd` once no tick came for `lateMs`: `busy[0]` is
   * non-zero while a request is in flight, `busy[1]` the row of the batch
   * handed over whose request turned the worker busy. */
  watchBusyNotes(fd: number, lateMs: number, busy: Int32Array): void;
  /** What is wrong with an `--access-logformat`, or null. */
  checkAccessLogFormat(format: string): string | null;
  /** Why the access log cannot be written at `path`, or null (creates the file). */
  checkAccessLogFile(path: string): string | null;
  /** From now on `signal` makes the addon's thread write the main thread's JavaScript stack as a `stack` message. */
  enableStackReports(signal: number): void;
  NativeServer: new (fds: number[], options: ServerOptions, callbacks: ServerCallbacks) => NativeServer;
}

/** Request flag bits (checked against the addon at load). */
export const FLAG_KEEP_ALIVE = 1;
export const FLAG_HAS_BODY = 2;
export const FLAG_EXPECT_CONTINUE = 4;
export const FLAG_HTTP10 = 8;
/** The scheme is https: a trusted proxy said so, or the connection is TLS. */
export const FLAG_HTTPS = 16;
export const FLAG_TLS = 32;
export const FLAG_CLIENT_CERT = 64;
/** The connection's previous request had the same header block. */
export const FLAG_SAME_HEADERS = 128;
const FLAGS: Record<string, number> = {
  FLAG_KEEP_ALIVE,
  FLAG_HAS_BODY,
  FLAG_EXPECT_CONTINUE,
  FLAG_HTTP10,
  FLAG_HTTPS,
  FLAG_TLS,
  FLAG_CLIENT_CERT,
  FLAG_SAME_HEADERS,
};

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** How the addon's contract differs from this file's, one entry per part; empty if not. */
export function contractMismatches(contract: Contract): string[] {
  const problems: string[] = [];
  const slots = Object.entries(SLOT_NAMES)
    .sort(([, a], [, b]) => a - b)
    .map(([name]) => name);
  if (!sameList(contract.slots, slots) || contract.slots.length !== REQUEST_STRIDE) {
    problems.push(`request table slots: addon [${contract.slots.join(', ')}], src/native.ts [${slots.join(', ')}] (stride ${REQUEST_STRIDE})`);
  }
  const flags = (f: Record<string, number>): string[] => Object.entries(f).map(([k, v]) => `${k}=${v}`).sort();
  const lists: Array<[string, string[], string[]]> = [
    ['request flags', flags(contract.flags), flags(FLAGS)],
    ['server callbacks', [...contract.callbacks].sort(), Object.keys(CALLBACK_NAMES).sort()],
    ['ServerOptions fields', [...contract.serverOptions].sort(), Object.keys(SERVER_OPTION_NAMES).sort()],
  ];
  for (const [what, addon, ours] of lists) {
    if (!sameList(addon, ours)) problems.push(`${what}: addon [${addon.join(', ')}], src/native.ts [${ours.join(', ')}]`);
  }
  return problems;
}

let addon: Addon | undefined;

/** This machine as napi-rs names platforms (`linux-x64-gnu`): the binary is
 * `rwsgi.<platform>.node`, shipped in the package `rwsgi-<platform>`. */
export function platformName(): string {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  let musl = false;
  try {
    // The C library this node runs on is mapped into it.
    musl = readFileSync('/proc/self/maps', 'utf8').includes('ld-musl');
  } catch {
    // No /proc: assume glibc.
  }
  return `linux-${process.arch}-${musl ? 'musl' : 'gnu'}`;
}

/** The addon built in this checkout (dist/), else the platform package's. */
function loadAddon(): Addon {
  const platform = platformName();
  const local = fileURLToPath(new URL(`./rwsgi.${platform}.node`, import.meta.url));
  const pkg = `rwsgi-${platform}`;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const candidate of [local, pkg]) {
    try {
      return require(candidate) as Addon;
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
      if (!missing) {
        throw new RwsgiError('RWSGI_ERR_NATIVE', `cannot load the native addon ${candidate}: ${(err as Error).message}`);
      }
      tried.push(candidate);
    }
  }
  throw new RwsgiError(
    'RWSGI_ERR_NATIVE',
    `no native addon for ${platform}: install the package ${pkg} (rwsgi's optional dependency for this platform; ` +
      `it is skipped by --omit=optional) or, in a checkout, build it with \`npm run build\` (tried ${tried.join(', ')})`,
  );
}

export function native(): Addon {
  if (addon) return addon;
  const loaded = loadAddon();
  try {
    loaded.checkLlhttp(process.versions.llhttp ?? 'unknown');
  } catch (err) {
    throw new RwsgiError('RWSGI_ERR_NATIVE', (err as Error).message);
  }
  const problems = typeof loaded.contract === 'function' ? contractMismatches(loaded.contract()) : ['the addon exports no contract'];
  if (problems.length > 0) {
    throw new RwsgiError(
      'RWSGI_ERR_NATIVE',
      `the native addon rwsgi.${platformName()}.node does not match this build's JavaScript (${problems.join('; ')}); rebuild both with \`npm run build\``,
    );
  }
  addon = loaded;
  return loaded;
}
