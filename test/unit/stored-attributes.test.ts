import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_SHARED_NAME_LENGTH, MAX_SHARED_NAMES, StoredAttributes } from '../../src/tier/stored-attributes.js';

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);
const plain = (m: Map<string, Uint8Array>) => [...m].map(([n, v]) => [n, [...v]]);

function roundTrip(codec: StoredAttributes, attrs: [string, Uint8Array][]): { length: number; back: Map<string, Uint8Array> } {
  const room = codec.maxLength(attrs);
  const out = Buffer.alloc(room + 20, 0xee);
  const length = codec.write(attrs, out, 10);
  assert.ok(length <= room);
  assert.equal(out[9], 0xee, 'nothing written before the offset');
  assert.equal(out[10 + room], 0xee, 'nothing written past the room maxLength asked for');
  return { length, back: codec.read(out, 10, 10 + length, true) };
}

describe('stored attributes (the table\'s own form)', () => {
  it('shares names: a session holds an index and varint lengths', () => {
    const codec = new StoredAttributes();
    const attrs: [string, Uint8Array][] = [['user', bytes(13)], ['cart', bytes(31)]];
    const first = roundTrip(codec, attrs);
    assert.deepEqual(plain(first.back), plain(new Map(attrs)));
    assert.equal(first.length, 2 * 2 + 13 + 31, 'one tag byte and one length byte per attribute');
    assert.equal(codec.sharedNames, 2);
    assert.equal(roundTrip(codec, attrs).length, first.length);
    assert.equal(codec.sharedNames, 2, 'a name is shared once');
  });

  it('writes out names past the shared list\'s limits, and lengths of every size', () => {
    const codec = new StoredAttributes();
    const long = 'n'.repeat(MAX_SHARED_NAME_LENGTH + 1);
    const attrs: [string, Uint8Array][] = [
      [long, bytes(127)],
      ['ünï-名前', bytes(128, 2)],
      ['big', bytes(70_000, 3)],
      ['empty', new Uint8Array(0)],
    ];
    const { back } = roundTrip(codec, attrs);
    assert.deepEqual(plain(back), plain(new Map(attrs)));
    assert.equal(codec.sharedNames, 3, 'the long name is not shared');
  });

  it('stops sharing at MAX_SHARED_NAMES; later names round-trip written out', () => {
    const codec = new StoredAttributes();
    const many: [string, Uint8Array][] = Array.from({ length: MAX_SHARED_NAMES + 50 }, (_, i) => [`name-${i}`, bytes(1, i % 256)]);
    for (let i = 0; i < many.length; i += 500) {
      const slice = many.slice(i, i + 500);
      assert.deepEqual(plain(roundTrip(codec, slice).back), plain(new Map(slice)));
    }
    assert.equal(codec.sharedNames, MAX_SHARED_NAMES);
    // A name whose tag takes three bytes (8,192 bytes or more), and a short one after it.
    const huge: [string, Uint8Array][] = [['x'.repeat(9000), bytes(2)], ['y'.repeat(70), bytes(1)]];
    assert.deepEqual(plain(roundTrip(codec, huge).back), plain(new Map(huge)));
  });

  it('a reader gets copies; a commit gets views of the stored bytes', () => {
    const codec = new StoredAttributes();
    const out = Buffer.alloc(100);
    const n = codec.write([['a', bytes(5, 9)]], out, 0);
    const views = codec.read(out, 0, n, false);
    assert.equal(views.get('a')!.buffer, out.buffer);
    const copies = codec.read(out, 0, n, true);
    copies.get('a')!.fill(0);
    assert.equal(out[2], 9, 'changing a copy leaves the stored bytes alone');
    assert.equal(codec.read(out, 5, 5, true).size, 0);
  });
});
