// Every example in examples/ serves what the README says it does.

import test from 'ava';
import { curl, serve } from './helpers.mjs';

for (const example of ['hello', 'hono', 'express', 'koa', 'fastify']) {
  test(`examples/${example}.js says hello`, async (t) => {
    const server = await serve(t, `examples/${example}.js`);
    t.is(await curl(`${server.url}/`), 'Hello, World!');
  });
}

test('examples/native.js streams and echoes', async (t) => {
  const server = await serve(t, 'examples/native.js');
  t.is(await curl(`${server.url}/there`), '3...\n2...\n1...\nHello from /there\n');
  t.is(await curl('--data-binary', 'echo me', `${server.url}/`), 'echo me');
});
