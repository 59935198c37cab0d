/**
 * #22 "what it must show" 2: hostile request bytes against a running `kiln balancer`
 * (request lines, header names and values, conflicting lengths, upgrade headers,
 * bodies). Whatever arrives, the balancer answers with a proper HTTP status line or
 * closes the connection, never crashes, never logs an unhandled rejection, and serves
 * a normal request afterwards. Bounded: a fixed number of runs and a time cap.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { rawExchange, startBalancerProcess, startRecordingBackend, type BalancerProcess, type RecordingBackend } from './balancer-fixtures.js';

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'CONNECT', 'PRI', 'get', 'G E T', ''];
const PATHS = ['/', '/x?y=1', '*', '//', '/_kiln/balancer', '/_kiln/balancer/nodes/app/drain', '/%00', '/%zz', 'http://evil.example/', '/' + 'a'.repeat(9000)];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1.1 extra', ''];
const HEADER_NAMES = ['Host', 'Content-Length', 'Transfer-Encoding', 'Upgrade', 'Connection', 'X-Forwarded-For', 'X-Forwarded-Proto', 'Cookie', 'Authorization', 'Expect', 'HTTP2-Settings', 'Sec-WebSocket-Key', 'Bad Name', 'X:Y', ''];
const HEADER_VALUES = ['', '0', '5', '-1', '99999999999999999999', 'chunked', 'chunked, identity', 'websocket', 'h2c', 'Upgrade', 'keep-alive, Upgrade', '100-continue', 'connect.sid=s%3Aabc.def', 'Bearer x', '\u0000', 'é', 'a'.repeat(20_000)];

const headerLine = fc.tuple(fc.oneof(fc.constantFrom(...HEADER_NAMES), fc.string({ maxLength: 20 })), fc.oneof(fc.constantFrom(...HEADER_VALUES), fc.string({ maxLength: 60 }))).map(([n, v]) => `${n}: ${v}`);
const body = fc.oneof(fc.constant(''), fc.string({ maxLength: 200 }), fc.constant('0\r\n\r\n'), fc.constant('5\r\nhello\r\n0\r\n\r\n'), fc.constant('zz\r\nnope\r\n'));
const wellShaped = fc
  .record({
    method: fc.oneof(fc.constantFrom(...METHODS), fc.string({ maxLength: 8 })),
    path: fc.oneof(fc.constantFrom(...PATHS), fc.webPath()),
    version: fc.constantFrom(...VERSIONS),
    headers: fc.array(headerLine, { maxLength: 8 }),
    body,
    eol: fc.constantFrom('\r\n', '\n', '\r'),
  })
  .map(({ method, path, version, headers, body: b, eol }) => `${method} ${path} ${version}${eol}${headers.join(eol)}${headers.length ? eol : ''}${eol}${b}`);
const garbage = fc.uint8Array({ maxLength: 600 }).map((bytes) => Buffer.from(bytes));

describe('security: fuzzing the balancer request handling', () => {
  let backend: RecordingBackend;
  let wsBackend: RecordingBackend;
  let lb: BalancerProcess;

  before(async () => {
    backend = await startRecordingBackend('app');
    wsBackend = await startRecordingBackend('ws', { websocket: true });
    lb = await startBalancerProcess([backend, wsBackend]);
  });
  after(async () => {
    await lb?.stop();
    await Promise.all([backend?.close(), wsBackend?.close()]);
  });

  it('answers every input with a status line or a close, and stays up', async () => {
    const deadline = Date.now() + 120_000;
    const check = async (input: string | Buffer): Promise<boolean> => {
      if (Date.now() > deadline) return true;
      const { text, closed } = await rawExchange(lb.port, input, 300);
      if (text.length > 0) assert.match(text, /^HTTP\/1\.1 [1-5]\d\d /, `a proper status line for ${JSON.stringify(String(input).slice(0, 200))}`);
      else assert.ok(closed || text.length === 0, 'silence is allowed only while the request is incomplete');
      // 101 only for a real WebSocket upgrade the backend accepted.
      if (text.startsWith('HTTP/1.1 101')) assert.match(String(input), /upgrade:\s*websocket/i);
      return true;
    };
    await fc.assert(fc.asyncProperty(wellShaped, check), { numRuns: 220, seed: 22 });
    await fc.assert(fc.asyncProperty(garbage, check), { numRuns: 80, seed: 23 });
    assert.equal(lb.child.exitCode, null, 'the balancer is still running');
    assert.equal(lb.child.signalCode, null);
    const res = await fetch(`${lb.url}/after-the-fuzz`);
    assert.equal(res.status, 200, 'and serves a normal request');
    assert.doesNotMatch(lb.output(), /unhandled|uncaught|TypeError|RangeError|at .+\.js:\d+/i, 'no stack trace or unhandled rejection in its output');
  });
});
