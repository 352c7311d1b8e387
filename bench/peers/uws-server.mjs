// uWebSockets.js (the registry build @trufflesuite/uws-js-unofficial, uWS.js
// v20.30), one process per worker (spawned by bench/run.mjs); uSockets binds
// with SO_REUSEPORT on Linux, so the copies share the port.
import uws from '@trufflesuite/uws-js-unofficial';
import { HELLO, JSON_4K } from '../apps/payloads.js';

const port = Number(process.env.PORT ?? 8001);
// bench/run.mjs --tls: SSLApp with the run's certificate.
const { TLS_CERT, TLS_KEY } = process.env;
(TLS_CERT ? uws.SSLApp({ cert_file_name: TLS_CERT, key_file_name: TLS_KEY }) : uws.App())
  .get('/json', (res) => {
    res.cork(() => res.writeHeader('Content-Type', 'application/json').end(JSON_4K));
  })
  .post('/*', (res) => {
    const parts = [];
    res.onAborted(() => {});
    res.onData((chunk, last) => {
      // uWS reuses the chunk's memory after the callback returns.
      parts.push(Buffer.from(chunk.slice(0)));
      if (last) res.cork(() => res.writeHeader('Content-Type', 'application/octet-stream').end(Buffer.concat(parts)));
    });
  })
  .get('/*', (res) => {
    res.cork(() => res.writeHeader('Content-Type', 'text/plain').end(HELLO));
  })
  .listen('127.0.0.1', port, (socket) => {
    if (!socket) {
      console.error(`uws: cannot listen on ${port}`);
      process.exit(1);
    }
  });
process.on('SIGTERM', () => process.exit(0));
