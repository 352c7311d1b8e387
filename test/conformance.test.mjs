// Protocol conformance over raw sockets: invalid requests must get exactly
// one 4xx (or 501/505) and a close, or a close with no response; never a
// 2xx, never a second response, and a request smuggled behind them never
// reaches the app. Valid edge cases must be served. Each case cites the rule.

import test from 'ava';
import { fixture, raw, serve, statusLines } from './helpers.mjs';

const CRLF = '\r\n';
const SMUGGLED = `GET /smuggled HTTP/1.1${CRLF}Host: x${CRLF}${CRLF}`;
const req = (head, body = '') => `${head.join(CRLF)}${CRLF}${CRLF}${body}`;
const get = (...headers) => req(['GET /ok HTTP/1.1', ...headers]);
const post = (headers, body) => req(['POST /echo HTTP/1.1', 'Host: x', ...headers], body);

// [name, rule, raw request, expected status (any allowed 4xx/501/505 if omitted), 'body']
// 'body' marks errors in the body: the head was valid, so the app already has
// the request (bodies stream); it must see its input fail, never a smuggled request.
const INVALID = [
  // RFC 9112 §6.3: message body length
  ['CL and TE: chunked', '9112 §6.3 ¶3', post(['Content-Length: 4', 'Transfer-Encoding: chunked'], `0${CRLF}${CRLF}${SMUGGLED}`)],
  ['TE: chunked then CL', '9112 §6.3 ¶3', post(['Transfer-Encoding: chunked', 'Content-Length: 4'], `0${CRLF}${CRLF}${SMUGGLED}`)],
  ['CL and TE: identity', '9112 §6.3 ¶3', post(['Content-Length: 3', 'Transfer-Encoding: identity'], 'abc')],
  ['differing duplicate CL', '9110 §8.6', post(['Content-Length: 3', 'Content-Length: 40'], `abc${SMUGGLED}`)],
  ['CL list in one field', '9110 §8.6', post(['Content-Length: 3, 40'], 'abc')],
  ['negative CL', '9110 §8.6', post(['Content-Length: -1'], 'abc')],
  ['CL with a plus sign', '9110 §8.6', post(['Content-Length: +3'], 'abc')],
  ['hex CL', '9110 §8.6', post(['Content-Length: 0x3'], 'abc')],
  ['CL with inner space', '9110 §8.6', post(['Content-Length: 1 2'], 'abc')],
  ['empty CL', '9110 §8.6', post(['Content-Length:'], 'abc')],
  ['CL letters', '9110 §8.6', post(['Content-Length: abc'], 'abc')],
  ['CL overflowing 64 bits', '9110 §8.6', post(['Content-Length: 99999999999999999999999'], 'abc')],
  ['CL with trailing garbage', '9110 §8.6', post(['Content-Length: 3abc'], 'abc')],
  // RFC 9112 §6.1: transfer codings
  ['TE: gzip only', '9112 §6.3 ¶4', post(['Transfer-Encoding: gzip'], `0${CRLF}${CRLF}`)],
  ['TE: chunked not last', '9112 §6.3 ¶4', post(['Transfer-Encoding: chunked, gzip'], `0${CRLF}${CRLF}`)],
  ['TE: unknown coding before chunked', '9112 §6.1', post(['Transfer-Encoding: gzip, chunked'], `0${CRLF}${CRLF}`), 501],
  ['TE: unknown coding, separate field', '9112 §6.1', post(['Transfer-Encoding: foo', 'Transfer-Encoding: chunked'], `0${CRLF}${CRLF}`), 501],
  ['TE: chunked twice', '9112 §7.1', post(['Transfer-Encoding: chunked, chunked'], `0${CRLF}${CRLF}`)],
  ['TE: chunked in two fields', '9112 §7.1', post(['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], `0${CRLF}${CRLF}`)],
  ['TE: xchunked', '9112 §6.3 ¶4', post(['Transfer-Encoding: xchunked'], `0${CRLF}${CRLF}${SMUGGLED}`)],
  ['TE: chunked-false', '9112 §6.3 ¶4', post(['Transfer-Encoding: chunked-false'], `0${CRLF}${CRLF}`)],
  ['TE: identity', '9112 §6.3 ¶4', post(['Transfer-Encoding: identity'], `0${CRLF}${CRLF}`)],
  ['TE: empty', '9112 §6.3 ¶4', post(['Transfer-Encoding:'], `0${CRLF}${CRLF}`)],
  ['TE: quoted', '9112 §6.3 ¶4', post(['Transfer-Encoding: "chunked"'], `0${CRLF}${CRLF}`)],
  ['TE: vertical tab', '9110 §5.5', post(['Transfer-Encoding: \vchunked'], `0${CRLF}${CRLF}`)],
  ['TE: obs-folded', '9112 §5.2', post(['Transfer-Encoding:', ' chunked'], `0${CRLF}${CRLF}`)],
  ['TE: space before colon', '9112 §5.1', post(['Transfer-Encoding : chunked'], `0${CRLF}${CRLF}${SMUGGLED}`)],
  ['TE in HTTP/1.0', '9112 §6.1 ¶15', req(['POST /echo HTTP/1.0', 'Transfer-Encoding: chunked'], `0${CRLF}${CRLF}${SMUGGLED}`)],
  ['TE with NUL', '9110 §5.5', post(['Transfer-Encoding: chunked\0'], `0${CRLF}${CRLF}`)],
  // RFC 9112 §7.1: chunked framing
  ['chunk size not hex', '9112 §7.1', post(['Transfer-Encoding: chunked'], `zz${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['chunk size with leading space', '9112 §7.1', post(['Transfer-Encoding: chunked'], ` 5${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['chunk size with 0x prefix', '9112 §7.1', post(['Transfer-Encoding: chunked'], `0x5${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['negative chunk size', '9112 §7.1', post(['Transfer-Encoding: chunked'], `-5${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['chunk size overflow', '9112 §7.1', post(['Transfer-Encoding: chunked'], `ffffffffffffffffff${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['chunk size with trailing spaces', '9112 §7.1', post(['Transfer-Encoding: chunked'], `5  ${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['chunk data longer than its size', '9112 §7.1', post(['Transfer-Encoding: chunked'], `3${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['chunk without CRLF after data', '9112 §7.1', post(['Transfer-Encoding: chunked'], `5${CRLF}helloX0${CRLF}${CRLF}`), undefined, 'body'],
  ['bare LF after chunk size', '9112 §7.1', post(['Transfer-Encoding: chunked'], `5\nhello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['bare LF after chunk data', '9112 §7.1', post(['Transfer-Encoding: chunked'], `5${CRLF}hello\n0${CRLF}${CRLF}`), undefined, 'body'],
  ['bare CR after chunk size', '9112 §7.1', post(['Transfer-Encoding: chunked'], `5\rhello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['control byte in chunk extension', '9112 §7.1.1', post(['Transfer-Encoding: chunked'], `5;\x01${CRLF}hello${CRLF}0${CRLF}${CRLF}`), undefined, 'body'],
  ['invalid trailer field name', '9112 §7.1.2', post(['Transfer-Encoding: chunked'], `0${CRLF}Bad Trailer: x${CRLF}${CRLF}`), undefined, 'body'],
  ['trailer line without a colon', '9112 §7.1.2', post(['Transfer-Encoding: chunked'], `0${CRLF}garbage${CRLF}${CRLF}`), undefined, 'body'],
  ['chunked smuggling with a short chunk size', '9112 §7.1', post(['Transfer-Encoding: chunked'], `1${CRLF}ab${CRLF}0${CRLF}${CRLF}${SMUGGLED}`), undefined, 'body'],
  // RFC 9112 §5 / RFC 9110 §5.1, §5.5: field syntax
  ['space before colon', '9112 §5.1', get('Host : x')],
  ['tab before colon', '9112 §5.1', get('Host\t: x')],
  ['obs-fold', '9112 §5.2', get('Host: x', 'X-A: 1', ' folded')],
  ['obs-fold with tab', '9112 §5.2', get('Host: x', 'X-A: 1', '\tfolded')],
  ['obs-fold first line', '9112 §2.2', req(['GET /ok HTTP/1.1', ' Host: x'])],
  ['field name with (', '9110 §5.1', get('Host: x', 'X(A: 1')],
  ['field name with @', '9110 §5.1', get('Host: x', 'X@A: 1')],
  ['field name with space', '9110 §5.1', get('Host: x', 'X A: 1')],
  ['field name with non-ASCII', '9110 §5.1', get('Host: x', 'X\xc3\xa9: 1')],
  ['empty field name', '9110 §5.1', get('Host: x', ': 1')],
  ['field without colon', '9112 §5', get('Host: x', 'NoColon')],
  ['NUL in value', '9110 §5.5', get('Host: x', 'X-A: a\0b')],
  ['bare CR in value', '9110 §5.5', get('Host: x', 'X-A: a\rb')],
  ['DEL in value', '9110 §5.5', get('Host: x', 'X-A: a\x7fb')],
  ['control byte in value', '9110 §5.5', get('Host: x', 'X-A: a\x01b')],
  ['escape byte in value', '9110 §5.5', get('Host: x', 'X-A: a\x1bb')],
  // RFC 9112 §2.2: line endings
  ['bare LF after request line', '9112 §2.2', `GET /ok HTTP/1.1\nHost: x${CRLF}${CRLF}`],
  ['bare LF header lines', '9112 §2.2', `GET /ok HTTP/1.1${CRLF}Host: x\nX-A: 1\n\n`],
  ['bare LF everywhere', '9112 §2.2', 'GET /ok HTTP/1.1\nHost: x\n\n'],
  ['bare CR line endings', '9112 §2.2', 'GET /ok HTTP/1.1\rHost: x\r\r'],
  ['CR CR LF', '9112 §2.2', `GET /ok HTTP/1.1\r${CRLF}Host: x${CRLF}${CRLF}`],
  ['bare CR ending the head', '9112 §2.2', `GET /ok HTTP/1.1${CRLF}Host: x${CRLF}\r${SMUGGLED}`],
  // RFC 9112 §3: request line
  ['bad version', '9112 §2.3', req(['GET /ok HTTP/1.x', 'Host: x'])],
  ['lowercase protocol', '9112 §2.3', req(['GET /ok http/1.1', 'Host: x'])],
  ['HTTP/2.0 on HTTP/1 framing', '9112 §2.3', req(['GET /ok HTTP/2.0', 'Host: x'])],
  ['HTTP/3.1', '9110 §6.2', req(['GET /ok HTTP/3.1', 'Host: x'])],
  ['two-digit minor version', '9112 §2.3', req(['GET /ok HTTP/1.10', 'Host: x'])],
  ['missing version', '9112 §3', req(['GET /ok', 'Host: x'])],
  ['tab separators', '9112 §3', req(['GET\t/ok\tHTTP/1.1', 'Host: x'])],
  ['leading space before method', '9112 §2.2', req([' GET /ok HTTP/1.1', 'Host: x'])],
  ['method with a delimiter', '9110 §9.1', req(['G(T /ok HTTP/1.1', 'Host: x'])],
  ['unknown method', '9110 §9.1', req(['FOO /ok HTTP/1.1', 'Host: x'])],
  ['lowercase method', '9110 §9.1', req(['get /ok HTTP/1.1', 'Host: x'])],
  ['space in target', '9112 §3.2', req(['GET /a b HTTP/1.1', 'Host: x'])],
  ['NUL in target', '9112 §3.2', req(['GET /a\0b HTTP/1.1', 'Host: x'])],
  ['control byte in target', '9112 §3.2', req(['GET /a\x01b HTTP/1.1', 'Host: x'])],
  ['empty target', '9112 §3', req(['GET  HTTP/1.1', 'Host: x'])],
  ['garbage line', '9112 §3', req(['HELLO'])],
  ['binary junk', '9112 §3', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'],
  // RFC 9112 §3.2, RFC 9110 §7.2: Host
  ['missing Host on HTTP/1.1', '9112 §3.2', req(['GET /ok HTTP/1.1'])],
  ['two Host fields', '9112 §3.2', get('Host: a', 'Host: b')],
  ['two identical Host fields', '9112 §3.2', get('Host: a', 'Host: a')],
  ['Host with a space', '9112 §3.2', get('Host: a b')],
  ['Host with a slash', '9112 §3.2', get('Host: a/b')],
  ['Host with userinfo', '9110 §4.2.1', get('Host: user@a')],
  ['Host with a question mark', '9112 §3.2', get('Host: a?b')],
  ['two Host fields on HTTP/1.0', '9112 §3.2', req(['GET /ok HTTP/1.0', 'Host: a', 'Host: b'])],
  // limits
  ['request line over the limit', 'gunicorn limit_request_line', req([`GET /${'a'.repeat(5000)} HTTP/1.1`, 'Host: x']), 414],
  ['too many fields', 'gunicorn limit_request_fields', get('Host: x', ...Array.from({ length: 101 }, (_, i) => `X-${i}: v`)), 431],
  ['field over the size limit', 'gunicorn limit_request_field_size', get('Host: x', `X-Big: ${'v'.repeat(9000)}`), 431],
  ['field name over the size limit', 'gunicorn limit_request_field_size', get('Host: x', `X-${'n'.repeat(9000)}: v`), 431],
  ['body over --limit-request-body', 'RFC 9110 §15.5.14', post(['Content-Length: 2000000'], 'x'.repeat(1000)), 413],
  ['chunked body over --limit-request-body', 'RFC 9110 §15.5.14', post(['Transfer-Encoding: chunked'], `${(2_000_000).toString(16)}${CRLF}${'x'.repeat(1000)}`), 413, 'body'],
];

const VALID = [
  ['byte-by-byte delivery', '9112 §2', [...get('Host: x', 'Connection: close')], 1],
  ['leading empty line', '9112 §2.2', `${CRLF}${get('Host: x', 'Connection: close')}`, 1],
  ['absolute-form target', '9112 §3.2.2', req(['GET http://x/ok HTTP/1.1', 'Host: x', 'Connection: close']), 1],
  ['OPTIONS *', '9112 §3.2.4', req(['OPTIONS * HTTP/1.1', 'Host: x', 'Connection: close']), 1],
  ['HTTP/1.0 without Host', '9112 §3.2', req(['GET /ok HTTP/1.0']), 1],
  ['Host with port and IPv6 literal', '9110 §7.2', get('Host: [::1]:8080', 'Connection: close'), 1],
  ['empty field value', '9110 §5.5', get('Host: x', 'X-Empty:', 'Connection: close'), 1],
  ['obs-text and tab in a value', '9110 §5.5', get('Host: x', 'X-A: caf\xe9\tbar', 'Connection: close'), 1],
  ['Chunked in any case', '9112 §7', post(['Transfer-Encoding: Chunked', 'Connection: close'], `3${CRLF}abc${CRLF}0${CRLF}${CRLF}`), 1],
  ['chunk extensions and trailers', '9112 §7.1.1', post(['Transfer-Encoding: chunked', 'Connection: close'], `3;name=value${CRLF}abc${CRLF}0${CRLF}X-Trailer: t${CRLF}${CRLF}`), 1],
  ['pipelined GET, POST, GET', '9112 §9.3.2', get('Host: x') + post(['Content-Length: 3'], 'abc') + get('Host: x', 'Connection: close'), 3],
  ['double space in the request line', '9112 §3 (MAY parse on whitespace)', req(['GET  /ok HTTP/1.1', 'Host: x', 'Connection: close']), 1],
  ['Content-Length: 0', '9110 §8.6', post(['Content-Length: 0', 'Connection: close'], ''), 1],
  ['body exactly at --limit-request-body', '9110 §15.5.14', post(['Content-Length: 1000000', 'Connection: close'], 'x'.repeat(1_000_000)), 1],
];

let server;
const cleanups = [];
test.before(async () => {
  server = await serve({ teardown: (fn) => cleanups.push(fn) }, fixture('trace.mjs'), {
    args: ['--limit-request-body', '1000000'],
  });
});
test.after.always(async () => {
  for (const fn of cleanups) await fn();
});

// Serial, so the log between a request and its answer is that request's alone.
for (const [name, rule, request, expected, where] of INVALID) {
  test.serial(`invalid (RFC ${rule}): ${name}`, async (t) => {
    const before = server.log.length;
    const { text, closed } = await raw(server.port, request);
    const statuses = statusLines(text);
    t.true(closed, 'the connection is closed');
    t.true(statuses.length <= 1, `at most one response, got ${statuses.join(' | ')}`);
    const code = statuses.length ? Number(statuses[0].slice(9, 12)) : null;
    if (code !== null) {
      t.true((code >= 400 && code < 500) || code === 501 || code === 505, `a 4xx/501/505, got ${code}`);
      if (expected) t.is(code, expected);
    } else {
      t.is(expected, undefined, `expected ${expected}, got no response`);
    }
    const seen = server.log.slice(before);
    t.false(seen.includes('/smuggled'), 'nothing smuggled reached the app');
    if (where !== 'body') t.false(seen.includes('app saw'), 'the app never saw the invalid request');
  });
}

for (const [name, rule, request, responses] of VALID) {
  test(`valid (RFC ${rule}): ${name}`, async (t) => {
    const { text } = await raw(server.port, request, { paceMs: Array.isArray(request) ? 1 : 0 });
    t.deepEqual(statusLines(text), Array(responses).fill('HTTP/1.1 200 OK'));
  });
}

test('the suite has at least 80 invalid cases', (t) => {
  t.true(INVALID.length >= 80, `${INVALID.length}`);
});
