import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { encodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { startStandalone, type RedisDeployment } from '../helpers/redis.js';

/**
 * `replicas: N` is what makes the failover tests lose nothing, so it is checked where
 * the outcome is certain: a server with no replica can never confirm a commit, so the
 * commit must not be acknowledged, and a retry with the same commit id must find it
 * applied rather than apply it twice.
 */
describe('Redis engine: replicas: 1 without a replica', () => {
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
    const strict = new RedisEngine({ url: `${redis.url}?replicas=1`, replicaTimeoutMs: 200, heartbeatMs: 200 });
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
