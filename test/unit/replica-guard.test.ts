import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReplicaGuard } from '../../src/engines/redis/replica-guard.js';

/** What replica confirmations mean under each replicaPolicy (pure; the engine feeds it ROLE and WAIT). */
describe('replica guard', () => {
  it('strict: fewer confirmations are always refused, and every commit waits for all', () => {
    const g = new ReplicaGuard(1, 'strict', 1000);
    assert.equal(g.verdict(1, 0), 'confirmed');
    g.observe(0, 0);
    assert.equal(g.seenOnline, 0);
    assert.equal(g.plan(10_000).waitFor, 1);
    assert.equal(g.verdict(0, 10_000), 'refused');
  });

  it('best effort: a shortage is refused until ROLE has shown it for the grace, then commits go on with what remains', () => {
    const g = new ReplicaGuard(2, 'best-effort', 1000);
    assert.equal(g.plan(0).waitFor, 2);
    // A replica stops confirming (dead, or being promoted): refused, not yet degraded.
    assert.equal(g.verdict(1, 0), 'refused');
    g.observe(1, 100);
    assert.deepEqual(g.plan(500), { waitFor: 0, refuse: true, probe: true }, 'within the grace: refused unsent, like strict');
    assert.equal(g.verdict(1, 1099), 'refused');
    assert.ok(g.degraded(1100));
    assert.deepEqual(g.plan(1100), { waitFor: 1, refuse: false, probe: false }, 'past the grace: waits for the replica it has');
    assert.equal(g.verdict(1, 1100), 'under-replicated');
    assert.equal(g.verdict(0, 1100), 'refused', 'a listed replica that did not confirm is lagging, not gone');
    // Later ROLE readings do not restart the clock; a full house ends the shortage.
    g.observe(0, 5000);
    assert.equal(g.plan(5000).waitFor, 0);
    assert.equal(g.verdict(0, 5000), 'under-replicated');
    // Both back and acknowledging (the heartbeat's ROLE, read twice: the first look notes the offset to pass).
    g.observe(2, 6000);
    g.roleSeen('', { masterOffset: 10, replicaOffsets: [5, 5] }, 6000);
    g.roleSeen('', { masterOffset: 20, replicaOffsets: [10, 12] }, 6100);
    assert.deepEqual(g.plan(6100), { waitFor: 2, refuse: false, probe: false });
    assert.equal(g.verdict(1, 6100), 'refused', 'waits for the replica again once it is back');
  });

  it('a failover starts over: the new master is not degraded by what the old one showed', () => {
    const g = new ReplicaGuard(1, 'best-effort', 1000);
    g.observe(0, 0);
    assert.ok(g.degraded(2000));
    g.reset();
    assert.ok(!g.degraded(2000));
    assert.equal(g.plan(2000).waitFor, 1);
    assert.equal(g.verdict(0, 2000), 'refused');
  });

  it('a known shortage refuses commits unsent and asks ROLE at most once per spacing; replicas acknowledging past the master offset, or a confirmed WAIT, end it', () => {
    const g = new ReplicaGuard(1, 'strict', 1000, 250);
    assert.deepEqual(g.plan(0), { waitFor: 1, refuse: false, probe: false });
    // A WAIT that asked for the replica came back short: the shortage is known.
    assert.equal(g.verdict(0, 0, 1), 'refused');
    assert.ok(g.isShort());
    assert.deepEqual(g.plan(10), { waitFor: 0, refuse: true, probe: true }, 'refused unsent, ROLE asked at once');
    assert.deepEqual(g.plan(100), { waitFor: 0, refuse: true, probe: false }, 'once per spacing');
    g.roleSeen('', { masterOffset: 1000, replicaOffsets: [990] }, 120);
    assert.ok(g.isShort(), 'the first look notes the master offset to pass');
    assert.equal(g.plan(260).probe, true);
    // Frozen or cut off without a reset: still listed, acknowledging nothing new.
    g.roleSeen('', { masterOffset: 1200, replicaOffsets: [995] }, 270);
    assert.ok(g.isShort(), 'listed, but not acknowledging past 1,000');
    g.roleSeen('', { masterOffset: 1300, replicaOffsets: [1000] }, 520);
    assert.ok(!g.isShort());
    assert.deepEqual(g.plan(520), { waitFor: 1, refuse: false, probe: false }, 'WAITs again');
    // ROLE listing fewer (the heartbeat's, or a probe's) starts one, with the offset to pass.
    g.roleSeen('', { masterOffset: 2000, replicaOffsets: [] }, 600);
    assert.ok(g.plan(600).refuse);
    g.roleSeen('', { masterOffset: 2100, replicaOffsets: [1999] }, 900);
    assert.ok(g.isShort());
    g.roleSeen('', { masterOffset: 2100, replicaOffsets: [2000] }, 1000);
    assert.ok(!g.isShort());
    // A confirmed WAIT ends one too.
    g.verdict(0, 1100, 1);
    assert.equal(g.verdict(1, 1200, 1), 'confirmed');
    assert.ok(!g.isShort());
    // A commit refused unsent (it waited for none) tells nothing of the replicas.
    g.verdict(0, 1300, 0);
    assert.ok(!g.isShort());
  });

  it('a shortage is kept per connection (a cluster shard without its replica stops only its own commits), and a failover clears them', () => {
    const g = new ReplicaGuard(1, 'strict', 1000, 250);
    g.verdict(0, 0, 1, '127.0.0.1:7001');
    assert.ok(g.plan(10, '127.0.0.1:7001').refuse);
    assert.ok(!g.plan(10, '127.0.0.1:7002').refuse);
    g.reset();
    assert.ok(!g.plan(20, '127.0.0.1:7001').refuse);
  });

  it('best effort past its grace is not refused unsent: it waits for the replicas that remain', () => {
    const g = new ReplicaGuard(2, 'best-effort', 1000, 250);
    g.observe(1, 0);
    g.roleSeen('', { masterOffset: 10, replicaOffsets: [10] }, 0);
    assert.ok(g.plan(500).refuse, 'within the grace: refused unsent, like strict');
    assert.deepEqual(g.plan(1000), { waitFor: 1, refuse: false, probe: false });
    assert.equal(g.verdict(1, 1000, 1), 'under-replicated');
  });

  it("best effort's grace is kept per connection: one cluster shard short past it does not let another shard's commits go unconfirmed", () => {
    const g = new ReplicaGuard(1, 'best-effort', 1000, 250);
    const [short, healthy] = ['127.0.0.1:7000', '127.0.0.1:7001'];
    g.observe(0, 0, short);
    g.observe(1, 0, healthy);
    assert.ok(g.degraded(1500, short));
    assert.deepEqual(g.plan(1500, short), { waitFor: 0, refuse: false, probe: false }, 'the short shard carries on with what it has');
    assert.equal(g.verdict(0, 1500, 0, short), 'under-replicated');
    assert.ok(!g.degraded(1500, healthy));
    assert.deepEqual(g.plan(1500, healthy), { waitFor: 1, refuse: false, probe: false }, 'the other still waits for its replica');
    assert.equal(g.verdict(0, 1500, 1, healthy), 'refused', 'and is refused when it does not confirm');
    assert.equal(g.seenOnline, 0, 'replicas online: the shard worst off');
    // The short shard's replica back: its clock stops.
    g.observe(1, 2000, short);
    assert.ok(!g.degraded(2000, short));
    assert.equal(g.seenOnline, 1);
  });

  it("a cluster failover forgets only what was seen of masters that are masters no more: another shard keeps its shortage and its grace", () => {
    const g = new ReplicaGuard(1, 'best-effort', 1000, 250);
    const [failed, other, promoted] = ['127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7004'];
    g.verdict(0, 0, 1, failed);
    g.observe(0, 0, failed);
    g.verdict(0, 0, 1, other);
    g.observe(0, 0, other);
    assert.ok(g.degraded(1500, other), 'the other shard carries on past its grace');
    // 7001's replica (7004) took over; 7002 is still its shard's master.
    g.reset([other, promoted, '127.0.0.1:7003']);
    assert.ok(g.degraded(1500, other) && g.isShort(other), 'the other shard as it was: not refused again for a whole grace');
    assert.ok(!g.isShort(failed) && !g.degraded(1500, failed), 'the old master forgotten');
    assert.deepEqual(g.plan(1500, promoted), { waitFor: 1, refuse: false, probe: false }, 'the new master seen afresh');
  });
});
