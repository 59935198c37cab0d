import assert from 'node:assert/strict';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createSessionClient } from '../../src/client/session-client.js';
import type { SessionHandle } from '../../src/client/session-handle.js';
import type { Engine } from '../../src/engines/engine.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { decodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { removeDir, sleep, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';
import { commitOf, createSession } from '../security/server-fixtures.js';

/**
 * A disk that stops answering: the kiln server's log writes wait (failpoint `log:write`,
 * held while a file exists), as on a stalled or dying disk. Before, every commit was
 * applied in memory and then waited on the disk, unacknowledged and without bound: the
 * server's memory grew with what clients sent, and readers saw changes a crash would
 * lose. Now a commit past the backlog limit is refused before it changes anything, with a
 * retryable KILN_ERR_STORAGE_BEHIND, and the backlog shows in the admin API and metrics.
 */
describe('kiln server: a log whose disk falls behind', () => {
  const BACKLOG = 256 * 1024;
  const VALUE = 'x'.repeat(16 * 1024);

  async function adminOf(server: ServerProcess): Promise<{ get: (path: string) => Promise<Response> }> {
    const admin = await waitFor(() => /kiln admin on (\S+) .*admin token in (\S+)\)/.exec(server.output()), 5000, 'the admin line');
    const token = readFileSync(admin[2]!, 'utf8').trim();
    return { get: (path) => fetch(`${admin[1]}${path}`, { headers: { authorization: `Bearer ${token}` } }) };
  }

  it('refuses commits past --max-log-backlog-bytes before applying them, keeps every one it took, and takes commits again when the disk answers', async () => {
    const dataDir = tempDir();
    const holdDir = tempDir('kiln-hold-');
    const hold = join(holdDir, 'hold');
    const env = { KILN_FAILPOINT: 'log:write', KILN_FAILPOINT_HOLD: hold };
    let server = await startKilnServer({ dataDir, fsync: 'always', env, args: ['--max-log-backlog-bytes', String(BACKLOG), '--log-stall-ms', '60000', '--admin-port', '0'] });
    let engine: Engine | undefined;
    try {
      engine = connect(server.url, { token: server.token, operationTimeoutMs: 20_000 });
      await engine.connect();
      const admin = await adminOf(server);
      const before = await createSession(engine, { v: 'before' });

      writeFileSync(hold, '');
      // Sessions of 16 KiB each until the server refuses one: the ones it took wait on the disk.
      const taken: { id: string; done: Promise<unknown> }[] = [];
      let refused: { id: string; token: number; error: { code?: string; message: string } } | undefined;
      for (let i = 0; !refused; i++) {
        assert.ok(i < 40, 'a commit is refused once the backlog is full');
        const id = generateSessionId();
        const grant = await engine.acquire(id);
        const done = engine.commit(commitOf(id, grant.token, 0, { v: VALUE }));
        const outcome = await Promise.race([done.then(() => 'acked', (e: { code?: string; message: string }) => e), sleep(100).then(() => 'waiting')]);
        if (outcome === 'waiting') taken.push({ id, done });
        else if (outcome === 'acked') assert.fail('a commit was acknowledged while the disk held its write');
        else refused = { id, token: grant.token, error: outcome as { code?: string; message: string } };
      }
      assert.equal(refused.error.code, 'KILN_ERR_STORAGE_BEHIND');
      assert.match(refused.error.message, /log is 0\.\d+ MiB behind its disk \(limit 0\.3 MiB\); the commit was not applied/);
      assert.ok(taken.length >= BACKLOG / VALUE.length - 1, `${taken.length} commits taken before the refusal`);
      // Refused means not applied: the session does not exist.
      const again = await engine.acquire(refused.id);
      assert.equal(again.snapshot, null, 'the refused commit changed nothing');
      // The backlog is there to see.
      const overview = (await (await admin.get('/api/overview')).json()) as { storage: { backlog?: { bytes: number; refusing: string | null } } };
      assert.ok((overview.storage.backlog?.bytes ?? 0) >= BACKLOG, JSON.stringify(overview.storage));
      assert.match(overview.storage.backlog?.refusing ?? '', /behind its disk/);
      const metrics = await (await admin.get('/metrics')).text();
      assert.match(metrics, /^kiln_storage_refusing 1$/m);
      assert.match(metrics, /^kiln_storage_backlog_bytes \d{6,}$/m);

      // A request through the client: its commit is retried under its lease, then fails with 503.
      const client = createSessionClient({ engine: connect(server.url, { token: server.token }), requestTimeoutMs: 5000 });
      try {
        const started = Date.now();
        await assert.rejects(client.withSession(null, (s: SessionHandle) => void s.set('v', 1)), (err: { code?: string; status?: number }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && err.status === 503);
        assert.ok(Date.now() - started < 4000, 'refused at once each time, not after a timeout');
        assert.ok(client.stats().counters.commitRetries >= 2, 'retried after pauses');
      } finally {
        await client.close();
      }

      // The disk answers: everything taken is acknowledged, and commits are taken again.
      unlinkSync(hold);
      await Promise.all(taken.map((t) => t.done));
      await engine.commit(commitOf(refused.id, refused.token, 0, { v: 'after' }));
      const metricsAfter = await (await admin.get('/metrics')).text();
      assert.match(metricsAfter, /^kiln_storage_refusing 0$/m);

      // A crash now keeps every acknowledged commit, and the refused one only as retried.
      await engine.close();
      engine = undefined;
      await server.kill();
      server = await startKilnServer({ dataDir, fsync: 'always' });
      engine = connect(server.url, { token: server.token });
      await engine.connect();
      for (const { id } of [before, ...taken]) {
        const grant = await engine.acquire(id);
        assert.ok(grant.snapshot, `session ${id} survived the crash`);
        assert.equal(String(decodeAttribute(grant.snapshot.attributes.get('v')!)).length, id === before.id ? 'before'.length : VALUE.length);
      }
      const retried = await engine.acquire(refused.id);
      assert.equal(decodeAttribute(retried.snapshot!.attributes.get('v')!), 'after');
    } finally {
      await engine?.close();
      await server.kill();
      removeDir(dataDir);
      removeDir(holdDir);
    }
  });

  it('refuses commits while a log write has waited --log-stall-ms, whatever its size', async () => {
    const dataDir = tempDir();
    const holdDir = tempDir('kiln-hold-');
    const hold = join(holdDir, 'hold');
    const server = await startKilnServer({ dataDir, fsync: 'everysec', env: { KILN_FAILPOINT: 'log:write', KILN_FAILPOINT_HOLD: hold }, args: ['--log-stall-ms', '300'] });
    const engine = connect(server.url, { token: server.token, operationTimeoutMs: 20_000 });
    try {
      await engine.connect();
      writeFileSync(hold, '');
      const stuck = (async () => {
        const id = generateSessionId();
        const grant = await engine.acquire(id);
        return engine.commit(commitOf(id, grant.token, 0, { n: 1 }));
      })();
      await sleep(500);
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      await assert.rejects(engine.commit(commitOf(id, grant.token, 0, { n: 1 })), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && /waiting on its disk for 0\.\d s/.test(err.message));
      unlinkSync(hold);
      await stuck;
      await engine.commit(commitOf(id, grant.token, 0, { n: 2 }));
    } finally {
      await engine.close();
      await server.kill();
      removeDir(dataDir);
      removeDir(holdDir);
    }
  });
});
