import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultReconnect, doubling } from '../../src/util/backoff.js';
import { settlesWithin } from '../../src/util/deadline.js';

describe('retry schedules and bounded waits (util)', () => {
  it('doubling: the first delay, doubled each try, capped; never below the first', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 100].map((n) => doubling(n, 50, 1000)), [50, 100, 200, 400, 800, 1000, 1000, 1000]);
    assert.equal(doubling(0, 1000, 30_000), 1000);
    assert.equal(doubling(Number.MAX_SAFE_INTEGER, 1000, 30_000), 30_000);
    // The reconnect schedule is the same doubling, jittered to between half and all of it.
    for (let attempt = 1; attempt <= 12; attempt++) {
      const delay = defaultReconnect(attempt);
      const base = doubling(attempt, 50, 2000);
      assert.ok(delay >= base / 2 && delay <= base, `attempt ${attempt}: ${delay} ms against ${base}`);
    }
  });

  it('settlesWithin: true for a promise that resolves or rejects in time, false for one that does not', async () => {
    assert.equal(await settlesWithin(Promise.resolve(1), 50), true);
    assert.equal(await settlesWithin(Promise.reject(new Error('refused')), 50), true);
    assert.equal(await settlesWithin(new Promise(() => undefined), 20), false);
  });
});
