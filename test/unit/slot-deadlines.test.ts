import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlotDeadlines } from '../../src/tier/slot-deadlines.js';
import { PAGE_SIZE } from '../../src/util/paged-array.js';

function pass(d: SlotDeadlines, now: number, max?: number): { due: number[]; slices: number } {
  const due: number[] = [];
  d.startPass();
  let slices = 1;
  while (d.scan(now, (slot) => due.push(slot), max)) slices++;
  return { due, slices };
}

describe('slot deadlines', () => {
  it('reports a slot once the second of its deadline has come, then forgets it until scheduled again', () => {
    const d = new SlotDeadlines();
    d.schedule(3, 100_500);
    d.schedule(5000, 300_000); // past the first capacity: grows
    d.schedule(4, Infinity);
    assert.deepEqual(pass(d, 99_999).due, []);
    assert.deepEqual(pass(d, 100_000).due, [3], 'up to a second early, never late');
    assert.deepEqual(pass(d, 1_000_000).due, [5000], 'slot 3 was cleared when reported');
    d.schedule(3, 2_000_000);
    assert.deepEqual(pass(d, 2_000_999).due, [3]);
  });

  it('keeps the earlier of two deadlines: a later one is left to the re-check', () => {
    const d = new SlotDeadlines();
    d.schedule(1, 500_000);
    d.schedule(1, 900_000);
    d.schedule(2, 900_000);
    d.schedule(2, 100_000);
    assert.deepEqual(pass(d, 499_000).due, [2]);
    assert.deepEqual(pass(d, 500_000).due, [1]);
  });

  it('deadlines at the edges: time 0 and past 2106 still come due', () => {
    const d = new SlotDeadlines();
    d.schedule(1, 0);
    d.schedule(2, 2 ** 45);
    assert.deepEqual(pass(d, 1000).due, [1]);
    assert.deepEqual(pass(d, 0xffffffff * 1000).due, [2]);
  });

  it('a pass runs in slices of the size asked, and a pass under way is not restarted', () => {
    const d = new SlotDeadlines();
    for (let slot = 0; slot < 10_000; slot += 1000) d.schedule(slot, 10_000);
    const due: number[] = [];
    d.startPass();
    assert.equal(d.scan(10_000, (slot) => due.push(slot), 2500), true);
    assert.deepEqual(due, [0, 1000, 2000]);
    d.startPass(); // a sweep while the pass runs: it goes on where it was
    while (d.scan(10_000, (slot) => due.push(slot), 2500));
    assert.deepEqual(due, [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]);
    assert.equal(d.scanning, false);
    assert.equal(pass(d, 10, 4096).slices, 4, '16,384 slots of capacity in slices of 4,096');
  });

  it('passes cross the pages the deadlines are kept in: a slice that spans an edge, and slices that end on one', () => {
    const d = new SlotDeadlines();
    const slots = [0, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, 3 * PAGE_SIZE - 1, 3 * PAGE_SIZE + 7];
    for (const slot of slots) d.schedule(slot, 5_000);
    d.schedule(2 * PAGE_SIZE, 9_000); // not due yet
    for (const max of [1000, PAGE_SIZE, PAGE_SIZE + 3, 5 * PAGE_SIZE]) {
      assert.deepEqual(pass(d, 5_000, max).due, slots, `slices of ${max}`);
      for (const slot of slots) d.schedule(slot, 5_000);
    }
    assert.deepEqual(pass(d, 9_000).due, [...slots.slice(0, 4), 2 * PAGE_SIZE, ...slots.slice(4)]);
    assert.deepEqual(pass(d, 9_000).due, [], 'each due once');
  });
});
