import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { adminPortOf, KILN_BIN, removeDir, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
import { ADMIN_TOKEN, READ_TOKEN, readStream, startAdmin, type AdminUnderTest } from './admin-helpers.js';

const run = promisify(execFile);

/**
 * Items 5 and 6 of #22: the read-only role of the admin API saw every value of every
 * session (passwords, CSRF and OAuth tokens) and every session id in full (a session id
 * logs its holder in); the admin port took the client token as its own.
 */
describe('admin API roles: the read-only token sees no value and no full session id', () => {
  let t: AdminUnderTest;
  const ids: string[] = [];
  const SECRETS = ['hunter2-SECRET', 'csrf-SECRET-abc', 'gho-SECRET-oauth'];

  before(async () => {
    t = await startAdmin();
    for (let i = 0; i < 12; i++) {
      ids.push(
        await t.kiln.withSession(null, (s) => {
          s.set('password', SECRETS[0]);
          s.set('csrfToken', SECRETS[1]);
          s.set('oauth', { provider: 'github', accessToken: SECRETS[2], scopes: ['repo'] });
          s.set('cart', [{ sku: 'teapot', qty: 2 }]);
          s.setPrincipal('alice');
          return s.id;
        }),
      );
    }
  });
  after(() => t?.stop());

  const noneOf = (text: string, what: string): void => {
    for (const secret of SECRETS) assert.ok(!text.includes(secret), `${what} holds ${secret}`);
    for (const id of ids) assert.ok(!text.includes(id), `${what} holds a full session id`);
  };

  it('lists, searches by principal and pages with shortened ids and opaque handles', async () => {
    const page = await t.call('GET', '/api/sessions?limit=5', READ_TOKEN);
    assert.equal(page.status, 200);
    noneOf(page.text, 'the read-only list');
    const sessions = page.json!['sessions'] as { id: string; ref: string }[];
    assert.equal(sessions.length, 5);
    for (const s of sessions) {
      assert.match(s.id, /^[A-Za-z0-9_-]{8}…$/);
      assert.match(s.ref, /^~[A-Za-z0-9_-]+$/);
    }
    const next = page.json!['next'] as string;
    assert.match(next, /^~/, 'the cursor is a handle too');
    const second = await t.call('GET', `/api/sessions?limit=5&after=${encodeURIComponent(next)}`, READ_TOKEN);
    assert.equal(second.status, 200);
    noneOf(second.text, 'the second page');
    const all = ids.map((id) => `${id.slice(0, 8)}…`).sort();
    assert.deepEqual([...sessions, ...(second.json!['sessions'] as { id: string }[])].map((s) => s.id), all.slice(0, 10));

    const byPrincipal = await t.call('GET', '/api/sessions?principal=alice', READ_TOKEN);
    noneOf(byPrincipal.text, 'the principal search');
    assert.equal((byPrincipal.json!['sessions'] as unknown[]).length, 12);
  });

  it('cannot recover a full id: prefixes longer than the short form and cursors of its own are refused', async () => {
    const id = ids[0]!;
    const prefix = await t.call('GET', `/api/sessions?prefix=${encodeURIComponent(id.slice(0, 9))}`, READ_TOKEN);
    assert.equal(prefix.status, 400);
    assert.equal(prefix.json!['code'], 'KILN_ERR_INVALID_ARGUMENT');
    const cursor = await t.call('GET', `/api/sessions?after=${encodeURIComponent(id.slice(0, 12))}`, READ_TOKEN);
    assert.equal(cursor.status, 400);
    const forged = await t.call('GET', `/api/sessions/${encodeURIComponent(`~${Buffer.alloc(60, 7).toString('base64url')}`)}`, READ_TOKEN);
    assert.equal(forged.status, 400);
  });

  it('opens a session by its handle: names, types and sizes, no value', async () => {
    const list = await t.call('GET', '/api/sessions?principal=alice', READ_TOKEN);
    const ref = (list.json!['sessions'] as { ref: string }[])[0]!.ref;
    const detail = await t.call('GET', `/api/sessions/${encodeURIComponent(ref)}`, READ_TOKEN);
    assert.equal(detail.status, 200);
    noneOf(detail.text, 'the read-only inspector');
    const attributes = detail.json!['attributes'] as { name: string; type: string; bytes: number; preview?: string }[];
    assert.deepEqual(attributes.map((a) => [a.name, a.type]).sort(), [['cart', 'array'], ['csrfToken', 'string'], ['oauth', 'object'], ['password', 'string']]);
    for (const a of attributes) {
      assert.ok(a.bytes > 0);
      assert.equal(a.preview, undefined, `no preview of ${a.name}`);
    }
    assert.equal((detail.json!['meta'] as { principal: string }).principal, 'alice');
    // The handle opens nothing for a write, and the read role still cannot invalidate.
    assert.equal((await t.call('DELETE', `/api/sessions/${encodeURIComponent(ref)}`, READ_TOKEN)).status, 403);
  });

  it('sees events with shortened ids', async () => {
    const controller = new AbortController();
    const res = await fetch(`${t.adminUrl}/api/events`, { headers: { authorization: `Bearer ${READ_TOKEN}` }, signal: controller.signal });
    const stream = readStream(res.body!);
    try {
      assert.equal((await t.call('DELETE', `/api/sessions/${encodeURIComponent(ids[11]!)}`)).json!['destroyed'], true);
      await waitFor(() => stream.text().includes('"type":"destroyed"'), 5000, 'the destroy event');
      assert.ok(stream.text().includes(`"sessionId":"${ids[11]!.slice(0, 8)}…"`));
      noneOf(stream.text(), 'the read-only event stream');
    } finally {
      controller.abort();
      await stream.done;
    }
  });

  it('the admin role sees ids and values, except names on the redaction list, at any depth', async () => {
    const detail = await t.call('GET', `/api/sessions/${encodeURIComponent(ids[0]!)}`);
    assert.equal(detail.status, 200);
    assert.equal((detail.json!['meta'] as { id: string }).id, ids[0]);
    for (const secret of SECRETS) assert.ok(!detail.text.includes(secret), `the admin inspector holds ${secret}`);
    const preview = Object.fromEntries((detail.json!['attributes'] as { name: string; preview: string }[]).map((a) => [a.name, a.preview]));
    assert.equal(preview['password'], '[redacted]');
    assert.equal(preview['csrfToken'], '[redacted]');
    assert.equal(preview['oauth'], '{"provider":"github","accessToken":"[redacted]","scopes":["repo"]}');
    assert.equal(preview['cart'], '[{"sku":"teapot","qty":2}]');
    const list = await t.call('GET', '/api/sessions?limit=1000');
    assert.deepEqual((list.json!['sessions'] as { id: string }[]).map((s) => s.id), ids.slice(0, 11).sort());
  });

  it('the CLI with the read-only token prints no value and no full id', async () => {
    const cli = async (...args: string[]) => (await run(process.execPath, [KILN_BIN, ...args, '--admin', t.adminUrl, '--token-file', join(t.dir, 'read.token')])).stdout;
    const ls = await cli('sessions', 'ls');
    noneOf(ls, 'kiln sessions ls');
    const handle = /(~[A-Za-z0-9_-]+)/.exec(ls)![1]!;
    const shown = await cli('sessions', 'show', handle);
    noneOf(shown, 'kiln sessions show');
    assert.match(shown, /password +string/);
  });
});

describe('admin API redaction list (--admin-redact)', () => {
  it("'' shows the admin every value; the read role still sees none", async () => {
    const t = await startAdmin(['--admin-redact', '']);
    try {
      const id = await t.kiln.withSession(null, (s) => {
        s.set('password', 'visible-to-admin');
        return s.id;
      });
      const admin = await t.call('GET', `/api/sessions/${id}`);
      assert.equal((admin.json!['attributes'] as { preview: string }[])[0]!.preview, '"visible-to-admin"');
      const read = await t.call('GET', `/api/sessions/${id}`, READ_TOKEN);
      assert.ok(!read.text.includes('visible-to-admin'));
    } finally {
      await t.stop();
    }
  });

  it('a custom list hides nested keys matched case-insensitively as substrings', async () => {
    const t = await startAdmin(['--admin-redact', 'ssn, PIN']);
    try {
      const id = await t.kiln.withSession(null, (s) => {
        s.set('user', { name: 'pat', SSN: '123-45-6789', card: { pinCode: 1234, last4: '4242' } });
        s.set('password', 'not-on-this-list');
        return s.id;
      });
      const preview = Object.fromEntries(((await t.call('GET', `/api/sessions/${id}`)).json!['attributes'] as { name: string; preview: string }[]).map((a) => [a.name, a.preview]));
      assert.equal(preview['user'], '{"name":"pat","SSN":"[redacted]","card":{"pinCode":"[redacted]","last4":"4242"}}');
      assert.equal(preview['password'], '"not-on-this-list"');
    } finally {
      await t.stop();
    }
  });
});

describe('the admin token is the admin port’s own', () => {
  it('without --admin-token-file the server generates one into <data dir>/admin.token (0600), says where, never prints it; the client token is refused', async () => {
    const data = tempDir('kiln-sec-data-');
    const server = await startKilnServer({ dataDir: join(data, 'd'), args: ['--admin-port', '0'] });
    try {
      const admin = await adminPortOf(server);
      assert.equal(admin.tokenFile, join(data, 'd', 'admin.token'));
      assert.equal(statSync(admin.tokenFile).mode & 0o777, 0o600);
      const token = admin.token;
      assert.ok(Buffer.byteLength(token) >= 32);
      assert.ok(!server.output().includes(token));
      const overview = (tok: string) => fetch(`${admin.url}/api/overview`, { headers: { authorization: `Bearer ${tok}` } });
      assert.equal((await overview(server.token)).status, 401, 'the client token opens no admin port');
      assert.equal((await overview(token)).status, 200);
    } finally {
      await server.kill();
      removeDir(data);
    }
  });

  it('admin token files shorter than 32 bytes are refused (kiln server and kiln console)', async () => {
    const dir = tempDir('kiln-sec-short-');
    try {
      writeFileSync(join(dir, 'short.token'), 'x'.repeat(31));
      writeFileSync(join(dir, 'ok.token'), ADMIN_TOKEN);
      for (const args of [
        ['server', '--no-data', '--port', '0', '--admin-port', '0', '--admin-token-file', join(dir, 'short.token')],
        ['server', '--no-data', '--port', '0', '--admin-port', '0', '--admin-token-file', join(dir, 'ok.token'), '--admin-read-token-file', join(dir, 'short.token')],
        ['console', '--engine', 'redis://127.0.0.1:1', '--port', '0', '--token-file', join(dir, 'short.token')],
      ]) {
        await assert.rejects(
          run(process.execPath, [KILN_BIN, ...args], { env: { ...process.env, KILN_TOKEN: 'a-client-token-of-more-than-32-bytes-0123' }, timeout: 10_000 }),
          (err: { stderr: string; code: number }) => err.code !== 0 && /at least 32 bytes/.test(err.stderr),
          args.join(' '),
        );
      }
    } finally {
      removeDir(dir);
    }
  });
});
