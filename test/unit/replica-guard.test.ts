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
    assert.equal(g.waitFor(10_000), 1);
    assert.equal(g.verdict(0, 10_000), 'refused');
  });

  it('best effort: a shortage is refused until ROLE has shown it for the grace, then commits go on with what remains', () => {
    const g = new ReplicaGuard(2, 'best-effort', 1000);
    assert.equal(g.waitFor(0), 2);
    // A replica stops confirming (dead, or being promoted): refused, not yet degraded.
    assert.equal(g.verdict(1, 0), 'refused');
    g.observe(1, 100);
    assert.equal(g.waitFor(500), 2, 'within the grace every commit still asks for all');
    assert.equal(g.verdict(1, 1099), 'refused');
    assert.ok(g.degraded(1100));
    assert.equal(g.waitFor(1100), 1, 'past the grace: waits for the replica it has');
    assert.equal(g.verdict(1, 1100), 'under-replicated');
    assert.equal(g.verdict(0, 1100), 'refused', 'a listed replica that did not confirm is lagging, not gone');
    // Later ROLE readings do not restart the clock; a full house ends the shortage.
    g.observe(0, 5000);
    assert.equal(g.waitFor(5000), 0);
    assert.equal(g.verdict(0, 5000), 'under-replicated');
    g.observe(2, 6000);
    assert.equal(g.waitFor(6000), 2);
    assert.equal(g.verdict(1, 6000), 'refused', 'waits for the replica again once it is back');
  });

  it('a failover starts over: the new master is not degraded by what the old one showed', () => {
    const g = new ReplicaGuard(1, 'best-effort', 1000);
    g.observe(0, 0);
    assert.ok(g.degraded(2000));
    g.reset();
    assert.ok(!g.degraded(2000));
    assert.equal(g.waitFor(2000), 1);
    assert.equal(g.verdict(0, 2000), 'refused');
  });
});
