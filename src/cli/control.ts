// Runs `rwsgi status|reload|stop|scale|restart-worker|dump`: one request to
// the server's control socket, the reply printed for a person (or as JSON),
// exit 0 when it was done, else why not and non-zero.

import type { Snapshot } from '../arbiter/snapshot.js';
import type { ControlReply, ControlRequest } from '../protocol/control.js';
import type { InFlight } from '../protocol/messages.js';
import { type ControlCommandLine, controlHelp } from './control-args.js';
import { ControlError, findSocket, request } from './control-client.js';
import { renderStatus } from './status-table.js';

const WATCH_MS = 1000;
/** Cursor home, clear screen: a terminal redraws in place. */
const CLEAR = '\x1b[H\x1b[2J';

function toRequest(c: ControlCommandLine): ControlRequest {
  const n = c.number as number;
  switch (c.command) {
    case 'status':
    case 'reload':
      return { cmd: c.command };
    case 'stop':
      return { cmd: 'stop', quick: c.quick };
    case 'scale':
      return { cmd: 'scale', workers: n };
    case 'restart-worker':
    case 'dump':
      return { cmd: c.command, pid: n };
  }
}

/** A dump: the stack as the arbiter describes it, then the requests in flight. */
function renderDump(reply: Record<string, unknown>): string {
  const lines = [String(reply.stack)];
  const count = Number(reply.inFlightCount ?? 0);
  const oldest = ((reply.inFlight ?? []) as InFlight[])[0];
  if (count === 0 || !oldest) lines.push('no request in flight at its last heartbeat');
  else lines.push(`${count} request${count === 1 ? '' : 's'} in flight at its last heartbeat; the oldest: ${oldest.method} ${oldest.path} running ${oldest.age.toFixed(1)}s`);
  return lines.join('\n');
}

function print(c: ControlCommandLine, reply: ControlReply & { ok: true }): void {
  if (c.json) process.stdout.write(`${JSON.stringify(reply)}\n`);
  else if (c.command === 'status') process.stdout.write(`${renderStatus(reply as unknown as Snapshot)}\n`);
  else if (c.command === 'dump') process.stdout.write(`${renderDump(reply)}\n`);
  else process.stdout.write(`${reply.did ?? 'done'}\n`);
}

async function once(c: ControlCommandLine, socket: string): Promise<ControlReply & { ok: true }> {
  const reply = await request(socket, toRequest(c));
  if (!reply.ok) throw new ControlError(reply.error);
  return reply;
}

/** `status --watch`: redraws every second until Ctrl-C (exit 0). */
async function watch(c: ControlCommandLine, socket: string): Promise<number> {
  process.on('SIGINT', () => process.exit(0));
  const tty = process.stdout.isTTY === true;
  for (;;) {
    const reply = await once(c, socket);
    if (tty) process.stdout.write(CLEAR);
    print(c, reply);
    if (!tty) process.stdout.write('\n');
    await new Promise((r) => setTimeout(r, WATCH_MS));
  }
}

export async function runControl(c: ControlCommandLine): Promise<number> {
  if (c.help) {
    process.stdout.write(`${controlHelp(c.command)}\n`);
    return 0;
  }
  try {
    const socket = await findSocket(c.target);
    if (c.watch) return await watch(c, socket);
    print(c, await once(c, socket));
    return 0;
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    process.stderr.write(`rwsgi ${c.command}: ${err.message}\n`);
    return err.exitCode;
  }
}
