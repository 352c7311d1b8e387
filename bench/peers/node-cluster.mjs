// node:http on node:cluster, serving the benchmark routes, or the (req, res)
// app exported by $APP (e.g. examples/express.js).
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { HELLO, JSON_4K } from '../apps/payloads.js';
import { runCluster } from './cluster.mjs';

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

await runCluster(async (port) => {
  const app = process.env.APP ? (await import(pathToFileURL(resolve(process.env.APP)).href)).default : routes;
  createServer(app).listen(port, '127.0.0.1');
});
