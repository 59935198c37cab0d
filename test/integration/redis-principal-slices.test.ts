import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { principalKey } from '../../src/engines/redis/keys.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { sleep, waitFor } from '../helpers/processes.js';
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
  async function calls(): Promise<{ sscan: number; smembers: number; scard: number }> {
    const info = await redisCli(redis.nodes[0]!.port, 'INFO', 'commandstats');
    const of = (name: string) => Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
    return { sscan: of('sscan'), smembers: of('smembers'), scard: of('scard') };
  }

  it('finds every session once, with several SSCANs and no SMEMBERS', async () => {
    const start = await calls();
    const found = await engine.findByPrincipal(principal);
    const end = await calls();
    assert.equal(found.length, 1000);
    assert.deepEqual(found.map((m) => m.id).sort(), [...ids].sort());
    assert.equal(end.smembers, start.smembers, 'the set is never read whole');
    assert.ok(end.sscan - start.sscan >= 4, `1,000 ids in slices of 256: ${end.sscan - start.sscan} SSCANs`);
  });

  type Command = (key: string, args: string[], deadline?: number) => Promise<unknown>;
  type ReplicatedWrite = (key: string, command: string, member: string, deadline?: number) => Promise<void>;
  /** The engine's session store, opened up: its options (what it sends Redis, its view of the connection) and its notes. */
  function store() {
    return (engine as unknown as { store: { o: { generation: () => number; command: Command; replicatedWrite: ReplicatedWrite; prefix: string }; outOfPlaceSince: Map<string, number> } }).store;
  }

  /** The engine's view of its connection's generation (RedisTransport.generation), replaced for a test. */
  function withGeneration(generation: () => number): () => void {
    const options = store().o;
    const real = options.generation;
    options.generation = generation;
    return () => void (options.generation = real);
  }

  it('scans again from the start when the connection changed between two SSCANs (a cursor is good only where it was given), and gives up after a few', async () => {
    // A scan on a steady connection, to count against.
    const steadyFrom = (await calls()).sscan;
    await engine.findByPrincipal(principal);
    const steady = (await calls()).sscan - steadyFrom;
    // The connection changes once, after the first SSCAN's answer: that cursor is dropped.
    let asked = 0;
    let restore = withGeneration(() => (asked++ === 0 ? 0 : 1));
    const start = await calls();
    try {
      const found = await engine.findByPrincipal(principal);
      assert.equal(found.length, 1000);
      assert.deepEqual(found.map((m) => m.id).sort(), [...ids].sort());
    } finally {
      restore();
    }
    assert.equal((await calls()).sscan - start.sscan, steady + 1, `the first slice read twice (a steady scan takes ${steady} SSCANs)`);
    // A connection that never settles fails the call, retryable, instead of scanning for good.
    let changes = 0;
    restore = withGeneration(() => changes++);
    try {
      await assert.rejects(engine.findByPrincipal(principal), { code: 'KILN_ERR_ENGINE_UNAVAILABLE' });
    } finally {
      restore();
    }
  });

  it('pages the console through it a slice at a time: every session once, full pages, a few SSCANs each, and no SMEMBERS', async () => {
    const start = await calls();
    const met: string[] = [];
    let after: string | undefined;
    let pages = 0;
    for (;;) {
      const before = (await calls()).sscan;
      const page = await engine.principalPage(principal, { limit: 100, ...(after === undefined ? {} : { after }) });
      const scans = (await calls()).sscan - before;
      assert.ok(scans <= 2, `a page of 100 out of slices of about 256: ${scans} SSCANs`);
      assert.equal(page.total, 1000);
      met.push(...page.sessions.map((m) => m.id));
      pages++;
      if (page.next === null) break;
      assert.equal(page.sessions.length, 100, 'only the last page is short');
      after = page.next;
      assert.ok(pages < 20, 'the pages end');
    }
    assert.equal(pages, 10);
    assert.equal(new Set(met).size, 1000, 'every session once');
    assert.deepEqual([...met].sort(), [...ids].sort());
    assert.equal((await calls()).smembers, start.smembers);
    // A page of one, and a limit that is no number, are pages of one.
    for (const limit of [1, Number.NaN, 0]) {
      const one = await engine.principalPage(principal, { limit });
      assert.equal(one.sessions.length, 1, `limit ${limit}`);
      assert.equal(one.next, `${one.next!.split(':')[0]}:${one.sessions[0]!.id}`, 'next names the session shown');
      const second = await engine.principalPage(principal, { limit: 1, after: one.next! });
      assert.notEqual(second.sessions[0]?.id, one.sessions[0]!.id);
    }
    for (const bad of ['not a cursor', '12', ':abc', '1:not-an-id', `${'9'.repeat(21)}:`, '18446744073709551616:']) {
      await assert.rejects(engine.principalPage(principal, { limit: 10, after: bad }), { code: 'KILN_ERR_INVALID_ARGUMENT' }, bad);
    }
  });

  it('destroys every session, slice by slice, in one pass when what is left is out of place', async () => {
    // An entry whose session never came (a login that failed after its index entry).
    await redisCli(redis.nodes[0]!.port, 'SADD', principalKey(store().o.prefix, principal), generateSessionId());
    const start = await calls();
    assert.equal(await engine.destroyByPrincipal(principal), 1000);
    const end = await calls();
    assert.equal(end.smembers, start.smembers);
    assert.equal(end.scard - start.scard, 1, 'one pass: the one entry left was met out of place');
    assert.ok(end.sscan - start.sscan >= 4, `${end.sscan - start.sscan} SSCANs`);
    assert.deepEqual(await engine.findByPrincipal(principal), []);
    for (const id of [ids[0]!, ids[500]!, ids[999]!]) assert.equal(await engine.peek(id), null);
  });

  it('a reader that meets a login between its index entry and its commit leaves the entry, so "log out everywhere" still finds that session', async () => {
    const p = 'racing-login';
    const key = principalKey(store().o.prefix, p);
    const id = generateSessionId();
    const grant = await engine.acquire(id);
    // The login's commit is held just after it added the session to the principal's set.
    const options = store().o;
    const real = options.replicatedWrite;
    let letGo!: () => void;
    const gate = new Promise<void>((resolve) => (letGo = resolve));
    let entered!: () => void;
    const indexed = new Promise<void>((resolve) => (entered = resolve));
    options.replicatedWrite = async (k, command, member, deadline) => {
      await real(k, command, member, deadline);
      if (command === 'SADD' && member === id) {
        entered();
        await gate;
      }
    };
    const login = engine.commit(commitOf(id, grant.token, 0, { n: 1 }, { principal: p }));
    try {
      // The commit's SADD went through the wrapper (a commit that ended without one fails here, not at the runner's timeout).
      assert.equal(await Promise.race([indexed.then(() => 'indexed'), login.then(() => 'committed', () => 'failed')]), 'indexed');
      options.replicatedWrite = real;
      assert.deepEqual(await engine.findByPrincipal(p), [], 'no session yet: its commit has not run');
      await sleep(100); // a removal the reader sent would have landed
      assert.equal((await redisCli(redis.nodes[0]!.port, 'SISMEMBER', key, id)).trim(), '1', 'the entry stays');
    } finally {
      options.replicatedWrite = real;
      letGo();
    }
    await login;
    await engine.release(id, grant.token);
    assert.deepEqual((await engine.findByPrincipal(p)).map((m) => m.id), [id]);
    assert.equal(await engine.destroyByPrincipal(p), 1);
  });

  it('an entry seen naming no session of its principal again, long after, is taken out of the set', async () => {
    const p = 'left-behind';
    const key = principalKey(store().o.prefix, p);
    const id = generateSessionId();
    await redisCli(redis.nodes[0]!.port, 'SADD', key, id); // an index entry whose session never came (or whose removal failed)
    assert.deepEqual(await engine.findByPrincipal(p), []);
    assert.equal((await redisCli(redis.nodes[0]!.port, 'SISMEMBER', key, id)).trim(), '1', 'kept the first time');
    // Met out of place a minute ago (the grace is past a commit's deadline):
    const notes = store().outOfPlaceSince;
    const note = `${key}\n${id}`;
    assert.ok(notes.has(note), 'noted');
    notes.set(note, performance.now() - 61_000);
    assert.deepEqual(await engine.findByPrincipal(p), []);
    await waitFor(async () => (await redisCli(redis.nodes[0]!.port, 'SISMEMBER', key, id)).trim() === '0' || undefined, 5000, 'taken out the second time');
    assert.ok(!notes.has(note));
    // A note older than ten minutes is a first meeting again: it may be another login's entry by now.
    await redisCli(redis.nodes[0]!.port, 'SADD', key, id);
    notes.set(note, performance.now() - 11 * 60_000);
    assert.deepEqual(await engine.findByPrincipal(p), []);
    await sleep(100);
    assert.equal((await redisCli(redis.nodes[0]!.port, 'SISMEMBER', key, id)).trim(), '1', 'kept: the old note counts as none');
    assert.ok(performance.now() - notes.get(note)! < 5000, 'noted anew');
    // A memory full of notes never met again (sessions gone since) makes room for a new
    // one by dropping those past their age, rather than noting nothing more for good.
    // (Notes go in in time order: the old ones first, then this entry's, met just now.)
    const old = performance.now() - 11 * 60_000;
    notes.clear();
    for (let i = 0; notes.size < 9_999; i++) notes.set(`gone\n${i}`, old);
    notes.set(note, performance.now());
    const another = generateSessionId();
    await redisCli(redis.nodes[0]!.port, 'SADD', key, another);
    assert.deepEqual(await engine.findByPrincipal(p), []);
    assert.ok(notes.has(`${key}\n${another}`), 'the new entry is noted');
    assert.ok(notes.has(note), 'a recent note stays');
    assert.ok(notes.size < 10, `the expired notes dropped (${notes.size} left)`);
  });
});
