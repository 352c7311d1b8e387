// Every setting of rwsgi, declared once (gunicorn's config.py model): its
// flags, kind and bounds, default, section, doc and the processes that read
// it. The command line, `--help`, config files, RWSGI_CMD_ARGS, validation,
// `--print-config`, the engine's options and the README's settings table all
// come from here. Adding a setting is one entry below plus the code that
// uses it.

import { availableParallelism } from 'node:os';
import { LEVELS } from '../log.js';
import type {
  PostRequestHook,
  PreRequestHook,
  PreSpawnHook,
  ServerHook,
  WorkerExitHook,
  WorkerHook,
  WorkersChangedHook,
} from './hooks.js';
import { address, addresses, binds, choice, type EngineField, hook, int, module, names, onOff, path, pathOrDash, patterns, seconds, type Setting, text } from './kinds.js';
import { native } from '../native.js';

export const INTERFACES = ['auto', 'wsgi', 'node', 'fetch'] as const;
export type InterfaceChoice = (typeof INTERFACES)[number];

export const SPREADS = ['cpu', 'random'] as const;
export type SpreadChoice = (typeof SPREADS)[number];

export const PROXY_PROTOCOLS = ['off', 'v1', 'v2', 'auto'] as const;
export const CERT_REQS = ['none', 'optional', 'required'] as const;
export const TLS_VERSIONS = ['1.2', '1.3'] as const;

const U32 = 2 ** 32 - 1;
const I32 = 2 ** 31 - 1;

export const SETTINGS = {
  // ---- Application ----
  app: module({
    section: 'Application',
    applies: ['worker'],
    meta: 'MODULE[:EXPORT]',
    default: null,
    defaultText: '',
    doc: 'The app to serve: the module (a path or a package name) and, after a colon, the export to use (default: the default export, or an export named `app` or `application`). On the command line it is the argument after `serve`; in a config file, `app`.',
  }),
  interface: choice(INTERFACES, {
    section: 'Application',
    applies: ['worker'],
    flag: 'interface',
    short: 'i',
    meta: 'I',
    default: 'auto',
    doc: 'The app interface: `auto` (fetch objects, Fastify, Koa and Express apps by their shape, any other function as `wsgi`), `wsgi`, `node` (a plain `(req, res)` listener) or `fetch`.',
  }),

  // ---- Server socket ----
  bind: binds({
    section: 'Server socket',
    applies: ['arbiter'],
    flag: 'bind',
    short: 'b',
    meta: 'HOST:PORT',
    default: ['127.0.0.1:8000'],
    defaultText: '127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set; neither when systemd passed sockets',
    doc: 'An address to listen on; repeat the flag (or give a list) for several. IPv6 as `[::1]:8000`; port 0 picks a free one; `unix:PATH` a Unix socket, `fd://N` an inherited listening socket (see Binding); `https://HOST:PORT` serves TLS beside plain binds (see HTTPS).',
  }),
  umask: int({
    section: 'Server socket',
    applies: ['arbiter'],
    flag: 'umask',
    meta: 'MASK',
    min: 0,
    max: 0o777,
    default: 0o007,
    defaultText: '7 (0o007)',
    doc: 'The umask a `unix:` socket is created with (decimal, as `7`): the default leaves it `rwxrwx---`, so a front proxy in the socket\'s group can connect and other users cannot.',
  }),
  backlog: int({
    section: 'Server socket',
    applies: ['arbiter'],
    flag: 'backlog',
    meta: 'N',
    min: 1,
    max: I32,
    default: 2048,
    doc: 'The listen queue length of each socket.',
  }),
  spread: choice(SPREADS, {
    section: 'Server socket',
    applies: ['arbiter'],
    flag: 'spread',
    meta: 'HOW',
    default: 'cpu',
    doc: 'How new connections are spread over the workers: `cpu` (by the CPU that received the connection, each worker running on its CPUs, so one client thread\'s connections share a worker; random as soon as that loads the workers unevenly) or `random`.',
  }),

  // ---- TLS ----
  certfile: path({
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'certfile',
    meta: 'FILE',
    default: null,
    defaultText: 'none (plain HTTP)',
    doc: 'The server certificate (PEM; the chain after it in the same file). With `keyfile`, TCP binds serve HTTPS (see TLS); checked before any worker starts.',
  }),
  keyfile: path({
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'keyfile',
    meta: 'FILE',
    default: null,
    defaultText: '',
    doc: 'The private key of `certfile` (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA or Ed25519).',
  }),
  caCerts: path({
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'ca-certs',
    meta: 'FILE',
    default: null,
    defaultText: '',
    doc: 'The CA certificates (PEM) client certificates are verified against, for `certReqs`.',
  }),
  certReqs: choice(CERT_REQS, {
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'cert-reqs',
    meta: 'REQ',
    default: 'none',
    doc: 'Client certificates: `none` (not asked for), `optional` (verified if sent) or `required` (the handshake fails without one).',
  }),
  tlsMinVersion: choice(TLS_VERSIONS, {
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'tls-min-version',
    meta: 'V',
    default: '1.2',
    doc: 'The oldest TLS version accepted: `1.2` or `1.3`.',
  }),
  ciphers: names({
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'ciphers',
    meta: 'SUITES',
    default: [],
    defaultText: 'rustls\' defaults',
    doc: 'The cipher suites offered, by IANA name, comma-separated, e.g. `TLS13_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`; an unknown name is refused.',
  }),
  alpn: names({
    section: 'TLS',
    applies: ['arbiter', 'worker'],
    flag: 'alpn',
    meta: 'PROTOCOLS',
    default: ['http/1.1'],
    doc: 'The ALPN protocols offered, comma-separated, in preference order.',
  }),

  // ---- Worker processes ----
  workers: int({
    section: 'Worker processes',
    applies: ['arbiter'],
    flag: 'workers',
    short: 'w',
    meta: 'N',
    min: 1,
    max: 1024,
    default: () => availableParallelism(),
    defaultText: 'number of CPUs',
    doc: 'The number of worker processes.',
  }),
  workerConnections: int({
    section: 'Worker processes',
    applies: ['engine'],
    engine: 'workerConnections',
    flag: 'worker-connections',
    meta: 'N',
    min: 1,
    max: U32,
    default: 4096,
    doc: 'Open connections per worker before it pauses accepting.',
  }),
  busyPoll: int({
    section: 'Worker processes',
    applies: ['engine'],
    engine: 'busyPollMicroseconds',
    flag: 'busy-poll',
    meta: 'US',
    min: 0,
    max: 1000,
    default: 50,
    doc: 'Microseconds a worker with at most 4 connections open keeps polling for the next request after a loop turn that served a single one, before it sleeps: a client sending request after request (a service calling another, a health checker, a benchmark at one connection) finds it awake, instead of waking a sleeping CPU for every request; it yields the CPU to any other runnable thread meanwhile. Costs at most that much CPU per such turn; 0 = sleep at once, as Node does.',
  }),
  maxRequests: int({
    section: 'Worker processes',
    applies: ['arbiter', 'worker'],
    flag: 'max-requests',
    meta: 'N',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    default: 0,
    doc: 'Replace a worker, gracefully, after it served N requests; 0 = never.',
  }),
  maxRequestsJitter: int({
    section: 'Worker processes',
    applies: ['arbiter', 'worker'],
    flag: 'max-requests-jitter',
    meta: 'N',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    default: 0,
    doc: 'Add a stable 0..N to each worker\'s `maxRequests`, so replacements spread out.',
  }),
  maxWorkerMemory: int({
    section: 'Worker processes',
    applies: ['arbiter'],
    flag: 'max-worker-memory',
    meta: 'MB',
    min: 0,
    max: 2 ** 40,
    default: 0,
    doc: 'Replace a worker, gracefully (its replacement first, then it drains), once its resident memory (RSS, checked at every heartbeat) is above MB megabytes; 0 = never. Set it well above a fresh worker\'s RSS (`rwsgi status` shows it).',
  }),
  maxWorkerHeap: int({
    section: 'Worker processes',
    applies: ['arbiter'],
    flag: 'max-worker-heap',
    meta: 'MB',
    min: 0,
    max: 2 ** 40,
    default: 0,
    doc: 'As `maxWorkerMemory`, on the V8 heap the worker uses (JavaScript objects only, no buffers); 0 = never.',
  }),

  // ---- Timeouts ----
  timeout: seconds({
    section: 'Timeouts',
    applies: ['arbiter', 'worker'],
    flag: 'timeout',
    short: 't',
    meta: 'S',
    default: 30,
    doc: 'Seconds without a heartbeat before a worker is killed and replaced; 0 = never.',
  }),
  gracefulTimeout: seconds({
    section: 'Timeouts',
    applies: ['arbiter', 'worker'],
    flag: 'graceful-timeout',
    meta: 'S',
    default: 30,
    doc: 'Seconds workers get to finish in-flight requests on `TERM`, reload or recycling, then `SIGKILL`; also bounds the `onExit` hook.',
  }),
  bootTimeout: seconds({
    section: 'Timeouts',
    applies: ['arbiter'],
    flag: 'boot-timeout',
    meta: 'S',
    default: 30,
    doc: 'Seconds a new worker gets to load the app (and run `workerInit`/`postWorkerInit`) and report ready; also bounds `onStarting`.',
  }),
  keepAlive: seconds({
    section: 'Timeouts',
    applies: ['engine'],
    engine: 'keepAliveSeconds',
    flag: 'keep-alive',
    meta: 'S',
    default: 5,
    doc: 'Seconds an idle keep-alive connection stays open.',
  }),
  headerTimeout: seconds({
    section: 'Timeouts',
    applies: ['engine'],
    engine: 'headerTimeoutSeconds',
    flag: 'header-timeout',
    meta: 'S',
    default: 10,
    doc: 'Seconds a client gets to send a whole request head, then `408`.',
  }),
  bodyTimeout: seconds({
    section: 'Timeouts',
    applies: ['engine'],
    engine: 'bodyTimeoutSeconds',
    flag: 'body-timeout',
    meta: 'S',
    default: 30,
    doc: 'Seconds a request body may stall between reads, then `408`.',
  }),
  requestTimeout: seconds({
    section: 'Timeouts',
    applies: ['worker'],
    flag: 'request-timeout',
    meta: 'S',
    default: 0,
    doc: 'Seconds a request may run: then `504` with `Connection: close` (or a cut connection if the response started) and `environ[\'rwsgi.signal\']` aborts; 0 = off.',
  }),
  shutdownDelay: seconds({
    section: 'Timeouts',
    applies: ['arbiter'],
    flag: 'shutdown-delay',
    meta: 'S',
    default: 0,
    doc: 'On TERM, `/ready` answers 503 at once and the workers keep serving for this many seconds before the graceful stop, so a load balancer (a Kubernetes Service) stops sending first; then `--graceful-timeout` applies.',
  }),

  // ---- Limits ----
  limitRequestLine: int({
    section: 'Limits',
    applies: ['engine'],
    engine: 'limitRequestLine',
    flag: 'limit-request-line',
    meta: 'N',
    min: 16,
    max: U32,
    default: 4094,
    doc: 'The longest request line in bytes, else `414`.',
  }),
  limitRequestFields: int({
    section: 'Limits',
    applies: ['engine'],
    engine: 'limitRequestFields',
    flag: 'limit-request-fields',
    meta: 'N',
    min: 1,
    max: U32,
    default: 100,
    doc: 'The most header fields in a request, else `431`.',
  }),
  limitRequestFieldSize: int({
    section: 'Limits',
    applies: ['engine'],
    engine: 'limitRequestFieldSize',
    flag: 'limit-request-field_size',
    aliases: ['limit-request-field-size'],
    meta: 'N',
    min: 16,
    max: U32,
    default: 8190,
    doc: 'The longest header field (name and value) in bytes, else `431`.',
  }),
  limitRequestBody: int({
    section: 'Limits',
    applies: ['engine'],
    engine: 'limitRequestBody',
    flag: 'limit-request-body',
    meta: 'N',
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    default: 0,
    doc: 'The largest request body in bytes, else `413`; 0 = unlimited.',
  }),

  // ---- Logging ----
  logLevel: choice(LEVELS, {
    section: 'Logging',
    applies: ['arbiter', 'worker'],
    flag: 'log-level',
    meta: 'LEVEL',
    default: 'info',
    doc: 'The least severe log lines written: `debug`, `info`, `warning`, `error` or `critical`.',
  }),
  errorLogfile: path({
    section: 'Logging',
    applies: ['arbiter', 'worker'],
    flag: 'error-logfile',
    meta: 'FILE',
    default: null,
    defaultText: 'stderr',
    doc: 'Write log lines to FILE (appending) instead of stderr; `USR1` reopens it, for log rotation.',
  }),
  accessLogfile: pathOrDash({
    section: 'Logging',
    applies: ['worker'],
    flag: 'access-logfile',
    meta: 'FILE',
    default: null,
    defaultText: 'none (no access log)',
    doc: 'Write a line per request to FILE (appending), or to stdout with `-`; `USR1` reopens it. Lines are buffered and written at least every 100 ms (see Logging).',
  }),
  accessLogformat: text({
    section: 'Logging',
    applies: ['worker'],
    flag: 'access-logformat',
    meta: 'FORMAT',
    default: '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    why: (v) => native().checkAccessLogFormat(v),
    doc: 'The access log line, with gunicorn\'s atoms (`%(h)s`, `%({header}i)s`... see Logging); an unknown atom stops the server at startup.',
  }),
  accessLogJson: onOff({
    section: 'Logging',
    applies: ['worker'],
    flag: 'access-log-json',
    default: false,
    doc: 'Write the access log as one JSON object per line (fixed keys, see Logging) instead of `accessLogformat`.',
  }),

  // ---- Process ----
  pidfile: path({
    section: 'Process',
    applies: ['arbiter'],
    flag: 'pid',
    short: 'p',
    meta: 'FILE',
    default: null,
    doc: 'Write the arbiter\'s pid to FILE; refuse to start if a live process\'s pid is there.',
  }),
  controlSocket: path({
    section: 'Process',
    applies: ['arbiter'],
    flag: 'control-socket',
    meta: 'PATH',
    default: null,
    defaultText: '$XDG_RUNTIME_DIR/rwsgi/PID.sock, else /tmp/rwsgi-UID/PID.sock',
    doc: 'The Unix socket `rwsgi status`, `reload`, `stop`, `scale`, `restart-worker` and `dump` talk to (mode 0600; only this user and root are answered). By default one per server, named by the arbiter\'s pid, in a directory of this user\'s that no one else can enter; the commands find it when it is the only one.',
  }),
  noControlSocket: onOff({
    section: 'Process',
    applies: ['arbiter'],
    flag: 'no-control-socket',
    default: false,
    doc: 'Listen on no control socket (the commands above then cannot reach this server; signals still work).',
  }),

  // ---- Proxies ----
  forwardedAllowIps: addresses({
    section: 'Proxies',
    applies: ['engine'],
    engine: 'forwardedAllowIps',
    flag: 'forwarded-allow-ips',
    meta: 'IPS',
    default: '127.0.0.1,::1',
    doc: 'The front proxies (addresses, CIDR ranges, or `*` for any) whose `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Ssl` and `Forwarded` headers set the client address (`REMOTE_ADDR`) and the scheme (`wsgi.url_scheme`, the fetch `Request.url`); from other peers those headers change nothing. Unix-socket peers are trusted. Node apps keep the real peer in `req.socket.remoteAddress` (see Behind a proxy).',
  }),
  proxyProtocol: choice(PROXY_PROTOCOLS, {
    section: 'Proxies',
    applies: ['engine'],
    engine: 'proxyProtocol',
    flag: 'proxy-protocol',
    meta: 'MODE',
    default: 'off',
    doc: 'Read a PROXY protocol header (HAProxy `send-proxy`, nginx `proxy_protocol`) before HTTP: `off`, `v1` (text), `v2` (binary) or `auto` (either). Peers in `proxyAllowFrom` must send one; others must not. A connection that breaks this is closed unanswered.',
  }),
  proxyAllowFrom: addresses({
    section: 'Proxies',
    applies: ['engine'],
    engine: 'proxyAllowFrom',
    flag: 'proxy-allow-from',
    meta: 'IPS',
    default: '127.0.0.1,::1',
    doc: 'With `proxyProtocol`: the peers (addresses, CIDR ranges, or `*`) that send a PROXY header. Unix-socket peers are included.',
  }),

  // ---- Development ----
  metricsBind: address({
    section: 'Observability',
    applies: ['arbiter', 'worker'],
    flag: 'metrics-bind',
    meta: 'HOST:PORT',
    default: null,
    defaultText: 'off',
    doc: 'Serve `GET /metrics` (Prometheus text format), `/ready` and `/live` at this address, from the arbiter (see Metrics and health checks). Off by default; keep it on a private address.',
  }),
  reload: onOff({
    section: 'Development',
    applies: ['arbiter'],
    flag: 'reload',
    default: false,
    doc: 'Replace the workers, as on `HUP`, when a file under the app\'s directory changes (`node_modules` and dot-directories ignored); an edit that breaks the app keeps the running workers until the next good one. For development.',
  }),
  reloadExtraFiles: patterns({
    section: 'Development',
    applies: ['arbiter'],
    flag: 'reload-extra-file',
    meta: 'FILE',
    default: [],
    defaultText: '',
    doc: 'With `reload`: also reload when FILE changes; a glob (`*`, `**`, `?`) matches many; repeat the flag (or give a list) for several.',
  }),

  // ---- Hooks (config file only) ----
  onStarting: hook<ServerHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`onStarting(server)`, in the arbiter before it binds: awaited (bounded by `bootTimeout`); a throw or rejection stops startup with exit 3.',
  }),
  whenReady: hook<ServerHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`whenReady(server)`, in the arbiter once the first full set of workers is ready; not awaited, a throw is logged.',
  }),
  onReload: hook<ServerHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`onReload(server)`, in the arbiter on `HUP`, after the config file was read again and before new workers start; not awaited, a throw is logged.',
  }),
  preSpawn: hook<PreSpawnHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`preSpawn(server, worker)`, in the arbiter right before a worker process starts (`worker.pid` is null); synchronous, a throw is logged and the worker starts.',
  }),
  workerExit: hook<WorkerExitHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`workerExit(server, worker)`, in the arbiter after a worker exited, with `exitCode`, `signal` and `reason` (`timeout`, `crash`, `boot-failure`, `max-requests`, `memory` (over `maxWorkerMemory` or `maxWorkerHeap`), `restart` (`rwsgi restart-worker`), `reload`, `scale-down` or `stop`); not awaited, a throw is logged.',
  }),
  nworkersChanged: hook<WorkersChangedHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`nworkersChanged(server, newCount, oldCount)`, in the arbiter when the wanted number of workers changes (`TTIN`, `TTOU`, a reload with another `workers`); not awaited, a throw is logged.',
  }),
  onExit: hook<ServerHook>({
    section: 'Hooks',
    applies: ['arbiter'],
    doc: '`onExit(server)`, in the arbiter once every worker is gone, before it exits: awaited (bounded by `gracefulTimeout`); a throw is logged.',
  }),
  workerInit: hook<WorkerHook>({
    section: 'Hooks',
    applies: ['worker'],
    doc: '`workerInit(worker)`, in each worker before the app is imported: awaited; a throw or rejection is a boot failure (exit 4 at startup, as an app that does not load).',
  }),
  postWorkerInit: hook<WorkerHook>({
    section: 'Hooks',
    applies: ['worker'],
    doc: '`postWorkerInit(worker)`, in each worker after the app loaded and before it reports ready: awaited; a throw or rejection is a boot failure.',
  }),
  preRequest: hook<PreRequestHook>({
    section: 'Hooks',
    applies: ['worker'],
    doc: '`preRequest(worker, request)`, in the worker before the app gets each request (`method`, `path`, `url`, `remoteAddress`); synchronous, a throw is logged once per distinct error and the request goes on.',
  }),
  postRequest: hook<PostRequestHook>({
    section: 'Hooks',
    applies: ['worker'],
    doc: '`postRequest(worker, request, response)`, in the worker after each response ended (`status`, `duration` in ms, `bytes`); synchronous, a throw is logged once per distinct error.',
  }),
  workerShutdown: hook<WorkerHook>({
    section: 'Hooks',
    applies: ['worker'],
    doc: '`workerShutdown(worker)`, in the worker when it starts draining (stop, reload, recycling); not awaited, the drain goes on; a throw is logged.',
  }),
} as const;

export type Settings = typeof SETTINGS;
export type SettingName = keyof Settings;

type ValueOf<S> = S extends Setting<infer T, unknown> ? T : never;
type InputOf<S> = S extends Setting<unknown, infer I> ? I : never;

/** The resolved settings of one `rwsgi serve`, shared by the arbiter and its workers. */
export type Config = { -readonly [K in SettingName]: ValueOf<Settings[K]> };

/** What a config file may hold: any settings, by their camelCase names. */
export type UserConfig = { [K in SettingName]?: InputOf<Settings[K]> };

export const NAMES = Object.keys(SETTINGS) as SettingName[];

/** A setting's declaration, seen without its value type. */
export function setting(name: SettingName): Setting<unknown, unknown> {
  return SETTINGS[name] as Setting<unknown, unknown>;
}

export function isSettingName(name: string): name is SettingName {
  return Object.hasOwn(SETTINGS, name);
}

/** Every setting at its default. */
export function defaults(): Config {
  return Object.fromEntries(NAMES.map((n) => [n, setting(n).default()])) as Config;
}

/** The options handed to the Rust engine (crates/node's ServerOptions):
 * each engine setting under its `engine` field name. */
export type EngineOptions = Record<EngineField, number | string>;

export function engineOptions(config: Config): EngineOptions {
  const out: Partial<EngineOptions> = {};
  for (const name of NAMES) {
    const field = setting(name).engine;
    if (field !== undefined) out[field] = config[name] as number | string;
  }
  return out as EngineOptions;
}
