// rwsgi's benchmark app, native interface: / (hello), /json (4 KiB), /echo (POST).
import { HELLO, JSON_4K } from './payloads.js';

const TEXT = [['Content-Type', 'text/plain']];
const JSON_TYPE = [['Content-Type', 'application/json']];

export default async function app(environ, startResponse) {
  switch (environ.PATH_INFO) {
    case '/json':
      startResponse('200 OK', JSON_TYPE);
      return [JSON_4K];
    case '/echo': {
      const body = await environ['wsgi.input'].bytes();
      startResponse('200 OK', [['Content-Type', 'application/octet-stream']]);
      return [body];
    }
    default:
      startResponse('200 OK', TEXT);
      return [HELLO];
  }
}
