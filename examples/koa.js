// A Koa app (node interface): rwsgi serve examples/koa.js
import Koa from 'koa';

const app = new Koa();
app.use(async (ctx) => {
  ctx.body = ctx.path === '/' ? 'Hello, World!' : { path: ctx.path };
});

export default app;
