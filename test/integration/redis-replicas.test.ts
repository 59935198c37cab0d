import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { encodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { sleep, waitFor } from '../helpers/processes.js';
import { redisCli, startRedisNode, startStandalone, type RedisDeployment, type RedisNode } from '../helpers/redis.js';

/**
 * `replicas: N` is what makes the failover tests lose nothing, so it is checked where
 * the outcome is certain: a server with no replica can never confirm a commit, so the
 * commit must not be acknowledged, and a retry with the same commit id must find it
 * applied rather than apply it twice.
 */
describe('Redis engine: replicas: 1 without a replica, replicaPolicy strict', () => {
  let redis: RedisDeployment;
  const engines: RedisEngine[] = [];
  before(async () => {
    redis = await startStandalone();
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await redis.stop();
  });

  it('refuses to acknowledge an unreplicated commit; the retry is acknowledged once, not applied twice', async () => {
    const strict = new RedisEngine({ url: `${redis.url}?replicas=1&replicaPolicy=strict`, replicaTimeoutMs: 200, heartbeatMs: 200 });
    await strict.connect();
    engines.push(strict);
    const id = generateSessionId();
    const grant = await strict.acquire(id);
    const commit = { sessionId: id, token: grant.token, commitId: 'replicated-or-not', baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', 1)] as [string, Uint8Array]], del: [] };
    const started = Date.now();
    await assert.rejects(strict.commit(commit), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /0 of 1 replicas/.test(err.message));
    assert.ok(Date.now() - started < 2000, 'bounded by replicaTimeoutMs');
    const relaxed = new RedisEngine({ url: redis.url, heartbeatMs: 200 });
    await relaxed.connect();
    engines.push(relaxed);
    assert.deepEqual(await relaxed.commit(commit), { version: 1, duplicate: true });
    await strict.release(id, grant.token);
    const g = await relaxed.acquire(id);
    assert.equal(g.snapshot?.meta.version, 1, 'applied exactly once');
    await relaxed.release(id, g.token);
  });
});

/**
 * Losing the replica: strict (the default) refuses every commit until it is back; best
 * effort refuses too at first (the replica may be being promoted), then, once ROLE has
 * shown it gone for replicaGraceMs, carries on with the replicas that remain, counts
 * what it acknowledged with fewer, and waits for the replica again once it is back.
 */
describe('Redis engine: replicas: 1 and the replica SIGKILLed', () => {
  let master: RedisNode;
  let replica: RedisNode;
  const engines: RedisEngine[] = [];
  before(async () => {
    master = await startRedisNode();
    replica = await startRedisNode({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    await waitFor(async () => /master_link_status:up/.test(await redisCli(replica.port, 'INFO', 'replication')), 10_000, 'replica in sync');
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await replica.kill();
    await master.kill();
  });

  async function engine(query: string): Promise<RedisEngine> {
    const e = new RedisEngine({ url: `redis://127.0.0.1:${master.port}?replicas=1${query}`, replicaTimeoutMs: 300, heartbeatMs: 100 });
    await e.connect();
    engines.push(e);
    return e;
  }

  async function commitOnce(e: RedisEngine, n: number): Promise<number> {
    const id = generateSessionId();
    const grant = await e.acquire(id);
    const started = Date.now();
    try {
      await e.commit({ sessionId: id, token: grant.token, commitId: `c-${id}`, baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', n)] as [string, Uint8Array]], del: [] });
      return Date.now() - started;
    } finally {
      await e.release(id, grant.token).catch(() => undefined);
    }
  }

  const refused = (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && err.status === 503 && /0 of 1 replicas/.test(err.message);

  it('strict is the default and refuses while the replica is gone; best effort refuses for the grace, then carries on and says so', async () => {
    const strict = await engine('');
    const bestEffort = await engine('&replicaPolicy=best-effort&replicaGraceMs=1500');
    assert.equal(strict.replicaPolicy, 'strict');
    await commitOnce(bestEffort, 1);
    await commitOnce(strict, 1);
    assert.equal((await bestEffort.stats())['replicasOnline'], 1);
    assert.equal((await bestEffort.stats()).counters['underReplicatedCommits'], 0, 'confirmed by the replica');

    await replica.kill();
    const killedAt = Date.now();
    await waitFor(async () => (await bestEffort.stats())['replicasOnline'] === 0, 5000, 'ROLE to show no replica');
    // Within the grace the replica could be one being promoted: refused, like strict.
    await assert.rejects(commitOnce(bestEffort, 2), refused);
    await assert.rejects(commitOnce(strict, 2), refused);
    await sleep(Math.max(0, killedAt + 1800 - Date.now()));
    // Past the grace: acknowledged at once, without waiting for a replica it knows is gone.
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push(await commitOnce(bestEffort, i));
    assert.ok(Math.max(...times) < 250, `best-effort commits without a replica took ${times.join(', ')} ms (replicaTimeoutMs 300)`);
    await waitFor(async () => ((await bestEffort.stats()).counters['underReplicatedCommits'] ?? 0) >= 5, 5000, 'the under-replicated commits counted');
    await assert.rejects(commitOnce(strict, 9), refused, 'strict still refuses');

    await replica.restart(['--replicaof', '127.0.0.1', String(master.port)]);
    await waitFor(async () => /master_link_status:up/.test(await redisCli(replica.port, 'INFO', 'replication')), 10_000, 'replica back in sync');
    await waitFor(async () => (await bestEffort.stats())['replicasOnline'] === 1, 5000, 'ROLE to show the replica again');
    const before = (await bestEffort.stats()).counters['underReplicatedCommits'];
    await commitOnce(bestEffort, 10);
    await commitOnce(strict, 10);
    await sleep(300);
    assert.equal((await bestEffort.stats()).counters['underReplicatedCommits'], before, 'confirmed by the replica again');
  });
});
