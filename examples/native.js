// The native interface with a request body and streaming:
//   rwsgi serve examples/native.js
export default async function app(environ, startResponse) {
  if (environ.REQUEST_METHOD === 'POST') {
    const parts = [];
    for await (const chunk of environ['wsgi.input']) parts.push(chunk);
    startResponse('200 OK', [['Content-Type', 'application/octet-stream']]);
    return [Buffer.concat(parts)];
  }
  startResponse('200 OK', [['Content-Type', 'text/plain']]);
  return (async function* () {
    for (let i = 3; i > 0; i--) yield `${i}...\n`;
    yield `Hello from ${environ.PATH_INFO}\n`;
  })();
}
