import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import type { SessionHandle } from '../../src/client/session-handle.js';
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

/** A session holding a list of 160 items (about 5 KB encoded: large enough to be overwritten in place). */
async function createList(kiln: SessionClient): Promise<string> {
  const s = await kiln.open(undefined);
  s.set('items', Array.from({ length: 160 }, (_, k) => ({ sku: `SKU-${k}`, qty: 1, tags: ['a', 'b'] })));
  await s.commit();
  s.close();
  return s.id;
}

/** A list session whose cached list is this client's own copy (overwritable): two increments of item 0 made it so. */
async function ownList(kiln: SessionClient): Promise<string> {
  const id = await createList(kiln);
  await incrementItem(kiln, id, 0);
  await incrementItem(kiln, id, 0);
  return id;
}

/** One request adding one to item `k`'s quantity, ending with a final (pipelined) commit. */
async function incrementItem(kiln: SessionClient, id: string, k: number): Promise<void> {
  const s = kiln.openCached(id) ?? (await kiln.open(id));
  (s.get('items') as { qty: number }[])[k]!.qty++;
  await s.commit({ final: true });
  s.close();
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
    /** What another process reads of the session (it takes the lease: a recall of ours). The value is read before the handle closes. */
    const readElsewhere = async <T>(id: string, read: (s: SessionHandle) => T): Promise<T> => {
      const other = client(5000);
      try {
        const s = await other.open(id);
        const value = read(s);
        s.close();
        return value;
      } finally {
        await other.close();
      }
    };

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
        assert.equal(await readElsewhere(id, (s) => s.get('n')), 20);
      } finally {
        await kiln.close();
      }
    });

    it('a change to one item of a large list travels as a few bytes, request after request', async () => {
      const kiln = client();
      try {
        const id = await createList(kiln);
        const before = kiln.stats().counters.commitBytes;
        for (let i = 0; i < 50; i++) await incrementItem(kiln, id, i % 160);
        const perRequest = (kiln.stats().counters.commitBytes - before) / 50;
        assert.ok(perRequest < 20, `${perRequest} B of attribute data per request`);
        // The first commit copies the value the tier gave; every later one overwrites its own copy.
        assert.equal(kiln.stats().counters.overwritesInPlace, 49);
        const items = await readElsewhere(id, (s) => s.get('items') as { qty: number }[]);
        assert.deepEqual(items.slice(0, 50).map((item) => item.qty), Array(50).fill(2));
        assert.equal(items[50]!.qty, 1);
      } finally {
        await kiln.close();
      }
    });

    it('a read-only request open on a session keeps reading what it opened while writers change a large list in place', async () => {
      const kiln = client();
      try {
        const id = await createList(kiln);
        const increment = (k: number) => incrementItem(kiln, id, k);
        await increment(0);
        await increment(0); // overwritten in place from here on
        const inPlace = kiln.stats().counters.overwritesInPlace;
        assert.equal(inPlace, 1);
        const reader = await kiln.open(id, { readOnly: true }); // the list not decoded yet
        for (let i = 0; i < 5; i++) await increment(7);
        assert.equal(kiln.stats().counters.overwritesInPlace, inPlace, 'copies while the reader is open');
        const seen = reader.get('items') as { qty: number }[];
        assert.equal(seen[0]!.qty, 3);
        assert.equal(seen[7]!.qty, 1, 'the reader sees the session as it opened it');
        reader.close();
        await increment(7);
        await increment(7);
        assert.equal(kiln.stats().counters.overwritesInPlace, inPlace + 2, 'in place again once the reader closed');
        const check = await kiln.open(id, { readOnly: true });
        assert.equal((check.get('items') as { qty: number }[])[7]!.qty, 8);
        check.close();
      } finally {
        await kiln.close();
      }
    });

    it('a request that reads a list after its final commit keeps reading its own version, and the next request\'s change is not undone', async () => {
      const kiln = client();
      try {
        const id = await ownList(kiln);
        const first = kiln.openCached(id);
        assert.ok(first);
        first.set('visits', 1);
        await first.commit({ final: true }); // released: the next request may run, `first` is not closed yet
        const second = kiln.openCached(id);
        assert.ok(second, 'the next request runs before the first closed');
        const items = second.get('items') as { qty: number }[]; // takes the kept tree
        const seenByFirst = first.get('items') as { qty: number }[]; // decodes the bytes of its version
        items[5]!.qty = 7;
        const inPlace = kiln.stats().counters.overwritesInPlace;
        await second.commit({ final: true });
        second.close();
        assert.equal(kiln.stats().counters.overwritesInPlace, inPlace, 'copied: the first request may still read the bytes');
        assert.equal(seenByFirst[5]!.qty, 1);
        first.close(); // its tree goes back, filed under the bytes of its own version
        const third = kiln.openCached(id) ?? (await kiln.open(id));
        const now = third.get('items') as { qty: number }[];
        assert.equal(now[5]!.qty, 7, 'the next request sees the second one\'s change');
        now[5]!.qty++;
        await third.commit({ final: true });
        third.close();
        const stored = await readElsewhere(id, (s) => [(s.get('items') as { qty: number }[])[5]!.qty, (s.get('items') as { qty: number }[])[0]!.qty, s.get('visits')]);
        assert.deepEqual(stored, [8, 3, 1]);
      } finally {
        await kiln.close();
      }
    });

    it('while a commit that is not pipelined is in flight, the next request neither pipelines nor overwrites the bytes that commit is applied to', async () => {
      const kiln = client();
      try {
        const id = await ownList(kiln);
        const first = kiln.openCached(id);
        assert.ok(first);
        (first.get('items') as { qty: number }[])[5]!.qty = 9;
        const saved = first.commit().then(() => 'acknowledged', (err: unknown) => err); // save(), not awaited
        first.close(); // a request that ended without waiting for it (its client went away)
        const second = kiln.openCached(id);
        assert.ok(second, 'the next request runs while the save is in flight');
        (second.get('items') as { qty: number }[])[6]!.qty = 9;
        const inPlace = kiln.stats().counters.overwritesInPlace;
        const secondDone = second.commit({ final: true }).then(() => 'acknowledged', (err: unknown) => err);
        // Built on the copy the save started from, it does not pipeline: a request after it
        // would be built on a version the tier numbers as the save's.
        assert.equal(kiln.openCached(id), undefined, 'the next request waits for the second commit');
        const outcome = await secondDone;
        second.close();
        assert.equal(await saved, 'acknowledged');
        assert.equal(kiln.stats().counters.overwritesInPlace, inPlace, 'copied while the save was in flight');
        // Built on the version before the save, the second commit is refused; nothing else is.
        assert.ok(isKilnError(outcome), `the second commit was refused: ${String(outcome)}`);
        const after = await kiln.open(id);
        const items = after.get('items') as { qty: number }[];
        assert.deepEqual([items[5]!.qty, items[6]!.qty], [9, 1]);
        after.close();
      } finally {
        await kiln.close();
      }
    });

    if (tierKind === 'kiln server') {
      it('when the tier dies with pipelined commits of a list overwritten in place unapplied, the next request sees what is stored', async () => {
        const kiln = client();
        try {
          const id = await createList(kiln);
          for (let i = 0; i < 3; i++) await incrementItem(kiln, id, 5);
          const a = kiln.openCached(id);
          assert.ok(a);
          (a.get('items') as { qty: number }[])[5]!.qty = 100;
          process.kill(server!.pid, 'SIGSTOP');
          const aDone = a.commit({ final: true }).then(() => 'acknowledged', (err: unknown) => err);
          const b = kiln.openCached(id);
          assert.ok(b, 'the next request did not wait for the acknowledgement');
          (b.get('items') as { qty: number }[])[6]!.qty = 99; // as many bytes as 1: an overwrite
          const bDone = b.commit({ final: true }).then(() => 'acknowledged', (err: unknown) => err);
          // `a` overwrote the cached list; `b` copied it, since `a` (not closed) may still read it.
          assert.equal(kiln.stats().counters.overwritesInPlace, 3);
          await server!.stop('SIGKILL');
          const [aResult, bResult] = await Promise.all([aDone, bDone]);
          a.close();
          b.close();
          assert.ok(isKilnError(aResult) && isKilnError(bResult), `both failed: ${String(aResult)}, ${String(bResult)}`);
          server = await startKilnServer({ dataDir: dir, fsync: 'always', port: server!.port });
          const c = await kiln.open(id);
          const items = c.get('items') as { qty: number }[];
          assert.deepEqual([items[5]!.qty, items[6]!.qty], [4, 1], 'the overwritten copy was not served again');
          items[6]!.qty = 7;
          await c.commit({ final: true });
          c.close();
          const stored = await readElsewhere(id, (d) => d.get('items') as { qty: number }[]);
          assert.deepEqual([stored[5]!.qty, stored[6]!.qty], [4, 7]);
        } finally {
          await kiln.close();
        }
      });

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
