import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyedQueue } from '../../src/client/keyed-queue.js';
import { NearCache } from '../../src/client/near-cache.js';
import { createSessionClient } from '../../src/client/session-client.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { isKilnError, type KilnError } from '../../src/errors/index.js';
import { generateSessionId, isValidSessionId, parseSessionId, withRoute } from '../../src/session/id.js';
import { OptionReader } from '../../src/util/options.js';

describe('near cache', () => {
  it('evicts oldest first by entries and by bytes, giving entries read meanwhile a second chance, and counts', () => {
    const evicted: string[] = [];
    const c = new NearCache<{ bytes: number }>({ maxEntries: 2, maxBytes: 100 }, (k) => evicted.push(k));
    c.set('a', { bytes: 10 });
    c.set('b', { bytes: 10 });
    c.get('a');
    c.set('c', { bytes: 10 });
    assert.deepEqual(evicted, ['b']);
    // a was read, so it was passed over once (its mark cleared, moved behind c).
    c.set('d', { bytes: 95 });
    assert.deepEqual(evicted, ['b', 'c', 'a']);
    assert.equal(c.get('zzz'), undefined);
    assert.deepEqual(c.stats(), { entries: 1, bytes: 95, hits: 1, misses: 1, evictions: 3 });
    c.set('huge', { bytes: 1000 });
    assert.equal(c.peek('huge'), undefined, 'an entry larger than the cache is not kept');
  });
});

describe('keyed queue', () => {
  it('runs one at a time per key, in order, and keys in parallel', async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    const job = (key: string, name: string, ms: number) =>
      q.run(key, 1000, async () => {
        log.push(`${name}+`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`${name}-`);
      });
    await Promise.all([job('s', 'a', 20), job('s', 'b', 1), job('t', 'x', 5)]);
    assert.deepEqual(log.filter((e) => e.startsWith('a') || e.startsWith('b')), ['a+', 'a-', 'b+', 'b-']);
    assert.ok(log.indexOf('x+') < log.indexOf('a-'), 'another key is not blocked');
    assert.equal(q.size, 0);
  });

  it('a waiter that times out leaves without breaking the queue', async () => {
    const q = new KeyedQueue();
    const unlock = await q.lock('s', 1000);
    await assert.rejects(q.lock('s', 10), (err: KilnError) => err.code === 'KILN_ERR_LEASE_TIMEOUT');
    const next = q.lock('s', 1000);
    unlock();
    (await next)();
    assert.equal(q.size, 0);
  });
});

describe('session ids', () => {
  it('are 256 random bits in base64url, with an optional route', () => {
    const id = generateSessionId();
    assert.match(id, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(id, generateSessionId());
    const routed = generateSessionId('app-2');
    assert.deepEqual(parseSessionId(routed), { base: routed.slice(0, 43), route: 'app-2' });
    assert.equal(withRoute(routed, 'app-3').slice(-5), 'app-3');
    for (const bad of ['', 'short', `${id}.`, `${id}.bad route`, `${id}.a.b`, 'x'.repeat(129), 'has space in it.....', 42, null]) assert.equal(isValidSessionId(bad), false, String(bad));
    assert.equal(isValidSessionId('0123456789abcdefABCDEF_-'), true, 'ids from other generators (express-session, genid) are accepted');
    assert.throws(() => generateSessionId('no spaces'), (err: KilnError) => err.code === 'KILN_ERR_INVALID_ARGUMENT');
  });
});

describe('option validation', () => {
  it("a SessionClient's route that no balancer could name is refused up front, naming the option", async () => {
    // It was KILN_ERR_INVALID_ARGUMENT from the id generator, naming no option.
    const tier = createMemoryTier();
    const engine = tier.engine();
    const invalidRoute = (err: unknown) => isKilnError(err, 'KILN_ERR_INVALID_OPTION') && err.details?.['option'] === 'route' && /SessionClient: option "route"/.test(err.message);
    for (const route of ['bad route!', 'a.b', 'x'.repeat(65)]) assert.throws(() => createSessionClient({ engine, route }), invalidRoute, route);
    const client = createSessionClient({ engine, route: 'app-2' });
    await client.close();
    tier.close();
  });

  it('names the unknown or bad property', () => {
    assert.throws(() => new OptionReader('X', { colour: 1 } as object, ['color']), /unknown option "colour"/);
    const r = new OptionReader('X', { n: -1, mode: 'x' }, ['n', 'mode']);
    assert.throws(() => r.int('n', 0, 0), (err: KilnError) => err.code === 'KILN_ERR_INVALID_OPTION' && /option "n"/.test(err.message));
    assert.throws(() => r.oneOf('mode', ['a', 'b'], 'a'), /option "mode" must be one of "a", "b"/);
  });
});
