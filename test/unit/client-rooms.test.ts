import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { AccessTouches } from '../../src/client/access-touches.js';
import { applyCommitted, mergeDelta, toCached } from '../../src/client/committed-state.js';
import { newCounters } from '../../src/client/counters.js';
import { KeyedQueue } from '../../src/client/keyed-queue.js';
import { LeaseKeeper } from '../../src/client/lease-keeper.js';
import { NearCache } from '../../src/client/near-cache.js';
import { endStep, startStep, withTimeLeft } from '../../src/client/request-time.js';
import type { CachedSession, SessionHandle } from '../../src/client/session-handle.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { decodeAttribute, encodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';

/** The client's rooms alone: the pure arithmetic of commits, the request's time, and the lease keeper over a real in-process tier. */

const base = (): CachedSession => ({
  meta: { id: generateSessionId(), createdAt: 1000, lastAccessedAt: 1000, idleTimeoutMs: 60_000, absoluteExpiresAt: 0, principal: null, version: 4 },
  attributes: new Map([
    ['a', encodeAttribute('a', 1)],
    ['b', encodeAttribute('b', 'two')],
  ]),
  bytes: 0,
});

describe('committed state (pure)', () => {
  it('applyCommitted makes a new copy at the version, with the changes and metadata, leaving the base as it was', () => {
    const b = base();
    const next = applyCommitted(b, { principal: 'ann', idleTimeoutMs: 5000 }, { set: [['c', encodeAttribute('c', [3])]], del: ['a'] }, 5, 2000, false);
    assert.equal(next.meta.version, 5);
    assert.equal(next.meta.lastAccessedAt, 2000);
    assert.equal(next.meta.createdAt, 1000, 'created stays for a stored session');
    assert.equal(next.meta.principal, 'ann');
    assert.equal(next.meta.idleTimeoutMs, 5000);
    assert.deepEqual([...next.attributes.keys()].sort(), ['b', 'c']);
    assert.deepEqual(decodeAttribute(next.attributes.get('c')!), [3]);
    assert.ok(next.bytes > 0);
    assert.deepEqual([...b.attributes.keys()].sort(), ['a', 'b'], 'the base copy is never edited');
    assert.equal(b.meta.version, 4);
    assert.equal(applyCommitted(b, {}, { set: [], del: [] }, 1, 3000, true).meta.createdAt, 3000, 'a created session starts now');
  });

  it('mergeDelta: a later set or delete replaces an earlier one, metadata merges, the last access time wins', () => {
    const one = mergeDelta(undefined, { set: [['x', encodeAttribute('x', 1)]], del: ['y'] }, { principal: 'ann' }, 10);
    const two = mergeDelta(one, { set: [['y', encodeAttribute('y', 2)]], del: ['x'] }, { idleTimeoutMs: 99 }, 20);
    assert.deepEqual(two.set.map(([n]) => n), ['y']);
    assert.deepEqual(two.del, ['x']);
    assert.deepEqual(two.meta, { principal: 'ann', idleTimeoutMs: 99 });
    assert.equal(two.lastAccessedAt, 20);
    assert.deepEqual(one.set.map(([n]) => n), ['x'], 'the earlier batch is not edited');
  });

  it('toCached counts the bytes of a snapshot', () => {
    const b = base();
    assert.equal(toCached({ meta: b.meta, attributes: b.attributes }).bytes, applyCommitted(b, {}, { set: [], del: [] }, 4, 0, false).bytes);
  });
});

describe("a request's time", () => {
  it('each step gets a deadline from what is left and gives back what it did not use; a spent request fails its step with a 503', () => {
    const handle = { id: 'h', timeLeftMs: 0 } as unknown as SessionHandle;
    withTimeLeft(handle, Date.now() + 1000);
    assert.ok(handle.timeLeftMs > 900 && handle.timeLeftMs <= 1000);
    const now = Date.now();
    const deadline = startStep(handle, now, 'commit');
    assert.equal(deadline, now + handle.timeLeftMs);
    endStep(handle, now - 1);
    assert.ok(handle.timeLeftMs < 0);
    assert.throws(
      () => startStep(handle, Date.now(), 'destroy'),
      (err: unknown) => isKilnError(err, 'KILN_ERR_TIMEOUT') && err.status === 503 && /before its destroy/.test(err.message),
    );
  });
});

describe('lease keeper (real in-process tier)', () => {
  const tier = createMemoryTier();
  after(() => tier.close());

  function keeper(maxLeases: number, pending: Set<string> = new Set(), failFlush = false) {
    const engine = tier.engine();
    const counters = newCounters();
    const cache = new NearCache<CachedSession>({ maxEntries: 100, maxBytes: 1 << 20 });
    const queue = new KeyedQueue();
    const touches = new AccessTouches(engine, counters, 60_000);
    const flushed: string[] = [];
    const k = new LeaseKeeper({
      engine,
      queue,
      cache,
      touches,
      counters,
      acquireTimeoutMs: 1000,
      maxLeases,
      isClosed: () => false,
      hasPending: (id) => pending.has(id),
      flushPending: async (id) => {
        flushed.push(id);
        pending.delete(id);
        if (failFlush) {
          // As write-behind does when its commit fails: the lease is dropped, then the error.
          k.forget(id);
          throw new Error('the pending writes were refused');
        }
      },
      loaded: () => undefined,
    });
    engine.setLeaseHandler({ recall: (id, t) => k.recall(id, t), revoked: (id, t) => k.revoked(id, t), lost: () => k.lostAll() });
    return { k, engine, cache, queue, touches, counters, flushed, stop: () => touches.stop() };
  }

  async function create(k: LeaseKeeper, engine: ReturnType<typeof tier.engine>): Promise<string> {
    const id = generateSessionId();
    const grant = await k.acquire(id, Date.now() + 1000);
    await engine.commit({ sessionId: id, token: grant.token, commitId: `c-${id}`, baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', 0)]], del: [] });
    return id;
  }

  it('keeps at most maxLeases, giving back the least recently used idle ones, with a second chance for used ones', async () => {
    const { k, engine, stop } = keeper(2);
    const a = await create(k, engine);
    const b = await create(k, engine);
    await k.load(a, Date.now() + 1000); // a used since: passed over once
    const c = await create(k, engine);
    await new Promise((r) => setImmediate(r));
    assert.equal(k.size, 2);
    assert.ok(k.leases.has(a), 'the used lease got its second chance');
    assert.ok(!k.leases.has(b), 'the idle one went back');
    assert.ok(k.leases.has(c));
    stop();
  });

  it('a recall waits for the requests queued on the session, sends its pending writes, and forgets lease and copy together', async () => {
    const pending = new Set<string>();
    const holder = keeper(10, pending);
    const other = keeper(10);
    const id = await create(holder.k, holder.engine);
    assert.ok(await holder.k.load(id, Date.now() + 1000));
    pending.add(id);
    const unlock = await holder.queue.lock(id, 1000); // a request of this process is using it
    const taken = other.k.acquire(id, Date.now() + 2000);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(holder.k.leases.has(id), 'not handed over while a request uses it');
    unlock();
    const grant = await taken;
    assert.ok(grant.snapshot, 'the other process gets the session');
    assert.deepEqual(holder.flushed, [id], 'pending writes went out before the lease');
    assert.ok(!holder.k.leases.has(id));
    assert.equal(holder.cache.peek(id), undefined, 'the cached copy went with the lease');
    assert.equal(holder.counters.handovers, 1);
    holder.stop();
    other.stop();
  });

  it('a recall whose pending writes fail still gives the lease back at once (not after the recall deadline)', async () => {
    const pending = new Set<string>();
    const holder = keeper(10, pending, true);
    const other = keeper(10);
    const id = await create(holder.k, holder.engine);
    assert.ok(await holder.k.load(id, Date.now() + 1000));
    pending.add(id);
    const started = Date.now();
    const grant = await other.k.acquire(id, Date.now() + 5000);
    const waited = Date.now() - started;
    assert.ok(grant.snapshot, 'the other process gets the session');
    assert.deepEqual(holder.flushed, [id]);
    assert.ok(waited < 1500, `waited ${waited} ms: the lease was not given back, the recall deadline (3 s) ended it`);
    holder.stop();
    other.stop();
  });

  it('a recall that arrives before its grant is served when the grant lands', async () => {
    const { k, engine, counters, stop } = keeper(10);
    const id = await create(k, engine);
    const token = k.leases.get(id)!.token;
    k.forget(id);
    await engine.release(id, token);
    // Tokens grow per session: the recall names the grant this process is about to get,
    // and comes while its acquire is on its way.
    const granted = k.acquire(id, Date.now() + 1000);
    k.recall(id, token + 1);
    assert.equal(counters.handovers, 0, 'nothing to hand over yet');
    const grant = await granted;
    assert.equal(grant.token, token + 1);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(counters.handovers, 1, 'served once the grant landed');
    assert.ok(!k.leases.has(id), 'and the lease went back');
    stop();
  });

  it('a recall for a grant this process is not waiting for is not kept (the early recalls stay as few as the acquires in flight)', async () => {
    const { k, engine, counters, stop } = keeper(10);
    const id = await create(k, engine);
    const token = k.leases.get(id)!.token;
    k.forget(id);
    await engine.release(id, token);
    // A recall that crossed our own release: no acquire of ours is on its way.
    k.recall(id, token + 1);
    const grant = await k.acquire(id, Date.now() + 1000);
    assert.equal(grant.token, token + 1);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(counters.handovers, 0, 'the stale recall was dropped, not served on a later grant');
    assert.ok(k.leases.has(id));
    stop();
  });

  it('lostAll drops every lease and cached copy, counting them', async () => {
    const { k, engine, cache, counters, stop } = keeper(10);
    const ids = [await create(k, engine), await create(k, engine)];
    for (const id of ids) await k.load(id, Date.now() + 1000);
    k.lostAll();
    assert.equal(k.size, 0);
    for (const id of ids) assert.equal(cache.peek(id), undefined);
    assert.equal(counters.leasesLost, 2);
    stop();
  });
});
