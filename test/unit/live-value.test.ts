import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bytesEqual, decodeAttribute, encodeAttribute } from '../../src/session/codec.js';
import { applyDelta, DeltaTracker } from '../../src/session/delta.js';
import { checkOut, lastWriteStamp } from '../../src/session/live-value.js';
import { applyPatch } from '../../src/session/model.js';
import { locateValue, skipValue } from '../../src/session/msgpack-walk.js';
import { isKilnError } from '../../src/errors/index.js';

function base(values: Record<string, unknown>): Map<string, Uint8Array> {
  return new Map(Object.entries(values).map(([k, v]) => [k, encodeAttribute(k, v)]));
}

function bigList(n = 160): { sku: string; qty: number; tags: string[]; price: number }[] {
  return Array.from({ length: n }, (_, k) => ({ sku: `SKU-${10_000 + k}`, qty: 1, tags: ['seasonal', 'in-stock'], price: 1250 + k }));
}

/** A small deterministic random source, so a failure replays. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('msgpack walk', () => {
  it('skips every kind of plain value exactly as far as msgpackr wrote it', () => {
    const values: unknown[] = [
      0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32, -1, -32, -33, -129, -32769, -(2 ** 31) - 1, 1.5, -0.25, 2 ** 60,
      '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(70_000), 'žluťoučký kůň',
      null, true, false, undefined, new Date(0), new Date(1_764_000_000_123), new Date(-1), new Date(2 ** 40 * 1000),
      [], [1, [2, [3]]], Array.from({ length: 20 }, (_, i) => i), Array.from({ length: 70_000 }, () => 0),
      {}, { a: 1, b: { c: [1, 2, { d: 'e' }] } }, Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i])),
    ];
    for (const value of values) {
      const bytes = encodeAttribute('v', value);
      const padded = new Uint8Array(bytes.length + 3);
      padded.set(bytes, 1);
      assert.equal(skipValue(padded, 1), bytes.length + 1, `skip of ${String(value).slice(0, 40)}`);
    }
  });

  it('locates a nested value by map keys and array indexes', () => {
    const value = { user: 'u', items: bigList(10), prefs: { theme: 'dark', 'ключ': [1, 2, 3] } };
    const bytes = encodeAttribute('v', value);
    for (const [path, expected] of [
      [['items', '7'], value.items[7]],
      [['items', '7', 'tags', '1'], 'in-stock'],
      [['prefs', 'ключ'], [1, 2, 3]],
      [[], value],
    ] as [string[], unknown][]) {
      const range = locateValue(bytes, path);
      assert.ok(range, path.join('.'));
      assert.deepEqual(decodeAttribute(bytes.subarray(range[0], range[1])), expected);
    }
    assert.equal(locateValue(bytes, ['items', '10']), undefined, 'past the end');
    assert.equal(locateValue(bytes, ['items', '01']), undefined, 'not a canonical index');
    assert.equal(locateValue(bytes, ['missing']), undefined);
    assert.equal(locateValue(bytes, ['user', 'x']), undefined, 'a string has no children');
  });

  it('gives up on msgpackr extensions it cannot skip (a Set before the target)', () => {
    const bytes = encodeAttribute('v', { tags: new Set(['a']), after: { x: 1 } });
    assert.equal(locateValue(bytes, ['after']), undefined);
  });
});

describe('live values (decoded values kept across requests)', () => {
  it('a change of one field of a 20 KB list sends a few bytes and re-decodes nothing next time', () => {
    const start = base({ items: bigList(), user: 'u' });
    const t1 = new DeltaTracker(start, true);
    const items = t1.get('items') as { qty: number }[];
    items[42]!.qty++;
    const d = t1.delta();
    assert.equal(d.set.length, 0);
    assert.equal(d.patch?.length, 1);
    assert.ok(d.patch![0]!.bytes.length <= 2, `patch of ${d.patch![0]!.bytes.length} B`);
    const next = applyDelta(start, d);
    assert.deepEqual(decodeAttribute(next.get('items')!), (() => { const l = bigList(); l[42]!.qty = 2; return l; })());
    t1.rebase(next);
    t1.retire(true);
    assert.throws(() => { items[1]!.qty = 5; }, (err: unknown) => isKilnError(err, 'KILN_ERR_CLOSED'));

    // The next request gets the same tree back (checked out, so taken from the idle set).
    const t2 = new DeltaTracker(next, true);
    const again = t2.get('items') as { qty: number }[];
    assert.equal(again[42]!.qty, 2);
    assert.equal(checkOut(next.get('items')!), undefined, 'in use by the second request');
    assert.deepEqual(t2.delta(), { set: [], del: [] });
    assert.ok(t2.pristine, 'reading a watched list leaves the request pristine');
    t2.retire(true);
    assert.ok(checkOut(next.get('items')!), 'kept again after a request that changed nothing');
  });

  it('a change that keeps a large value\'s length is an overwrite: a copied patch, written over the value only where the commit allows it', () => {
    const start = base({ items: bigList(), user: 'u' });
    const expected = bigList();
    const change = (state: Map<string, Uint8Array>, k: number, qty: number) => {
      const t = new DeltaTracker(state, true);
      (t.get('items') as { qty: number }[])[k]!.qty = qty;
      expected[k]!.qty = qty;
      return { t, d: t.delta() };
    };
    const committed = (inPlace: boolean) => ({ inPlace, overwrittenInPlace: 0 });

    // From bytes the client did not make itself (a load): copied, the loaded bytes untouched.
    const loaded = start.get('items')!;
    const loadedCopy = Uint8Array.from(loaded);
    const first = change(start, 42, 2);
    const p1 = first.d.patch![0]!;
    assert.equal(p1.value, undefined, 'the value is made when the commit is applied');
    assert.ok(p1.bytes.length <= 2 && p1.cut === p1.bytes.length, `${p1.bytes.length} B over ${p1.cut}`);
    assert.notEqual(p1.bytes.buffer, loaded.buffer, 'the patch holds a copy of its bytes');
    const c1 = committed(true);
    const s1 = applyDelta(start, first.d, c1);
    assert.equal(c1.overwrittenInPlace, 0);
    assert.notEqual(s1.get('items'), loaded);
    assert.ok(bytesEqual(loaded, loadedCopy), 'the loaded bytes are not written to');
    first.t.rebase(s1);
    first.t.retire(true);

    // From a value the commits made: overwritten in place; the earlier patch keeps its bytes.
    const p1Bytes = Uint8Array.from(p1.bytes);
    const second = change(s1, 42, 3);
    const c2 = committed(true);
    const s2 = applyDelta(s1, second.d, c2);
    assert.equal(c2.overwrittenInPlace, 1);
    assert.equal(s2.get('items'), s1.get('items'), 'the same bytes, rewritten');
    assert.deepEqual(decodeAttribute(s2.get('items')!), expected);
    assert.ok(bytesEqual(p1.bytes, p1Bytes), 'a patch sent earlier (and maybe retried) is not changed by the overwrite');
    second.t.rebase(s2);
    second.t.retire(true);

    // Not allowed (a reader is open, or the commit is not pipelined), or not the commit path: copies.
    for (const allow of [committed(false), undefined]) {
      const before = Uint8Array.from(s2.get('items')!);
      const third = change(s2, 7, 9);
      const s3 = applyDelta(s2, third.d, allow);
      assert.notEqual(s3.get('items'), s2.get('items'));
      assert.ok(bytesEqual(s2.get('items')!, before), 'the value read by others is untouched');
      assert.deepEqual(decodeAttribute(s3.get('items')!), expected);
      third.t.rebase(s3);
      third.t.retire(true);
      // The tree is kept for the copy, with the item starts it had learnt.
      const kept = checkOut(s3.get('items')!);
      assert.ok(kept, 'kept under the copy');
      assert.equal(kept.startsOf, s3.get('items'), 'the starts carried over to the copy');
      expected[7]!.qty = 1; // the next round starts from s2 again
    }
  });

  it('a length-keeping change written back to what it was sends nothing', () => {
    const start = base({ items: bigList() });
    const t = new DeltaTracker(start, true);
    const items = t.get('items') as { qty: number }[];
    items[3]!.qty = 5;
    items[3]!.qty = 1;
    assert.deepEqual(t.delta(), { set: [], del: [] });
    assert.ok(t.pristine, 'the tree equals its bytes again: it is kept for the next request');
  });

  it('a spliced value\'s patch holds a copy of its bytes, not a view of the value', () => {
    const start = base({ items: bigList() });
    const t = new DeltaTracker(start, true);
    (t.get('items') as { sku: string }[])[10]!.sku = 'a longer sku than before';
    const p = t.delta().patch![0]!;
    assert.ok(p.value && p.value.length !== start.get('items')!.length);
    assert.notEqual(p.bytes.buffer, p.value.buffer);
    assert.ok(bytesEqual(applyPatch(start.get('items')!, p), p.value));
  });

  it('an object of 65,536+ keys: changing one key or crossing 65,535 keys gives the same value as encoding it whole', () => {
    const wide: Record<string, number> = {};
    for (let i = 0; i < 65_535; i++) wide[`k${i}`] = i;
    let state = base({ wide });
    for (const step of [(w: Record<string, number>) => { w['k7'] = -7; }, (w: Record<string, number>) => { w['grown'] = 1; }, (w: Record<string, number>) => { w['k65534'] = 0; }, (w: Record<string, number>) => { delete w['grown']; }]) {
      const tracker = new DeltaTracker(state, true);
      const live = tracker.get('wide') as Record<string, number>;
      step(live);
      step(wide);
      state = applyDelta(state, tracker.delta());
      tracker.rebase(state);
      tracker.retire(true);
      const stored = decodeAttribute(state.get('wide')!) as Record<string, number>;
      assert.equal(Object.keys(stored).length, Object.keys(wide).length);
      assert.deepEqual(stored, wide);
    }
  });

  it('a request whose change was not committed does not keep its tree', () => {
    const start = base({ items: bigList(4) });
    const t1 = new DeltaTracker(start, true);
    (t1.get('items') as { qty: number }[])[0]!.qty = 9;
    t1.retire(true); // ended without a commit (it failed, or the request threw)
    assert.equal(checkOut(start.get('items')!), undefined);
    const t2 = new DeltaTracker(start, true);
    assert.equal((t2.get('items') as { qty: number }[])[0]!.qty, 1, 'decoded again from the committed bytes');
  });

  it('storing an object inside a watched value falls back to a whole encode and is not kept', () => {
    const start = base({ cart: [{ sku: 'a', qty: 1 }] });
    const t = new DeltaTracker(start, true);
    const cart = t.get('cart') as { sku: string; qty: number }[];
    const line = { sku: 'b', qty: 1 };
    cart.push(line);
    line.qty = 3; // a reference the proxies cannot see
    const d = t.delta();
    assert.deepEqual(decodeAttribute(d.set[0]![1]), [{ sku: 'a', qty: 1 }, { sku: 'b', qty: 3 }]);
    t.rebase(applyDelta(start, d));
    t.retire(true);
    assert.equal(checkOut(applyDelta(start, d).get('cart')!), undefined);
  });

  it('reaching a Date or a Set inside a value makes its commit a whole encode', () => {
    const start = base({ v: { when: new Date(5), tags: new Set(['x']), n: 1 } });
    const t = new DeltaTracker(start, true);
    const v = t.get('v') as { when: Date; tags: Set<string> };
    v.when.setTime(6);
    v.tags.add('y');
    const [[, bytes]] = t.delta().set as [[string, Uint8Array]];
    assert.deepEqual(decodeAttribute(bytes), { when: new Date(6), tags: new Set(['x', 'y']), n: 1 });
  });

  it('spread, JSON, Object.entries and descriptors see plain data', () => {
    const start = base({ v: { a: { b: [1, 2] }, c: 'd' } });
    const t = new DeltaTracker(start, true);
    const v = t.get('v') as { a: { b: number[] }; c: string };
    assert.equal(JSON.stringify(v), '{"a":{"b":[1,2]},"c":"d"}');
    assert.deepEqual({ ...v }, { a: { b: [1, 2] }, c: 'd' });
    assert.deepEqual(Object.entries(v.a), [['b', [1, 2]]]);
    assert.ok(Array.isArray(v.a.b));
    const copy = Object.getOwnPropertyDescriptor(v, 'a')!.value as { b: number[] };
    copy.b.push(3); // through a view: watched
    const d = t.delta();
    assert.deepEqual(decodeAttribute(applyDelta(start, d).get('v')!), { a: { b: [1, 2, 3] }, c: 'd' });
  });

  it('any sequence of changes gives the same value as encoding the whole tree', () => {
    const rand = random(42);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]!;
    for (let round = 0; round < 300; round++) {
      let bytesMap = base({ v: { list: bigList(12), meta: { n: 1, s: 'x', deep: { a: [1, 2, 3] } } } });
      // Several requests in a row on the same session, as the near cache would run them.
      for (let request = 0; request < 4; request++) {
        const t = new DeltaTracker(bytesMap, true);
        const v = t.get('v') as { list: Record<string, unknown>[]; meta: { n: number; s: string; deep: { a: unknown[] } } };
        const changes = 1 + Math.floor(rand() * 4);
        for (let c = 0; c < changes; c++) {
          const item = v.list.length > 0 ? v.list[Math.floor(rand() * v.list.length)] : undefined;
          switch (Math.floor(rand() * 10)) {
            case 0: if (item) item['qty'] = Math.floor(rand() * 1000); break;
            case 1: if (item) item['name'] = 'n'.repeat(Math.floor(rand() * 300)); break;
            case 2: if (item) delete item['tags']; break;
            case 3: v.meta.n = rand(); break;
            case 4: v.meta.deep.a.push(pick([1, 'two', null, true])); break;
            case 5: v.meta.deep.a.length = Math.floor(rand() * v.meta.deep.a.length); break;
            case 6: v.list.pop(); break;
            case 7: v.list.push({ sku: 'new', qty: 1 }); break; // an object: whole encode
            case 8: if (item) (item['tags'] as string[] | undefined)?.splice(0, 1); break;
            case 9: v.meta.s = pick(['', 'a', 'ü'.repeat(40)]); break;
          }
        }
        const expected = encodeAttribute('v', JSON.parse(JSON.stringify(v)));
        const d = t.delta();
        const next = applyDelta(bytesMap, d);
        const got = next.get('v')!;
        assert.deepEqual(decodeAttribute(got), decodeAttribute(expected), `round ${round}, request ${request}`);
        if (d.patch) for (const p of d.patch) assert.equal(Buffer.compare(applyPatch(bytesMap.get('v')!, p), got), 0);
        t.rebase(next);
        t.retire(true);
        bytesMap = next;
      }
    }
  });

  it('a large top-level list: any sequence of changes gives the same value as encoding it whole', () => {
    // Item starts are remembered per value and carried from commit to commit: a start
    // carried wrong would splice the change into the wrong place.
    const rand = random(7);
    for (let round = 0; round < 60; round++) {
      let bytesMap = base({ list: bigList(40 + Math.floor(rand() * 100)) });
      for (let request = 0; request < 8; request++) {
        const t = new DeltaTracker(bytesMap, true);
        const list = t.get('list') as Record<string, unknown>[];
        const changes = 1 + Math.floor(rand() * 3);
        for (let c = 0; c < changes; c++) {
          const item = list.length > 0 ? list[Math.floor(rand() * list.length)] : undefined;
          switch (Math.floor(rand() * 7)) {
            case 0: case 1: if (item) item['qty'] = Math.floor(rand() * 100_000); break;
            case 2: if (item) item['sku'] = 's'.repeat(Math.floor(rand() * 40)); break;
            case 3: if (item) delete item['tags']; break;
            case 4: if (item) (item['tags'] as string[] | undefined)?.push('x'); break;
            case 5: if (rand() < 0.3) list.pop(); break;
            case 6: if (rand() < 0.1) list.push({ sku: 'new', qty: 1 }); break; // an object: whole encode
          }
        }
        const expected = encodeAttribute('list', JSON.parse(JSON.stringify(list)));
        // Sometimes the first commit "fails" and is computed again from the same base.
        if (rand() < 0.25) t.delta();
        const next = applyDelta(bytesMap, t.delta());
        assert.equal(Buffer.compare(next.get('list')!, expected), 0, `round ${round}, request ${request}`);
        t.rebase(next);
        t.retire(true);
        bytesMap = next;
      }
    }
  });

  it('a write made while a commit is on its way is not cleared by its acknowledgement: the next commit sends it', () => {
    const start = base({ visits: 1, flash: 'hello', cart: { items: [{ sku: 'a', qty: 1 }], note: 'n' }, items: bigList(200) });
    const t = new DeltaTracker(start, true);
    t.set('visits', 4);
    (t.get('items') as { qty: number }[])[3]!.qty = 9;
    const upTo = lastWriteStamp();
    const first = t.delta(); // a save() the request does not wait for
    // The request goes on while that commit travels.
    t.set('visits', 5);
    t.delete('flash');
    const cart = t.get('cart') as { items: { sku: string; qty: number }[]; note: string };
    cart.items.push('b' as never);
    cart.items[0]!.qty = 7;
    (t.get('items') as { qty: number }[])[3]!.qty = 10; // an object the first commit carried, written again
    (t.get('items') as { qty: number }[])[150]!.qty = 11;
    const afterFirst = applyDelta(start, first);
    t.rebase(afterFirst, upTo); // its acknowledgement
    assert.ok(!t.pristine, 'the later writes are still to be sent');
    const second = t.delta();
    const end = applyDelta(afterFirst, second);
    const expectedItems = bigList(200);
    expectedItems[3]!.qty = 10;
    expectedItems[150]!.qty = 11;
    assert.deepEqual(Object.fromEntries([...end].map(([k, v]) => [k, decodeAttribute(v)])), {
      visits: 5,
      cart: { items: [{ sku: 'a', qty: 7 }, 'b'], note: 'n' },
      items: expectedItems,
    });
    t.rebase(end, lastWriteStamp());
    assert.ok(t.pristine);
    t.retire(true);
    assert.ok(checkOut(end.get('items')!), 'the list, equal to its bytes again, is kept');
  });

  it('a value rebased with writes still to send is not kept at the end of a request that never sent them', () => {
    const start = base({ items: bigList(20) });
    const t = new DeltaTracker(start, true);
    (t.get('items') as { qty: number }[])[1]!.qty = 2;
    const upTo = lastWriteStamp();
    const d = t.delta();
    (t.get('items') as { qty: number }[])[2]!.qty = 3; // after the commit was taken
    const next = applyDelta(start, d);
    t.rebase(next, upTo);
    t.retire(true); // the request ended without another commit (it failed)
    assert.equal(checkOut(next.get('items')!), undefined, 'the tree differs from the committed bytes: not kept');
  });

  it('writes the encoding cannot give back (a named property of an array, a lone surrogate) make the value a whole encode, not kept', () => {
    for (const change of [
      (list: unknown[]) => ((list as unknown as Record<string, unknown>)['label'] = 'x'),
      (list: unknown[]) => ((list[0] as Record<string, unknown>)['name'] = 'bad \uD800 half'),
    ]) {
      const start = base({ list: [{ name: 'a' }, { name: 'b' }] });
      const t = new DeltaTracker(start, true);
      change(t.get('list') as unknown[]);
      const d = t.delta();
      const next = applyDelta(start, d);
      t.rebase(next, lastWriteStamp());
      t.retire(true);
      assert.equal(checkOut(next.get('list') ?? start.get('list')!), undefined, 'a tree that differs from its bytes is not kept');
    }
  });

  it('a string with a surrogate pair (an emoji) is an ordinary tracked write: the value is kept', () => {
    const start = base({ list: [{ name: 'a' }, { name: 'b' }] });
    const t = new DeltaTracker(start, true);
    (t.get('list') as { name: string }[])[0]!.name = 'party \u{1F389}';
    const next = applyDelta(start, t.delta());
    t.rebase(next, lastWriteStamp());
    t.retire(true);
    assert.ok(checkOut(next.get('list')!), 'kept for the next request');
    assert.deepEqual(decodeAttribute(next.get('list')!), [{ name: 'party \u{1F389}' }, { name: 'b' }]);
  });

  it('thousands of objects written in one request: one whole encoding, equal to encoding the tree', () => {
    const list = bigList(20_000);
    const start = base({ items: list });
    const t = new DeltaTracker(start, true);
    for (const item of t.get('items') as { qty: number }[]) item.qty = 2;
    const next = applyDelta(start, t.delta());
    for (const item of list) item.qty = 2;
    assert.equal(Buffer.compare(next.get('items')!, encodeAttribute('items', list)), 0);
  });

  it('a read-only tracker does not take nor keep decoded values', () => {
    const start = base({ items: bigList(3) });
    const writer = new DeltaTracker(start, true);
    writer.get('items');
    writer.retire(true);
    const reader = new DeltaTracker(start, false);
    (reader.get('items') as { qty: number }[])[0]!.qty = 7; // a plain copy, never committed
    reader.retire(true);
    const kept = checkOut(start.get('items')!);
    assert.ok(kept);
    assert.equal((kept.root as { qty: number }[])[0]!.qty, 1);
  });
});
