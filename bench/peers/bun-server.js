// Bun.serve with reusePort, one process per worker (spawned by bench/run.mjs).
import { HELLO, JSON_4K } from '../apps/payloads.js';

Bun.serve({
  port: Number(process.env.PORT ?? 8001),
  hostname: '127.0.0.1',
  reusePort: true,
  // bench/run.mjs --tls: HTTPS with the run's certificate.
  ...(process.env.TLS_CERT ? { tls: { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) } } : {}),
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (path === '/json') return new Response(JSON_4K, { headers: { 'Content-Type': 'application/json' } });
    if (path === '/echo') return new Response(await req.arrayBuffer(), { headers: { 'Content-Type': 'application/octet-stream' } });
    return new Response(HELLO, { headers: { 'Content-Type': 'text/plain' } });
  },
});
