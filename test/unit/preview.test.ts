import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeAttribute } from '../../src/session/codec.js';
import { DEFAULT_REDACT, previewValue, redactor, valueType } from '../../src/console/preview.js';

/**
 * The admin inspector reads attribute bytes that an app server wrote: whatever they
 * hold, a preview or a type is an answer, never an exception (a RangeError made
 * GET /api/sessions/:id answer 500), and never a read past the value's own bytes.
 */
const redact = redactor(DEFAULT_REDACT);

/** Every MessagePack tag whose header carries a length or a type after the tag byte, with a whole header. */
const LENGTH_TAGS: [number, number[]][] = [
  [0xc4, [3]], [0xc5, [0, 3]], [0xc6, [0, 0, 0, 3]], // bin 8/16/32
  [0xc7, [3, 1]], [0xc8, [0, 3, 1]], [0xc9, [0, 0, 0, 3, 1]], // ext 8/16/32: length, type
  [0xd4, [1]], [0xd5, [1]], [0xd6, [1]], [0xd7, [1]], [0xd8, [1]], // fixext: type
  [0xd9, [3]], [0xda, [0, 3]], [0xdb, [0, 0, 0, 3]], // str 8/16/32
  [0xdc, [0, 1]], [0xdd, [0, 0, 0, 1]], // array 16/32
  [0xde, [0, 1]], [0xdf, [0, 0, 0, 1]], // map 16/32
  [0xca, [0, 0, 0, 0]], [0xcb, [0, 0, 0, 0, 0, 0, 0, 0]], // float 32/64
  [0xcc, [1]], [0xcd, [0, 1]], [0xce, [0, 0, 0, 1]], [0xcf, [0, 0, 0, 0, 0, 0, 0, 1]], // uint
  [0xd0, [1]], [0xd1, [0, 1]], [0xd2, [0, 0, 0, 1]], [0xd3, [0, 0, 0, 0, 0, 0, 0, 1]], // int
];

function answers(bytes: Uint8Array, what: string): void {
  let preview = '';
  assert.doesNotThrow(() => (preview = previewValue(bytes, redact)), what);
  assert.ok(preview.length <= 201, `${what}: ${preview.length} characters`);
  assert.doesNotThrow(() => valueType(bytes), what);
}

describe('attribute previews of bytes cut short or made up', () => {
  it('every header that carries a length, cut at every byte, at the top and inside a map and an array', () => {
    for (const [tag, rest] of LENGTH_TAGS) {
      const whole = [tag, ...rest];
      for (let cut = 1; cut <= whole.length; cut++) {
        const head = whole.slice(0, cut);
        answers(Uint8Array.from(head), `${head.map((b) => b.toString(16)).join(' ')}`);
        answers(Uint8Array.from([0x81, 0xa1, 0x6b, ...head]), `in a map: ${head.map((b) => b.toString(16)).join(' ')}`);
        answers(Uint8Array.from([0x92, 0x01, ...head]), `in an array: ${head.map((b) => b.toString(16)).join(' ')}`);
      }
    }
  });

  it('an ext 32 header ending in c9 00 is a preview, not a RangeError', () => {
    assert.equal(valueType(Uint8Array.from([0xc9, 0x00])), 'unknown');
    assert.equal(previewValue(Uint8Array.from([0xc9, 0x00]), redact), '…');
  });

  it('reads only the bytes of the value, not those after it in a pooled buffer', () => {
    // ext 32 of length 1 and type 0x42 (bigint) fits only if the pool's next bytes are read.
    const pool = Buffer.from([0xd4, 0x00, 0xc9, 0x00, 0x00, 0x00, 0x01, 0x42, 0x07, 0xff, 0xff]);
    const value = pool.subarray(2, 4);
    assert.equal(valueType(value), 'unknown', 'the header is cut at the value\'s end');
    assert.equal(previewValue(value, redact), '…');
    // A whole fixext in the pool, a value that is only its tag: nothing past the tag is its type.
    assert.equal(valueType(pool.subarray(0, 1)), 'unknown');
  });

  it('whole values still read as before', () => {
    assert.equal(valueType(encodeAttribute('x', new Uint8Array(70_000))), 'typed array');
    assert.match(previewValue(encodeAttribute('x', new Uint8Array(70_000)), redact), /typed array, 70001 bytes/);
    assert.match(previewValue(encodeAttribute('x', 10n ** 30n), redact), /^<bigint, \d+ bytes>$/);
  });

  it('random bytes, and values cut at random, never throw (fuzz)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => answers(bytes, Buffer.from(bytes).toString('hex'))),
      { numRuns: 20_000 },
    );
    const values = fc.anything({ maxDepth: 3, withDate: true, withMap: false, withSet: true, withTypedArray: true, withBigInt: true, withNullPrototype: false, withSparseArray: false });
    fc.assert(
      fc.property(values, fc.nat(), (value, at) => {
        let bytes: Uint8Array;
        try {
          bytes = encodeAttribute('x', value);
        } catch {
          return; // not a value a session can hold
        }
        const cut = bytes.subarray(0, at % (bytes.length + 1));
        // In a pooled buffer: bytes that are not the value's follow it.
        const pooled = Buffer.concat([cut, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]).subarray(0, cut.length);
        answers(cut, Buffer.from(cut).toString('hex'));
        answers(pooled, Buffer.from(cut).toString('hex'));
      }),
      { numRuns: 5_000 },
    );
  });
});
