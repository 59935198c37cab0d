import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  beginCommitScratch,
  commitScratchRegion,
  LARGE_SESSION_BYTES,
  packAttributes,
  packAttributesToBytes,
  packedCopy,
  recordPairs,
  storedFromRecord,
  unpackAttributes,
  unpackForCommit,
} from '../../src/tier/packed-attributes.js';

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

describe('packed attributes', () => {
  it('packs small sessions into a string and large ones into a Buffer, both round-tripping', () => {
    const small = packAttributes([['user', bytes(3)], ['ünï', bytes(2, 7)]]);
    assert.equal(typeof small, 'string');
    assert.deepEqual([...unpackAttributes(small)], [['user', Buffer.from(bytes(3))], ['ünï', Buffer.from(bytes(2, 7))]]);
    const large = packAttributes([['list', bytes(LARGE_SESSION_BYTES)]]);
    assert.ok(Buffer.isBuffer(large));
    assert.deepEqual(unpackAttributes(large).get('list'), Buffer.from(bytes(LARGE_SESSION_BYTES)));
    assert.equal(packAttributes([]), '');
  });

  it('the size boundary: one byte under LARGE_SESSION_BYTES is a string, exactly it a Buffer', () => {
    // 6 bytes of framing + a 1-byte name.
    assert.equal(typeof packAttributes([['a', bytes(LARGE_SESSION_BYTES - 8)]]), 'string');
    assert.ok(Buffer.isBuffer(packAttributes([['a', bytes(LARGE_SESSION_BYTES - 7)]])));
  });

  it('rewrites a previous Buffer of the same size in place, and allocates for another size', () => {
    const first = packAttributes([['list', bytes(5000, 1)]]);
    const same = packAttributes([['list', bytes(5000, 2)]], first);
    assert.equal(same, first);
    assert.equal(unpackAttributes(same).get('list')![0], 2);
    const other = packAttributes([['list', bytes(5001, 3)]], first);
    assert.notEqual(other, first);
  });

  it('record bytes and stored data are the same packed form', () => {
    const attrs: [string, Uint8Array][] = [['a', bytes(2)], ['b', bytes(LARGE_SESSION_BYTES)]];
    const fromRecord = storedFromRecord(packAttributesToBytes(attrs));
    assert.deepEqual(packedCopy(fromRecord), packedCopy(packAttributes(attrs)));
    const small: [string, Uint8Array][] = [['a', bytes(2)]];
    assert.equal(storedFromRecord(packAttributesToBytes(small)), packAttributes(small));
  });

  it('a record with packed bytes or older pairs gives the same pairs', () => {
    const attrs: [string, Uint8Array][] = [['a', bytes(2, 4)]];
    assert.deepEqual(recordPairs(packAttributesToBytes(attrs), undefined).map(([n, v]) => [n, [...v]]), [['a', [4, 4]]]);
    assert.equal(recordPairs(undefined, attrs), attrs);
    assert.deepEqual(recordPairs(undefined, undefined), []);
  });

  it('readers get copies: changing an unpacked value leaves the stored data alone', () => {
    const data = packAttributes([['list', bytes(5000, 1)]]);
    unpackAttributes(data).get('list')!.fill(9);
    assert.equal(unpackAttributes(data).get('list')![0], 1);
    const copy = packedCopy(data);
    copy.fill(0);
    assert.equal(unpackAttributes(data).get('list')![0], 1);
    assert.equal(packedCopy('').length, 0);
  });

  it('regions of one commit do not overlap; a new commit reuses the scratch', () => {
    beginCommitScratch();
    const a = commitScratchRegion(10).fill(1);
    const b = commitScratchRegion(10).fill(2);
    assert.deepEqual([...a], Array(10).fill(1));
    assert.deepEqual([...b], Array(10).fill(2));
    const attrs = unpackForCommit(packAttributes([['x', bytes(3, 5)]]));
    assert.deepEqual([...attrs.get('x')!], [5, 5, 5]);
    assert.deepEqual([...a], Array(10).fill(1), 'unpacking for the commit left earlier regions alone');
    beginCommitScratch();
    const again = commitScratchRegion(10);
    assert.equal(again.buffer, a.buffer);
    assert.equal(again.byteOffset, a.byteOffset);
    assert.equal(unpackForCommit('').size, 0);
  });
});
