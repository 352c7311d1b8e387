// Fastify on node:cluster, serving the benchmark routes.
import Fastify from 'fastify';
import { HELLO, JSON_4K } from '../apps/payloads.js';
import { runCluster } from './cluster.mjs';

await runCluster(async (port) => {
  const app = Fastify();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (req, body, done) => done(null, body));
  app.get('/', (req, reply) => reply.type('text/plain').send(HELLO));
  app.get('/json', (req, reply) => reply.type('application/json').send(JSON_4K));
  app.post('/echo', (req, reply) => reply.type('application/octet-stream').send(req.body));
  await app.listen({ port, host: '127.0.0.1' });
});
