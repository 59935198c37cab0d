import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PAGE_SIZE, PagedArray } from '../../src/util/paged-array.js';

describe('paged array', () => {
  it('grows by pages: elements set before stay, new ones read the fill, and no page is copied', () => {
    const next = new PagedArray(Int32Array, -1);
    assert.equal(next.length, 0);
    next.ensure(5);
    assert.equal(next.length, PAGE_SIZE);
    assert.equal(next.get(5), -1);
    next.set(5, 42);
    next.set(PAGE_SIZE - 1, 7);
    const first = next.page(0);
    next.ensure(3 * PAGE_SIZE + 2);
    assert.equal(next.length, 4 * PAGE_SIZE);
    assert.equal(next.byteLength, 4 * PAGE_SIZE * 4);
    assert.equal(next.page(0), first, 'the first page is the same array after growing');
    assert.equal(next.get(5), 42);
    assert.equal(next.get(PAGE_SIZE - 1), 7);
    assert.equal(next.get(PAGE_SIZE), -1);
    assert.equal(next.get(4 * PAGE_SIZE - 1), -1);
    next.ensure(10); // already addressable: nothing added
    assert.equal(next.length, 4 * PAGE_SIZE);
  });

  it('keeps each kind of number: u32 up to 2^32 - 1, i32 negatives, floats exact to 2^53', () => {
    const u = new PagedArray(Uint32Array, 0xffffffff);
    const f = new PagedArray(Float64Array);
    u.ensure(PAGE_SIZE);
    f.ensure(PAGE_SIZE);
    assert.equal(u.get(PAGE_SIZE + 3), 0xffffffff);
    assert.equal(f.get(PAGE_SIZE + 3), 0);
    f.set(PAGE_SIZE + 3, 2 ** 53 - 1);
    assert.equal(f.get(PAGE_SIZE + 3), 2 ** 53 - 1);
    assert.equal(f.byteLength, 2 * PAGE_SIZE * 8);
  });
});
