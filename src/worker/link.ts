// The worker's end of the fd-3 pipe: messages out (written synchronously,
// so a report sent right before the app blocks the loop still leaves), and
// `stop` requests in, including the arbiter's death (EOF). A stop that
// arrives while the app is still loading is kept until `onStop` is set.

import { writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { encode, LineDecoder, type WorkerMessage } from '../protocol/messages.js';

export const PIPE_FD = 3;

export interface StopRequest {
  graceful: boolean;
  /** Milliseconds to finish in-flight requests; null = the worker's own grace. */
  deadlineMs: number | null;
}

export class ArbiterLink {
  private readonly pipe = new Socket({ fd: PIPE_FD, readable: true, writable: false });
  private handler: ((request: StopRequest) => void) | null = null;
  private ownersHandler: (pids: number[]) => void = () => {};
  private ticketKeysHandler: (keys: string[]) => void = () => {};
  private early: StopRequest | null = null;

  constructor() {
    const decoder = new LineDecoder();
    this.pipe.setEncoding('utf8');
    this.pipe.on('data', (chunk: string) => {
      for (const message of decoder.push(chunk)) {
        if (message.type === 'stop') this.request({ graceful: message.graceful, deadlineMs: message.deadlineMs });
        else if (message.type === 'owners') this.ownersHandler(message.pids);
        else if (message.type === 'tls-keys') this.ticketKeysHandler(message.keys);
      }
    });
    // The arbiter is gone: finish what is in flight and leave, never orphaned.
    const gone = (): void => this.request({ graceful: true, deadlineMs: null });
    this.pipe.on('end', gone);
    this.pipe.on('close', gone);
    this.pipe.on('error', gone);
  }

  send(message: WorkerMessage): void {
    try {
      writeSync(PIPE_FD, encode(message));
    } catch {
      // EAGAIN (the arbiter is not reading) or EPIPE (it is gone): the next
      // heartbeat, or the pipe's EOF, takes care of it.
    }
  }

  onStop(handler: (request: StopRequest) => void): void {
    this.handler = handler;
    if (this.early) handler(this.early);
  }

  /** Which worker serves each CPU's connections (see the 'owners' message). */
  onOwners(handler: (pids: number[]) => void): void {
    this.ownersHandler = handler;
  }

  /** The arbiter rotated the session-ticket keys (see the 'tls-keys' message). */
  onTicketKeys(handler: (keys: string[]) => void): void {
    this.ticketKeysHandler = handler;
  }

  private request(request: StopRequest): void {
    if (this.handler) this.handler(request);
    else this.early ??= request;
  }

  close(): void {
    this.pipe.destroy();
  }
}
