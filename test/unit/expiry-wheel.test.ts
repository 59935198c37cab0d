import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ExpiryWheel } from '../../src/tier/expiry-wheel.js';

describe('expiry wheel', () => {
  it('returns keys once their bucket has come, never early', () => {
    const w = new ExpiryWheel<string>(100);
    w.schedule('a', 250);
    w.schedule('b', 1000);
    w.schedule('never', Infinity);
    assert.deepEqual(w.due(200), []);
    assert.deepEqual(w.due(300), ['a']);
    assert.deepEqual(w.due(300), []);
    assert.deepEqual(w.due(5000), ['b']);
    assert.equal(w.bucketCount, 0);
  });

  it('handles keys scheduled in the past and behind the cursor', () => {
    const w = new ExpiryWheel<string>(100);
    w.schedule('late', 10_000);
    assert.deepEqual(w.due(500), []);
    w.schedule('past', 50);
    assert.deepEqual(w.due(600), ['past']);
    assert.deepEqual(w.due(10_000), ['late']);
  });

  it('returns a key scheduled twice for one bucket once', () => {
    const w = new ExpiryWheel<string>(100);
    w.schedule('a', 120);
    w.schedule('b', 150);
    w.schedule('a', 180);
    assert.deepEqual(w.due(200), ['a', 'b']);
    assert.equal(w.bucketCount, 0);
  });
});
