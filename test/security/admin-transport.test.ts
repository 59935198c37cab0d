import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { AdminServer } from '../../src/console/admin-server.js';
import { KilnServerSource } from '../../src/console/kiln-server-source.js';
import { KilnServer } from '../../src/server/kiln-server.js';
import { KILN_BIN, removeDir, sleep, tempDir, waitFor } from '../helpers/processes.js';
import { ADMIN_TOKEN, adminFetch, READ_TOKEN, readStream, startAdmin, type AdminUnderTest } from './admin-helpers.js';

const run = promisify(execFile);

/**
 * Item 7 of #22: admin tokens were taken from `?token=` on every endpoint (DELETE too),
 * the console put one in its EventSource URL, and the admin port spoke plain HTTP even
 * when the kiln server had a certificate.
 */
describe('admin API: tokens in the Authorization header only; a ticket for the events stream', () => {
  let t: AdminUnderTest;
  let id: string;
  before(async () => {
    t = await startAdmin();
    id = await t.kiln.withSession(null, (s) => {
      s.set('n', 1);
      return s.id;
    });
  });
  after(() => t?.stop());

  it('refuses a valid admin token in the URL, on GET and on DELETE', async () => {
    for (const name of ['token', 'access_token']) {
      const get = await t.call('GET', `/api/overview?${name}=${encodeURIComponent(ADMIN_TOKEN)}`, '');
      assert.equal(get.status, 401);
      assert.equal(get.json!['code'], 'KILN_ERR_AUTH');
      const del = await t.call('DELETE', `/api/sessions/${id}?${name}=${encodeURIComponent(ADMIN_TOKEN)}`, '');
      assert.equal(del.status, 401);
      const events = await t.call('GET', `/api/events?${name}=${encodeURIComponent(READ_TOKEN)}`, '');
      assert.equal(events.status, 401);
    }
    // Even beside a good header: a token in a URL is a leak to stop, not to ignore.
    assert.equal((await t.call('DELETE', `/api/sessions/${id}?token=${encodeURIComponent(ADMIN_TOKEN)}`)).status, 401);
    assert.equal((await t.call('GET', `/api/sessions/${id}`)).status, 200, 'the session survived');
  });

  it('a ticket opens /api/events once, with the read-only view even when an admin asked for it', async () => {
    assert.equal((await t.call('POST', '/api/tickets', '')).status, 401, 'no ticket without a token');
    const issued = await t.call('POST', '/api/tickets');
    assert.equal(issued.status, 200);
    const ticket = issued.json!['ticket'] as string;
    assert.ok(ticket.length >= 32);
    assert.equal(issued.json!['expiresInMs'], 60_000);

    const controller = new AbortController();
    const res = await fetch(`${t.adminUrl}/api/events?ticket=${encodeURIComponent(ticket)}`, { signal: controller.signal });
    assert.equal(res.status, 200);
    const stream = readStream(res.body!);
    try {
      const other = await t.kiln.withSession(null, (s) => {
        s.set('n', 2);
        return s.id;
      });
      await t.call('DELETE', `/api/sessions/${other}`);
      await waitFor(() => stream.text().includes('"type":"destroyed"'), 5000, 'destroy event');
      assert.match(stream.text(), /"view":"read"/);
      assert.ok(!stream.text().includes(other), 'no full session id through a ticket');
    } finally {
      controller.abort();
      await stream.done;
    }
    assert.equal((await t.call('GET', `/api/events?ticket=${encodeURIComponent(ticket)}`, '')).status, 401, 'single use');
  });

  it('a ticket is good for nothing else: not as a bearer token, not in the query of another endpoint', async () => {
    const ticket = (await t.call('POST', '/api/tickets', READ_TOKEN)).json!['ticket'] as string;
    assert.equal((await t.call('GET', '/api/overview', ticket)).status, 401);
    assert.equal((await t.call('GET', `/api/overview?ticket=${ticket}`, '')).status, 401);
    assert.equal((await t.call('GET', `/api/sessions/${id}?ticket=${ticket}`, '')).status, 401);
    assert.equal((await t.call('DELETE', `/api/sessions/${id}?ticket=${ticket}`, '')).status, 401);
    assert.equal((await t.call('DELETE', `/api/sessions/${id}`, ticket)).status, 401);
    assert.equal((await t.call('GET', `/api/sessions/${id}`)).status, 200, 'the session survived');
  });
});

describe('admin API: tickets expire', () => {
  it('a ticket unused for its lifetime opens nothing', async () => {
    const server = new KilnServer({ port: 0, token: 'a-client-token-of-more-than-32-bytes-0123' });
    await server.start();
    const source = new KilnServerSource(server);
    const admin = new AdminServer(source, { port: 0, adminToken: ADMIN_TOKEN, version: 'test', ticketTtlMs: 300 });
    await admin.start();
    try {
      const ticket = async () => (await adminFetch(admin.url, 'POST', '/api/tickets', ADMIN_TOKEN)).json!['ticket'] as string;
      const fresh = await ticket();
      const stale = await ticket();
      await sleep(500);
      assert.equal((await adminFetch(admin.url, 'GET', `/api/events?ticket=${stale}`, '')).status, 401);
      assert.equal((await adminFetch(admin.url, 'GET', `/api/events?ticket=${fresh}`, '')).status, 401);
      const live = await ticket();
      const controller = new AbortController();
      const res = await fetch(`${admin.url}/api/events?ticket=${live}`, { signal: controller.signal });
      assert.equal(res.status, 200);
      controller.abort();
    } finally {
      await admin.stop();
      await source.close();
      await server.stop();
    }
  });
});

describe('admin API over TLS', () => {
  it('serves HTTPS with the kiln server’s certificate; plain HTTP gets nothing; the CLI trusts a CA file', async () => {
    const dir = tempDir('kiln-sec-tls-');
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    const t = await startAdmin(['--tls-cert', cert, '--tls-key', key]);
    try {
      assert.match(t.adminUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = readFileSync(cert, 'utf8');
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(`${t.adminUrl}/api/overview`, { ca, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(status, 200);
      await assert.rejects(fetch(`${t.adminUrl.replace('https:', 'http:')}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: AbortSignal.timeout(3000) }));
      const out = (await run(process.execPath, [KILN_BIN, 'status', '--json', '--admin', t.adminUrl, '--ca-file', cert], { env: { ...process.env, KILN_ADMIN_TOKEN: ADMIN_TOKEN } })).stdout;
      assert.equal((JSON.parse(out) as { server: { tls: boolean } }).server.tls, true);
      await assert.rejects(run(process.execPath, [KILN_BIN, 'status', '--admin', t.adminUrl], { env: { ...process.env, KILN_ADMIN_TOKEN: ADMIN_TOKEN, KILN_ADMIN_CA: '' } }), 'an untrusted certificate is refused');
    } finally {
      await t.stop();
      removeDir(dir);
    }
  });
});
