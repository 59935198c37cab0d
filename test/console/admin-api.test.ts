import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { MessageType } from '../../src/protocol/messages.js';
import { RawClient } from '../helpers/raw-client.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { generateSessionId } from '../../src/session/id.js';
import { KILN_BIN, removeDir, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
import { ADMIN_TOKEN, adminApiSuite, READ_TOKEN } from './admin-api-suite.js';
import { createSession, engineFor, newToken } from '../security/server-fixtures.js';

/** A kiln server serves its own admin API on --admin-port. */
adminApiSuite({
  name: 'kiln server --admin-port',
  role: 'standalone',
  async start() {
    const dir = tempDir();
    writeFileSync(join(dir, 'read.token'), READ_TOKEN);
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    const server = await startKilnServer({ args: ['--admin-port', '0', '--admin-token-file', join(dir, 'admin.token'), '--admin-read-token-file', join(dir, 'read.token')] });
    // The admin line follows the ready line.
    const adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line').catch(async (err: unknown) => {
      await server.kill();
      throw err;
    });
    return {
      adminUrl,
      adminToken: ADMIN_TOKEN,
      engine: (name) => connect(server.url, { token: server.token, name }),
      async stop() {
        await server.kill();
        removeDir(dir);
      },
    };
  },
});

describe("kiln server's admin API: a principal's sessions across token namespaces", () => {
  it('pages through every namespace in turn, each session once with its namespace, whatever the page size', async () => {
    const dir = tempDir();
    const tokens = { a: newToken(), b: newToken() };
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    writeFileSync(join(dir, 'tokens'), `app-a ${tokens.a}\napp-b ${tokens.b}\n`);
    const server = await startKilnServer({ args: ['--tokens-file', join(dir, 'tokens'), '--admin-port', '0', '--admin-token-file', join(dir, 'admin.token')] });
    const engines = await Promise.all([engineFor(server.url, tokens.a), engineFor(server.url, tokens.b)]);
    try {
      const adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line');
      const made: string[] = [];
      for (const [i, engine] of engines.entries()) {
        for (let n = 0; n < 3; n++) {
          const { id, token } = await createSession(engine, {}, { principal: 'pat' });
          await engine.release(id, token);
          made.push(`${i === 0 ? 'app-a' : 'app-b'} ${id}`);
        }
      }
      const get = async (path: string): Promise<{ status: number; body: { sessions: { id: string; namespace: string }[]; next: string | null; total: number } }> => {
        const res = await fetch(`${adminUrl}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        return { status: res.status, body: (await res.json()) as never };
      };
      for (const limit of [1, 2, 3, 4, 6, 10]) {
        const met: string[] = [];
        let after: string | null = null;
        let pages = 0;
        do {
          const { body } = await get(`/api/sessions?principal=pat&limit=${limit}${after === null ? '' : `&after=${encodeURIComponent(after)}`}`);
          assert.equal(body.total, 6);
          met.push(...body.sessions.map((s) => `${s.namespace} ${s.id}`));
          after = body.next;
          pages++;
        } while (after !== null && pages < 20);
        assert.deepEqual([...met].sort(), [...made].sort(), `limit ${limit}: every session once`);
        assert.equal(pages, Math.ceil(6 / limit), `limit ${limit}: no empty page at a namespace's end`);
      }
      assert.equal((await get(`/api/sessions?principal=pat&after=${encodeURIComponent('nowhere.1.')}`)).status, 400);
    } finally {
      await Promise.all(engines.map((e) => e.close()));
      await server.kill();
      removeDir(dir);
    }
  });
});

describe("kiln server's admin API: an app server's stats that are not figures", () => {
  it('/metrics still answers 200 with every kiln_ series; the overview shows only the figures', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    const server = await startKilnServer({ args: ['--admin-port', '0', '--admin-token-file', join(dir, 'admin.token')] });
    const raw = await RawClient.open(server.port);
    try {
      const adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line');
      const get = (path: string) => fetch(`${adminUrl}${path}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      raw.hello(server.token);
      assert.equal((await raw.reply(1)).type, MessageType.Welcome);
      // What no real client sends: a string, NaN (null once JSON), nesting, an array, a huge figure.
      raw.send(MessageType.ClientStats, 2, { ownerId: 'x', leases: [1, 2], cache: { hits: 'lots', misses: Number.NaN, evictions: { deep: [1] }, entries: 1e308 }, counters: { opens: '7', commits: { n: 1 } } });
      assert.equal((await raw.reply(2)).type, MessageType.Ok);
      const overview = (await (await get('/api/overview')).json()) as { clients: { name: string; stats: unknown }[] };
      assert.deepEqual(overview.clients.find((c) => c.name === 'raw')?.stats, { ownerId: 'x', cache: { entries: 1e308 }, counters: {} });
      for (let i = 0; i < 2; i++) {
        const res = await get('/metrics');
        const text = await res.text();
        assert.equal(res.status, 200, text.slice(0, 300));
        assert.match(text, /^kiln_sessions 0$/m);
        assert.match(text, /^kiln_client_cache_hits\{client="raw"\} 0$/m);
        assert.match(text, /^kiln_requests_total \d+$/m);
      }
    } finally {
      raw.destroy();
      await server.kill();
      removeDir(dir);
    }
  });
});

describe("kiln server's admin API: sessions of several token namespaces, and one id in two of them", () => {
  type Listed = { id: string; ref: string; namespace: string };
  type Page = { sessions: Listed[]; next: string | null; total: number };
  it('pages through every namespace, searches by prefix in each, and shows or destroys the session of the namespace named', async () => {
    const dir = tempDir();
    const tokens = { a: newToken(), b: newToken() };
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    writeFileSync(join(dir, 'read.token'), READ_TOKEN);
    writeFileSync(join(dir, 'tokens'), `app-a ${tokens.a}\napp-b ${tokens.b}\n`);
    // KILN_TOKEN (the test token) is the default namespace's; app-a and app-b have their own.
    const server = await startKilnServer({ args: ['--tokens-file', join(dir, 'tokens'), '--admin-port', '0', '--admin-token-file', join(dir, 'admin.token'), '--admin-read-token-file', join(dir, 'read.token')] });
    const engines = { default: await engineFor(server.url, server.token), 'app-a': await engineFor(server.url, tokens.a), 'app-b': await engineFor(server.url, tokens.b) };
    try {
      const adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line');
      const call = async <T = Record<string, unknown>>(method: string, path: string, token = ADMIN_TOKEN): Promise<{ status: number; body: T }> => {
        const res = await fetch(`${adminUrl}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
        return { status: res.status, body: (await res.json()) as T };
      };
      // Two sessions in each namespace, and one id that app-a's and app-b's clients both chose.
      const made: string[] = [];
      for (const [name, engine] of Object.entries(engines)) {
        for (let n = 0; n < 2; n++) {
          const { id, token } = await createSession(engine, { owner: name });
          await engine.release(id, token);
          made.push(`${name} ${id}`);
        }
      }
      const shared = generateSessionId();
      for (const name of ['app-a', 'app-b'] as const) {
        const { token } = await createSession(engines[name], { owner: name }, {}, shared);
        await engines[name].release(shared, token);
        made.push(`${name} ${shared}`);
      }
      const pageThrough = async (query: string, token = ADMIN_TOKEN): Promise<{ met: Listed[]; pages: number }> => {
        const met: Listed[] = [];
        let after: string | null = null;
        let pages = 0;
        do {
          const { status, body }: { status: number; body: Page } = await call<Page>('GET', `/api/sessions?limit=1${query}${after === null ? '' : `&after=${encodeURIComponent(after)}`}`, token);
          assert.equal(status, 200, `page ${pages + 1} after ${after}: ${JSON.stringify(body)}`);
          met.push(...body.sessions);
          after = body.next;
          pages++;
        } while (after !== null && pages < 50);
        return { met, pages };
      };
      // Paging one at a time meets every session once, across the namespaces' boundaries.
      const all = await pageThrough('');
      assert.deepEqual(all.met.map((s) => `${s.namespace} ${s.id}`).sort(), [...made].sort());
      assert.equal(all.pages, made.length, 'no empty page');
      // The read role pages by handles: the same sessions, its refs open each in its own namespace.
      const read = await pageThrough('', READ_TOKEN);
      assert.deepEqual(read.met.map((s) => s.namespace).sort(), all.met.map((s) => s.namespace).sort());
      const readShared = read.met.filter((s) => s.id === `${shared.slice(0, 8)}…`);
      assert.equal(readShared.length, 2);
      for (const s of readShared) {
        const { status, body } = await call<{ meta: { namespace: string }; attributes: { name: string }[] }>('GET', `/api/sessions/${encodeURIComponent(s.ref)}`, READ_TOKEN);
        assert.equal(status, 200);
        assert.equal(body.meta.namespace, s.namespace, "a read role's handle opens the session of its namespace");
      }
      // One namespace: only its sessions, and their count.
      const inB = await pageThrough('&namespace=app-b');
      assert.deepEqual(inB.met.map((s) => `${s.namespace} ${s.id}`).sort(), made.filter((m) => m.startsWith('app-b ')).sort());
      assert.equal((await call<Page>('GET', '/api/sessions?namespace=app-b')).body.total, 3);
      assert.deepEqual((await call<Page>('GET', '/api/sessions?namespace=default')).body.sessions.map((s) => s.namespace), ['default', 'default']);
      // A prefix is an id prefix, in every namespace (or the one named).
      const byPrefix = await pageThrough(`&prefix=${encodeURIComponent(shared.slice(0, 10))}`);
      assert.deepEqual(byPrefix.met.map((s) => `${s.namespace} ${s.id}`).sort(), [`app-a ${shared}`, `app-b ${shared}`]);
      assert.deepEqual((await call<Page>('GET', `/api/sessions?prefix=${encodeURIComponent(shared.slice(0, 10))}&namespace=app-a`)).body.sessions.map((s) => s.namespace), ['app-a']);
      // The shared id without a namespace: refused, not guessed.
      const ambiguous = await call<{ code: string; message: string }>('GET', `/api/sessions/${shared}`);
      assert.equal(ambiguous.status, 400);
      assert.equal(ambiguous.body.code, 'KILN_ERR_INVALID_ARGUMENT');
      assert.match(ambiguous.body.message, /app-a, app-b/);
      assert.equal((await call('DELETE', `/api/sessions/${shared}`)).status, 400, 'nor destroyed');
      // With one: that namespace's session.
      const inA = await call<{ meta: { namespace: string }; attributes: { name: string; preview: string }[] }>('GET', `/api/sessions/${shared}?namespace=app-a`);
      assert.equal(inA.status, 200);
      assert.equal(inA.body.meta.namespace, 'app-a');
      assert.equal(inA.body.attributes.find((a) => a.name === 'owner')?.preview, '"app-a"');
      assert.equal((await call<{ destroyed: boolean }>('DELETE', `/api/sessions/${shared}?namespace=app-a`)).body.destroyed, true);
      assert.equal((await call('GET', `/api/sessions/${shared}?namespace=app-a`)).status, 404, "app-a's is gone");
      const left = await call<{ meta: { namespace: string }; attributes: { name: string; preview: string }[] }>('GET', `/api/sessions/${shared}`);
      assert.equal(left.status, 200, 'now in one namespace only: found without naming it');
      assert.equal(left.body.attributes.find((a) => a.name === 'owner')?.preview, '"app-b"', "app-b's is untouched");
      // An admin's cursor past the default namespace also names a session.
      assert.equal((await call('GET', `/api/sessions/${encodeURIComponent(`~app-b~${shared}`)}`)).status, 200);
      assert.equal((await call('GET', `/api/sessions/${shared}?namespace=${encodeURIComponent('../x')}`)).status, 400);
      assert.equal((await call('GET', `/api/sessions/${shared}?namespace=nowhere`)).status, 404);
      // kiln sessions show/rm pass the namespace; ls names it.
      const run = promisify(execFile);
      const kiln = async (...args: string[]) => (await run(process.execPath, [KILN_BIN, 'sessions', ...args, '--admin', adminUrl, '--token-file', join(dir, 'admin.token')], { env: { ...process.env, KILN_ADMIN_TOKEN: '' } })).stdout;
      const twice = generateSessionId();
      for (const name of ['app-a', 'app-b'] as const) {
        const { token } = await createSession(engines[name], { owner: `${name} too` }, {}, twice);
        await engines[name].release(twice, token);
      }
      assert.match(await kiln('ls', '--prefix', twice.slice(0, 10)), new RegExp(`NAMESPACE[\\s\\S]*${twice} +app-a[\\s\\S]*${twice} +app-b`));
      await assert.rejects(kiln('show', twice), /2 namespaces \(app-a, app-b\).*KILN_ERR_INVALID_ARGUMENT/s);
      assert.match(await kiln('show', twice, '--namespace', 'app-b'), /namespace {2}app-b[\s\S]*"app-b too"/);
      assert.match(await kiln('rm', twice, '--namespace', 'app-b'), /invalidated/);
      assert.match(await kiln('show', twice), /namespace {2}app-a[\s\S]*"app-a too"/);
    } finally {
      await Promise.all(Object.values(engines).map((e) => e.close()));
      await server.kill();
      removeDir(dir);
    }
  });
});
