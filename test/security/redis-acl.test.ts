/**
 * #22 item 14: the engine runs as a least-privilege Redis ACL user (the one
 * docs/security.md gives), which can reach only its prefix's keys and channels and
 * cannot run FLUSHALL or read another application's keys; and session ids that would
 * change key names or hash slots (`*`, `}`, `{`) are refused at the engine boundary.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createClient } from 'redis';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { generateSessionId } from '../../src/session/id.js';
import { encodeAttribute } from '../../src/session/codec.js';
import { startRedisNode, type RedisNode } from '../helpers/redis.js';

const ACL_PASSWORD = 'kiln-acl-password-0123456789abcdef';
/** The same rule as docs/security.md's "Least-privilege ACL" (prefix kiln:). */
export const KILN_ACL_RULE = ['on', `>${ACL_PASSWORD}`, 'resetkeys', '~kiln:*', 'resetchannels', '&kiln:*', '-@all', '+@read', '+@write', '+@scripting', '+@pubsub', '+@connection', '+@transaction', '-@dangerous', '+info', '+wait', '+client|setname'];

describe('security: Redis least-privilege ACL and engine-boundary ids (#22 item 14)', () => {
  let redis: RedisNode;
  let admin: ReturnType<typeof createClient>;

  before(async () => {
    redis = await startRedisNode();
    admin = createClient({ url: `redis://127.0.0.1:${redis.port}` });
    await admin.connect();
    await admin.sendCommand(['ACL', 'SETUSER', 'kiln', ...KILN_ACL_RULE]);
    await admin.set('other:secret', 'another app');
  });
  after(async () => {
    await admin?.quit().catch(() => undefined);
    await redis?.kill();
  });

  it('the ACL user runs sessions end to end: acquire, commit, load, destroy, log out everywhere', async () => {
    const engine = new RedisEngine({ url: `redis://kiln:${ACL_PASSWORD}@127.0.0.1:${redis.port}`, connectTimeoutMs: 5000 });
    try {
      await engine.connect();
      const id = generateSessionId();
      const { token } = await engine.acquire(id);
      await engine.commit({ sessionId: id, token, commitId: 'acl-1', baseVersion: 0, lastAccessedAt: Date.now(), set: [['user', encodeAttribute('user', 'ada')]], del: [], principal: 'ada' } as never);
      const loaded = await engine.load(id, token);
      assert.equal(loaded?.meta.version, 1);
      await engine.release(id, token);
      const other = generateSessionId();
      const lease = await engine.acquire(other);
      await engine.commit({ sessionId: other, token: lease.token, commitId: 'acl-2', baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', 1)]], del: [] } as never);
      await engine.release(other, lease.token);
      assert.ok(await engine.destroy(other));
      assert.ok((await engine.destroyByPrincipal('ada')) >= 1, 'log out everywhere works under the ACL');
    } finally {
      await engine.close();
    }
  });

  it('the ACL user cannot FLUSHALL, read another app\'s key, list every key, or reconfigure Redis', async () => {
    const limited = createClient({ url: `redis://kiln:${ACL_PASSWORD}@127.0.0.1:${redis.port}` });
    await limited.connect();
    try {
      for (const command of [['FLUSHALL'], ['GET', 'other:secret'], ['KEYS', '*'], ['CONFIG', 'SET', 'dir', '/tmp'], ['EVAL', "return redis.call('GET', 'other:secret')", '0'], ['SUBSCRIBE', 'other:channel']]) {
        await assert.rejects(limited.sendCommand(command), /NOPERM|can't access/, command.join(' '));
      }
    } finally {
      await limited.quit().catch(() => undefined);
    }
    assert.equal(await admin.get('other:secret'), 'another app');
  });

  it('session ids that would pick keys or hash slots are refused with KILN_ERR_INVALID_ARGUMENT', async () => {
    const engine = new RedisEngine({ url: `redis://127.0.0.1:${redis.port}`, connectTimeoutMs: 5000 });
    try {
      await engine.connect();
      for (const bad of ['*', '}', 'a{b}', 'x}:y', '']) {
        await assert.rejects(engine.acquire(bad), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_ARGUMENT', JSON.stringify(bad));
        await assert.rejects(engine.destroy(bad), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_ARGUMENT', JSON.stringify(bad));
      }
    } finally {
      await engine.close();
    }
  });
});
