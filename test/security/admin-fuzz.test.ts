import assert from 'node:assert/strict';
import { connect as tcpConnect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import { AdminServer } from '../../src/console/admin-server.js';
import { KilnServerSource } from '../../src/console/kiln-server-source.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { KilnServer } from '../../src/server/kiln-server.js';
import { ADMIN_TOKEN, READ_TOKEN } from './admin-helpers.js';

/**
 * "What it must show" 2 of #22, the admin half: whatever arrives on the admin port
 * (paths, queries, methods, headers and Authorization values, bodies, percent-encodings,
 * huge or odd session ids and principals, garbage request lines), the server neither
 * crashes nor leaves a rejection unhandled, and answers with a proper HTTP status: never
 * 5xx, and every 4xx a JSON body with a KILN_ERR_ code.
 */
const CLIENT_TOKEN = 'a-client-token-of-more-than-32-bytes-0123';

interface Answer {
  status: number;
  head: string;
  body: string;
}

/** Sends raw bytes; resolves with the parsed answer, or null if the server closed without one. */
function exchange(port: number, raw: string, halfClose = false): Promise<Answer | null> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 5 s to ${JSON.stringify(raw.slice(0, 300))}`));
    }, 5000);
    const done = (answer: Answer | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const parse = (final: boolean): void => {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) {
        if (final) done(null);
        return;
      }
      const head = data.slice(0, end);
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]);
      const body = data.slice(end + 4);
      // An event stream stays open: its head is the answer.
      if (/content-type: text\/event-stream/i.test(head)) return done({ status, head, body });
      const length = /content-length: (\d+)/i.exec(head);
      if (length && Buffer.byteLength(body) >= Number(length[1])) return done({ status, head, body });
      if (/transfer-encoding: chunked/i.test(head) && body.endsWith('0\r\n\r\n')) return done({ status, head, body });
      if (final) done({ status, head, body });
    };
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      parse(false);
    });
    socket.on('end', () => parse(true));
    socket.on('close', () => parse(true));
    socket.on('error', () => parse(true));
    socket.write(raw);
    // The request is all there is: an incomplete one ends instead of waiting for more.
    if (halfClose) socket.end();
  });
}

function check(answer: Answer | null, raw: string, method: string): void {
  assert.ok(answer, `the connection closed without an answer to ${JSON.stringify(raw.slice(0, 300))}`);
  assert.ok(answer.status >= 200 && answer.status < 500, `status ${answer.status} for ${JSON.stringify(raw.slice(0, 300))}: ${answer.body.slice(0, 300)}`);
  if (answer.status >= 400 && method !== 'HEAD') {
    let body: { code?: unknown };
    try {
      body = JSON.parse(answer.body.replace(/^[0-9a-f]+\r\n|\r\n0\r\n\r\n$/g, '')) as { code?: unknown };
    } catch {
      assert.fail(`a ${answer.status} without a JSON body for ${JSON.stringify(raw.slice(0, 300))}: ${JSON.stringify(answer.body.slice(0, 200))}`);
    }
    assert.match(String(body.code), /^KILN_ERR_[A-Z_]+$/);
  }
}

describe('admin API fuzz (fast-check): no crash, no unhandled rejection, never 5xx, 4xx with a KILN_ERR code', () => {
  let server: KilnServer;
  let source: KilnServerSource;
  let admin: AdminServer;
  let kiln: SessionClient;
  const ids: string[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown): void => void unhandled.push(err);

  before(async () => {
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    server = new KilnServer({ port: 0, token: CLIENT_TOKEN });
    const info = await server.start();
    source = new KilnServerSource(server);
    admin = new AdminServer(source, { port: 0, adminToken: ADMIN_TOKEN, readToken: READ_TOKEN, version: 'fuzz' });
    await admin.start();
    kiln = createSessionClient({ engine: connect(`kiln://127.0.0.1:${info.port}`, { token: CLIENT_TOKEN, name: 'fuzz-app' }) });
    for (let i = 0; i < 20; i++) {
      ids.push(
        await kiln.withSession(null, (s) => {
          s.set('v', { password: 'p', list: [i, 'x'.repeat(i * 50)], when: new Date(i) });
          s.setPrincipal(`user ${i % 3} ü/%`);
          return s.id;
        }),
      );
    }
  });
  after(async () => {
    await kiln?.close();
    await admin?.stop();
    await source?.close();
    await server?.stop();
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtException', onUnhandled);
  });

  const percent = fc.stringMatching(/^(%[0-9A-Fa-f]{0,2}|%%|%u00|[A-Za-z0-9_.~-]|é|\/|\?|#|&|=|\+| ){0,40}$/);
  const text = fc.oneof(fc.string({ maxLength: 60 }), percent, fc.string({ unit: 'grapheme', maxLength: 20 }).map(encodeURIComponent), fc.constantFrom('', '~', '~AAAA', '..', '%00', '%E0%A4%A', 'a'.repeat(5000)));
  const sessionish = fc.oneof(
    fc.constantFrom(...Array.from({ length: 3 }, (_, i) => `ID${i}`)),
    fc.stringMatching(/^[A-Za-z0-9_-]{1,200}(\.[a-z0-9]{0,10})?$/),
    fc.constant('A'.repeat(20_000)),
    text,
  );
  const path = fc.oneof(
    fc.constantFrom('/', '/index.html', '/metrics', '/api/overview', '/api/timeseries', '/api/events', '/api/sessions', '/api/tickets', '/api/', '//api/overview', '/api/sessions/', '/api/principals//sessions'),
    sessionish.map((s) => `/api/sessions/${s}`),
    text.map((p) => `/api/principals/${p}/sessions`),
    text.map((p) => `/${p}`),
  );
  const query = fc.array(fc.tuple(fc.constantFrom('after', 'prefix', 'limit', 'principal', 'ticket', 'token', 'access_token', 'x'), fc.oneof(text, fc.constantFrom('-1', '0', '1e308', 'NaN', '99999999999999999999', '1.5'))), { maxLength: 4 });
  const authorization = fc.oneof(
    fc.constant(undefined),
    fc.constantFrom(`Bearer ${ADMIN_TOKEN}`, `Bearer ${READ_TOKEN}`, `bearer ${ADMIN_TOKEN}`, `Bearer  ${READ_TOKEN} `, 'Bearer', 'Bearer ', `Basic ${Buffer.from(`x:${ADMIN_TOKEN}`).toString('base64')}`, `Bearer ${CLIENT_TOKEN}`),
    fc.string({ maxLength: 100 }).map((s) => s.replace(/[\r\n]/g, '')),
    fc.constant(`Bearer ${'A'.repeat(8000)}`),
  );
  const method = fc.oneof(fc.constantFrom('GET', 'GET', 'GET', 'DELETE', 'DELETE', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'PATCH'), fc.stringMatching(/^[A-Z]{1,12}$/));
  const extra = fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,20}$/), fc.string({ maxLength: 50 }).map((s) => s.replace(/[\r\n\0]/g, ''))), { maxLength: 4 });

  it('answers well-formed requests with arbitrary parts', async () => {
    await fc.assert(
      fc.asyncProperty(method, path, query, authorization, extra, fc.string({ maxLength: 2000 }), async (m, p, q, auth, headers, body) => {
        const target = `${p.replace(/ID(\d)/, (_, i: string) => ids[Number(i)]!)}${q.length ? `?${q.map(([k, v]) => `${k}=${v}`).join('&')}` : ''}`.replace(/[\s#]/g, '%20');
        const lines = [`${m} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
        if (auth !== undefined) lines.push(`Authorization: ${auth}`);
        for (const [k, v] of headers) if (!/^(host|connection|content-length|transfer-encoding|authorization)$/i.test(k)) lines.push(`${k}: ${v}`);
        lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
        const raw = `${lines.join('\r\n')}\r\n\r\n${body}`;
        check(await exchange(admin.port, raw), raw, m);
      }),
      { numRuns: 400 },
    );
    assert.deepEqual(unhandled, []);
  });

  it('answers garbage request lines and headers', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.array(fc.string({ maxLength: 80 }), { maxLength: 5 }), async (line, headers) => {
        const raw = `${line}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`;
        const answer = await exchange(admin.port, raw, true);
        // Empty lines before a request line are skipped (RFC 9112 2.2): nothing was asked.
        if (answer === null && raw.replace(/\r\n/g, '') === '') return;
        const m = /^(\S+) /.exec(line)?.[1] ?? '';
        check(answer, raw, m);
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(unhandled, []);
  });

  it('is still up and answering after all that', async () => {
    const res = await fetch(`${admin.url}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(res.status, 200);
    assert.deepEqual(unhandled, []);
  });
});
