// The peer rwsgi is measured against: node:http on node:cluster. Serves the
// hello world, or the (req, res) app exported by $APP (e.g. examples/express.js).
import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const workers = Number(process.env.WORKERS ?? 2);
const port = Number(process.env.PORT ?? 8001);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  const app = process.env.APP
    ? (await import(pathToFileURL(resolve(process.env.APP)).href)).default
    : (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('Hello, World!');
      };
  createServer(app).listen(port, '127.0.0.1');
}
