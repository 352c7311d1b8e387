// The smallest rwsgi app: the native interface, app(environ, startResponse).
export default function app(environ, startResponse) {
  startResponse('200 OK', [['Content-Type', 'text/plain']]);
  return ['Hello, World!'];
}
