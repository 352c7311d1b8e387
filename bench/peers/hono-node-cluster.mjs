// The benchmark routes' Hono app (bench/apps/hono-app.js) on the
// framework's own Node server, @hono/node-server, on node:cluster: what
// rwsgi-hono is compared with.
import { serve } from '@hono/node-server';
import app from '../apps/hono-app.js';
import { runCluster } from './cluster.mjs';

await runCluster(async (port) => {
  serve({ fetch: app.fetch, port, hostname: '127.0.0.1' });
});
