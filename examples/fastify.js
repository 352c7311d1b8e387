// A Fastify app (node interface): rwsgi serve examples/fastify.js
import Fastify from 'fastify';

const app = Fastify();
app.get('/', async (req, reply) => reply.type('text/plain').send('Hello, World!'));
app.get('/users/:id', async (req) => ({ id: req.params.id }));

export default app;
