// rwsgi's benchmark app, native interface: / (hello), /json (4 KiB), /echo (POST).
// Synchronous like examples/hello.js; only /echo, which reads the body, returns a promise.
import { HELLO, JSON_4K } from './payloads.js';

const TEXT = [['Content-Type', 'text/plain']];
const JSON_TYPE = [['Content-Type', 'application/json']];
const OCTETS = [['Content-Type', 'application/octet-stream']];

export default function app(environ, startResponse) {
  switch (environ.PATH_INFO) {
    case '/json':
      startResponse('200 OK', JSON_TYPE);
      return [JSON_4K];
    case '/echo':
      return environ['wsgi.input'].bytes().then((body) => {
        startResponse('200 OK', OCTETS);
        return [body];
      });
    default:
      startResponse('200 OK', TEXT);
      return [HELLO];
  }
}
