// Fastify on node:cluster, serving the benchmark routes.
import cluster from 'node:cluster';
import Fastify from 'fastify';
import { HELLO, JSON_4K } from '../apps/payloads.js';

const workers = Number(process.env.WORKERS ?? 2);
const port = Number(process.env.PORT ?? 8001);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  const app = Fastify();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (req, body, done) => done(null, body));
  app.get('/', (req, reply) => reply.type('text/plain').send(HELLO));
  app.get('/json', (req, reply) => reply.type('application/json').send(JSON_4K));
  app.post('/echo', (req, reply) => reply.type('application/octet-stream').send(req.body));
  await app.listen({ port, host: '127.0.0.1' });
}
