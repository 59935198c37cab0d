import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RUN_IDS, SortedIds } from '../../src/tier/sorted-ids.js';

describe('SortedIds (the listing order kept by merging changes)', () => {
  it('matches a fresh sort after any sequence of adds and removes', async () => {
    let seed = 3;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const live = new Set<string>();
    for (let i = 0; i < 3000; i++) live.add(`id${Math.floor(rand() * 1e9)}`);
    const index = new SortedIds(() => live);
    assert.deepEqual(await index.view(), [...live].sort());
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
      assert.deepEqual(await index.view(), [...live].sort(), `round ${round}`);
    }
  });

  it('after more changes than half the ids, sorts everything again (the pending sets stay bounded)', async () => {
    const live = new Set(['b', 'a']);
    const index = new SortedIds(() => live);
    await index.view();
    for (let i = 0; i < 5000; i++) {
      live.add(`x${i}`);
      index.add(`x${i}`);
    }
    assert.deepEqual(await index.view(), [...live].sort());
  });

  it('builds the order in slices, yielding between them, and keeps the changes made meanwhile', async () => {
    let seed = 11;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const live = new Set<string>();
    while (live.size < 3 * RUN_IDS + 17) live.add(`s${Math.floor(rand() * 1e12)}`);
    let clock = 0;
    let yields = 0;
    const gathered = [...live].slice(0, 50);
    const index = new SortedIds(
      () => live,
      async () => {
        yields++;
        // Between slices the server goes on: sessions are made and removed, some of them
        // already gathered, some made again after their removal.
        const made = `s${Math.floor(rand() * 1e12)}`;
        live.add(made);
        index.add(made);
        const gone = gathered[yields % gathered.length]!;
        if (live.delete(gone)) index.remove(gone);
        if (yields % 3 === 0) {
          live.add(gone);
          index.add(gone);
        }
      },
      () => (clock += 1), // 4 ms pass every few readings: many slices
    );
    const order = await index.view();
    assert.ok(yields >= 5, `the build yielded (${yields} times)`);
    assert.deepEqual(order, [...live].sort());
    assert.equal(new Set(order).size, order.length, 'every id once');
  });

  it('a reset while the order is built starts the build again; listings made meanwhile wait for it', async () => {
    const live = new Set(Array.from({ length: 2 * RUN_IDS + 5 }, (_, i) => `id${(i * 7919) % 100_003}`));
    let clock = 0;
    let resets = 1;
    const index: SortedIds = new SortedIds(
      () => live,
      async () => {
        if (resets-- > 0) {
          live.add('zz-after-reset');
          index.reset();
        }
      },
      () => (clock += 1),
    );
    const [first, second] = await Promise.all([index.view(), index.view()]);
    assert.deepEqual(first, [...live].sort());
    assert.deepEqual(second, first);
    assert.ok(first.includes('zz-after-reset'));
  });
});
