import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addHistograms, isHistogramSnapshot, LATENCY_BOUNDS_MS, LatencyRecorder, median } from '../../src/util/latency.js';

describe('latency recorder', () => {
  it('files each observation in the first bucket whose bound it does not exceed, +Inf past the last', () => {
    const r = new LatencyRecorder();
    for (const ms of [0.05, 0.1, 0.2, 3, 5000, 9000]) r.observe(ms);
    const s = r.snapshot();
    assert.equal(s.counts.length, LATENCY_BOUNDS_MS.length + 1);
    assert.equal(s.counts[0], 2, '0.05 and 0.1 are ≤ 0.1');
    assert.equal(s.counts[1], 1, '0.2 is ≤ 0.25');
    assert.equal(s.counts[LATENCY_BOUNDS_MS.indexOf(5)], 1, '3 is ≤ 5');
    assert.equal(s.counts[LATENCY_BOUNDS_MS.indexOf(5000)], 1);
    assert.equal(s.counts[LATENCY_BOUNDS_MS.length], 1, '9000 is past every bound');
    assert.equal(s.count, 6);
    assert.ok(Math.abs(s.sumMs - 14003.35) < 1e-9);
  });

  it('gives the median of the recent window only', () => {
    const r = new LatencyRecorder();
    const now = 1_000_000;
    r.observe(100, now - 60_000);
    for (const ms of [1, 2, 3]) r.observe(ms, now - 1000);
    assert.deepEqual(r.recent(5000, now), { count: 3, p50Ms: 2 });
    assert.deepEqual(new LatencyRecorder().recent(), { count: 0, p50Ms: 0 });
    assert.equal(median([4, 1, 3, 2]), 3, 'the upper middle of an even count');
  });

  it('adds snapshots bucket by bucket and skips ones with other bounds or bad counts', () => {
    const a = new LatencyRecorder();
    const b = new LatencyRecorder();
    a.observe(1);
    b.observe(1);
    b.observe(30);
    const junk = { boundsMs: [1, 2], counts: [1, 2, 3], sumMs: 1, count: 6 };
    const negative = { ...b.snapshot(), counts: b.snapshot().counts.map(() => -1) };
    assert.equal(isHistogramSnapshot(junk), false);
    assert.equal(isHistogramSnapshot(negative), false);
    assert.equal(isHistogramSnapshot(null), false);
    const total = addHistograms([a.snapshot(), b.snapshot(), junk as never, negative]);
    assert.equal(total.count, 3);
    assert.equal(total.counts[LATENCY_BOUNDS_MS.indexOf(1)], 2);
    assert.equal(total.counts[LATENCY_BOUNDS_MS.indexOf(50)], 1);
    assert.equal(total.sumMs, 32);
  });
});
