import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stallRun } from '../../bench/stall.js';

/**
 * Bulk work on the kiln server (100,000 sessions expiring at once with their leases
 * held, then the first listing of 100,000 sessions and "log out everywhere" of their
 * principal, then the death
 * of a client process holding 200,000 leases) must not hold up another client's
 * commits: it runs in slices that yield to the event loop.
 */
describe('no stall: mass expiry, the first listing, destroy by principal (100,000 sessions), a dead client (200,000 leases)', () => {
  it('a probe keeps its commits p99 under 50 ms through all four (one every 10 ms during the listing and while the dead client’s leases move)', async (t) => {
    const r = await stallRun(100_000);
    for (const [what, f] of [['mass expiry', r.expiry], ['destroy by principal', r.destroyByPrincipal], ['the first listing', r.firstListing], ['leases of a killed client', r.deadHolder]] as const) {
      t.diagnostic(`${what}: ${f.probes} probe commits, p50 ${f.p50Ms.toFixed(1)} ms, p99 ${f.p99Ms.toFixed(1)} ms, max ${f.maxMs.toFixed(1)} ms; the bulk work took ${f.bulkMs} ms`);
      assert.ok(f.probes >= 5, `${what}: only ${f.probes} probes ran during it`);
      assert.ok(f.p99Ms < 50, `${what}: probe p99 ${f.p99Ms.toFixed(1)} ms`);
    }
  });
});
