import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_LEASE_OPTIONS, LeaseTable, MAX_BOUNCE_ENTRIES, type LeaseEffects } from '../../src/tier/lease-table.js';

const opts = { recallTimeoutMs: 100, pingPongThreshold: 3, pingPongHalfLifeMs: 1000 };

/** A dead owner's whole drop, slice after slice of `step` leases, with what each slice did. */
function dropAll(t: LeaseTable, owner: string, now: number, step = 1000): { effects: LeaseEffects; slices: number } {
  const effects = t.beginDrop(owner, now);
  for (let slices = 1; ; slices++) {
    const slice = t.dropSlice(owner, now, step);
    effects.grants.push(...slice.effects.grants);
    effects.recalls.push(...slice.effects.recalls);
    effects.revokes.push(...slice.effects.revokes);
    if (slice.done) return { effects, slices };
    assert.ok(slices < 1_000_000, 'a drop ends');
  }
}

describe('lease table', () => {
  it('grants a free session at once, queues others and recalls the holder once', () => {
    const t = new LeaseTable(opts);
    const a = t.acquire('A', 's', 0);
    assert.equal(a.grants[0]?.owner, 'A');
    const b = t.acquire('B', 's', 1);
    assert.deepEqual(b.grants, []);
    assert.deepEqual(b.recalls, [{ owner: 'A', sessionId: 's', token: a.grants[0]!.token }]);
    const c = t.acquire('C', 's', 2);
    assert.deepEqual(c.recalls, [], 'one recall is outstanding already');
  });

  it('release hands over in queue order with a larger token, and recalls the next holder for the one behind', () => {
    const t = new LeaseTable(opts);
    const t1 = t.acquire('A', 's', 0).grants[0]!.token;
    t.acquire('B', 's', 0);
    t.acquire('C', 's', 0);
    const r = t.release('A', 's', t1, 5);
    assert.equal(r.grants[0]?.owner, 'B');
    assert.ok(r.grants[0]!.token > t1);
    assert.deepEqual(r.recalls.map((x) => x.owner), ['B'], 'C is waiting: B is asked to give it back after use');
    assert.equal(t.holderOf('s')?.owner, 'B');
  });

  it('ignores a release with a stale token', () => {
    const t = new LeaseTable(opts);
    const t1 = t.acquire('A', 's', 0).grants[0]!.token;
    assert.deepEqual(t.release('A', 's', t1 + 99, 0).grants, []);
    assert.equal(t.holderOf('s')?.owner, 'A');
  });

  it('revokes a holder that overruns its recall deadline', () => {
    const t = new LeaseTable(opts);
    const t1 = t.acquire('A', 's', 0).grants[0]!.token;
    t.acquire('B', 's', 10);
    assert.equal(t.nextRecallDeadline(), 110);
    assert.deepEqual(t.revokeOverdue(109).revokes, []);
    const r = t.revokeOverdue(110);
    assert.deepEqual(r.revokes, [{ owner: 'A', sessionId: 's', token: t1, reason: 'recall-timeout' }]);
    assert.equal(r.grants[0]?.owner, 'B');
    assert.equal(t.isCurrent('A', 's', t1), false);
  });

  it('moves every lease of a dead owner on and forgets its waits', () => {
    const t = new LeaseTable(opts);
    t.acquire('A', 's1', 0);
    t.acquire('A', 's2', 0);
    t.acquire('B', 's1', 0);
    t.acquire('C', 's3', 0);
    t.acquire('A', 's3', 0);
    const r = dropAll(t, 'A', 1).effects;
    assert.deepEqual(r.grants.map((g) => [g.owner, g.sessionId]), [['B', 's1']]);
    assert.equal(t.holderOf('s2'), undefined);
    assert.equal(t.release('C', 's3', t.holderOf('s3')!.token, 2).grants.length, 0, 'A no longer waits for s3');
  });

  it('counts waiters as they come and go, without a scan', () => {
    const t = new LeaseTable(opts);
    t.acquire('A', 's1', 0);
    t.acquire('A', 's2', 0);
    assert.equal(t.waitingCount(), 0);
    t.acquire('B', 's1', 0);
    t.acquire('C', 's1', 0);
    t.acquire('B', 's1', 0); // asking twice queues once
    t.acquire('C', 's2', 0);
    assert.equal(t.waitingCount(), 3);
    t.cancelWait('C', 's2');
    assert.equal(t.waitingCount(), 2);
    t.release('A', 's1', t.holderOf('s1')!.token, 1); // B gets it, C still waits
    assert.equal(t.waitingCount(), 1);
    dropAll(t, 'C', 2);
    assert.equal(t.waitingCount(), 0);
    assert.equal(t.release('B', 's1', t.holderOf('s1')!.token, 3).grants.length, 0, 'C no longer waits for s1');
    assert.equal(t.holderOf('s1'), undefined);
  });

  it("a dead owner's waits go, wherever it waited, and its leases go to their queues", () => {
    const t = new LeaseTable(opts);
    for (let i = 0; i < 100; i++) t.acquire(`h${i % 7}`, `s${i}`, 0);
    // W waits on every third session, behind V on every ninth.
    for (let i = 0; i < 100; i += 9) t.acquire('V', `s${i}`, 0);
    for (let i = 0; i < 100; i += 3) t.acquire('W', `s${i}`, 0);
    assert.equal(t.waitingCount(), 12 + 34);
    t.acquire('W', 'own', 0);
    t.acquire('X', 'own', 0);
    const dropped = dropAll(t, 'W', 1).effects;
    assert.deepEqual(dropped.grants.map((g) => [g.owner, g.sessionId]), [['X', 'own']]);
    assert.equal(t.waitingCount(), 12);
    for (let i = 0; i < 100; i++) {
      const grants = t.release(`h${i % 7}`, `s${i}`, t.holderOf(`s${i}`)!.token, 2).grants.map((g) => g.owner);
      assert.deepEqual(grants, i % 9 === 0 ? ['V'] : [], `s${i}`);
    }
    assert.equal(t.waitingCount(), 0);
    // W can wait again later, and is counted again.
    t.acquire('W', 's0', 3);
    assert.equal(t.waitingCount(), 1);
  });

  it("moves a dead owner's leases in slices of the size asked, each lease once; those waited for at once", () => {
    const t = new LeaseTable(opts);
    for (let i = 0; i < 1000; i++) t.acquire('D', `s${i}`, 0);
    for (let i = 0; i < 1000; i += 10) t.acquire('B', `s${i}`, 0);
    // B waited (D was recalled from those 100): B is answered now, wherever they are in D's set.
    const begun = t.beginDrop('D', 1);
    assert.equal(begun.grants.length, 100);
    assert.ok(begun.grants.every((g) => g.owner === 'B'));
    assert.equal(t.leasesHeldBy('D'), 900);
    const first = t.dropSlice('D', 1, 64);
    assert.equal(first.done, false);
    assert.equal(first.visited, 64);
    assert.equal(t.leasesHeldBy('D'), 900 - 64, 'one slice moves 64 (B’s, moved already, are not visited)');
    assert.deepEqual(first.effects.grants, []);
    let slices = 1;
    for (let slice = first; !slice.done; slices++) slice = t.dropSlice('D', 2, 64);
    assert.equal(slices, Math.ceil(900 / 64), 'each lease visited once');
    assert.equal(t.leasesHeldBy('D'), 0);
    assert.equal(t.isDropping('D'), false);
    assert.equal(t.size, 100, 'B’s; the others are free');
  });

  it('while a drop is under way, a lease it has not reached yet moves on as soon as someone asks', () => {
    const t = new LeaseTable(opts);
    for (let i = 0; i < 10; i++) t.acquire('D', `s${i}`, 0);
    t.acquire('W', 's5', 0); // waits, D was recalled
    assert.deepEqual(t.beginDrop('D', 1).grants.map((g) => [g.owner, g.sessionId]), [['W', 's5']]);
    assert.equal(t.isDropping('D'), true);
    // Free when asked: granted at once, no recall of the dead holder.
    const free = t.acquire('B', 's9', 1);
    assert.deepEqual(free.grants.map((g) => g.owner), ['B']);
    assert.deepEqual(free.recalls, []);
    // Moved to W at the drop's start: B queues behind W, W (alive) is recalled.
    const queued = t.acquire('B', 's5', 1);
    assert.deepEqual(queued.grants, []);
    assert.deepEqual(queued.recalls.map((r) => r.owner), ['W']);
    // The slices skip what moved already.
    const rest = dropAll(t, 'D', 2, 3);
    assert.deepEqual(rest.effects.grants, []);
    assert.equal(t.holderOf('s9')?.owner, 'B');
    assert.equal(t.holderOf('s0'), undefined);
    assert.equal(t.isDropping('D'), false);
  });

  it('a drop of an owner that held nothing is done at once', () => {
    const t = new LeaseTable(opts);
    t.acquire('A', 's', 0);
    t.acquire('N', 's', 0);
    assert.deepEqual(t.beginDrop('N', 1), { grants: [], recalls: [], revokes: [] });
    assert.deepEqual(t.dropSlice('N', 1, 10), { effects: { grants: [], recalls: [], revokes: [] }, done: true, visited: 0 });
    assert.equal(t.waitingCount(), 0);
    assert.equal(t.isDropping('N'), false);
  });

  it('a lease handed on with others still queued is recalled from its new holder, and moves at once if that one dies', () => {
    const t = new LeaseTable(opts);
    const first = t.acquire('A', 's', 0).grants[0]!.token;
    t.acquire('B', 's', 0);
    t.acquire('C', 's', 0);
    t.release('A', 's', first, 1); // B has it, C waits: B is recalled
    assert.deepEqual(t.beginDrop('B', 2).grants.map((g) => g.owner), ['C']);
  });

  it('tokens only grow', () => {
    const t = new LeaseTable(opts, 1000);
    let last = 1000;
    for (let i = 0; i < 50; i++) {
      const g = t.acquire(`o${i % 3}`, `s${i % 5}`, i).grants[0];
      if (g) {
        assert.ok(g.token > last);
        last = g.token;
        t.release(g.owner, g.sessionId, g.token, i);
      }
    }
  });

  it('flags a session bouncing between owners as ping-pong, and not one that stays', () => {
    const t = new LeaseTable(opts);
    let flagged = false;
    for (let i = 0; i < 6; i++) {
      const g = t.acquire(i % 2 ? 'A' : 'B', 'hot', i * 10).grants[0]!;
      flagged = g.releaseAfterUse;
      t.release(g.owner, 'hot', g.token, i * 10 + 1);
    }
    assert.equal(flagged, true);
    for (let i = 0; i < 6; i++) {
      const g = t.acquire('A', 'calm', i * 10).grants[0]!;
      assert.equal(g.releaseAfterUse, false);
      t.release('A', 'calm', g.token, i * 10 + 1);
    }
    const later = t.acquire('A', 'hot', 60_000).grants[0]!;
    assert.equal(later.releaseAfterUse, false, 'the flag decays');
  });

  it('a ping-pong history full of recent hand-overs costs a new session no walk over it', () => {
    let decays = 0;
    // decayed() reads the half-life once per entry it looks at: a count of entries walked.
    const counting = { recallTimeoutMs: 100, pingPongThreshold: 3, get pingPongHalfLifeMs() { decays++; return 1000; } };
    const t = new LeaseTable(counting);
    // Two connections bounce MAX_BOUNCE_ENTRIES ids between them: each entry a recent hand-over.
    for (let i = 0; i < MAX_BOUNCE_ENTRIES; i++) {
      for (const owner of ['A', 'B']) {
        const g = t.acquire(owner, `b${i}`, 0).grants[0]!;
        t.release(owner, `b${i}`, g.token, 0);
      }
    }
    decays = 0;
    for (let i = 0; i < 100; i++) {
      const g = t.acquire('C', `new${i}`, 1).grants[0]!;
      t.release('C', `new${i}`, g.token, 1);
    }
    assert.ok(decays <= 100, `100 grants of new ids looked at ${decays} entries`);
    // The sweep timer still makes room once the hand-overs have decayed.
    t.sweepBounces(60_000);
    let flagged = false;
    for (let i = 0; i < 6; i++) {
      const g = t.acquire(i % 2 ? 'A' : 'B', 'after', 60_000 + i).grants[0]!;
      flagged = g.releaseAfterUse;
      t.release(g.owner, 'after', g.token, 60_000 + i);
    }
    assert.equal(flagged, true, 'a session bouncing after the sweep is flagged again');
  });

  it('endSession tells the holder (unless it ended it) and passes the lease on', () => {
    const t = new LeaseTable(opts);
    const g = t.acquire('A', 's', 0).grants[0]!;
    t.acquire('B', 's', 0);
    const r = t.endSession('s', 'destroyed', 1);
    assert.deepEqual(r.revokes, [{ owner: 'A', sessionId: 's', token: g.token, reason: 'destroyed' }]);
    assert.equal(r.grants[0]?.owner, 'B');
    assert.deepEqual(t.endSession('s', 'destroyed', 2, 'B').revokes, []);
  });

  it('the next recall deadline follows recalls, hand-overs and releases, without scanning the table', () => {
    const t = new LeaseTable({ ...DEFAULT_LEASE_OPTIONS, recallTimeoutMs: 100 });
    for (let i = 0; i < 1000; i++) t.acquire('idle-holder', `s${i}`, 0);
    assert.equal(t.nextRecallDeadline(), Infinity);
    const first = t.acquire('a', 'x', 0).grants[0]!;
    t.acquire('b', 'x', 10); // recall a: deadline 110
    t.acquire('a', 'y', 20);
    t.acquire('b', 'y', 30); // recall a on y: deadline 130
    assert.equal(t.nextRecallDeadline(), 110);
    t.release('a', 'x', first.token, 40); // x goes to b, nobody else waits: no deadline for it
    assert.equal(t.nextRecallDeadline(), 130);
    const revoked = t.revokeOverdue(200);
    assert.deepEqual(revoked.revokes.map((r) => r.sessionId), ['y']);
    assert.equal(t.nextRecallDeadline(), Infinity);
  });
});
