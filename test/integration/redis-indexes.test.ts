import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateSessionId } from '../../src/session/id.js';
import type { CommitRequest } from '../../src/session/model.js';
import { commitOf } from '../conformance/engine-suite.js';
import { engineOnStandalone, redisCli } from '../helpers/redis.js';

/**
 * The indexes kept beside the scripts (ids, expiry, principal sets) on the real
 * redis-server: what a retry of an applied commit files again.
 */
describe('Redis engine: the indexes beside the scripts', () => {
  const d = engineOnStandalone();

  const cli = (...args: string[]) => redisCli(d.port, ...args);

  it('a retried commit found applied files the session again: id and expiry entries, and out of the principal it replaced', async () => {
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    const create: CommitRequest = commitOf(id, token, 0, { cart: ['tea'] }, { principal: 'alice', idleTimeoutMs: 60_000, absoluteExpiresAt: 0 });
    await d.engine.commit(create);
    // The first attempt was applied but its reply lost, and with it the index writes that follow a reply.
    await cli('ZREM', 'kiln:{idx}:ids', id);
    await cli('ZREM', 'kiln:{idx}:exp', id);
    assert.deepEqual(await d.engine.commit(create), { version: 1, duplicate: true });
    assert.equal(await cli('ZSCORE', 'kiln:{idx}:ids', id), '0', 'listed again');
    const deadline = Number(await cli('ZSCORE', 'kiln:{idx}:exp', id));
    assert.ok(Math.abs(deadline - (create.lastAccessedAt + 60_000)) < 5000, `filed for expiry at its deadline: ${deadline}`);
    assert.deepEqual((await d.engine.list({ limit: 10 })).sessions.map((m) => m.id), [id]);

    // A principal change whose SREM of the old principal was lost with its reply.
    const change: CommitRequest = commitOf(id, token, 1, {}, { principal: 'bob' });
    await d.engine.commit(change);
    await cli('SADD', 'kiln:principal:alice', id);
    assert.deepEqual(await d.engine.commit(change), { version: 2, duplicate: true });
    assert.equal(await cli('SISMEMBER', 'kiln:principal:alice', id), '0', 'out of the principal it replaced');
    assert.equal(await cli('SISMEMBER', 'kiln:principal:bob', id), '1');

    // The session names alice again since: a late retry of the change to bob leaves her set alone.
    await d.engine.commit(commitOf(id, token, 2, {}, { principal: 'alice' }));
    assert.deepEqual(await d.engine.commit(change), { version: 2, duplicate: true });
    assert.equal(await cli('SISMEMBER', 'kiln:principal:alice', id), '1', 'still in the set of the principal it names');
    // An expiry entry earlier than the deadline (filed by a later commit) is not moved later.
    // Ahead of now (a due entry would be the sweep's to re-file meanwhile), behind the 60 s idle deadline.
    const earlier = String(Date.now() + 30_000);
    await cli('ZADD', 'kiln:{idx}:exp', earlier, id);
    await d.engine.commit(create);
    assert.equal(await cli('ZSCORE', 'kiln:{idx}:exp', id), earlier);
    await d.engine.release(id, token);
  });

  it("a destroyed session's tombstone outlives the longest a destroy's WAIT and clean-up can take, even for a session about to expire", async () => {
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    await d.engine.commit(commitOf(id, token, 0, { n: 1 }, { principal: 'dora', idleTimeoutMs: 1000, absoluteExpiresAt: 0 }));
    await d.engine.release(id, token);
    assert.equal(await d.engine.destroy(id), true);
    // With the default timeouts (operation 5 s, replicas 1 s): 2 × (5 + 1) + 5 = 17 s. The
    // session itself was due in about 3 s (1 s idle, 2 s touch grace); a tombstone gone by
    // then let a session made under the id meanwhile lose its index entries to this
    // destroy's late clean-up.
    const ttl = Number(await cli('PTTL', `kiln:{${id}}:x`));
    assert.ok(ttl > 16_000 && ttl <= 17_000, `the tombstone lives ${ttl} ms`);
    // A destroy again near the tombstone's end (a retry of one refused after it ran): its
    // own clean-up, after its own WAIT, gets the same window.
    await cli('PEXPIRE', `kiln:{${id}}:x`, '200');
    assert.equal(await d.engine.destroy(id), false, 'destroyed before');
    const extended = Number(await cli('PTTL', `kiln:{${id}}:x`));
    assert.ok(extended > 16_000, `the tombstone lives ${extended} ms after the second destroy`);
  });

  it('a page of list() over many entries of sessions gone makes a bounded number of rounds, and ends short with a next', async () => {
    await cli('DEL', 'kiln:{idx}:ids');
    // Entries whose sessions are gone (a lost ZREM, or planted), all before the one real session, and one that is no session id.
    const gone = Array.from({ length: 3000 }, () => `A${generateSessionId()}`);
    for (let at = 0; at < gone.length; at += 500) await cli('ZADD', 'kiln:{idx}:ids', ...gone.slice(at, at + 500).flatMap((id) => ['0', id]));
    await cli('ZADD', 'kiln:{idx}:ids', '0', 'B not a session id!');
    const real = 'z'.repeat(24);
    const { token } = await d.engine.acquire(real);
    await d.engine.commit(commitOf(real, token, 0, { n: 1 }));
    await d.engine.release(real, token);
    const evalshas = async () => Number(/^cmdstat_evalsha:calls=(\d+)/m.exec(await cli('INFO', 'commandstats'))?.[1] ?? 0);
    const before = await evalshas();
    const first = await d.engine.list({ limit: 10 });
    const peeks = (await evalshas()) - before;
    assert.ok(peeks <= 8 * 11, `one page peeked at ${peeks} entries (limit 10)`);
    assert.deepEqual(first.sessions, []);
    assert.ok(first.next !== null, 'short, with a next');
    let page = first;
    let pages = 1;
    const found: string[] = [];
    while (page.next !== null) {
      page = await d.engine.list({ limit: 10, after: page.next });
      found.push(...page.sessions.map((m) => m.id));
      assert.ok(++pages < 100, 'the pages end');
    }
    assert.deepEqual(found, [real], 'the real session is reached, and the entry that is no session id failed no page');
    assert.equal(await cli('ZSCORE', 'kiln:{idx}:ids', 'B not a session id!'), '', 'taken out');
  });
});
