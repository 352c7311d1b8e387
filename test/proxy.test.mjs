// Behind a proxy: forwarding headers believed from trusted peers only, and
// the PROXY protocol (v1 text, v2 binary) read before HTTP, over raw
// sockets. The untrusted client is a second loopback address, 127.0.0.2.

import { mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { fixture, raw, serve } from './helpers.mjs';

const APP = fixture('client-view.mjs');
const CRLF = '\r\n';

const get = (...headers) => ['GET /p?q HTTP/1.1', 'Host: app.example:8080', ...headers, 'Connection: close', '', ''].join(CRLF);

/** The app's answer to one request (the body), or '' if none came. */
async function ask(server, data, options = {}) {
  const { text, closed } = await raw(server.port, data, { ms: 8000, ...options });
  const at = text.indexOf('\r\n\r\n');
  return { status: text.slice(9, 12), body: at === -1 ? '' : text.slice(at + 4), text, closed };
}

/** Sends `data` over the Unix socket at `path`; resolves with what came back before the close. */
function overUnix(path, data) {
  return new Promise((resolve, reject) => {
    const socket = connect({ path });
    const chunks = [];
    socket.setTimeout(8000, () => socket.destroy(new Error('no close within 8 s')));
    socket.on('connect', () => socket.write(data));
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

/** A PROXY v2 header: command (0 LOCAL, 1 PROXY), family/transport byte, address block. */
function v2(command, family, block) {
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20 | command, family, 0, 0]);
  head.writeUInt16BE(block.length, 14);
  return Buffer.concat([head, block]);
}

function tcp4(client, server, clientPort, serverPort) {
  const block = Buffer.alloc(12);
  client.split('.').forEach((b, i) => (block[i] = Number(b)));
  server.split('.').forEach((b, i) => (block[4 + i] = Number(b)));
  block.writeUInt16BE(clientPort, 8);
  block.writeUInt16BE(serverPort, 10);
  return block;
}

/** A TLV: type, 16-bit length, value. */
const tlv = (type, value) => Buffer.concat([Buffer.from([type, value.length >> 8, value.length & 0xff]), Buffer.from(value)]);

test('forwarding headers set REMOTE_ADDR and the scheme from a trusted peer only', async (t) => {
  const server = await serve(t, APP);
  const forwarded = get('X-Forwarded-For: 198.51.100.1, 203.0.113.9', 'X-Forwarded-Proto: https');
  const trusted = await ask(server, forwarded);
  t.regex(trusted.body, /^wsgi 203\.0\.113\.9 0 https 8080 xff=198\.51\.100\.1, 203\.0\.113\.9 /);
  // RFC 7239 alone, with a port.
  const rfc = await ask(server, get('Forwarded: for="[2001:db8::17]:4711";proto=https'));
  t.regex(rfc.body, /^wsgi 2001:db8::17 4711 https /);
  // Headers that disagree on the scheme leave it http.
  const doubt = await ask(server, get('X-Forwarded-Ssl: on', 'X-Forwarded-Proto: http'));
  t.regex(doubt.body, /^wsgi 127\.0\.0\.1 \d+ http /);
  // From 127.0.0.2 (not in the default 127.0.0.1,::1) the same headers change nothing and stay visible.
  const untrusted = await ask(server, forwarded, { localAddress: '127.0.0.2' });
  t.regex(untrusted.body, /^wsgi 127\.0\.0\.2 \d+ http 8080 xff=198\.51\.100\.1, 203\.0\.113\.9 /);
  // PROXY protocol is off: a PROXY line is an invalid request.
  const line = await ask(server, `PROXY TCP4 198.51.100.7 10.0.0.1 4711 443${CRLF}${get()}`);
  t.is(line.status, '400');
});

test('an IPv6 peer: ::1 is trusted by default, and only what the list names', async (t) => {
  const [byDefault, v4Only] = await Promise.all([
    serve(t, APP, { bind: '[::1]:0' }),
    serve(t, APP, { bind: '[::1]:0', args: ['--forwarded-allow-ips', '127.0.0.0/8'] }),
  ]);
  const forwarded = get('X-Forwarded-For: 2001:db8::5', 'X-Forwarded-Proto: https');
  t.regex((await ask(byDefault, forwarded, { host: '::1' })).body, /^wsgi 2001:db8::5 0 https /);
  t.regex((await ask(v4Only, forwarded, { host: '::1' })).body, /^wsgi ::1 \d+ http /);
});

test('a node app keeps the real peer in req.socket.remoteAddress; a fetch app gets the forwarded scheme in request.url and the client from env.requestIP', async (t) => {
  const [node, fetch] = await Promise.all([
    serve(t, `${APP}:node`, { args: ['-i', 'node'] }),
    serve(t, `${APP}:fetchApp`, { args: ['-i', 'fetch'] }),
  ]);
  const forwarded = get('X-Forwarded-For: 203.0.113.9', 'X-Forwarded-Proto: https');
  t.regex((await ask(node, forwarded)).body, /^node 127\.0\.0\.1 \d+ xff=203\.0\.113\.9 /);
  t.regex((await ask(fetch, forwarded)).body, /^fetch https:\/\/app\.example:8080\/p\?q 203\.0\.113\.9 0 IPv4 /);
  t.regex((await ask(fetch, forwarded, { localAddress: '127.0.0.2' })).body, /^fetch http:\/\/app\.example:8080\/p\?q 127\.0\.0\.2 [1-9]\d* IPv4 /);
});

test("a Hono app's getConnInfo (hono/bun) gets the client through env.requestIP", async (t) => {
  const server = await serve(t, fixture('hono-conninfo.mjs'));
  const request = (...headers) => ['GET / HTTP/1.1', 'Host: x', ...headers, 'Connection: close', '', ''].join(CRLF);
  t.deepEqual(JSON.parse((await ask(server, request('X-Forwarded-For: [2001:db8::5]:4711'))).body), { address: '2001:db8::5', addressType: 'IPv6', port: 4711 });
  const direct = JSON.parse((await ask(server, request(), { localAddress: '127.0.0.2' })).body);
  t.is(direct.address, '127.0.0.2');
  t.is(direct.addressType, 'IPv4');
});

test('--forwarded-allow-ips takes CIDR ranges (trusted hops are skipped right to left) and *', async (t) => {
  const [range, any] = await Promise.all([
    serve(t, APP, { args: ['--forwarded-allow-ips', '127.0.0.2/31'] }),
    serve(t, APP, { args: ['--forwarded-allow-ips', '*'] }),
  ]);
  const chain = get('X-Forwarded-For: 198.51.100.1, 203.0.113.9, 127.0.0.3');
  // 127.0.0.2 is in 127.0.0.2/31, and so is the hop 127.0.0.3 it names.
  t.regex((await ask(range, chain, { localAddress: '127.0.0.2' })).body, /^wsgi 203\.0\.113\.9 0 http /);
  // 127.0.0.1 is not.
  t.regex((await ask(range, chain)).body, /^wsgi 127\.0\.0\.1 /);
  // `*` trusts every hop: the leftmost is the client.
  t.regex((await ask(any, chain, { localAddress: '127.0.0.2' })).body, /^wsgi 198\.51\.100\.1 0 /);
});

test('a Unix-socket peer is trusted with forwarding headers and must send a PROXY header when one is read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-proxy-'));
  const [plain, proxied] = [join(dir, 'plain.sock'), join(dir, 'proxied.sock')];
  await Promise.all([
    serve(t, APP, { args: ['-b', `unix:${plain}`] }),
    serve(t, APP, { args: ['-b', `unix:${proxied}`, '--proxy-protocol', 'v1'] }),
  ]);
  t.regex(await overUnix(plain, get('X-Forwarded-For: 203.0.113.9', 'X-Forwarded-Proto: https')), /\r\n\r\nwsgi 203\.0\.113\.9 0 https /);
  t.regex(await overUnix(proxied, `PROXY TCP4 198.51.100.7 10.0.0.1 4711 443${CRLF}${get()}`), /\r\n\r\nwsgi 198\.51\.100\.7 4711 /);
  t.is(await overUnix(proxied, get()), '', 'no header: closed unanswered');
});

test('PROXY v1 and v2 headers (TCP4, TCP6, LOCAL, UNIX, TLVs, split) give the app the client they name', async (t) => {
  const server = await serve(t, APP, { args: ['--proxy-protocol', 'auto'] });
  const v1 = await ask(server, `PROXY TCP4 198.51.100.7 10.0.0.1 4711 443${CRLF}${get()}`);
  t.regex(v1.body, /^wsgi 198\.51\.100\.7 4711 http 8080 /);
  const v1six = await ask(server, `PROXY TCP6 2001:db8::7 2001:db8::1 4712 443${CRLF}${get()}`);
  t.regex(v1six.body, /^wsgi 2001:db8::7 4712 /);
  // TCP4 with an ALPN and a padding TLV, sent a few bytes at a time.
  const header = v2(1, 0x11, Buffer.concat([tcp4('203.0.113.5', '10.0.0.1', 5555, 8443), tlv(0x01, 'h2'), tlv(0x04, '\0\0\0')]));
  const parts = [header.subarray(0, 5), header.subarray(5, 14), header.subarray(14, 30), header.subarray(30), get()];
  t.regex((await ask(server, parts, { paceMs: 30 })).body, /^wsgi 203\.0\.113\.5 5555 /);
  const six = Buffer.alloc(36);
  six.writeUInt16BE(0x2001, 0);
  six.writeUInt16BE(0x0db8, 2);
  six[15] = 9;
  six.writeUInt16BE(6000, 32);
  six.writeUInt16BE(443, 34);
  t.regex((await ask(server, [Buffer.concat([v2(1, 0x21, six), Buffer.from(get())])])).body, /^wsgi 2001:db8::9 6000 /);
  // LOCAL (a health check): the real peer stands.
  const local = v2(0, 0x11, tcp4('203.0.113.5', '10.0.0.1', 5555, 8443));
  t.regex((await ask(server, [Buffer.concat([local, Buffer.from(get())])])).body, /^wsgi 127\.0\.0\.1 \d+ /);
  // UNIX: shown as a direct Unix-socket peer is (no address, port 0).
  const unix = v2(1, 0x31, Buffer.alloc(216, 0x2f));
  t.regex((await ask(server, [Buffer.concat([unix, Buffer.from(get())])])).body, /^wsgi {2}0 /);
});

test('bad, truncated, oversized, missing and unallowed PROXY headers close the connection before the app', async (t) => {
  const server = await serve(t, APP, { args: ['--proxy-protocol', 'auto', '--header-timeout', '1'] });
  const good = `PROXY TCP4 198.51.100.7 10.0.0.1 4711 443${CRLF}${get()}`;
  const refused = async (what, data, options = {}) => {
    const reply = await ask(server, data, options);
    t.true(reply.closed, `${what}: closed`);
    t.is(reply.text, '', `${what}: nothing answered`);
  };
  t.regex((await ask(server, good)).body, / n=1$/);
  await refused('malformed v1', `PROXY TCP4 198.51.100.7 10.0.0.1 4711${CRLF}${get()}`);
  await refused('oversized v1', `PROXY UNKNOWN ${'x'.repeat(120)}${CRLF}${get()}`);
  await refused('no header from an allowed peer', get());
  await refused('header from a peer not allowed', good, { localAddress: '127.0.0.2' });
  await refused('v2 TLV past its end', [v2(1, 0x11, Buffer.concat([tcp4('1.2.3.4', '10.0.0.1', 1, 2), Buffer.from([1, 0, 9, 0x68])])), get()]);
  const huge = v2(1, 0x11, Buffer.alloc(0));
  huge.writeUInt16BE(60000, 14);
  await refused('oversized v2', [huge]);
  const started = Date.now();
  await refused('truncated, then idle', 'PROXY TCP4 198.51.1');
  t.true(Date.now() - started < 7000, 'closed by the header timeout');
  // A peer not allowed may still speak plain HTTP.
  t.regex((await ask(server, get(), { localAddress: '127.0.0.2' })).body, /^wsgi 127\.0\.0\.2 \d+ http 8080 xff=- n=2$/);
  t.regex((await ask(server, good)).body, / n=3$/);
  t.regex(server.log, /closed unanswered from 127\.0\.0\.2:\d+: PROXY header from a peer not in --proxy-allow-from/);
  t.regex(server.log, /closed unanswered from 127\.0\.0\.1:\d+: PROXY header not received within the header timeout/);
});

test('a node app behind PROXY v2 sees the header\'s client as req.socket.remoteAddress; v2 mode refuses v1', async (t) => {
  const server = await serve(t, `${APP}:node`, { args: ['-i', 'node', '--proxy-protocol', 'v2'] });
  const header = v2(1, 0x11, tcp4('203.0.113.5', '10.0.0.1', 5555, 8443));
  t.regex((await ask(server, [Buffer.concat([header, Buffer.from(get())])])).body, /^node 203\.0\.113\.5 5555 /);
  const v1 = await ask(server, `PROXY TCP4 198.51.100.7 10.0.0.1 4711 443${CRLF}${get()}`);
  t.true(v1.closed);
  t.is(v1.text, '');
});

test('the trust lists take a comma-separated string or a list, and name the entry at fault', async (t) => {
  const { SETTINGS } = await import('../dist/settings/registry.js');
  const ips = SETTINGS.forwardedAllowIps;
  t.is(ips.fromValue(['10.0.0.0/8', ' ::1 ', '*']), '10.0.0.0/8,::1,*');
  t.is(ips.fromText(['127.0.0.1, 2001:db8::/32']), '127.0.0.1,2001:db8::/32');
  for (const bad of ['10.0.0.0/33', 'host.example', '::/129', '10.0.0.1/8/8', '1.2.3']) {
    const error = t.throws(() => ips.fromText([`127.0.0.1,${bad}`]));
    t.is(error.sentence('--forwarded-allow-ips', ''), `--forwarded-allow-ips: '${bad}' is not an IP address, a CIDR range or *`);
  }
  t.throws(() => SETTINGS.proxyAllowFrom.fromValue(42));
  t.is(SETTINGS.proxyProtocol.fromText(['v2']), 'v2');
  t.throws(() => SETTINGS.proxyProtocol.fromText(['on']));
});
