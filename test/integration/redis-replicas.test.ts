import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import type { SessionHandle } from '../../src/client/session-handle.js';
import type { RedisEngineOptions } from '../../src/engines/redis/engine-options.js';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { encodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { sleep, waitFor } from '../helpers/processes.js';
import { redisCli, replicaOnline, startRedisNode, startStandalone, type RedisDeployment, type RedisNode } from '../helpers/redis.js';

/** A master, its replica and an engine on the master (`replicas=1` and `options`), made before a describe's tests and stopped after them. */
function masterWithReplica(options: Omit<RedisEngineOptions, 'url'>): { master: RedisNode; replica: RedisNode; engine: RedisEngine } {
  const d = {} as { master: RedisNode; replica: RedisNode; engine: RedisEngine };
  before(async () => {
    d.master = await startRedisNode();
    d.replica = await startRedisNode({ args: ['--replicaof', '127.0.0.1', String(d.master.port)] });
    await replicaOnline(d.master.port, d.replica.port);
    d.engine = new RedisEngine({ url: `redis://127.0.0.1:${d.master.port}?replicas=1`, ...options });
    await d.engine.connect();
  });
  after(async () => {
    await d.engine?.close();
    await d.replica?.kill();
    await d.master?.kill();
  });
  return d;
}

/**
 * `replicas: N` is what makes the failover tests lose nothing, so it is checked where
 * the outcome is certain: a server with no replica can never confirm a commit, so the
 * commit must not be acknowledged, and a retry with the same commit id must find it
 * applied rather than apply it twice.
 */
describe('Redis engine: replicas: 1 without a replica, replicaPolicy strict', () => {
  let redis: RedisDeployment;
  const engines: RedisEngine[] = [];
  before(async () => {
    redis = await startStandalone();
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await redis.stop();
  });

  it('refuses to acknowledge an unreplicated commit, yet files and counts what the master did; the retry is acknowledged once, not applied twice', async () => {
    const strict = new RedisEngine({ url: `${redis.url}?replicas=1&replicaPolicy=strict`, replicaTimeoutMs: 200, heartbeatMs: 200 });
    await strict.connect();
    engines.push(strict);
    const id = generateSessionId();
    const grant = await strict.acquire(id);
    const before = await strict.stats();
    const commit = { sessionId: id, token: grant.token, commitId: 'replicated-or-not', baseVersion: 0, lastAccessedAt: Date.now(), idleTimeoutMs: 60_000, absoluteExpiresAt: 0, set: [['n', encodeAttribute('n', 1)] as [string, Uint8Array]], del: [] };
    const started = Date.now();
    await assert.rejects(strict.commit(commit), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /0 of 1 replicas/.test(err.message));
    assert.ok(Date.now() - started < 2000, 'bounded by replicaTimeoutMs');
    // The master created the session. A commit that is never retried (the request failed;
    // the next one commits anew and creates nothing) left it out of the listing and the
    // sweep, and out of the counts and the sessionBytes gauge for good.
    const port = Number(new URL(redis.url).port);
    assert.notEqual(await redisCli(port, 'ZSCORE', 'kiln:{idx}:ids', id), '', 'listed');
    assert.notEqual(await redisCli(port, 'ZSCORE', 'kiln:{idx}:exp', id), '', 'filed for the sweep');
    const after = await strict.stats();
    assert.equal((after.counters['created'] ?? 0) - (before.counters['created'] ?? 0), 1, 'created counted');
    assert.ok(after.sessionBytes > before.sessionBytes, `its bytes counted (${before.sessionBytes} → ${after.sessionBytes})`);
    const relaxed = new RedisEngine({ url: redis.url, heartbeatMs: 200 });
    await relaxed.connect();
    engines.push(relaxed);
    assert.deepEqual(await relaxed.commit(commit), { version: 1, duplicate: true });
    const retried = await relaxed.stats();
    assert.equal(retried.counters['created'], after.counters['created'], 'the retry counts no second creation');
    assert.equal(retried.sessionBytes, after.sessionBytes, 'nor its bytes again');
    await strict.release(id, grant.token);
    const g = await relaxed.acquire(id);
    assert.equal(g.snapshot?.meta.version, 1, 'applied exactly once');
    await relaxed.release(id, g.token);
  });
});

/**
 * Losing the replica: strict (the default) refuses every commit until it is back; best
 * effort refuses too at first (the replica may be being promoted), then, once ROLE has
 * shown it gone for replicaGraceMs, carries on with the replicas that remain, counts
 * what it acknowledged with fewer, and waits for the replica again once it is back.
 */
describe('Redis engine: replicas: 1 and the replica SIGKILLed', () => {
  let master: RedisNode;
  let replica: RedisNode;
  const engines: RedisEngine[] = [];
  before(async () => {
    master = await startRedisNode();
    replica = await startRedisNode({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    await replicaOnline(master.port, replica.port);
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await replica.kill();
    await master.kill();
  });

  async function engine(query: string): Promise<RedisEngine> {
    const e = new RedisEngine({ url: `redis://127.0.0.1:${master.port}?replicas=1${query}`, replicaTimeoutMs: 1000, heartbeatMs: 100 });
    await e.connect();
    engines.push(e);
    return e;
  }

  async function commitOnce(e: RedisEngine, n: number): Promise<number> {
    const id = generateSessionId();
    const grant = await e.acquire(id);
    const started = Date.now();
    try {
      await e.commit({ sessionId: id, token: grant.token, commitId: `c-${id}`, baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', n)] as [string, Uint8Array]], del: [] });
      return Date.now() - started;
    } finally {
      await e.release(id, grant.token).catch(() => undefined);
    }
  }

  const refused = (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && err.status === 503 && /0 of 1 replicas/.test(err.message);

  it('strict is the default and refuses while the replica is gone; best effort refuses for the grace, then carries on and says so', async () => {
    const strict = await engine('');
    const bestEffort = await engine('&replicaPolicy=best-effort&replicaGraceMs=1500');
    assert.equal(strict.replicaPolicy, 'strict');
    await commitOnce(bestEffort, 1);
    await commitOnce(strict, 1);
    assert.equal((await bestEffort.stats())['replicasOnline'], 1);
    assert.equal((await bestEffort.stats()).counters['underReplicatedCommits'], 0, 'confirmed by the replica');

    await replica.kill();
    const killedAt = Date.now();
    await waitFor(async () => (await bestEffort.stats())['replicasOnline'] === 0, 5000, 'ROLE to show no replica');
    // Within the grace the replica could be one being promoted: refused, like strict.
    await assert.rejects(commitOnce(bestEffort, 2), refused);
    await assert.rejects(commitOnce(strict, 2), refused);
    await sleep(Math.max(0, killedAt + 1800 - Date.now()));
    // Past the grace: acknowledged at once, without waiting for a replica it knows is gone.
    const times: number[] = [];
    for (let i = 0; i < 5; i++) times.push(await commitOnce(bestEffort, i));
    assert.ok(Math.max(...times) < 250, `best-effort commits without a replica took ${times.join(', ')} ms (replicaTimeoutMs 1000)`);
    await waitFor(async () => ((await bestEffort.stats()).counters['underReplicatedCommits'] ?? 0) >= 5, 5000, 'the under-replicated commits counted');
    await assert.rejects(commitOnce(strict, 9), refused, 'strict still refuses');

    await replica.restart(['--replicaof', '127.0.0.1', String(master.port)]);
    await replicaOnline(master.port, replica.port);
    await waitFor(async () => (await bestEffort.stats())['replicasOnline'] === 1, 5000, 'ROLE to show the replica again');
    // Commits are confirmed again once ROLE shows it acknowledging (it reports every second).
    await waitFor(async () => (await commitOnce(strict, 10).then(() => true, () => false)), 3000, 'strict confirmed again');
    await waitFor(async () => (await commitOnce(bestEffort, 10).then(() => true, () => false)), 3000, 'best effort confirmed again');
    const before = (await bestEffort.stats()).counters['underReplicatedCommits'];
    await commitOnce(bestEffort, 10);
    await commitOnce(strict, 10);
    await sleep(300);
    assert.equal((await bestEffort.stats()).counters['underReplicatedCommits'], before, 'confirmed by the replica again');
  });
});

/**
 * A WAIT holds its connection until it returns, and without a replica every WAIT runs
 * its whole timeout. One WAIT per commit, queued in Redis one behind the other, held
 * everything after them for the sum: 20 commits in flight kept a load waiting 10 s, and
 * two Sentinel failovers 4 s apart stopped all work for 15 s. Now commits in flight share
 * one WAIT, and once a shortage is known commits are refused without one (a probe at a
 * time finds the replica back).
 */
/**
 * Once ROLE shows the replica back, the first request whose commit is confirmed: `change`
 * reads what it opened on (returned) and changes something to commit. Refusals while the
 * engine catches up are retried; any other error fails the test.
 */
async function firstConfirmed<T>(client: SessionClient, id: string, change: (s: SessionHandle) => T): Promise<T> {
  return waitFor(async () => {
    const s = await client.open(id);
    try {
      const read = change(s);
      await s.commit();
      return { read };
    } catch (err) {
      assert.ok(isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'), `only refusals while ROLE catches up: ${String(err)}`);
      return undefined;
    } finally {
      s.close();
    }
  }, 5000, 'a commit confirmed again').then((r) => r.read);
}

describe('Redis engine: a replica shortage holds up nothing but the commits it refuses', () => {
  const REPLICA_TIMEOUT_MS = 500;
  // A slow heartbeat: the engine learns of the shortage from the WAITs alone (ROLE would tell it within a beat).
  const d = masterWithReplica({ replicaTimeoutMs: REPLICA_TIMEOUT_MS, heartbeatMs: 5000, operationTimeoutMs: 20_000 });

  const commitOf = (id: string, token: number, commitId: string, baseVersion: number, n: number) => ({ sessionId: id, token, commitId, baseVersion, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', n)] as [string, Uint8Array]], del: [] });
  const timed = async <T>(p: Promise<T>): Promise<{ ms: number; outcome: T | unknown; ok: boolean }> => {
    const started = Date.now();
    try {
      return { outcome: await p, ok: true, ms: Date.now() - started };
    } catch (err) {
      return { outcome: err, ok: false, ms: Date.now() - started };
    }
  };

  it('20 commits in flight are refused within two WAITs, a load meanwhile answers, and commits are confirmed again once the replica is back', async () => {
    const sessions: { id: string; token: number }[] = [];
    for (let i = 0; i < 20; i++) {
      const id = generateSessionId();
      const { token } = await d.engine.acquire(id);
      await d.engine.commit(commitOf(id, token, `create-${i}`, 0, 0));
      sessions.push({ id, token });
    }
    await d.replica.kill();
    const commits = sessions.map(({ id, token }, i) => timed(d.engine.commit(commitOf(id, token, `second-${i}`, 1, 1))));
    // Sent right behind the 20 commits and their WAITs on the same connection.
    const load = timed(d.engine.load(sessions[0]!.id, sessions[0]!.token));
    const settled = await Promise.all(commits);
    const loaded = await load;
    console.log(`# replica killed: 20 commits settled within ${Math.max(...settled.map((s) => s.ms))} ms; a load behind them answered in ${loaded.ms} ms (replicaTimeoutMs ${REPLICA_TIMEOUT_MS})`);
    for (const s of settled) assert.ok(!s.ok && isKilnError(s.outcome, 'KILN_ERR_ENGINE_UNAVAILABLE') && /0 of 1 replicas/.test((s.outcome as Error).message), `refused: ${String(s.outcome)}`);
    assert.ok(settled.some((s) => /within 500 ms/.test((s.outcome as Error).message)), 'the first were sent and waited for');
    // One WAIT per commit would take 20 × 500 ms for the last; two shared WAITs take 1 s.
    assert.ok(Math.max(...settled.map((s) => s.ms)) < 4 * REPLICA_TIMEOUT_MS, `commits settled within ${settled.map((s) => s.ms).join(', ')} ms`);
    assert.ok(loaded.ok, `the load answered: ${String(loaded.outcome)}`);
    assert.ok(loaded.ms < 4 * REPLICA_TIMEOUT_MS, `the load took ${loaded.ms} ms`);

    // The shortage is known now: commits are refused before they are sent, and nothing waits.
    const quick = await Promise.all(sessions.slice(1, 6).map(({ id, token }, i) => timed(d.engine.commit(commitOf(id, token, `third-${i}`, 2, 2)))));
    assert.ok(quick.every((q) => !q.ok && isKilnError(q.outcome, 'KILN_ERR_ENGINE_UNAVAILABLE') && /not sent/.test((q.outcome as Error).message)), `refused unsent while the replica is away: ${quick.map((q) => String(q.outcome)).join('; ')}`);
    assert.ok(quick.every((q) => q.ms < REPLICA_TIMEOUT_MS), `refused without a WAIT: ${quick.map((q) => q.ms).join(', ')} ms`);
    const during = await timed(d.engine.load(sessions[1]!.id, sessions[1]!.token));
    assert.ok(during.ok && during.ms < REPLICA_TIMEOUT_MS, `a load while commits are refused: ${during.ms} ms`);

    await d.replica.restart(['--replicaof', '127.0.0.1', String(d.master.port)]);
    await replicaOnline(d.master.port, d.replica.port);
    // ROLE, asked at most every 250 ms while commits are refused, finds it back (the heartbeat's is 5 s away).
    const { id, token } = sessions[0]!;
    await waitFor(async () => (await timed(d.engine.commit(commitOf(id, token, 'second-0', 1, 1)))).ok, 5000, 'a commit confirmed again');
    const again = await d.engine.commit(commitOf(id, token, 'second-0', 1, 1));
    assert.deepEqual(again, { version: 2, duplicate: true }, 'applied once: the commit refused for want of a replica had reached the master');
    const fresh = await d.engine.commit(commitOf(id, token, 'fourth-0', 2, 4));
    assert.equal(fresh.version, 3);
  });

  it('a session whose commit was refused for want of a replica is reloaded, not built on: its next request sees what the master holds', async () => {
    await replicaOnline(d.master.port, d.replica.port);
    const own = new RedisEngine({ url: `redis://127.0.0.1:${d.master.port}?replicas=1`, replicaTimeoutMs: REPLICA_TIMEOUT_MS, heartbeatMs: 5000 });
    const client = createSessionClient({ engine: own, requestTimeoutMs: 5000 });
    try {
      await own.connect();
      const created = await client.open(undefined);
      created.set('n', 1);
      await created.commit();
      created.close();
      const id = created.id;
      await d.replica.kill();
      const refused = await client.open(id);
      refused.set('n', 2);
      // The first attempt reaches the master, whose WAIT comes back short; the retries are refused unsent.
      await assert.rejects(refused.commit(), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
      refused.close();
      assert.ok(!client.holdsLease(id), 'the copy the commit may have outrun is dropped with its lease');
      await d.replica.restart(['--replicaof', '127.0.0.1', String(d.master.port)]);
      await replicaOnline(d.master.port, d.replica.port);
      // Once ROLE shows the replica, the next request reads what the master holds (the refused commit did reach it) and commits on it.
      const next = await firstConfirmed(client, id, (s) => {
        const n = s.get('n') as number;
        s.set('n', n + 1);
        return n;
      });
      assert.equal(next, 2, 'read after a reload: the refused commit had been applied by the master');
    } finally {
      await client.close();
    }
  });

  it('a pipelined commit that overwrote a cached list in place and was refused leaves no trace: the next request reads what the master holds', async () => {
    await replicaOnline(d.master.port, d.replica.port);
    const own = new RedisEngine({ url: `redis://127.0.0.1:${d.master.port}?replicas=1`, replicaTimeoutMs: REPLICA_TIMEOUT_MS, heartbeatMs: 5000 });
    const client = createSessionClient({ engine: own, requestTimeoutMs: 1000 });
    const increment = async (id: string, k: number, to?: number): Promise<void> => {
      const s = client.openCached(id) ?? (await client.open(id));
      try {
        const items = s.get('items') as { qty: number }[];
        items[k]!.qty = to ?? items[k]!.qty + 1;
        await s.commit({ final: true });
      } finally {
        s.close();
      }
    };
    try {
      await own.connect();
      const created = await client.open(undefined);
      created.set('items', Array.from({ length: 160 }, (_, k) => ({ sku: `SKU-${k}`, qty: 1, tags: ['a', 'b'] })));
      await created.commit();
      created.close();
      const id = created.id;
      for (let i = 0; i < 3; i++) await increment(id, 5);
      assert.equal(client.stats().counters.overwritesInPlace, 2);
      await d.replica.kill();
      // Another session's commit finds the replica gone (its WAIT comes back short): from
      // then on this master's commits are refused before they are sent.
      const other = await client.open(undefined);
      other.set('n', 1);
      await assert.rejects(other.commit(), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
      other.close();
      await assert.rejects(increment(id, 5, 100), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
      assert.equal(client.stats().counters.overwritesInPlace, 3, 'the refused commit had overwritten the cached list');
      assert.ok(!client.holdsLease(id), 'the overwritten copy is dropped with its lease');
      await d.replica.restart(['--replicaof', '127.0.0.1', String(d.master.port)]);
      await replicaOnline(d.master.port, d.replica.port);
      const seen = await firstConfirmed(client, id, (s) => {
        const items = s.get('items') as { qty: number }[];
        items[6]!.qty++;
        return items[5]!.qty;
      });
      assert.equal(seen, 4, 'the refused overwrite (100) is neither stored nor served');
    } finally {
      await client.close();
    }
  });

  it('a frozen replica, still listed by ROLE, keeps its master\'s commits refused unsent: no WAIT holds a load up again', async () => {
    await replicaOnline(d.master.port, d.replica.port);
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    // The shared engine may have seen the replica gone in an earlier case (its heartbeat's
    // ROLE): it confirms commits again once a probe shows the replica acknowledging.
    await waitFor(async () => (await timed(d.engine.commit(commitOf(id, token, 'frozen-0', 0, 0)))).ok, 5000, 'a commit confirmed before the freeze');
    process.kill(d.replica.pid, 'SIGSTOP');
    try {
      await assert.rejects(d.engine.commit(commitOf(id, token, 'frozen-1', 1, 1)), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /within 500 ms/.test((err as Error).message));
      // ROLE goes on listing the replica (until repl-timeout, 60 s) but its offset stands
      // still: counted as back, every probe would let the next commit's WAIT hold the
      // connection for 500 ms, and the load sent behind it with it.
      const loads: number[] = [];
      const until = Date.now() + 2000;
      while (Date.now() < until) {
        const [commit, load] = await Promise.all([timed(d.engine.commit(commitOf(id, token, 'frozen-1', 1, 1))), timed(d.engine.load(id, token))]);
        assert.ok(!commit.ok && isKilnError(commit.outcome, 'KILN_ERR_ENGINE_UNAVAILABLE'), String(commit.outcome));
        assert.ok(load.ok, String(load.outcome));
        loads.push(load.ms);
        await sleep(50);
      }
      console.log(`# frozen replica: ${loads.length} loads beside refused commits, longest ${Math.max(...loads)} ms`);
      assert.ok(Math.max(...loads) < REPLICA_TIMEOUT_MS / 2, `loads beside refused commits took ${loads.join(', ')} ms`);
    } finally {
      process.kill(d.replica.pid, 'SIGCONT');
    }
    await waitFor(async () => (await timed(d.engine.commit(commitOf(id, token, 'frozen-1', 1, 1)))).ok, 5000, 'a commit confirmed once the replica runs again');
  });
});


/**
 * A destroy, "log out everywhere" and the sweep's expiry are writes like a commit: one
 * acknowledged before a replica had it is undone when that replica is promoted, and a
 * logged-out session comes back. Under strict they are refused while the replica is
 * cut off (here it stops replicating, as a promoted one does), and go through once it
 * is back (a second destroy finds nothing; the tombstone stays).
 */
describe('Redis engine: destroy and expiry are confirmed by replicas like commits', () => {
  const d = masterWithReplica({ replicaTimeoutMs: 1000, heartbeatMs: 100, expirySweepMs: 50 });

  async function create(principal: string, idleTimeoutMs: number): Promise<string> {
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    await d.engine.commit({ sessionId: id, token, commitId: `c-${id}`, baseVersion: 0, lastAccessedAt: Date.now(), principal, idleTimeoutMs, absoluteExpiresAt: 0, set: [['n', encodeAttribute('n', 1)] as [string, Uint8Array]], del: [] });
    await d.engine.release(id, token);
    return id;
  }
  const exists = async (port: number, id: string) => (await redisCli(port, 'EXISTS', `kiln:{${id}}:m`)) === '1';
  const refused = (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /0 of 1 replicas/.test(err.message);

  it('refuses a destroy, a "log out everywhere" and an expiry the replica cannot confirm, and applies them once it is back', async () => {
    const gaugeAtStart = (await d.engine.stats()).sessionBytes;
    const loggedOut = await create('alice', 3_600_000);
    const elsewhere = await create('alice', 3_600_000);
    // Due once the destroy below has found the replica missing (its WAIT runs 1 s).
    const idle = await create('idle-user', 2500);
    const idleDue = Date.now() + 2500;
    const expiredEvents: string[] = [];
    d.engine.onEvent((e) => {
      if (e.type === 'expired') expiredEvents.push(e.sessionId);
    });
    const statsBefore = await d.engine.stats();
    const destroyedBefore = statsBefore.counters['destroyed'] ?? 0;
    await redisCli(d.replica.port, 'REPLICAOF', 'NO', 'ONE');
    await assert.rejects(d.engine.destroy(loggedOut), refused, 'a destroy the replica does not have is not acknowledged');
    await assert.rejects(d.engine.destroyByPrincipal('alice'), refused);
    // The refused destroy ran on the master (its WAIT came back short after it), but a
    // failover could still lose it: the indexes keep the session (a principal's set
    // without it would let "log out everywhere" miss it if it came back) until a destroy
    // confirmed by the replica finds its tombstone.
    assert.equal(await exists(d.master.port, loggedOut), false, 'the destroy ran on the master before its WAIT');
    assert.equal(await redisCli(d.master.port, 'SISMEMBER', 'kiln:principal:alice', loggedOut), '1', "still in its principal's set while unconfirmed");
    assert.notEqual(await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:ids', loggedOut), '', 'still in the id index');
    // Counted as the master did it: the destroy that later confirms it finds only the tombstone, and counts nothing.
    assert.equal((await d.engine.stats()).counters['destroyed'] ?? 0, destroyedBefore + 1, 'counted once, by the run that deleted it');

    // Past the idle session's deadline, with the sweep running every 50 ms: its expiry waits for the replica too.
    await sleep(idleDue + 1000 - Date.now());
    assert.ok(await exists(d.master.port, idle), 'not expired while no replica can confirm it');
    assert.equal(expiredEvents.length, 0, `expired: ${expiredEvents.join(", ")}`);

    await redisCli(d.replica.port, 'REPLICAOF', '127.0.0.1', String(d.master.port));
    await replicaOnline(d.master.port, d.replica.port);
    // Destroyed before (a tombstone is all that is left): false, and what the refused run left goes now.
    assert.equal(await waitFor(async () => d.engine.destroy(loggedOut).then(() => 'confirmed' as const, () => undefined), 5000, 'the destroy confirmed'), 'confirmed');
    assert.equal(await redisCli(d.master.port, 'SISMEMBER', 'kiln:principal:alice', loggedOut), '0', "out of its principal's set once confirmed");
    await waitFor(async () => d.engine.destroyByPrincipal('alice').then(() => true, () => false), 5000, '"log out everywhere" confirmed');
    assert.equal(await exists(d.replica.port, loggedOut), false);
    assert.equal(await exists(d.replica.port, elsewhere), false);
    await waitFor(() => expiredEvents.includes(idle), 5000, 'the idle session expired once the replica is back');
    await waitFor(async () => !(await exists(d.replica.port, idle)), 5000, 'the expiry replicated');
    assert.deepEqual(await d.engine.findByPrincipal('alice'), []);
    // Nothing left behind in the indexes: "log out everywhere" finds no member it cannot end.
    assert.equal(await d.engine.destroyByPrincipal('alice'), 0);
    assert.equal(await redisCli(d.master.port, 'SCARD', 'kiln:principal:alice'), '0', 'no member left in the principal set');
    for (const id of [loggedOut, elsewhere, idle]) {
      assert.equal(await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:ids', id), '', `${id} out of the id index`);
      assert.equal(await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:exp', id), '', `${id} out of the expiry index`);
    }
    // The idle session's entry in its principal's set may stay (if an expiry's WAIT came
    // back short as the replica rejoined, a later sweep found it gone, without its
    // principal): it is met as gone and taken out then, and logs nobody out meanwhile.
    assert.equal(await d.engine.destroyByPrincipal('idle-user'), 0);
    // Each session counted once: by the run that deleted it on the master, confirmed or
    // not (a destroy refused before it ran counts nothing). So the gauge of session bytes
    // is back where it was before the three were made, and the idle one expired once.
    const statsAfter = await d.engine.stats();
    assert.equal((statsAfter.counters['destroyed'] ?? 0) - destroyedBefore, 2, 'loggedOut and elsewhere, once each');
    assert.equal((statsAfter.counters['expired'] ?? 0) - (statsBefore.counters['expired'] ?? 0), 1, 'the idle session, once');
    assert.ok(statsBefore.sessionBytes > gaugeAtStart, 'the three sessions on the gauge');
    assert.equal(statsAfter.sessionBytes, gaugeAtStart, 'the bytes of all three taken off the gauge once');
  });
});

/**
 * An expiry whose WAIT comes back short has run on the master all the same (data, lease
 * and event gone), but a failover could lose it: the session stays in the indexes until
 * a sweep whose WAIT is confirmed finds it gone. ROLE is looked at rarely here, so the
 * first expiry is sent and its WAIT is what finds the replica gone.
 */
describe('Redis engine: an expiry refused after it ran on the master', () => {
  const d = masterWithReplica({ replicaTimeoutMs: 1000, heartbeatMs: 60_000, expirySweepMs: 100 });

  it('leaves the session in the indexes while unconfirmed, and takes it out once a sweep confirmed by the replica finds it gone', async () => {
    const before = await d.engine.stats();
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    const commit = { sessionId: id, token, commitId: `c-${id}`, baseVersion: 0, lastAccessedAt: Date.now(), principal: 'carol', idleTimeoutMs: 1500, absoluteExpiresAt: 0, set: [['n', encodeAttribute('n', 1)] as [string, Uint8Array]], del: [] };
    // A replica just synced may miss the first WAIT: the same commit again applies once.
    await waitFor(async () => d.engine.commit(commit).then(() => true, () => false), 5000, 'the commit confirmed');
    await d.engine.release(id, token);
    assert.equal(await redisCli(d.master.port, 'EXISTS', `kiln:{${id}}:m`), '1', 'not expired before the replica goes');
    await redisCli(d.replica.port, 'REPLICAOF', 'NO', 'ONE');
    await waitFor(async () => (await redisCli(d.master.port, 'EXISTS', `kiln:{${id}}:m`)) === '0', 5000, 'the expiry ran on the master');
    // Past the first expiry's WAIT (1 s): refused, not merely waiting (a WAIT still out when
    // the replica comes back is confirmed, and nothing here would be unconfirmed). Sweeps
    // meanwhile, each refused.
    await sleep(1500);
    assert.notEqual(await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:exp', id), '', 'still in the expiry index while unconfirmed');
    assert.notEqual(await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:ids', id), '', 'and in the id index');
    await redisCli(d.replica.port, 'REPLICAOF', '127.0.0.1', String(d.master.port));
    await replicaOnline(d.master.port, d.replica.port);
    await waitFor(async () => (await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:exp', id)) === '' || undefined, 5000, 'out of the expiry index once confirmed');
    assert.equal(await redisCli(d.master.port, 'ZSCORE', 'kiln:{idx}:ids', id), '', 'and out of the id index');
    assert.equal(await d.engine.destroyByPrincipal('carol'), 0, 'nothing of carol left to log out');
    // Counted once, by the run that deleted it (the confirming sweep finds it gone): the
    // gauge of session bytes is back where it was before the session was made.
    const stats = await d.engine.stats();
    assert.equal((stats.counters['expired'] ?? 0) - (before.counters['expired'] ?? 0), 1, 'expired counted once');
    assert.equal(stats.sessionBytes, before.sessionBytes, 'its bytes off the gauge');
  });
});

/**
 * A WAIT holds its connection: Redis reads nothing more from that client until it
 * returns. The heartbeat's own commands share the connection, so a beat that waited less
 * than a WAIT's whole timeout took a replica shortage for a lost connection and dropped
 * every lease this process held.
 */
describe('Redis engine: a WAIT longer than two heartbeats', () => {
  const d = masterWithReplica({ replicaTimeoutMs: 1500, heartbeatMs: 100 });

  it('is not taken for a lost connection: the lease held across the refused commit is still held', async () => {
    const id = generateSessionId();
    const { token } = await d.engine.acquire(id);
    const first = { sessionId: id, token, commitId: `c1-${id}`, baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', 1)] as [string, Uint8Array]], del: [] };
    await waitFor(async () => d.engine.commit(first).then(() => true, () => false), 5000, 'the first commit confirmed');
    await redisCli(d.replica.port, 'REPLICAOF', 'NO', 'ONE');
    const second = { ...first, commitId: `c2-${id}`, baseVersion: 1, set: [['n', encodeAttribute('n', 2)] as [string, Uint8Array]] };
    // Its WAIT holds the connection 1.5 s, past two beats (200 ms) and more.
    await assert.rejects(d.engine.commit(second), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /within 1500 ms/.test((err as Error).message));
    await redisCli(d.replica.port, 'REPLICAOF', '127.0.0.1', String(d.master.port));
    await replicaOnline(d.master.port, d.replica.port);
    // With the lease dropped (a beat timed out behind the WAIT), this failed with KILN_ERR_LEASE_LOST.
    assert.deepEqual(await waitFor(async () => d.engine.commit(second).then((ack) => ack, (err: unknown) => (isKilnError(err, 'KILN_ERR_LEASE_LOST') ? Promise.reject(err) : undefined)), 10_000, 'the commit confirmed'), { version: 2, duplicate: true });
  });
});
