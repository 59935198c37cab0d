import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SessionMeta } from '../../src/session/model.js';
import { Listeners } from '../../src/tier/listeners.js';
import { GroupSizes, SessionCaps } from '../../src/tier/session-counts.js';
import { listPage, lowerBound } from '../../src/tier/session-listing.js';
import { forEachInSlices, SLICE_ITEMS, SlicedQueue } from '../../src/tier/sliced-work.js';
import { Tier, type TierOwner } from '../../src/tier/tier.js';
import { collector } from '../helpers/collect.js';

function meta(id: string): SessionMeta {
  return { id, createdAt: 0, lastAccessedAt: 0, idleTimeoutMs: 0, absoluteExpiresAt: 0, principal: null, version: 1 };
}

const owner = (id: string, recalls: string[] = []): TierOwner => ({ id, onRecall: (sessionId) => void recalls.push(`${id} ${sessionId}`), onRevoke: () => undefined });
const nextTurn = () => new Promise<'next turn'>((resolve) => setImmediate(() => resolve('next turn')));

describe('session listing', () => {
  const ids = ['a1', 'a2', 'a3', 'b1', 'b2', 'c1'];
  const known = (id: string) => meta(id);

  it('finds the first id not less than a value', () => {
    assert.equal(lowerBound(ids, ''), 0);
    assert.equal(lowerBound(ids, 'a2'), 1);
    assert.equal(lowerBound(ids, 'a25'), 2);
    assert.equal(lowerBound(ids, 'z'), ids.length);
  });

  it('pages in id order with a cursor and says when there is no next page', () => {
    const first = listPage(ids, { limit: 4 }, known, 99);
    assert.deepEqual(first.sessions.map((s) => s.id), ['a1', 'a2', 'a3', 'b1']);
    assert.equal(first.next, 'b1');
    assert.equal(first.total, 99, 'total is what the caller says, not the page');
    const second = listPage(ids, { limit: 4, after: first.next! }, known, 99);
    assert.deepEqual(second.sessions.map((s) => s.id), ['b2', 'c1']);
    assert.equal(second.next, null);
  });

  it('narrows to a prefix and ignores a cursor before it', () => {
    const page = listPage(ids, { limit: 10, prefix: 'b', after: 'a2' }, known, 6);
    assert.deepEqual(page.sessions.map((s) => s.id), ['b1', 'b2']);
    assert.equal(page.next, null);
    const cut = listPage(ids, { limit: 1, prefix: 'a', after: 'a1' }, known, 6);
    assert.deepEqual(cut.sessions.map((s) => s.id), ['a2']);
    assert.equal(cut.next, 'a2');
  });

  it('skips ids the lookup no longer knows', () => {
    const page = listPage(ids, { limit: 2 }, (id) => (id === 'a2' ? undefined : meta(id)), 5);
    assert.deepEqual(page.sessions.map((s) => s.id), ['a1', 'a3']);
  });
});

describe('session caps', () => {
  const view = (size: number, sessions: Record<string, string | null>, perPrincipal: Record<string, number>) => ({
    size,
    get: (id: string) => (id in sessions ? { principal: sessions[id]! } : undefined),
    principalCount: (p: string) => perPrincipal[p] ?? 0,
  });

  it('checks nothing without caps', () => {
    const caps = new SessionCaps(0, 0);
    caps.check({ sessionId: 'n', baseVersion: 0, principal: 'u' }, view(1e9, {}, { u: 1e9 }));
    assert.equal(caps.refusals, 0);
  });

  it('refuses a create at maxSessions but not a commit on an existing session', () => {
    const caps = new SessionCaps(2, 0);
    assert.throws(() => caps.check({ sessionId: 'n', baseVersion: 0 }, view(2, { s: null }, {})), { code: 'KILN_ERR_SESSION_LIMIT' });
    caps.check({ sessionId: 's', baseVersion: 3 }, view(2, { s: null }, {}));
    caps.check({ sessionId: 'n', baseVersion: 0 }, view(1, { s: null }, {}));
    assert.equal(caps.refusals, 1);
  });

  it('refuses a new login over the principal cap, not a session already logged in', () => {
    const caps = new SessionCaps(0, 2);
    assert.throws(() => caps.check({ sessionId: 'n', baseVersion: 1, principal: 'u' }, view(5, { n: null }, { u: 2 })), { code: 'KILN_ERR_PRINCIPAL_SESSION_LIMIT' });
    caps.check({ sessionId: 'n', baseVersion: 1, principal: 'u' }, view(5, { n: 'u' }, { u: 2 }));
    caps.check({ sessionId: 'n', baseVersion: 1, principal: null }, view(5, { n: null }, { u: 2 }));
    caps.check({ sessionId: 'n', baseVersion: 1, principal: 'u' }, view(5, { n: null }, { u: 1 }));
    assert.equal(caps.refusals, 1);
  });
});

describe('group sizes', () => {
  it('counts per group and forgets empty groups', () => {
    const g = new GroupSizes((key) => key.split(':')[0]!);
    g.count('a:1', 1);
    g.count('a:2', 1);
    g.count('b:1', 1);
    g.count('a:1', -1);
    assert.equal(g.size('a', 100), 1);
    assert.equal(g.size('b', 100), 1);
    g.count('b:1', -1);
    assert.equal(g.size('b', 100), 0);
  });

  it('answers the total without a keyGroup', () => {
    const g = new GroupSizes(undefined);
    g.count('a:1', 1);
    assert.equal(g.size('a', 7), 7);
  });
});

describe('listeners', () => {
  it('tells every listener even when one throws, and stops telling a removed one', () => {
    const l = new Listeners<number>();
    const seen: number[] = [];
    l.add(() => {
      throw new Error('boom');
    });
    const off = l.add((n) => seen.push(n));
    l.emit(1);
    off();
    l.emit(2);
    assert.deepEqual(seen, [1]);
  });
});

describe('sliced work', () => {
  it('handles at most maxItems per slice and says whether more are left', () => {
    const q = new SlicedQueue<number>(3, 1000);
    for (let i = 0; i < 7; i++) q.push(i);
    const seen: number[] = [];
    assert.equal(q.runSlice((n) => seen.push(n)), true);
    assert.deepEqual(seen, [0, 1, 2]);
    assert.equal(q.backlog, 4);
    assert.equal(q.runSlice((n) => seen.push(n)), true);
    assert.equal(q.runSlice((n) => seen.push(n)), false);
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6]);
    assert.equal(q.backlog, 0);
  });

  it('stops a slice when its time is up, looking at the clock every 64 items', () => {
    const q = new SlicedQueue<number>(10_000, 4);
    for (let i = 0; i < 200; i++) q.push(i);
    let t = 0;
    let handled = 0;
    const more = q.runSlice(() => {
      handled++;
      t += 1;
    }, () => t);
    assert.equal(more, true);
    assert.equal(handled, 64, 'the first look at the clock after 64 items finds the slice over');
  });

  it('leaves items pushed while a slice runs for the next slice', () => {
    const q = new SlicedQueue<number>(10, 1000);
    q.push(1);
    const seen: number[] = [];
    const handle = (n: number) => {
      seen.push(n);
      if (n === 1) q.push(2);
    };
    assert.equal(q.runSlice(handle), true);
    assert.deepEqual(seen, [1]);
    assert.equal(q.runSlice(handle), false);
    assert.deepEqual(seen, [1, 2]);
  });

  it('yields between slices of async work and runs every item in order', async () => {
    let t = 0;
    let yields = 0;
    const seen: number[] = [];
    await forEachInSlices(
      [1, 2, 3, 4, 5],
      async (n) => {
        seen.push(n);
        t += 2;
      },
      3,
      () => t,
      async () => {
        yields++;
      },
    );
    assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    assert.equal(yields, 2, 'after items 2 and 4 the slice was over');
  });
});

describe('a dead owner’s leases', () => {

  it('move on a slice per turn of the event loop; one waited for moves at once, one asked for meanwhile moves then', async () => {
    // A recall of the dead holder would take recallTimeoutMs (a minute here) to end.
    const tier = new Tier({ recallTimeoutMs: 60_000 });
    const recalls: string[] = [];
    try {
      for (const id of ['dead', 'waiter', 'asker']) tier.attach(owner(id, recalls));
      const count = SLICE_ITEMS * 3;
      for (let i = 0; i < count; i++) await tier.acquire('dead', `s${i}`, 1000);
      // Waits on a lease far down the dead owner's set: the dead holder was recalled.
      const waited = tier.acquire('waiter', `s${count - 10}`, 1000);
      assert.deepEqual(recalls, [`dead s${count - 10}`]);
      tier.detach('dead');
      // Queued behind the drop's next slice: other work runs between two slices.
      let midway = 0;
      setImmediate(() => (midway = tier.stats().leases));
      const afterDetach = tier.stats().leases;
      assert.ok(count - afterDetach <= SLICE_ITEMS + 1, `one slice (and the waited-for lease) moves during detach itself: ${count - afterDetach} did`);
      assert.equal(await Promise.race([waited.then(() => 'granted'), nextTurn()]), 'granted', 'the waiter is answered at the detach, not when a slice reaches its lease');
      // Not reached by the drop yet: granted now, no recall sent to the dead holder.
      const asked = tier.acquire('asker', `s${count - 1}`, 1000);
      assert.equal(await Promise.race([asked.then(() => 'granted'), nextTurn()]), 'granted');
      assert.deepEqual(recalls, [`dead s${count - 10}`]);
      for (let i = 0; i < 1000 && tier.stats().leases > 2; i++) await nextTurn();
      assert.equal(tier.stats().leases, 2, 'the waiter’s and the asker’s');
      assert.ok(midway > 2, `work queued after the detach ran before the drop ended (${midway} leases left then)`);
    } finally {
      tier.close();
    }
  });

  it('a tier closed during a drop stops it; an owner id is not attached again while its drop runs', async () => {
    const tier = new Tier({ recallTimeoutMs: 60_000 });
    tier.attach(owner('dead'));
    for (let i = 0; i < SLICE_ITEMS * 3; i++) await tier.acquire('dead', `s${i}`, 1000);
    tier.detach('dead');
    assert.throws(() => tier.attach(owner('dead')), { code: 'KILN_ERR_INTERNAL' });
    const left = tier.stats().leases;
    tier.close();
    await nextTurn();
    await nextTurn();
    assert.equal(tier.stats().leases, left, 'no slice ran after the close');
  });
});

describe('expiry by slot', () => {
  const session = (id: string, idleTimeoutMs: number, lastAccessedAt: number) => ({ sessionId: id, commitId: `c-${id}`, baseVersion: 0, lastAccessedAt, set: [], del: [], idleTimeoutMs, release: true });

  /** `count` sessions made by the owner 'app' at time 10,000, each logged in as `principal`. */
  const logIn = async (tier: Tier, principal: string, count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const id = `${principal}-session-${String(i).padStart(6, '0')}`;
      const grant = await tier.acquire('app', id, 1000);
      await tier.commit('app', { ...session(id, 60_000, 10_000), token: grant.token, principal });
    }
  };

  it('log out everywhere writes its records in batches, not waiting for each one\'s write in turn', async () => {
    let pending: (() => void)[] = [];
    let appends = 0;
    let mostWaiting = 0;
    let filling = true;
    const storage = {
      append: (): Promise<void> => {
        if (filling) return Promise.resolve();
        appends++;
        return new Promise<void>((resolve) => {
          pending.push(resolve);
          mostWaiting = Math.max(mostWaiting, pending.length);
        });
      },
    };
    // The disk: every write made in a turn of the event loop lands at the end of that turn.
    const disk = setInterval(() => {
      for (const resolve of pending) resolve();
      pending = [];
    }, 1);
    const tier = new Tier({ storage, clock: () => 10_000 });
    try {
      tier.attach(owner('app'));
      await logIn(tier, 'alice', 3000);
      filling = false;
      assert.equal(await tier.destroyByPrincipal('alice'), 3000);
      assert.equal(appends, 3000, 'one record per session');
      // Waiting for each write in turn leaves one outstanding at a time.
      assert.ok(mostWaiting > 100 && mostWaiting <= 1024, `writes awaited together, at most 1,024 at once (${mostWaiting})`);
    } finally {
      clearInterval(disk);
      tier.close();
    }
  });

  it('log out everywhere whose record write fails rejects with that error, ends no more sessions, and leaves no rejection unhandled', async () => {
    let writes = 0;
    let failing = false;
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const storage = {
      append: (): Promise<void> => {
        if (!failing) return Promise.resolve();
        writes++;
        // The disk fills up at the 10th write; later ones fail too.
        return new Promise<void>((resolve, reject) => setImmediate(() => (writes >= 10 ? reject(new Error('ENOSPC')) : resolve())));
      },
    };
    const tier = new Tier({ storage, clock: () => 10_000 });
    try {
      tier.attach(owner('app'));
      await logIn(tier, 'bob', 5000);
      failing = true;
      await assert.rejects(tier.destroyByPrincipal('bob'), /ENOSPC/);
      await nextTurn();
      assert.deepEqual(unhandled, []);
      assert.ok(writes < 5000, `no session ended after the failure was seen (${writes} of 5,000 written)`);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      tier.close();
    }
  });

  it('a slot reused by a later session checks that session, early at most, and expires it on time', async () => {
    let now = 10_000;
    const events: string[] = [];
    const tier = new Tier({ clock: () => now, expirySweepMs: 60_000 });
    try {
      tier.attach(owner('app'));
      tier.onEvent((e) => events.push(`${e.type} ${e.sessionId}`));
      const commit = async (id: string, idle: number) => {
        const grant = await tier.acquire('app', id, 1000);
        await tier.commit('app', { ...session(id, idle, now), token: grant.token });
      };
      await commit('first-session-0000', 5_000);
      await tier.destroy(null, 'first-session-0000'); // its slot is free, its deadline (15 s) still there
      await commit('later-session-0000', 60_000); // takes the same slot; due at 70 s
      now = 15_500;
      tier.sweep();
      assert.deepEqual(events, ['destroyed first-session-0000'], 'the earlier deadline checked the later session, which was not due');
      now = 69_999;
      tier.sweep();
      assert.equal(tier.peek('later-session-0000') !== undefined, true, 'not due yet: still there');
      now = 70_000;
      tier.sweep();
      assert.deepEqual(events, ['destroyed first-session-0000', 'expired later-session-0000']);
    } finally {
      tier.close();
    }
  });

  it('a pass over more slots than one slice reads finds every due session, a slice per turn', async () => {
    let now = 1_000;
    const tier = new Tier({ clock: () => now, expirySweepMs: 60_000 });
    try {
      tier.attach(owner('app'));
      const count = 70_000; // past SCAN_SLICE (65,536)
      for (let i = 0; i < count; i++) {
        const id = `s-${String(i).padStart(12, '0')}`;
        const grant = await tier.acquire('app', id, 1000);
        await tier.commit('app', { ...session(id, i % 1000 === 0 ? 1_000 : 1_000_000, now), token: grant.token });
      }
      now = 5_000;
      tier.sweep();
      assert.ok(tier.sessionCount > count - 70, 'the first slice did not read every slot');
      for (let turn = 0; turn < 50 && tier.sessionCount > count - 70; turn++) await nextTurn();
      assert.equal(tier.sessionCount, count - 70, 'the sessions of the later slice expired too');
    } finally {
      tier.close();
    }
  });
});

describe('a commit and a disk that is behind (TierStorage.refusal, settled)', () => {
  const commit = (id: string, token: number, commitId: string, extra: Record<string, unknown> = {}) => ({ sessionId: id, token, commitId, baseVersion: 0, lastAccessedAt: 10_000, set: [['v', Uint8Array.of(0xa1, 0x61)]] as [string, Uint8Array][], del: [], ...extra });

  /** A storage whose disk the test runs: writes wait until `writeAll()`, and it refuses while `behind` is set. */
  function slowDisk() {
    let waiting: (() => void)[] = [];
    const disk = {
      behind: undefined as string | undefined,
      appends: 0,
      /** The last record given, weakly: a test may ask whether anything else keeps it. */
      lastRecord: undefined as WeakRef<object> | undefined,
      append: (record: object): Promise<void> => {
        disk.appends++;
        disk.lastRecord = new WeakRef(record);
        return new Promise<void>((resolve) => waiting.push(resolve));
      },
      refusal: (): string | undefined => disk.behind,
      settled: (): Promise<void> => (waiting.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => waiting.push(resolve))),
      writeAll: (): void => {
        const now = waiting;
        waiting = [];
        for (const resolve of now) resolve();
      },
    };
    return disk;
  }

  it('refuses a commit before applying it: no session, no record, the lease kept even with release', async () => {
    const disk = slowDisk();
    const tier = new Tier({ storage: disk, clock: () => 10_000 });
    try {
      tier.attach(owner('app'));
      disk.behind = 'the log is 64.0 MiB behind its disk';
      const grant = await tier.acquire('app', 's1', 1000);
      await assert.rejects(tier.commit('app', commit('s1', grant.token, 'c1', { release: true })), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && /^the log is 64\.0 MiB behind its disk; the commit was not applied, try again later$/.test(err.message));
      assert.equal(tier.sessionCount, 0);
      assert.equal(disk.appends, 0);
      assert.equal(tier.stats().counters.rejectedCommits, 1);
      // Still the holder: the client retries under the same lease.
      assert.equal((await tier.acquire('app', 's1', 1000)).token, grant.token);
      disk.behind = undefined;
      const done = tier.commit('app', commit('s1', grant.token, 'c1'));
      disk.writeAll();
      assert.equal((await done).version, 1);
    } finally {
      tier.close();
    }
  });

  it('while the disk is behind, a commit wrong in itself gets its own error, not the retryable refusal', async () => {
    const disk = slowDisk();
    const tier = new Tier({ storage: disk, clock: () => 10_000, limits: { maxAttributeBytes: 64 } });
    try {
      tier.attach(owner('app'));
      const grant = await tier.acquire('app', 's9', 1000);
      const created = tier.commit('app', commit('s9', grant.token, 'c1'));
      disk.writeAll();
      assert.equal((await created).version, 1);
      disk.behind = 'the log is 64.0 MiB behind its disk';
      // A retry of these after the disk caught up would fail the same way: a 503 would send
      // the client round its retries for nothing, and the app would see the wrong status.
      await assert.rejects(tier.commit('app', commit('s9', grant.token, 'c2', { baseVersion: 7 })), { code: 'KILN_ERR_CONFLICT' });
      await assert.rejects(tier.commit('app', commit('s9', grant.token, 'c3')), { code: 'KILN_ERR_SESSION_EXISTS' });
      await assert.rejects(tier.commit('app', commit('s9', grant.token, 'c4', { baseVersion: 1, set: [['v', new Uint8Array(65)]] })), { code: 'KILN_ERR_ATTRIBUTE_TOO_LARGE' });
      const other = await tier.acquire('app', 's-none', 1000);
      await assert.rejects(tier.commit('app', commit('s-none', other.token, 'c5', { baseVersion: 3 })), { code: 'KILN_ERR_SESSION_NOT_FOUND' });
      // One that would apply is refused, and changes nothing.
      await assert.rejects(tier.commit('app', commit('s9', grant.token, 'c6', { baseVersion: 1 })), { code: 'KILN_ERR_STORAGE_BEHIND' });
      assert.equal(tier.peek('s9')?.version, 1);
      assert.equal(disk.appends, 1);
      assert.equal(tier.stats().counters.rejectedCommits, 5);
    } finally {
      tier.close();
    }
  });

  it('keeps nothing of a commit that waits on the disk but its answer: the request and its values go once applied', async () => {
    const collect = collector();
    const disk = slowDisk();
    const tier = new Tier({ storage: disk, clock: () => 10_000 });
    try {
      tier.attach(owner('app'));
      const grant = await tier.acquire('app', 's8', 1000);
      const refs: WeakRef<object>[] = [];
      // Made in a function of its own, so that nothing of this test holds them.
      const send = (): Promise<{ version: number }> => {
        const value = Uint8Array.from([0xd9, 200, ...new Uint8Array(200).fill(0x61)]); // MessagePack: 200 × "a"
        const req = commit('s8', grant.token, 'c1', { set: [['v', value]] });
        refs.push(new WeakRef(value), new WeakRef(req));
        return tier.commit('app', req);
      };
      const pending = send();
      refs.push(disk.lastRecord!);
      // The client gave up on it and sends it again: the retry waits for the same record.
      const retry = send();
      await collect();
      // On a stalled disk, each waiting commit held its request and its record (the values
      // twice) beside the encoded record the log's backlog counts, and a retry its request.
      assert.deepEqual(refs.map((ref) => ref.deref() === undefined), [true, true, true, true, true], 'the values, the request, the record, and the retry are let go');
      assert.equal(disk.appends, 1);
      disk.writeAll();
      assert.equal((await pending).version, 1);
      assert.deepEqual(await retry, { version: 1, duplicate: true });
      assert.equal(tier.stats().counters.duplicateCommits, 1);
      assert.equal(tier.peek('s8')?.version, 1);
    } finally {
      tier.close();
    }
  });

  it('counts a retried commit whose first try\'s record the disk then refused as rejected, not as a duplicate', async () => {
    let refuse!: (err: Error) => void;
    const written = new Promise<void>((_, reject) => (refuse = reject));
    written.catch(() => undefined);
    const storage = { append: () => written, refusal: () => undefined, settled: () => written };
    const tier = new Tier({ storage, clock: () => 10_000 });
    try {
      tier.attach(owner('app'));
      const grant = await tier.acquire('app', 's10', 1000);
      const first = tier.commit('app', commit('s10', grant.token, 'c1'));
      const retry = tier.commit('app', commit('s10', grant.token, 'c1'));
      refuse(new Error('EIO'));
      await assert.rejects(first, /EIO/);
      await assert.rejects(retry, /EIO/);
      const { counters } = tier.stats();
      assert.equal(counters.duplicateCommits, 0);
      assert.equal(counters.rejectedCommits, 1, 'the retry; the first try was applied, its write failed');
    } finally {
      tier.close();
    }
  });

  it('acknowledges a retried commit only once the first try\'s record is written', async () => {
    const disk = slowDisk();
    const tier = new Tier({ storage: disk, clock: () => 10_000 });
    try {
      tier.attach(owner('app'));
      const grant = await tier.acquire('app', 's2', 1000);
      const first = tier.commit('app', commit('s2', grant.token, 'c2'));
      // The client gave up on the first try (its disk stalled) and sends the same commit again.
      const retry = tier.commit('app', commit('s2', grant.token, 'c2'));
      assert.equal(await Promise.race([retry.then(() => 'acknowledged'), nextTurn()]), 'next turn', 'not acknowledged ahead of the disk');
      // A retry that arrives while the disk is behind is told so, and waits nowhere.
      disk.behind = 'the log is 64.0 MiB behind its disk';
      await assert.rejects(tier.commit('app', commit('s2', grant.token, 'c2')), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && /the commit's first try is applied and waits for the disk/.test(err.message));
      // One that was waiting already is answered when the disk takes the record.
      disk.writeAll();
      assert.deepEqual(await retry, { version: 1, duplicate: true });
      assert.equal((await first).version, 1);
      assert.equal(tier.stats().counters.duplicateCommits, 1, 'counted when acknowledged');
    } finally {
      tier.close();
    }
  });
});
