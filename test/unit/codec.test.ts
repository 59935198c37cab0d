import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Packr } from 'msgpackr';
import type { KilnError } from '../../src/errors/index.js';
import { decodeAttribute, encodeAttribute } from '../../src/session/codec.js';

describe('attribute codec', () => {
  it('round-trips what JSON loses', () => {
    const value = { at: new Date(5), big: 10n, set: new Set([1, 2]), bytes: new Uint8Array([1]), nested: [{ a: null, b: 'x' }] };
    assert.deepEqual(decodeAttribute(encodeAttribute('v', value)), value);
  });

  it('stores a Map as a plain object with string keys (documented)', () => {
    assert.deepEqual(decodeAttribute(encodeAttribute('m', new Map<unknown, unknown>([[1, 'a'], ['k', { x: 1 }]]))), { '1': 'a', k: { x: 1 } });
  });

  it('an object with 65,536 keys or more round-trips (msgpackr\'s fast path stops at 65,535)', () => {
    for (const keys of [65_535, 65_536, 70_000]) {
      const wide: Record<string, number> = {};
      for (let i = 0; i < keys; i++) wide[`k${i}`] = i;
      const value = { nested: wide, at: new Date(7) };
      const back = decodeAttribute(encodeAttribute('wide', value)) as typeof value;
      assert.equal(Object.keys(back.nested).length, keys);
      assert.equal(back.nested[`k${keys - 1}`], keys - 1);
      assert.deepEqual(back.at, new Date(7));
      const top = decodeAttribute(encodeAttribute('wide', wide)) as Record<string, number>;
      assert.equal(Object.keys(top).length, keys);
    }
  });

  it('objects under 65,536 keys keep the fast path\'s exact bytes', () => {
    const value = { a: 1, b: { c: [1, 2, { d: 'x' }] } };
    assert.deepEqual(encodeAttribute('v', value), new Packr({ useRecords: false }).pack(value));
  });

  it('refuses functions, symbols and cycles, naming attribute and path', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic['self'] = cyclic;
    const cases: [unknown, RegExp][] = [
      [() => 1, /"user" cannot be encoded: user is function/],
      [{ profile: { save() {} } }, /user\.profile\.save is function/],
      [[1, Symbol('s')], /user\[1\] is symbol/],
      [cyclic, /user\.self is a circular reference/],
    ];
    for (const [value, message] of cases) {
      assert.throws(() => encodeAttribute('user', value), (err: KilnError) => err.code === 'KILN_ERR_UNSERIALIZABLE' && err.details?.['attribute'] === 'user' && message.test(err.message));
    }
  });

  it('accepts the same object twice (shared, not circular)', () => {
    const shared = { x: 1 };
    assert.deepEqual(decodeAttribute(encodeAttribute('v', [shared, shared])), [{ x: 1 }, { x: 1 }]);
  });

  it('plain data encodes the same whichever packer runs, so patches stay small', () => {
    const plain = { a: [1, 'x', { b: null, d: new Date(0) }], c: true, n: -1.5 };
    const full = new Packr({ useRecords: false, moreTypes: true });
    assert.equal(Buffer.compare(encodeAttribute('v', plain), full.pack(plain)), 0, 'the fast packer writes what the full one writes');
    const withSet = { ...plain, s: new Set([1]) };
    assert.deepEqual(decodeAttribute(encodeAttribute('v', withSet)), withSet, 'values with extra types still round-trip');
  });
});
