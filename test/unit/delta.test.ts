import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeAttribute, encodeAttribute } from '../../src/session/codec.js';
import { applyDelta, DeltaTracker, knownScalar } from '../../src/session/delta.js';
import { applyPatch } from '../../src/session/model.js';

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

  it('a scalar one request writes is read by the next without decoding, as decoding would give it', () => {
    const b = base({ visits: 1, user: 'ada' });
    const first = new DeltaTracker(b, true);
    first.set('visits', (first.get('visits') as number) + 1);
    const next = applyDelta(b, first.delta());
    assert.equal(knownScalar(next.get('visits')!), 2, 'the committed bytes come with their value');
    assert.equal(new DeltaTracker(next, true).get('visits'), 2);

    // Whatever is filed must be exactly what decoding gives; what would not come back
    // the same (-0, a lone surrogate) is left to decoding.
    const committedBytes = (value: unknown): Uint8Array => {
      const t = new DeltaTracker(base({ v: 'before' }), true);
      t.set('v', value);
      return t.delta().set[0]![1];
    };
    const scalars: unknown[] = [0, -0, NaN, 0.1, -1.5e-300, 1e300, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 + 2, Number.MAX_VALUE, '', 'héllo', 'x'.repeat(70_000), '\u{1F600}', '\uD800', 'a\uDC00b', true, false, null];
    for (const value of scalars) {
      const bytes = committedBytes(value);
      const known = knownScalar(bytes);
      if (known !== undefined) assert.ok(Object.is(known, decodeAttribute(bytes)), `${String(value)} is filed as it decodes`);
    }
    const filed = (value: unknown) => knownScalar(committedBytes(value)) !== undefined;
    assert.deepEqual([-0, '\uD800'].map(filed), [false, false]);
    assert.deepEqual([0, NaN, 'héllo', true, null].map(filed), [true, true, true, true, true]);
  });

  it('a small change inside a large value travels as a patch of the changed bytes', () => {
    const items = Array.from({ length: 160 }, (_, i) => ({ sku: `SKU-${10_000 + i}`, name: `item ${i}`, qty: 1 }));
    const start = base({ items, small: { a: 1 } });
    const t = new DeltaTracker(start);
    (t.get('items') as { qty: number }[])[80]!.qty = 7;
    items[80]!.qty = 7; // the same change on our copy, to compare with
    (t.get('small') as { a: number }).a = 2;
    const delta = t.delta();
    assert.deepEqual(delta.set.map(([name]) => name), ['small'], 'a small value goes whole');
    assert.equal(delta.patch?.length, 1);
    const patch = delta.patch![0]!;
    assert.equal(patch.name, 'items');
    assert.ok(patch.bytes.length <= 2 && patch.cut <= 2, `patch of ${patch.bytes.length} bytes for a one-digit change`);
    const next = applyDelta(start, delta);
    assert.equal(Buffer.compare(next.get('items')!, encodeAttribute('items', items)), 0);
    // What the tier does with the bytes alone (without the client's copy of the whole value):
    assert.equal(Buffer.compare(applyPatch(start.get('items')!, patch), encodeAttribute('items', items)), 0);
  });

  it('a change touching most of a large value goes whole', () => {
    const start = base({ list: Array.from({ length: 100 }, (_, i) => i) });
    const t = new DeltaTracker(start);
    t.set('list', Array.from({ length: 100 }, (_, i) => i * 3));
    const delta = t.delta();
    assert.equal(delta.patch, undefined);
    assert.equal(delta.set.length, 1);
  });
});
