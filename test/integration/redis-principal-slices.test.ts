import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { redisCli, startStandalone, type RedisDeployment } from '../helpers/redis.js';

/**
 * A principal's index is read a slice at a time: neither Redis (SMEMBERS is one O(n)
 * command) nor the app (every session read at once) handles a principal of 100,000
 * sessions in one piece. Counted on the real redis-server: the commands it ran.
 */
describe('Redis engine: a large principal is read and destroyed in slices', () => {
  let redis: RedisDeployment;
  let engine: RedisEngine;
  const principal = 'tenant-big';
  const ids: string[] = [];

  before(async () => {
    redis = await startStandalone();
    engine = new RedisEngine({ url: redis.url });
    await engine.connect();
    for (let at = 0; at < 1000; at += 100) {
      await Promise.all(
        Array.from({ length: 100 }, async () => {
          const id = generateSessionId();
          const grant = await engine.acquire(id);
          await engine.commit(commitOf(id, grant.token, 0, { n: 1 }, { principal }));
          await engine.release(id, grant.token);
          ids.push(id);
        }),
      );
    }
  });
  after(async () => {
    await engine?.close();
    await redis?.stop();
  });

  /** How many times redis-server ran each command so far (INFO commandstats). */
  async function calls(): Promise<{ sscan: number; smembers: number }> {
    const info = await redisCli(redis.nodes[0]!.port, 'INFO', 'commandstats');
    const of = (name: string) => Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
    return { sscan: of('sscan'), smembers: of('smembers') };
  }

  it('finds every session once, with several SSCANs and no SMEMBERS', async () => {
    const before = await calls();
    const found = await engine.findByPrincipal(principal);
    const after = await calls();
    assert.equal(found.length, 1000);
    assert.deepEqual(found.map((m) => m.id).sort(), [...ids].sort());
    assert.equal(after.smembers, before.smembers, 'the set is never read whole');
    assert.ok(after.sscan - before.sscan >= 4, `1,000 ids in slices of 256: ${after.sscan - before.sscan} SSCANs`);
  });

  it('destroys every session, slice by slice', async () => {
    const before = await calls();
    assert.equal(await engine.destroyByPrincipal(principal), 1000);
    const after = await calls();
    assert.equal(after.smembers, before.smembers);
    assert.ok(after.sscan - before.sscan >= 4, `${after.sscan - before.sscan} SSCANs`);
    assert.deepEqual(await engine.findByPrincipal(principal), []);
    for (const id of [ids[0]!, ids[500]!, ids[999]!]) assert.equal(await engine.peek(id), null);
  });
});
