import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeadlineHeap } from '../../src/tier/deadline-heap.js';

describe('DeadlineHeap', () => {
  it('gives the earliest current deadline and pops what is due in order, dropping stale entries', () => {
    const live = new Map<string, number>();
    const heap = new DeadlineHeap<string>((key, deadline) => live.get(key) === deadline);
    const put = (key: string, deadline: number) => {
      live.set(key, deadline);
      heap.push(deadline, key);
    };
    assert.equal(heap.next(), Infinity);
    put('a', 50);
    put('b', 10);
    put('c', 30);
    assert.equal(heap.next(), 10);
    live.delete('b'); // b's recall ended: its entry is stale
    assert.equal(heap.next(), 30);
    put('a', 20); // a moved earlier: the old entry (50) is stale
    assert.deepEqual(heap.popDue(35), ['a', 'c']);
    assert.equal(heap.next(), Infinity, 'a@50 is stale');
    assert.equal(heap.size, 0);
  });

  it('matches a sorted list on random pushes and pops', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const heap = new DeadlineHeap<number>(() => true);
    const all: number[] = [];
    for (let i = 0; i < 5000; i++) {
      const d = Math.floor(rand() * 100_000);
      heap.push(d, d);
      all.push(d);
    }
    all.sort((a, b) => a - b);
    assert.deepEqual(heap.popDue(50_000), all.filter((d) => d <= 50_000));
    assert.equal(heap.next(), all.find((d) => d > 50_000));
  });
});
