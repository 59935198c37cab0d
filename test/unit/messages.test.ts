import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { KilnError } from '../../src/errors/index.js';
import { commitFromWire, commitToWire, decodeBody, encodeBody, snapshotFromWire, snapshotToWire, touchesFromWire } from '../../src/protocol/messages.js';
import { generateSessionId } from '../../src/session/id.js';

const id = generateSessionId();

describe('protocol messages', () => {
  it('round-trips a commit', () => {
    const commit = { sessionId: id, token: 3, commitId: 'a:1', baseVersion: 2, lastAccessedAt: 1000, set: [['cart', new Uint8Array([1, 2])]] as [string, Uint8Array][], del: ['x'], principal: 'alice', idleTimeoutMs: 60_000, absoluteExpiresAt: undefined, release: false };
    const back = commitFromWire(decodeBody(encodeBody(commitToWire(commit))));
    assert.equal(back.sessionId, id);
    assert.equal(back.baseVersion, 2);
    assert.equal(back.principal, 'alice');
    assert.deepEqual([...back.set[0]![1]], [1, 2]);
    assert.deepEqual(back.del, ['x']);
  });

  it('round-trips a snapshot, and null', () => {
    const snap = { meta: { id, createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 3, absoluteExpiresAt: 0, principal: null, version: 4 }, attributes: new Map([['a', new Uint8Array([7])]]) };
    const back = snapshotFromWire(decodeBody(encodeBody(snapshotToWire(snap))));
    assert.deepEqual(back?.meta, snap.meta);
    assert.deepEqual([...back!.attributes.get('a')!], [7]);
    assert.equal(snapshotFromWire(decodeBody(encodeBody(snapshotToWire(null)))), null);
  });

  it('names the bad field', () => {
    assert.throws(() => commitFromWire({ id, tk: 'x' }), (err: KilnError) => err.code === 'KILN_ERR_PROTOCOL' && /"tk"/.test(err.message));
    assert.throws(() => commitFromWire({ id: 'not-an-id', tk: 1 }), /"id"/);
    assert.throws(() => touchesFromWire({ items: [[id, 1]] }), /items\[0\]/);
    const commit = { id, tk: 1, cid: 'c1', base: 1, la: 1, set: [], del: [] };
    assert.throws(() => commitFromWire({ ...commit, pt: [['items', 1, 2, 'not bytes', 9]] }), (err: KilnError) => err.code === 'KILN_ERR_PROTOCOL' && /"pt"/.test(err.message));
    assert.throws(() => commitFromWire({ ...commit, pt: [['items', -1, 0, new Uint8Array(1), 9]] }), /"pt"/);
    assert.equal(commitFromWire({ ...commit, pt: [['items', 1, 2, new Uint8Array(1), 9]] }).patch?.[0]?.baseLength, 9);
    assert.throws(() => decodeBody(Buffer.from([0x92, 0x01])), (err: KilnError) => err.code === 'KILN_ERR_PROTOCOL');
  });

  it('fuzz: arbitrary bytes and values only ever fail with KilnError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }).map((b) => ({ raw: b })), fc.anything().map((v) => ({ value: v }))), (input) => {
        try {
          const body = 'raw' in input ? decodeBody(input.raw) : input.value;
          commitFromWire(body);
          touchesFromWire(body);
          snapshotFromWire(body);
        } catch (err) {
          assert.ok(err instanceof KilnError, `threw ${String(err)}`);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
