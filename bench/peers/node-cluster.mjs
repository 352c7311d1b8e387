// The peer rwsgi is measured against: node:http on node:cluster, same hello world.
import cluster from 'node:cluster';
import { createServer } from 'node:http';

const workers = Number(process.env.WORKERS ?? 2);
const port = Number(process.env.PORT ?? 8001);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('Hello, World!');
  }).listen(port, '127.0.0.1', () => process.send?.('ready'));
}
