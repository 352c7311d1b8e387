// The client end of the control socket: which socket a command talks to,
// and one request answered by one reply line.

import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import {
  answers,
  type ControlReply,
  type ControlRequest,
  defaultSocketPath,
  encodeLine,
  privateDirectoryProblem,
  SOCKET_NAME,
  socketDirectories,
} from '../protocol/control.js';
import type { Target } from './control-args.js';

/** Exit status when no server is there, or it said no. */
const EXIT_NO = 1;
/** Exit status when several servers run and none was named. */
const EXIT_AMBIGUOUS = 2;
const REPLY_TIMEOUT_MS = 10_000;

/** A reason the command cannot be done, printed as one line. */
export class ControlError extends Error {
  constructor(
    message: string,
    readonly exitCode = EXIT_NO,
  ) {
    super(message);
  }
}

const isSocket = (path: string): boolean => {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
};

const live = (path: string): Promise<boolean> => answers(path).catch(() => false);

/** The control socket of the server `target` names, or of the only one running. */
export async function findSocket(target: Target): Promise<string> {
  if (target && 'socket' in target) return target.socket;
  const dirs = socketDirectories();
  if (target && 'pidfile' in target) {
    let pid: number;
    try {
      pid = Number(readFileSync(target.pidfile, 'utf8').trim());
    } catch (err) {
      throw new ControlError(`cannot read the pid file ${target.pidfile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): not running?`);
    }
    const found = dirs.map((dir) => defaultSocketPath(pid, dir)).find(isSocket);
    if (found) return found;
    throw new ControlError(
      `no control socket for pid ${pid} (from ${target.pidfile}; tried ${dirs.map((d) => defaultSocketPath(pid, d)).join(', ')}): not running, or started with --control-socket PATH (then pass --socket PATH)`,
    );
  }
  const found: string[] = [];
  const skipped: string[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    const problem = privateDirectoryProblem(dir, false);
    if (problem !== null) {
      skipped.push(problem);
      continue;
    }
    for (const name of names.sort()) {
      const path = join(dir, name);
      if (SOCKET_NAME.test(name) && isSocket(path) && (await live(path))) found.push(path);
    }
  }
  if (found.length === 1) return found[0] as string;
  if (found.length > 1) {
    throw new ControlError(`${found.length} servers are running; pick one with --socket PATH:\n${found.map((p) => `  ${p}`).join('\n')}`, EXIT_AMBIGUOUS);
  }
  const also = skipped.length > 0 ? `; skipped ${skipped.join('; ')}` : '';
  throw new ControlError(
    `no server running: no control socket in ${dirs.join(' or ')}${also} (not running? or started with --control-socket PATH: pass --socket PATH)`,
  );
}

/** Sends `request` to the server at `path` and resolves with its reply. */
export function request(path: string, req: ControlRequest): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let text = '';
    const fail = (message: string): void => {
      socket.destroy();
      reject(new ControlError(message));
    };
    socket.setTimeout(REPLY_TIMEOUT_MS, () => fail(`no reply from ${path} within ${REPLY_TIMEOUT_MS / 1000}s`));
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(encodeLine(req)));
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end < 0) return;
      socket.end();
      try {
        resolve(JSON.parse(text.slice(0, end)) as ControlReply);
      } catch {
        fail(`${path} answered something other than a JSON line: ${text.slice(0, 80)}`);
      }
    });
    socket.on('end', () => fail(`${path} closed the connection without a reply`));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? `no server at ${path} (${err.code}): not running?`
          : err.code === 'EACCES'
            ? `permission denied at ${path}: run this as the server's user or root`
            : `cannot reach ${path}: ${err.message}`;
      fail(why);
    });
  });
}
