import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as layout from '../../src/tier/session-record.js';
import { KeyedHash } from '../../src/util/keyed-hash.js';
import { readVarint, varintEnd, varintLength, writeVarint } from '../../src/util/varint.js';

function roundTrip(fields: layout.RecordFields, principal: string | null, commits: [string, number][] = []): { fields: layout.RecordFields; principal: string | null; commits: [string, number][]; dataAt: number; end: number } {
  const out = Buffer.alloc(layout.headRoom(principal, '') + 200 + commits.reduce((n, [c]) => n + 5 + 3 * c.length + 8, 0));
  let i = layout.writeHead(out, fields, principal);
  for (const [cid, v] of commits) i = layout.writeCommit(out, i, cid, v);
  layout.setCommitCount(out, commits.length);
  out.write('DATA', i);
  return { fields: layout.readFields(out, 0), principal: layout.principalOf(out, 0), commits: layout.commitPairs(out, 0), dataAt: layout.dataStart(out, 0), end: i };
}

const base: layout.RecordFields = { version: 7, createdAt: 1_765_000_000_123, lastAccessedAt: 1_765_000_000_456, absoluteExpiresAt: 0, idleTimeoutMs: 1_800_000, bytes: 321 };

describe('session record layout', () => {
  it('keeps every number exactly, in 6 bytes or in the wide area: fractions, negatives, 2^48 and past, NaN', () => {
    for (const odd of [0.5, -1, 2 ** 48, Number.MAX_SAFE_INTEGER, 1e300, Number.NaN, 2 ** 48 - 1]) {
      const fields = { ...base, createdAt: odd, idleTimeoutMs: odd, absoluteExpiresAt: odd, lastAccessedAt: odd };
      const back = roundTrip(fields, 'alice').fields;
      assert.deepEqual(back, fields, String(odd));
    }
    assert.deepEqual(roundTrip(base, null).fields, base);
    assert.throws(() => roundTrip({ ...base, version: 2 ** 48 }, null), RangeError);
  });

  it('keeps the principal (none, short, long past 65,534 bytes) and the commits after it', () => {
    const commits: [string, number][] = [['Zk3:1', 1], ['Zk3:zz', 200], ['é'.repeat(128), 2 ** 40]];
    for (const principal of [null, 'alice', 'ü'.repeat(40_000), 'p'.repeat(65_533), 'p'.repeat(65_534), 'p'.repeat(65_535)]) {
      const back = roundTrip({ ...base, absoluteExpiresAt: 99 }, principal, commits);
      assert.equal(back.principal, principal, `principal of ${principal?.length} characters`);
      assert.deepEqual(back.commits, commits);
      assert.equal(back.dataAt, back.end, 'the attributes start right after the commits');
    }
  });

  it('finds a remembered commit by its bytes only', () => {
    const out = Buffer.alloc(500);
    let i = layout.writeHead(out, base, null);
    i = layout.writeCommit(out, i, 'abc:1', 5);
    layout.writeCommit(out, i, "abc:12", 6);
    layout.setCommitCount(out, 2);
    const find = (cid: string) => layout.findCommit(out, 0, Buffer.from(cid), Buffer.byteLength(cid));
    assert.equal(find('abc:1'), 5);
    assert.equal(find('abc:12'), 6);
    assert.equal(find('abc:2'), undefined);
    assert.equal(find('bc:12'), undefined);
  });
});

describe('varints', () => {
  it('round-trip every size up to 2^53 and say their length', () => {
    const out = Buffer.alloc(16);
    for (const n of [0, 1, 127, 128, 16_383, 16_384, 2 ** 32, 2 ** 48 + 3, Number.MAX_SAFE_INTEGER]) {
      const end = writeVarint(out, 2, n);
      assert.equal(end - 2, varintLength(n), String(n));
      assert.equal(readVarint(out, 2), n);
      assert.equal(varintEnd, end);
    }
  });
});

describe('keyed hash', () => {
  it('is fixed for a key, differs between keys, and spreads ids over the buckets', () => {
    const a = new KeyedHash(Buffer.from('01234567'));
    const b = new KeyedHash(Buffer.from('76543210'));
    const id = Buffer.from('a session id of some length');
    assert.equal(a.hash(id, 0, id.length), new KeyedHash(Buffer.from('01234567')).hash(id, 0, id.length));
    assert.notEqual(a.hash(id, 0, id.length), b.hash(id, 0, id.length));
    assert.notEqual(a.hash(id, 0, 10), a.hash(id, 0, 11), 'the length counts');
    assert.notEqual(a.hash(id, 1, 11), a.hash(id, 0, 10));
    // 64,000 ids that differ in one character, into 1,024 buckets: none far from the mean of 62.5.
    const buckets = new Uint32Array(1024);
    const key = Buffer.from('s-000000000000');
    for (let i = 0; i < 64_000; i++) {
      key.write(String(i).padStart(12, '0'), 2);
      buckets[a.hash(key, 0, key.length) & 1023]!++;
    }
    assert.ok(Math.max(...buckets) < 110 && Math.min(...buckets) > 25, `${Math.min(...buckets)}–${Math.max(...buckets)}`);
    assert.throws(() => new KeyedHash(Buffer.alloc(4)), RangeError);
  });
});
