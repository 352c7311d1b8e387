// HTTPS in the engine: certificates made by openssl for the test, real
// clients (curl, Python's ssl and http.client), every interface's view,
// client certificates, versions, ALPN, resumption across workers, HUP with
// a new and a broken certificate, and hostile clients.

import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { TicketKeys } from '../dist/arbiter/tls.js';
import { curl, fixture, python, raw, rwsgi, serve, waitFor } from './helpers.mjs';

const APP = fixture('tls-app.mjs');
const dir = mkdtempSync(join(tmpdir(), 'rwsgi-tls-'));
const at = (name) => join(dir, name);
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });

/** An EC P-256 key and a certificate for `cn` signed by `ca` (or self-signed). */
function certificate(name, cn, { ca = null, dates = null, san = 'DNS:localhost,IP:127.0.0.1', usage = 'serverAuth' } = {}) {
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-subj', `/CN=${cn}`];
  if (ca === null) {
    openssl('req', '-x509', ...key, '-out', `${name}.pem`, '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    return;
  }
  openssl('req', '-new', ...key, '-out', `${name}.csr`);
  writeFileSync(at(`${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
  if (dates === null) {
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
  } else {
    // `openssl ca` is the one that takes explicit dates (an expired certificate).
    writeFileSync(at('index.txt'), '');
    writeFileSync(at('serial'), '1000\n');
    writeFileSync(at('ca.cnf'), '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n');
    openssl('ca', '-batch', '-config', 'ca.cnf', '-cert', `${ca}.pem`, '-keyfile', `${ca}.key`, '-in', `${name}.csr`, '-out', `${name}.pem`, '-startdate', dates[0], '-enddate', dates[1]);
  }
}

certificate('ca', 'Test CA');
certificate('other-ca', 'Other CA');
certificate('server', 'localhost', { ca: 'ca' });
certificate('server2', 'localhost', { ca: 'ca' });
certificate('client', 'client', { ca: 'ca', san: 'DNS:client', usage: 'clientAuth' });
certificate('rogue', 'rogue', { ca: 'other-ca', san: 'DNS:rogue', usage: 'clientAuth' });
certificate('expired', 'localhost', { ca: 'ca', dates: ['20200101000000Z', '20200102000000Z'] });
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const tlsArgs = (name = 'server', more = []) => ['--certfile', at(`${name}.pem`), '--keyfile', at(`${name}.key`), ...more];

/** Python with an SSL context trusting the test CA (`ctx`), `port` and `ca`, `dir` in scope. */
const py = (code, port) =>
  python(
    `
import ssl, socket, http.client, json, os
dir = ${JSON.stringify(dir)}
ctx = ssl.create_default_context(cafile=os.path.join(dir, 'ca.pem'))
${code}`,
    port,
  );

test('HTTPS with curl and http.client: keep-alive, pipelining, the wsgi environ, close_notify', async (t) => {
  const server = await serve(t, APP, { args: tlsArgs() });
  t.regex(server.log, /Listening at: https:\/\/127\.0\.0\.1:/);
  const body = await curl('--cacert', at('ca.pem'), `https://localhost:${server.port}/`);
  const seen = JSON.parse(body);
  t.is(seen['wsgi.url_scheme'], 'https');
  t.is(seen.HTTPS, 'on');
  t.is(seen.SSL_CLIENT_S_DN, null);
  const out = await py(
    `
c = http.client.HTTPSConnection('localhost', port, context=ctx, timeout=10)
statuses = []
for i in range(5):
    c.request('POST', '/', body=b'x' * 200000); r = c.getresponse(); r.read(); statuses.append(r.status)
s = ctx.wrap_socket(socket.create_connection(('localhost', port), timeout=10), server_hostname='localhost')
s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' * 3 + b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
data = b''
while True:
    d = s.recv(65536)
    if not d: break
    data += d
s.unwrap()  # the server's close_notify arrived, so this completes
print(json.dumps({'statuses': statuses, 'pipelined': data.count(b'HTTP/1.1 200 OK')}))
`,
    server.port,
  );
  t.deepEqual(JSON.parse(out), { statuses: [200, 200, 200, 200, 200], pipelined: 4 });
});

test('each interface sees https: node req.socket.encrypted, fetch https: URLs', async (t) => {
  const node = await serve(t, `${APP}:node`, { args: tlsArgs('server', ['--interface', 'node']) });
  const n = JSON.parse(await curl('--cacert', at('ca.pem'), `https://localhost:${node.port}/`));
  t.is(n.encrypted, true);
  t.is(n.authorized, false);
  t.is(n.protocol, 'TLSv1.3');
  t.regex(n.cipher, /^TLS_AES_(128|256)_GCM_SHA(256|384)$|^TLS_CHACHA20_POLY1305_SHA256$/);
  const fetch = await serve(t, `${APP}:fetchApp`, { args: tlsArgs() });
  const f = JSON.parse(await curl('--cacert', at('ca.pem'), `https://localhost:${fetch.port}/p?q=1`));
  t.is(f.url, `https://localhost:${fetch.port}/p?q=1`);
});

test('a plain and a TLS bind side by side; a Unix socket stays plain', async (t) => {
  const sock = at('plain.sock');
  const server = await serve(t, APP, { args: [...tlsArgs(), '-b', 'https://127.0.0.1:0', '-b', `unix:${sock}`] });
  const https = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(server.log)[1]);
  t.regex(server.log, /Listening at: http:\/\/127\.0\.0\.1:\d+/);
  t.is(JSON.parse(await curl(`http://127.0.0.1:${server.port}/`))['wsgi.url_scheme'], 'http');
  t.is(JSON.parse(await curl('--cacert', at('ca.pem'), `https://localhost:${https}/`))['wsgi.url_scheme'], 'https');
  t.is(JSON.parse(await curl('--unix-socket', sock, 'http://x/'))['wsgi.url_scheme'], 'http');
});

test('client certificates: required, optional, refused', async (t) => {
  const required = await serve(t, APP, { args: tlsArgs('server', ['--ca-certs', at('ca.pem'), '--cert-reqs', 'required']) });
  const withCert = JSON.parse(await curl('--cacert', at('ca.pem'), '--cert', at('client.pem'), '--key', at('client.key'), `https://localhost:${required.port}/`));
  t.is(withCert.SSL_CLIENT_S_DN, 'CN=client');
  t.is(withCert.SSL_CLIENT_VERIFY, 'SUCCESS');
  t.true(withCert.SSL_CLIENT_CERT.startsWith('-----BEGIN CERTIFICATE-----\n'));
  const pemBody = (text) => text.replace(/-----[^-]+-----|\s/g, '');
  t.is(pemBody(withCert.SSL_CLIENT_CERT), pemBody(execFileSync('openssl', ['x509', '-in', at('client.pem')]).toString()));
  await t.throwsAsync(curl('--cacert', at('ca.pem'), `https://localhost:${required.port}/`));
  await t.throwsAsync(curl('--cacert', at('ca.pem'), '--cert', at('rogue.pem'), '--key', at('rogue.key'), `https://localhost:${required.port}/`));

  const optional = await serve(t, `${APP}:node`, { args: tlsArgs('server', ['--ca-certs', at('ca.pem'), '--cert-reqs', 'optional', '--interface', 'node']) });
  const anonymous = JSON.parse(await curl('--cacert', at('ca.pem'), `https://localhost:${optional.port}/`));
  t.is(anonymous.authorized, false);
  t.is(anonymous.subject, null);
  const known = JSON.parse(await curl('--cacert', at('ca.pem'), '--cert', at('client.pem'), '--key', at('client.key'), `https://localhost:${optional.port}/`));
  t.deepEqual(known.subject, { CN: 'client' });
  t.true(known.authorized);
  t.true(known.raw > 100);
});

test('bad TLS settings exit 3 naming the file and the problem, before any worker starts', async (t) => {
  const cases = [
    [tlsArgs('server').slice(0, 2).concat(['--keyfile', at('client.key')]), /--keyfile .*client\.key does not go with --certfile .*server\.pem/],
    [tlsArgs('expired'), /--certfile .*expired\.pem: the certificate expired on/],
    [['--certfile', at('server.key'), '--keyfile', at('server.key')], /--certfile .*server\.key: no certificate in it/],
    [['--certfile', at('server.pem'), '--keyfile', at('server.pem')], /--keyfile .*server\.pem: no private key in it/],
    [['--certfile', at('missing.pem'), '--keyfile', at('server.key')], /--certfile .*missing\.pem: cannot read it/],
    [tlsArgs('server', ['--ciphers', 'TLS13_AES_128_GCM_SHA256,RC4_MD5']), /--ciphers: unknown cipher suite "RC4_MD5"/],
    [['-b', 'https://127.0.0.1:0'], /--bind https:\/\/127\.0\.0\.1:0 serves TLS: set --certfile and --keyfile/],
    [['--certfile', at('server.pem')], /--certfile is set without --keyfile/],
    [tlsArgs('server', ['--cert-reqs', 'required']), /--cert-reqs required: needs --ca-certs/],
  ];
  for (const [args, message] of cases) {
    const r = await rwsgi(['serve', APP, '-b', '127.0.0.1:0', '-w', '1', ...args]);
    t.is(r.code, 3, r.out);
    t.regex(r.out, message);
    t.notRegex(r.out, /Booting worker/);
  }
  const check = await rwsgi(['check', APP, ...tlsArgs('expired')]);
  t.is(check.code, 3, check.out);
  t.regex(check.out, /the certificate expired on/);
});

test('TLS 1.2 and 1.3, --tls-min-version 1.3 refuses 1.2, ALPN http/1.1', async (t) => {
  const probe = `
def hello(version, alpn=None):
    c = ssl.create_default_context(cafile=os.path.join(dir, 'ca.pem'))
    c.minimum_version = c.maximum_version = version
    if alpn: c.set_alpn_protocols(alpn)
    try:
        s = c.wrap_socket(socket.create_connection(('localhost', port), timeout=10), server_hostname='localhost')
    except ssl.SSLError as e:
        return 'refused'
    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')
    ok = s.recv(100).startswith(b'HTTP/1.1 200')
    return [s.version(), s.selected_alpn_protocol(), ok]
print(json.dumps([hello(ssl.TLSVersion.TLSv1_2), hello(ssl.TLSVersion.TLSv1_3, ['h2', 'http/1.1'])]))
`;
  const both = await serve(t, APP, { args: tlsArgs() });
  t.deepEqual(JSON.parse(await py(probe, both.port)), [
    ['TLSv1.2', null, true],
    ['TLSv1.3', 'http/1.1', true],
  ]);
  const strict = await serve(t, APP, { args: tlsArgs('server', ['--tls-min-version', '1.3']) });
  t.deepEqual(JSON.parse(await py(probe, strict.port)), ['refused', ['TLSv1.3', 'http/1.1', true]]);
});

test('a session resumes on the other worker (ticket keys shared by the arbiter)', async (t) => {
  const server = await serve(t, APP, { workers: 2, args: tlsArgs('server', ['--spread', 'random']) });
  const out = await py(
    `
def get(session=None):
    s = ctx.wrap_socket(socket.create_connection(('localhost', port), timeout=10), server_hostname='localhost', session=session)
    s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
    data = b''
    while b'}' not in data: data += s.recv(4096)
    pid = json.loads(data.split(b'\\r\\n\\r\\n', 1)[1])['pid']
    # A TLS 1.3 ticket comes after the handshake: it is in once a response was read.
    return s, pid
first, pid = get()
session = first.session
other = None
for i in range(40):
    s, p = get(session)
    if p != pid:
        other = [p, s.session_reused]
        break
print(json.dumps({'first': pid, 'other': other}))
`,
    server.port,
  );
  const { first, other } = JSON.parse(out);
  t.truthy(other, 'no connection reached the other worker in 40 tries');
  t.not(other[0], first);
  t.true(other[1], 'the session was not resumed on the other worker');
});

test('HUP: new workers load a new certificate; a broken one keeps the running workers', async (t) => {
  const cert = at('live.pem');
  const key = at('live.key');
  copyFileSync(at('server.pem'), cert);
  copyFileSync(at('server.key'), key);
  const server = await serve(t, APP, { args: ['--certfile', cert, '--keyfile', key] });
  const serial = () =>
    python(
      `
import ssl, socket, hashlib
c = ssl.create_default_context(cafile=${JSON.stringify(at('ca.pem'))})
s = c.wrap_socket(socket.create_connection(('localhost', port), timeout=10), server_hostname='localhost')
print(hashlib.sha256(s.getpeercert(True)).hexdigest())
`,
      server.port,
    ).then((s) => s.trim());
  const fingerprint = (name) => execFileSync('openssl', ['x509', '-in', at(name), '-noout', '-fingerprint', '-sha256']).toString().split('=')[1].replace(/:/g, '').trim().toLowerCase();
  t.is(await serial(), fingerprint('server.pem'));
  copyFileSync(at('server2.pem'), cert);
  copyFileSync(at('server2.key'), key);
  server.child.kill('SIGHUP');
  await waitFor(async () => (await serial()) === fingerprint('server2.pem'), 30_000, 'the new certificate served');

  writeFileSync(cert, 'not a certificate\n');
  const before = server.log.length;
  server.child.kill('SIGHUP');
  await waitFor(() => /Reload: TLS cannot be served, keeping the running workers: --certfile .*live\.pem: no certificate/.test(server.log.slice(before)), 20_000, 'the broken certificate refused');
  t.is(await serial(), fingerprint('server2.pem'));
  t.notRegex(server.log.slice(before), /Booting worker/);
});

/** openssl s_client over TLS 1.2: one request, then its `R` command (a renegotiation). */
function renegotiate(port) {
  return new Promise((resolve) => {
    const child = execFile('openssl', ['s_client', '-tls1_2', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost'], { timeout: 20_000 }, (_err, stdout, stderr) =>
      resolve(stdout + stderr),
    );
    child.stdin.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    setTimeout(() => child.stdin.write('R\n'), 1500);
    setTimeout(() => child.stdin.end(), 4000);
  });
}

test('plain HTTP on the TLS port gets a 400 saying so; garbage, a truncated ClientHello and renegotiation are refused', async (t) => {
  const server = await serve(t, APP, { args: tlsArgs() });
  const before = JSON.parse(await curl('--cacert', at('ca.pem'), `https://localhost:${server.port}/`)).pid;
  const renegotiation = await renegotiate(server.port);
  t.regex(renegotiation, /HTTP\/1\.1 200 OK/);
  t.regex(renegotiation, /RENEGOTIATING/);
  t.regex(renegotiation, /no renegotiation/);
  const plain = await raw(server.port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  t.regex(plain.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.regex(plain.text, /plain HTTP request was sent to an HTTPS port/);
  t.true(plain.closed);
  const garbage = await raw(server.port, Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0a]));
  t.true(garbage.closed);
  t.is(garbage.text, '');
  // A record header promising more than arrives, then the client closes its side.
  const truncated = await raw(server.port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), { ms: 3000 });
  t.false(truncated.text.startsWith('HTTP'));
  // The same worker served all of it, and still serves.
  t.is(JSON.parse(await curl('--cacert', at('ca.pem'), `https://localhost:${server.port}/`)).pid, before);
});

test('1000 stalled handshakes do not keep a normal client waiting; the handshake is bounded by --header-timeout', async (t) => {
  const server = await serve(t, APP, { args: tlsArgs('server', ['--header-timeout', '3']) });
  const out = await py(
    `
import time
stalled = []
for i in range(1000):
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    s.sendall(b'\\x16\\x03\\x01\\x02\\x00')  # a ClientHello that never comes
    stalled.append(s)
start = time.time()
c = http.client.HTTPSConnection('localhost', port, context=ctx, timeout=30)
c.request('GET', '/'); ok = c.getresponse().status == 200
served = time.time() - start
# Past the header timeout the stalled ones are closed by the server.
closed = 0
deadline = time.time() + 30
for s in stalled[:20]:
    s.settimeout(max(0.1, deadline - time.time()))
    try:
        closed += s.recv(1) == b''
    except OSError:
        closed += 1
print(json.dumps({'ok': ok, 'served': served, 'closed': closed}))
`,
    server.port,
  );
  const result = JSON.parse(out);
  t.true(result.ok);
  t.log(`a normal client was served in ${result.served.toFixed(3)} s beside 1000 stalled handshakes (loaded machine)`);
  t.true(result.served < 20);
  t.is(result.closed, 20);
});

test('ticket keys rotate: a new sealing key first, the previous one kept, older ones dropped', (t) => {
  const keys = new TicketKeys();
  const [first] = keys.current();
  t.regex(first, /^[0-9a-f]{96}$/);
  const second = keys.rotate();
  t.deepEqual(second.slice(1), [first]);
  t.not(second[0], first);
  const third = keys.rotate();
  t.deepEqual(third, [third[0], second[0]]);
  t.false(third.includes(first));
});

test('the access log shows the TLS version and cipher (%({ssl_protocol}e)s, %({ssl_cipher}e)s) and the scheme', async (t) => {
  const log = at('access.log');
  const format = '%({wsgi.url_scheme}e)s %({ssl_protocol}e)s %({ssl_cipher}e)s %(U)s';
  const plain = 'http://127.0.0.1:0';
  const server = await serve(t, APP, { bind: 'https://127.0.0.1:0', args: tlsArgs('server', ['-b', plain, '--tls-min-version', '1.3', '--access-logfile', log, '--access-logformat', format]) });
  const ports = [...server.log.matchAll(/Listening at: (https?):\/\/127\.0\.0\.1:(\d+)/g)].map((m) => [m[1], m[2]]);
  const plainPort = ports.find(([scheme]) => scheme === 'http')[1];
  await curl('--cacert', at('ca.pem'), `https://localhost:${server.port}/secure`);
  await curl(`http://127.0.0.1:${plainPort}/plain`);
  const lines = await waitFor(() => {
    const text = readFileSync(log, 'utf8');
    return text.split('\n').filter((l) => l !== '').length >= 2 && text;
  }, 10_000, 'two access log lines');
  t.regex(lines, /^https TLSv1\.3 TLS_AES_\S+ \/secure$/m);
  t.regex(lines, /^http - - \/plain$/m);
});
