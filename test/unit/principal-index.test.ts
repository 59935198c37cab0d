import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PrincipalIndex } from '../../src/tier/principal-index.js';

describe('principal index', () => {
  it('lists and counts a principal\'s slots through removals at the head, middle and tail', () => {
    const index = new PrincipalIndex();
    assert.equal(index.count('ann'), 0);
    assert.deepEqual(index.slotsOf('ann'), []);
    for (const slot of [3, 7, 9, 12]) index.add('ann', slot);
    index.add('bob', 5);
    assert.deepEqual(index.slotsOf('ann'), [12, 9, 7, 3], 'newest first');
    assert.equal(index.count('ann'), 4);
    // A slot not in that principal's list (a caller's mistake) changes nothing.
    index.remove('ann', 5);
    index.remove('ann', 4);
    index.remove('ann', 100_000);
    assert.deepEqual(index.slotsOf('ann'), [12, 9, 7, 3]);
    assert.equal(index.count('ann'), 4);
    assert.deepEqual(index.slotsOf('bob'), [5]);
    index.remove('ann', 9); // middle
    assert.deepEqual(index.slotsOf('ann'), [12, 7, 3]);
    index.remove('ann', 12); // head: the count moves to the next one
    assert.deepEqual(index.slotsOf('ann'), [7, 3]);
    assert.equal(index.count('ann'), 2);
    index.remove('ann', 3); // tail
    assert.deepEqual(index.slotsOf('ann'), [7]);
    assert.equal(index.count('ann'), 1);
    index.remove('ann', 7);
    assert.equal(index.count('ann'), 0);
    assert.equal(index.principals, 1, 'a principal with no session leaves the index');
    assert.deepEqual(index.slotsOf('bob'), [5]);
    index.remove('nobody', 5);
    assert.deepEqual(index.slotsOf('bob'), [5], 'removing under another principal changes nothing');
  });

  it('stays in step with a model through many adds, moves and removals, slots reused', () => {
    const index = new PrincipalIndex();
    const model = new Map<number, string>(); // slot → principal
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 16) % n;
    };
    for (let step = 0; step < 20_000; step++) {
      const slot = random(3000); // past the first 1,024: the arrays grow
      const principal = `p${random(40)}`;
      const was = model.get(slot);
      if (was === undefined) {
        index.add(principal, slot);
        model.set(slot, principal);
      } else if (random(3) === 0) {
        index.remove(was, slot);
        model.delete(slot);
      } else if (was !== principal) {
        index.remove(was, slot);
        index.add(principal, slot);
        model.set(slot, principal);
      }
    }
    assert.ok(new Set(model.values()).size >= 38, 'most principals in use');
    assert.ok(model.size > 1500, `many slots in use (${model.size})`);
    for (let p = 0; p < 40; p++) {
      const principal = `p${p}`;
      const expected = [...model].filter(([, q]) => q === principal).map(([slot]) => slot).sort((x, y) => x - y);
      assert.deepEqual(index.slotsOf(principal).sort((x, y) => x - y), expected, principal);
      assert.equal(index.count(principal), expected.length, principal);
    }
  });
});
