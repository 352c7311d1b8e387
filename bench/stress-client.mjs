// One load burst of bench/stress.mjs: `--connections` keep-alive
// connections send requests back to back for `--burst` seconds (the routes
// of bench/apps/stress-app.js in turn, now and then four pipelined), then
// stay open and idle for `--hold` seconds, sending one request each every `--ping`
// seconds (0: none), then close. Every response is checked (status, length,
// body). A request whose connection the server closed before any byte of
// its response came back (an idle keep-alive connection closed by a
// draining or recycled worker, RFC 9112 §9.3.1) is retried once on a new
// connection; anything else is a failure. Prints one JSON line of counts.

import { connect } from 'node:net';
import { parseArgs } from 'node:util';
import { HELLO, JSON_4K } from './apps/payloads.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    connections: { type: 'string', default: '1' },
    burst: { type: 'string', default: '3' },
    hold: { type: 'string', default: '0' },
    ping: { type: 'string', default: '0' },
  },
});
const PORT = Number(values.port);
const CONNECTIONS = Number(values.connections);
const BURST_MS = Number(values.burst) * 1000;
const HOLD_MS = Number(values.hold) * 1000;
const PING_MS = Number(values.ping) * 1000;
/** A response slower than this is a hang, and a failure. */
const RESPONSE_TIMEOUT_MS = 15_000;

const ECHO = 'x'.repeat(700);
const GET = { text: 'GET / HTTP/1.1\r\nHost: stress\r\n\r\n', body: HELLO };
const REQUESTS = [
  GET,
  { text: 'GET /bytes HTTP/1.1\r\nHost: stress\r\n\r\n', body: HELLO },
  { text: 'GET /parts HTTP/1.1\r\nHost: stress\r\n\r\n', body: HELLO },
  { text: 'GET /json HTTP/1.1\r\nHost: stress\r\n\r\n', body: JSON_4K },
  { text: `POST /echo HTTP/1.1\r\nHost: stress\r\nContent-Length: ${ECHO.length}\r\n\r\n${ECHO}`, body: ECHO },
];

const counts = { ok: 0, retried: 0, failed: 0, connections: 0, errors: [] };

function fail(message) {
  counts.failed++;
  if (counts.errors.length < 5) counts.errors.push(message);
}

/** One client connection, reopened when the server closed it. */
class Connection {
  socket = null;
  buf = '';
  /** Requests sent and not yet answered, in order: { body, resolve, reject }. */
  waiting = [];
  /** The server said `Connection: close`, or closed. */
  done = true;

  open() {
    counts.connections++;
    this.done = false;
    this.buf = '';
    const socket = connect(PORT, '127.0.0.1');
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    // Events of a socket given up on (see `send`) are not this connection's.
    const mine = () => this.socket === socket;
    socket.on('data', (chunk) => {
      if (!mine()) return;
      this.buf += chunk;
      this.parse();
    });
    // Refused: the arbiter holds the listening sockets, so nothing excuses it.
    socket.on('error', (err) => mine() && this.closed(err.code ?? err.message, err.code === 'ECONNREFUSED'));
    socket.on('close', () => mine() && this.closed('closed by the server'));
  }

  parse() {
    while (this.waiting.length > 0) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.slice(0, end);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      if (!head.startsWith('HTTP/1.1 200 ') || !length) {
        this.waiting.shift().reject(new Error(`bad response head: ${JSON.stringify(head.slice(0, 80))}`));
        this.socket.destroy();
        return;
      }
      const bodyEnd = end + 4 + Number(length[1]);
      if (this.buf.length < bodyEnd) return;
      const body = this.buf.slice(end + 4, bodyEnd);
      this.buf = this.buf.slice(bodyEnd);
      if (/\r\nconnection: *close/i.test(head)) this.done = true;
      const w = this.waiting.shift();
      if (body === w.body) w.resolve();
      else w.reject(new Error(`wrong body (${body.length} bytes, wanted ${w.body.length})`));
    }
  }

  /** `hung`: no response came in time, which no retry excuses. */
  closed(why, hung = false) {
    if (this.socket === null) return;
    this.socket.destroy();
    this.socket = null;
    this.done = true;
    // Only the first waiting request can have part of its response.
    const partial = this.buf.length > 0;
    for (const [i, w] of this.waiting.entries()) {
      const err = new Error(`${why} with a request in flight`);
      err.retryable = !hung && (i > 0 || !partial);
      w.reject(err);
    }
    this.waiting = [];
  }

  /** Sends `batch` (pipelined); resolves with the requests to retry. */
  async send(batch) {
    if (this.done) {
      const old = this.socket;
      this.socket = null;
      old?.destroy();
      this.open();
    }
    const answers = batch.map(
      (r) =>
        new Promise((resolve, reject) => {
          this.waiting.push({ body: r.body, resolve, reject });
        }),
    );
    this.socket.write(batch.map((r) => r.text).join(''));
    const timer = setTimeout(() => this.closed(`no response within ${RESPONSE_TIMEOUT_MS / 1000}s`, true), RESPONSE_TIMEOUT_MS);
    const settled = await Promise.allSettled(answers);
    clearTimeout(timer);
    const retry = [];
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') counts.ok++;
      else if (s.reason.retryable) retry.push(batch[i]);
      else fail(s.reason.message);
    });
    return retry;
  }

  /** Sends `batch`, retrying once what a closing server did not answer. */
  async exchange(batch) {
    const retry = await this.send(batch);
    if (retry.length === 0) return;
    counts.retried += retry.length;
    for (const r of await this.send(retry)) fail(`retried request unanswered (${r.text.split(' ', 2).join(' ')})`);
  }

  close() {
    this.socket?.end();
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function drive(conn, burstEnd, holdEnd) {
  for (let i = 0; Date.now() < burstEnd; i++) {
    const pick = REQUESTS[i % REQUESTS.length];
    await conn.exchange(i % 8 === 7 ? [GET, pick, GET, pick] : [pick]);
  }
  if (PING_MS > 0) {
    // Spread the pings so the connections do not all wake at once.
    await sleep(Math.random() * PING_MS);
    while (Date.now() + PING_MS < holdEnd) {
      await sleep(PING_MS);
      await conn.exchange([GET]);
    }
  }
  await sleep(Math.max(0, holdEnd - Date.now()));
  conn.close();
}

const start = Date.now();
const conns = Array.from({ length: CONNECTIONS }, () => new Connection());
await Promise.all(conns.map((c) => drive(c, start + BURST_MS, start + BURST_MS + HOLD_MS)));
process.stdout.write(`${JSON.stringify(counts)}\n`);
