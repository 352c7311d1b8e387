// The benchmark routes as an Express app (node interface, and on
// node:cluster for comparison): / (hello), /json (4 KiB), /echo (POST).
import express from 'express';
import { HELLO, JSON_4K } from './payloads.js';

const app = express();
app.get('/', (req, res) => res.type('text/plain').send(HELLO));
app.get('/json', (req, res) => res.type('application/json').send(JSON_4K));
app.post('/echo', express.raw({ type: '*/*' }), (req, res) => res.type('application/octet-stream').send(req.body));

export default app;
