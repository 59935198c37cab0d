import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SortedIds } from '../../src/tier/sorted-ids.js';

describe('SortedIds (the listing order kept by merging changes)', () => {
  it('matches a fresh sort after any sequence of adds and removes', () => {
    let seed = 3;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const live = new Set<string>();
    for (let i = 0; i < 3000; i++) live.add(`id${Math.floor(rand() * 1e9)}`);
    const index = new SortedIds(() => live);
    assert.deepEqual(index.view(), [...live].sort());
    for (let round = 0; round < 50; round++) {
      for (let k = 0; k < 40; k++) {
        if (rand() < 0.5) {
          const id = `id${Math.floor(rand() * 1e9)}`;
          if (!live.has(id)) {
            live.add(id);
            index.add(id);
          }
        } else {
          const victim = [...live][Math.floor(rand() * live.size)]!;
          live.delete(victim);
          index.remove(victim);
          if (rand() < 0.2) {
            // Made again before the next listing.
            live.add(victim);
            index.add(victim);
          }
        }
      }
      assert.deepEqual(index.view(), [...live].sort(), `round ${round}`);
    }
  });

  it('after more changes than half the ids, sorts everything again (the pending sets stay bounded)', () => {
    const live = new Set(['b', 'a']);
    const index = new SortedIds(() => live);
    index.view();
    for (let i = 0; i < 5000; i++) {
      live.add(`x${i}`);
      index.add(`x${i}`);
    }
    assert.deepEqual(index.view(), [...live].sort());
  });
});
