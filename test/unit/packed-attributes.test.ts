import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { beginCommitScratch, commitScratchRegion, packAttributesToBytes, recordPairs } from '../../src/tier/packed-attributes.js';

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);
const plain = (pairs: [string, Uint8Array][]) => pairs.map(([n, v]) => [n, [...v]]);

describe('packed attributes (the form records carry)', () => {
  it('packs attributes with UTF-8 names in the documented layout, and reads them back', () => {
    const attrs: [string, Uint8Array][] = [['user', bytes(3)], ['ünï', bytes(2, 7)]];
    const packed = Buffer.from(packAttributesToBytes(attrs));
    const name2 = Buffer.from('ünï');
    assert.deepEqual(packed, Buffer.concat([Buffer.from([0, 4]), Buffer.from('user'), Buffer.from([0, 0, 0, 3]), Buffer.from(bytes(3)), Buffer.from([0, name2.length]), name2, Buffer.from([0, 0, 0, 2]), Buffer.from(bytes(2, 7))]));
    assert.deepEqual(plain(recordPairs(packed, undefined)), plain(attrs));
    assert.equal(packAttributesToBytes([]).length, 0);
  });

  it('a record with packed bytes (Buffer or plain Uint8Array) or older pairs gives the same pairs, as views', () => {
    const attrs: [string, Uint8Array][] = [['a', bytes(2, 4)]];
    const packed = packAttributesToBytes(attrs);
    const asPlain = new Uint8Array(packed);
    assert.deepEqual(plain(recordPairs(asPlain, undefined)), [['a', [4, 4]]]);
    assert.equal(recordPairs(asPlain, undefined)[0]![1].buffer, asPlain.buffer, 'a view of the record, not a copy');
    assert.equal(recordPairs(undefined, attrs), attrs);
    assert.deepEqual(recordPairs(undefined, undefined), []);
  });

  it('regions of one commit do not overlap; a new commit reuses the scratch', () => {
    beginCommitScratch();
    const a = commitScratchRegion(10).fill(1);
    const b = commitScratchRegion(10).fill(2);
    assert.deepEqual([...a], Array(10).fill(1));
    assert.deepEqual([...b], Array(10).fill(2));
    beginCommitScratch();
    const again = commitScratchRegion(10);
    assert.equal(again.buffer, a.buffer);
    assert.equal(again.byteOffset, a.byteOffset);
  });
});
