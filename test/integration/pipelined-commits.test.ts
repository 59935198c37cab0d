import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import { connectEngine } from '../../src/engines/connect.js';
import { isKilnError } from '../../src/errors/index.js';
import { removeDir, startKilnServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { startStandalone, type RedisDeployment } from '../helpers/redis.js';

/**
 * A request's last commit (`commit({ final: true })`, what every adapter sends at the end
 * of a request) lets the next request on the same session start before the tier
 * acknowledged it, on the state it commits. Shown here against real tiers: the next
 * request opens while the commit is unacknowledged (the tier process is stopped), and
 * when the tier dies with both commits unapplied, both fail and the next request sees
 * exactly what the tier stored.
 */
async function createCounter(kiln: SessionClient): Promise<string> {
  const s = await kiln.open(undefined);
  s.set('n', 0);
  await s.commit();
  s.close();
  return s.id;
}

for (const tierKind of ['kiln server', 'redis standalone'] as const) {
  describe(`pipelined commits (${tierKind})`, () => {
    let server: ServerProcess | undefined;
    let redis: RedisDeployment | undefined;
    let url: string;
    let dir: string | undefined;
    before(async () => {
      if (tierKind === 'kiln server') {
        dir = tempDir();
        server = await startKilnServer({ dataDir: dir, fsync: 'always' });
        url = server.url;
      } else {
        redis = await startStandalone();
        url = redis.url;
      }
    });
    after(async () => {
      await server?.kill();
      await redis?.stop();
      if (dir) removeDir(dir);
    });
    // `waitMs` bounds a lease wait: 1 s for the requests that pipeline (they never wait
    // for a lease), more for the other process's recall, which on Redis goes through
    // pub/sub and took over 1 s once in a full run on the loaded 2-core CI machine.
    const client = (waitMs = 1000): SessionClient => createSessionClient({ engine: connectEngine(url, { operationTimeoutMs: 1000, acquireTimeoutMs: waitMs, ...(server ? { kiln: { token: server.token } } : {}) }), acquireTimeoutMs: waitMs });

    it('the next request on a session starts before the previous commit is acknowledged, and sees it', async () => {
      const kiln = client();
      try {
        const id = await createCounter(kiln);
        let version = 0;
        const pending: Promise<unknown>[] = [];
        for (let i = 1; i <= 20; i++) {
          // Straight after the previous final commit was sent (no acknowledgement can
          // have arrived in this tick), the session is free and already holds its value.
          const s = kiln.openCached(id);
          assert.ok(s, `request ${i} did not have to wait for the previous acknowledgement`);
          assert.equal(s.get('n'), i - 1, 'each request sees the one before it');
          s.set('n', i);
          pending.push(s.commit({ final: true }).then((r) => {
            assert.ok(r.version > version, 'acknowledged in order');
            version = r.version;
            s.close();
          }));
        }
        await Promise.all(pending);
        assert.ok(kiln.stats().counters.pipelinedCommits >= 19, `pipelined: ${kiln.stats().counters.pipelinedCommits}`);
        // Another process sees the last value (the lease moves over with a recall).
        const other = client(5000);
        try {
          const s = await other.open(id);
          assert.equal(s.get('n'), 20);
          s.close();
        } finally {
          await other.close();
        }
      } finally {
        await kiln.close();
      }
    });

    it('a change to one item of a large list travels as a few bytes, request after request', async () => {
      const kiln = client();
      try {
        const s0 = await kiln.open(undefined);
        s0.set('items', Array.from({ length: 160 }, (_, k) => ({ sku: `SKU-${k}`, qty: 1, tags: ['a', 'b'] })));
        await s0.commit();
        s0.close();
        const before = kiln.stats().counters.commitBytes;
        for (let i = 0; i < 50; i++) {
          const s = kiln.openCached(s0.id) ?? (await kiln.open(s0.id));
          (s.get('items') as { qty: number }[])[i % 160]!.qty++;
          await s.commit({ final: true });
          s.close();
        }
        const perRequest = (kiln.stats().counters.commitBytes - before) / 50;
        assert.ok(perRequest < 20, `${perRequest} B of attribute data per request`);
        const other = client(5000);
        try {
          const s = await other.open(s0.id);
          const items = s.get('items') as { qty: number }[];
          assert.deepEqual(items.slice(0, 50).map((item) => item.qty), Array(50).fill(2));
          assert.equal(items[50]!.qty, 1);
          s.close();
        } finally {
          await other.close();
        }
      } finally {
        await kiln.close();
      }
    });

    if (tierKind === 'kiln server') {
      it('when the tier dies with two pipelined commits unapplied, both fail and the next request sees what is stored', async () => {
        const kiln = client();
        try {
          const id = await createCounter(kiln);
          const a = await kiln.open(id);
          a.set('n', 1);
          process.kill(server!.pid, 'SIGSTOP'); // the commits reach its socket, nothing is applied
          const aDone = a.commit({ final: true }).then(() => 'acknowledged', (err: unknown) => err);
          const b = kiln.openCached(id);
          assert.ok(b, 'the next request did not wait for the acknowledgement');
          assert.equal(b.get('n'), 1, 'it starts on the state being committed');
          b.set('n', 2);
          const bDone = b.commit({ final: true }).then(() => 'acknowledged', (err: unknown) => err);
          await server!.stop('SIGKILL');
          const [aResult, bResult] = await Promise.all([aDone, bDone]);
          a.close();
          b.close();
          assert.ok(isKilnError(aResult), `the first commit failed: ${String(aResult)}`);
          assert.ok(isKilnError(bResult), `the one built on it failed too: ${String(bResult)}`);
          server = await startKilnServer({ dataDir: dir, fsync: 'always', port: server!.port });
          const c = await kiln.open(id);
          assert.equal(c.get('n'), 0, 'neither commit was applied, and the client serves no copy that ran ahead');
          c.set('n', 10);
          await c.commit({ final: true });
          c.close();
          const d = await kiln.open(id);
          assert.equal(d.get('n'), 10);
          d.close();
        } finally {
          await kiln.close();
        }
      });
    }
  });
}
