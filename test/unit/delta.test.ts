import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeAttribute } from '../../src/session/codec.js';
import { applyDelta, DeltaTracker } from '../../src/session/delta.js';

function base(values: Record<string, unknown>): Map<string, Uint8Array> {
  return new Map(Object.entries(values).map(([k, v]) => [k, encodeAttribute(k, v)]));
}

describe('delta tracker', () => {
  it('a request that only reads commits nothing', () => {
    const t = new DeltaTracker(base({ n: 1, cart: ['a'], big: 'x'.repeat(1000) }));
    assert.equal(t.get('n'), 1);
    assert.deepEqual(t.get('cart'), ['a']);
    assert.deepEqual(t.delta(), { set: [], del: [] });
  });

  it('sends only the attribute that changed, not the rest of a large session', () => {
    const items = Array.from({ length: 160 }, (_, i) => ({ sku: `sku-${i}`, qty: 1, title: 'a small object' }));
    const t = new DeltaTracker(base({ items, counter: 1 }));
    t.set('counter', 2);
    const d = t.delta();
    assert.deepEqual(d.set.map(([n]) => n), ['counter']);
    assert.ok(d.set[0]![1].length < 10);
  });

  it('detects in-place mutation of something read', () => {
    const t = new DeltaTracker(base({ cart: ['a'] }));
    (t.get('cart') as string[]).push('b');
    const d = t.delta();
    assert.deepEqual(d.set.map(([n]) => n), ['cart']);
    assert.ok(t.get('cart') === t.get('cart'), 'the same object is handed out again');
  });

  it('setting an equal value sends nothing; delete sends a delete only if it existed', () => {
    const t = new DeltaTracker(base({ a: { x: 1 }, b: 2 }));
    t.set('a', { x: 1 });
    t.delete('b');
    t.delete('never');
    assert.deepEqual(t.delta(), { set: [], del: ['b'] });
  });

  it('set(undefined) deletes; keys and has see the request view', () => {
    const t = new DeltaTracker(base({ a: 1, b: 2 }));
    t.set('a', undefined);
    t.set('c', 3);
    assert.deepEqual(t.keys().sort(), ['b', 'c']);
    assert.equal(t.has('a'), false);
    assert.equal(t.has('c'), true);
  });

  it('after rebase, only later changes are sent', () => {
    const b = base({ cart: [] as string[] });
    const t = new DeltaTracker(b);
    (t.get('cart') as string[]).push('a');
    const first = t.delta();
    t.rebase(applyDelta(b, first));
    assert.deepEqual(t.delta(), { set: [], del: [] });
    (t.get('cart') as string[]).push('b');
    assert.equal(t.delta().set.length, 1);
  });
});
