// node:http on node:cluster, serving the benchmark routes, or the (req, res)
// app exported by $APP (e.g. examples/express.js).
import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { HELLO, JSON_4K } from '../apps/payloads.js';

const workers = Number(process.env.WORKERS ?? 2);
const port = Number(process.env.PORT ?? 8001);

function routes(req, res) {
  if (req.url === '/json') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(JSON_4K);
  }
  if (req.url === '/echo') {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      res.end(Buffer.concat(parts));
    });
    return;
  }
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end(HELLO);
}

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  const app = process.env.APP ? (await import(pathToFileURL(resolve(process.env.APP)).href)).default : routes;
  createServer(app).listen(port, '127.0.0.1');
}
