import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isKilnError } from '../../src/errors/index.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { engineOnStandalone, redisCli } from '../helpers/redis.js';

/**
 * Keys that hold what Kiln did not write (another program, an operator, a bug of an
 * older version) on the real redis-server: the call fails with
 * KILN_ERR_STORAGE_DAMAGED naming the key, is not retried, and blocks nothing else.
 * Before, Lua's runtime errors and WRONGTYPE were "unavailable" (retried until the
 * acquire timed out), and one bad member of a principal's set failed its logout for good.
 */
describe('Redis engine: damaged or planted data', () => {
  const d = engineOnStandalone({ acquireTimeoutMs: 5000 });

  const cli = (...args: string[]) => redisCli(d.port, ...args);
  const exists = async (id: string) => (await cli('EXISTS', `kiln:{${id}}:m`)) === '1';
  async function create(principal?: string): Promise<string> {
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    await d.engine.commit(commitOf(id, token, 0, { cart: ['tea'] }, { principal, idleTimeoutMs: 3_600_000, absoluteExpiresAt: 0 }));
    await d.engine.release(id, token);
    return id;
  }
  const damaged = (key: RegExp) => (err: unknown) => isKilnError(err, 'KILN_ERR_STORAGE_DAMAGED') && !err.retryable && key.test(err.message);

  it('"log out everywhere" takes a member that is no session id out of the set and logs the rest out', async () => {
    const ids = [await create('carol'), await create('carol'), await create('carol')];
    await cli('SADD', 'kiln:principal:carol', 'not a session id!');
    assert.deepEqual((await d.engine.findByPrincipal('carol')).map((m) => m.id).sort(), [...ids].sort());
    assert.equal(await d.engine.destroyByPrincipal('carol'), 3);
    for (const id of ids) assert.equal(await exists(id), false);
    assert.equal(await cli('SISMEMBER', 'kiln:principal:carol', 'not a session id!'), '0');
  });

  it('a destroy deletes a session whose metadata field is no number, alone or in "log out everywhere"', async () => {
    const alone = await create('dave');
    const [broken, fine] = [await create('erin'), await create('erin')];
    await cli('HSET', `kiln:{${alone}}:m`, 'it', 'abc');
    await cli('HSET', `kiln:{${broken}}:m`, 'la', 'yesterday');
    assert.equal(await d.engine.destroy(alone), true);
    assert.equal(await exists(alone), false);
    assert.equal(await cli('EXISTS', `kiln:{${alone}}:x`), '1', 'its tombstone is set: it cannot come back');
    assert.equal(await d.engine.destroyByPrincipal('erin'), 2);
    assert.equal(await exists(broken), false);
    assert.equal(await exists(fine), false);
  });

  it('a session whose metadata hash is of another type is logged out with its principal, and left out of listings', async () => {
    const [mangled, fine] = [await create('mallory'), await create('mallory')];
    await cli('DEL', `kiln:{${mangled}}:m`);
    await cli('SET', `kiln:{${mangled}}:m`, 'junk');
    assert.deepEqual((await d.engine.findByPrincipal('mallory')).map((m) => m.id), [fine]);
    assert.ok(!(await d.engine.list({ limit: 1000 })).sessions.some((m) => m.id === mangled), 'listed without it');
    assert.equal(await d.engine.destroyByPrincipal('mallory'), 2);
    assert.equal(await cli('EXISTS', `kiln:{${mangled}}:m`), '0');
    assert.equal(await cli('SCARD', 'kiln:principal:mallory'), '0');
  });

  it('a key of the wrong type fails the acquire at once, naming the key, instead of being retried until the timeout', async () => {
    const id = await create();
    await cli('SET', `kiln:{${id}}:b`, 'junk');
    const started = Date.now();
    await assert.rejects(d.engine.acquire(id), damaged(new RegExp(`kiln:\\{${id}\\}:b is a string`)));
    assert.ok(Date.now() - started < 1000, `failed after ${Date.now() - started} ms (acquireTimeoutMs 5000)`);
    // A session with nothing of its own yet, and the planted key: the same.
    const fresh = generateSessionId();
    await cli('SET', `kiln:{${fresh}}:b`, 'junk');
    await assert.rejects(d.engine.acquire(fresh), damaged(/:b is a string/));
  });

  it('a commit on metadata that is no number names the key and the field', async () => {
    const id = await create();
    const { token } = await d.engine.acquire(id);
    await cli('HSET', `kiln:{${id}}:m`, 'la', 'soon');
    await assert.rejects(d.engine.commit(commitOf(id, token, 1, { cart: ['jam'] })), damaged(new RegExp(`kiln:\\{${id}\\}:m field "la" is not a number`)));
    await d.engine.release(id, token);
  });

  it('an index of another type is named', async () => {
    const key = 'kiln:principal:zed';
    await cli('SET', key, 'junk');
    await assert.rejects(d.engine.findByPrincipal('zed'), damaged(/kiln:principal:zed/));
  });
});
