import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { waitFor } from '../helpers/processes.js';
import { redisCli, startStandalone, type RedisDeployment } from '../helpers/redis.js';

/** The expiry sweep on the real redis-server: bad entries in its index. */
describe('Redis engine: the expiry sweep', () => {
  let redis: RedisDeployment;
  let port: number;
  const engines: RedisEngine[] = [];
  beforeEach(async () => {
    redis = await startStandalone();
    port = redis.nodes[0]!.port;
  });
  afterEach(async () => {
    await Promise.all(engines.splice(0).map((e) => e.close()));
    await redis.stop();
  });

  const cli = (...args: string[]) => redisCli(port, ...args);
  async function engine(options: { expirySweepMs: number; operationTimeoutMs?: number; heartbeatMs?: number }): Promise<RedisEngine> {
    const e = new RedisEngine({ url: redis.url, ...options });
    await e.connect();
    engines.push(e);
    return e;
  }
  async function createIdle(e: RedisEngine, idleTimeoutMs: number): Promise<string> {
    const id = generateSessionId();
    const { token } = await e.acquire(id);
    await e.commit(commitOf(id, token, 0, { n: 1 }, { idleTimeoutMs, absoluteExpiresAt: 0 }));
    await e.release(id, token);
    return id;
  }

  it('goes on past entries that are no session id (taken out) and a session whose data is damaged (parked far ahead)', async () => {
    // A whole batch of planted entries at the head of the index, where every sweep starts.
    const planted: string[] = [];
    for (let i = 0; i < 256; i++) planted.push('0', `bad!${i}`);
    await cli('ZADD', 'kiln:{idx}:exp', ...planted);
    const e = await engine({ expirySweepMs: 50 });
    const mangled = await createIdle(e, 100);
    await cli('DEL', `kiln:{${mangled}}:m`);
    await cli('SET', `kiln:{${mangled}}:m`, 'junk');
    await cli('ZADD', 'kiln:{idx}:exp', '1', mangled);
    const expired = new Set<string>();
    e.onEvent((event) => {
      if (event.type === 'expired') expired.add(event.sessionId);
    });
    const ids = await Promise.all(Array.from({ length: 5 }, () => createIdle(e, 300)));
    await waitFor(() => ids.every((id) => expired.has(id)), 5000, 'the idle sessions expired');
    assert.equal(await cli('ZCOUNT', 'kiln:{idx}:exp', '-inf', '+inf'), '1', 'only the parked session left in the index');
    const parkedAt = Number(await cli('ZSCORE', 'kiln:{idx}:exp', mangled));
    assert.ok(parkedAt > Date.now() + 30 * 60_000, `parked far ahead: ${parkedAt}`);
    // Counted by code, as the console shows this process's errors.
    const errors = (e as unknown as { runner: { errors(): Record<string, number> } }).runner.errors();
    assert.ok((errors['KILN_ERR_STORAGE_DAMAGED'] ?? 0) >= 1, `counted: ${JSON.stringify(errors)}`);
  });
});
