import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_LEASE_OPTIONS, LeaseTable } from '../../src/tier/lease-table.js';

const opts = { recallTimeoutMs: 100, pingPongThreshold: 3, pingPongHalfLifeMs: 1000 };

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

  it('moves every lease of a dead owner at once and forgets its waits', () => {
    const t = new LeaseTable(opts);
    t.acquire('A', 's1', 0);
    t.acquire('A', 's2', 0);
    t.acquire('B', 's1', 0);
    t.acquire('C', 's3', 0);
    t.acquire('A', 's3', 0);
    const r = t.dropOwner('A', 1);
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
    t.dropOwner('C', 2);
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
    const dropped = t.dropOwner('W', 1);
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
