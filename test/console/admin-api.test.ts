import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { MessageType } from '../../src/protocol/messages.js';
import { RawClient } from '../helpers/raw-client.js';
import { removeDir, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
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
