// bench/stress.mjs's app: rwsgi-app.js's routes, plus bodies the engine
// reads from JavaScript memory in other ways: small Uint8Arrays (V8 keeps
// arrays of up to 64 bytes inside its own, moving heap) and a body in
// several chunks (start, write, end rather than one respond).
import app from './rwsgi-app.js';
import { HELLO } from './payloads.js';

const TEXT = [['Content-Type', 'text/plain']];
const bytes = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));

export default function stressApp(environ, startResponse) {
  switch (environ.PATH_INFO) {
    case '/bytes':
      startResponse('200 OK', TEXT);
      return [bytes(HELLO.slice(0, 5)), bytes(HELLO.slice(5))];
    case '/parts':
      startResponse('200 OK', TEXT);
      return HELLO.match(/.{1,4}/g);
    default:
      return app(environ, startResponse);
  }
}
