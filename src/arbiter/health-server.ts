// The arbiter's small HTTP server at --metrics-bind: `/metrics` for
// Prometheus, `/ready` and `/live` for orchestrators. Plain node:http in
// the arbiter, off the request path, so it answers while a worker hangs.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { EXIT_CONFIG, RwsgiError } from '../errors.js';
import { logger } from '../log.js';
import { parseBind } from '../settings/bind.js';
import { CONTENT_TYPE } from './exposition.js';

/** What the server asks the arbiter, at each request. */
export interface Probe {
  /** At least one worker is ready and the server is not stopping. */
  ready(): boolean;
  /** The arbiter's loop runs. */
  live(): boolean;
  /** The exposition text. */
  metrics(): string;
}

const TEXT = 'text/plain; charset=utf-8';
const RETRY_MS = 1000;

function answer(res: ServerResponse, status: number, type: string, body: string, head: boolean): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(head ? undefined : body);
}

function handle(probe: Probe, req: IncomingMessage, res: ServerResponse): void {
  const head = req.method === 'HEAD';
  if (req.method !== 'GET' && !head) {
    res.setHeader('Allow', 'GET, HEAD');
    return answer(res, 405, TEXT, 'method not allowed\n', false);
  }
  const path = (req.url ?? '/').split('?')[0];
  switch (path) {
    case '/metrics':
      return answer(res, 200, CONTENT_TYPE, probe.metrics(), head);
    case '/ready': {
      const ready = probe.ready();
      return answer(res, ready ? 200 : 503, TEXT, ready ? 'ready\n' : 'not ready\n', head);
    }
    case '/live': {
      const live = probe.live();
      return answer(res, live ? 200 : 503, TEXT, live ? 'live\n' : 'not live\n', head);
    }
    default:
      return answer(res, 404, TEXT, 'not found: /metrics, /ready and /live are served here\n', head);
  }
}

export class HealthServer {
  private constructor(private readonly server: Server) {}

  /** Listens at `bind` (HOST:PORT); a bind error is a config error (exit 3). */
  static async start(bind: string, probe: Probe): Promise<HealthServer> {
    const { host, port } = parseBind(bind);
    const server = createServer((req, res) => {
      try {
        handle(probe, req, res);
      } catch (err) {
        logger.error(`metrics: ${(err as Error).message}`);
        if (!res.headersSent) answer(res, 500, TEXT, 'internal error\n', false);
      }
    });
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new RwsgiError('RWSGI_ERR_BIND', `--metrics-bind ${bind}: cannot listen (${err.message}); pick a free address`, EXIT_CONFIG)),
      );
      server.listen({ host, port }, resolve);
    });
    const address = server.address();
    const shown = address && typeof address === 'object' ? `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}` : bind;
    logger.info(`Metrics and health checks at: http://${shown}/metrics, /ready, /live`);
    return new HealthServer(server);
  }

  /** After USR2 the old arbiter holds the port until it exits: retry each
   * second (null if `cancelled` first). */
  static async startWhenFree(bind: string, probe: Probe, cancelled: () => boolean): Promise<HealthServer | null> {
    let said = false;
    while (!cancelled()) {
      try {
        return await HealthServer.start(bind, probe);
      } catch (err) {
        if (!said) logger.info(`Metrics and health checks wait for ${bind} to be free (the old arbiter's until it exits): ${(err as Error).message}`);
        said = true;
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
    return null;
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}
