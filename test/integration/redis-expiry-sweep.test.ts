import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { waitFor } from '../helpers/processes.js';
import { redisCli, startStandalone, type RedisDeployment } from '../helpers/redis.js';

/** The expiry sweep on the real redis-server: bad entries in its index, and a Redis that stalls. */
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

  it('a due session whose lease key was planted with another type is parked whole, not half deleted (its data, its lease and waiters as they were)', async () => {
    const e = await engine({ expirySweepMs: 50 });
    const id = await createIdle(e, 100);
    await cli('SET', `kiln:{${id}}:l`, 'junk');
    await waitFor(async () => Number(await cli('ZSCORE', 'kiln:{idx}:exp', id)) > Date.now() + 30 * 60_000 || undefined, 5000, 'the session parked');
    assert.equal(await cli('EXISTS', `kiln:{${id}}:m`), '1', 'its metadata is still there');
    assert.equal(await cli('EXISTS', `kiln:{${id}}:a`), '1', 'its attributes are still there');
  });

  it('runs one sweep at a time in a process: ticks while Redis stalls are skipped, not piled up', async () => {
    const e = await engine({ expirySweepMs: 100, operationTimeoutMs: 10_000, heartbeatMs: 5000 });
    await Promise.all(Array.from({ length: 50 }, () => createIdle(e, 200)));
    const sets = async () => Number(/^cmdstat_set:calls=(\d+)/m.exec(await cli('INFO', 'commandstats'))?.[1] ?? 0);
    const before = await sets();
    // Redis runs a 2 s script: every command waits behind it, the sweeper's turn (SET NX) too.
    const busy = spawn('redis-cli', ['-p', String(port), 'EVAL', "local t0 = redis.call('TIME') while true do local t = redis.call('TIME') if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 2000000 then break end end return 1", '0']);
    await new Promise((resolve) => busy.on('exit', resolve));
    await new Promise((resolve) => setTimeout(resolve, 150));
    const started = (await sets()) - before;
    // About 20 ticks fell in the stall; one sweep was under way through it (and one or two since).
    assert.ok(started <= 4, `sweeps begun across a 2 s stall with a 100 ms sweep interval: ${started}`);
  });
});
