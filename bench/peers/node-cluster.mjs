// node:http on node:cluster, serving the benchmark routes, or the (req, res)
// app exported by $APP (e.g. examples/express.js).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { HELLO, JSON_4K } from '../apps/payloads.js';
import { runCluster } from './cluster.mjs';

/** Sends a whole body with its Content-Length, as every other peer does. */
function send(res, type, body) {
  res.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function routes(req, res) {
  if (req.url === '/json') return send(res, 'application/json', JSON_4K);
  if (req.url === '/echo') {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => send(res, 'application/octet-stream', Buffer.concat(parts)));
    return;
  }
  send(res, 'text/plain', HELLO);
}

await runCluster(async (port) => {
  const app = process.env.APP ? (await import(pathToFileURL(resolve(process.env.APP)).href)).default : routes;
  // bench/run.mjs --tls: HTTPS, TLS 1.3 with AES-128-GCM.
  const { TLS_CERT, TLS_KEY } = process.env;
  const server = TLS_CERT
    ? createHttpsServer({ cert: readFileSync(TLS_CERT), key: readFileSync(TLS_KEY ?? ''), minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' }, app)
    : createServer(app);
  server.listen(port, '127.0.0.1');
});
