// The benchmark routes as a Hono app (fetch interface): / (hello),
// /json (4 KiB), /echo (POST).
import { Hono } from 'hono';
import { HELLO, JSON_4K } from './payloads.js';

const app = new Hono();
app.get('/', (c) => c.text(HELLO));
app.get('/json', (c) => c.body(JSON_4K, 200, { 'Content-Type': 'application/json' }));
app.post('/echo', async (c) => c.body(await c.req.arrayBuffer(), 200, { 'Content-Type': 'application/octet-stream' }));

export default app;
