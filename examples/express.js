// An Express app (node interface): rwsgi serve examples/express.js
import express from 'express';

const app = express();
app.use(express.json());
app.get('/', (req, res) => res.type('text/plain').send('Hello, World!'));
app.get('/users/:id', (req, res) => res.json({ id: req.params.id }));
app.post('/echo', (req, res) => res.json(req.body));

export default app;
