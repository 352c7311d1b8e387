// The control socket's protocol, shared by the arbiter (server) and the
// `rwsgi status|reload|stop|scale|restart-worker|dump` commands (client):
// one JSON object per line each way, a request answered by one reply line;
// and where a server's socket is when `--control-socket` does not say.

import { lstatSync, mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

/** A request line longer than this is refused and its connection closed. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** A connection with no complete request for this long is closed. */
export const IDLE_TIMEOUT_MS = 10_000;

export type ControlRequest =
  | { cmd: 'status' }
  | { cmd: 'reload' }
  | { cmd: 'stop'; quick: boolean }
  | { cmd: 'scale'; workers: number }
  | { cmd: 'restart-worker'; pid: number }
  | { cmd: 'dump'; pid: number };

export type ControlCommand = ControlRequest['cmd'];

/** `did` says in a sentence what the server did, for the command to print. */
export type ControlReply = ({ ok: true; did?: string } & Record<string, unknown>) | { ok: false; error: string };

const COMMANDS: readonly ControlCommand[] = ['status', 'reload', 'stop', 'scale', 'restart-worker', 'dump'];

const isPid = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

/** A request line read, or what is wrong with it (said back to the client). */
export function parseRequest(line: string): ControlRequest | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { error: 'malformed request: one JSON object per line, as {"cmd":"status"}' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { error: 'malformed request: one JSON object per line, as {"cmd":"status"}' };
  }
  const r = value as Record<string, unknown>;
  const cmd = r.cmd;
  if (typeof cmd !== 'string' || !(COMMANDS as readonly string[]).includes(cmd)) {
    return { error: `unknown command ${JSON.stringify(cmd ?? null)}: one of ${COMMANDS.join(', ')}` };
  }
  switch (cmd as ControlCommand) {
    case 'status':
    case 'reload':
      return { cmd: cmd as 'status' | 'reload' };
    case 'stop':
      return { cmd: 'stop', quick: r.quick === true };
    case 'scale':
      return isPid(r.workers) ? { cmd: 'scale', workers: r.workers } : { error: 'scale needs "workers": a whole number >= 1' };
    case 'restart-worker':
    case 'dump':
      return isPid(r.pid) ? { cmd: cmd as 'restart-worker' | 'dump', pid: r.pid } : { error: `${cmd} needs "pid": a worker's pid` };
  }
}

export function encodeLine(value: ControlRequest | ControlReply): string {
  return `${JSON.stringify(value)}\n`;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Where default control sockets live, in the order a server picks:
 * `$RWSGI_CONTROL_DIR` alone when set, else the user's runtime directory
 * (`$XDG_RUNTIME_DIR/rwsgi`), then `/tmp/rwsgi-UID`. A client looks in all
 * of them: a server under systemd often has no XDG_RUNTIME_DIR while the
 * operator's login shell has one. */
export function socketDirectories(env: Env = process.env, uid = process.getuid?.() ?? 0): string[] {
  if (env.RWSGI_CONTROL_DIR) return [env.RWSGI_CONTROL_DIR];
  const dirs: string[] = [];
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime && runtime.startsWith('/')) dirs.push(join(runtime, 'rwsgi'));
  dirs.push(`/tmp/rwsgi-${uid}`);
  return dirs;
}

/** The default control socket of the arbiter with `pid`: named by the pid,
 * so two servers of one user never share it, and an upgraded (USR2)
 * arbiter gets its own next to the old one's. */
export function defaultSocketPath(pid: number, dir: string): string {
  return join(dir, `${pid}.sock`);
}

export const SOCKET_NAME = /^(\d+)\.sock$/;

/** Why `dir` may not hold control sockets, or null when it may: a real
 * directory (no symlink) owned by this user, that no one else can enter.
 * `create` makes it (mode 0700) when missing. */
export function privateDirectoryProblem(dir: string, create: boolean, uid = process.getuid?.() ?? 0): string | null {
  if (create) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return `cannot create ${dir}: ${(err as Error).message}`;
    }
  }
  let stat;
  try {
    stat = lstatSync(dir);
  } catch (err) {
    return `cannot read ${dir}: ${(err as Error).message}`;
  }
  if (!stat.isDirectory()) return `${dir} is not a directory`;
  if (stat.uid !== uid) return `${dir} belongs to uid ${stat.uid}, not to this user (uid ${uid})`;
  if ((stat.mode & 0o077) !== 0) return `${dir} is open to other users (mode ${(stat.mode & 0o777).toString(8)}; it must be 700)`;
  return null;
}

/** Whether a server answers at socket `path`: false when nothing listens
 * there (a file left by a killed server); throws for other errors. */
export function answers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = connect(path);
    probe.on('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? resolve(false) : reject(err)));
  });
}
