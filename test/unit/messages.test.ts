import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { KilnError } from '../../src/errors/index.js';
import { commitFromWire, commitToWire, decodeBody, decodeCommitBody, encodeBody, encodeCommitBody, encodeGrantBody, grantFromWire, grantToWire, snapshotFromWire, snapshotToWire, touchesFromWire } from '../../src/protocol/messages.js';
import type { CommitRequest, LeaseGrant } from '../../src/session/model.js';
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

  it('round-trips commits through the binary layout, every field and both forms of each', () => {
    const uint = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
    const name = fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' });
    const bytes = fc.uint8Array({ maxLength: 300 });
    const commit: fc.Arbitrary<CommitRequest> = fc.record({
      sessionId: fc.constant(id),
      token: uint,
      commitId: fc.string({ minLength: 1, maxLength: 128 }),
      baseVersion: uint,
      lastAccessedAt: uint,
      set: fc.array(fc.tuple(name, bytes), { maxLength: 5 }),
      del: fc.array(name, { maxLength: 5 }),
      patch: fc.option(fc.array(fc.record({ name, at: uint, cut: uint, bytes, baseLength: uint }), { minLength: 1, maxLength: 3 }), { nil: undefined }),
      principal: fc.option(fc.option(fc.string({ maxLength: 256 }), { nil: null }), { nil: undefined }),
      idleTimeoutMs: fc.option(uint, { nil: undefined }),
      absoluteExpiresAt: fc.option(uint, { nil: undefined }),
      release: fc.boolean(),
    });
    const plain = (c: CommitRequest) => ({ ...c, set: c.set.map(([k, v]) => [k, [...v]]), patch: c.patch?.map((p) => ({ ...p, bytes: [...p.bytes] })) });
    fc.assert(
      fc.property(commit, (c) => {
        const encoded = encodeCommitBody(c);
        assert.equal(encoded[0], 0xc1, 'binary layout');
        assert.deepEqual(plain(decodeCommitBody(encoded)), plain(c));
        // The MessagePack form still reads the same (clients that predate the layout).
        assert.deepEqual(plain(decodeCommitBody(encodeBody(commitToWire(c)))), plain(c));
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a binary commit that is cut short, padded, over-counted or out of range, naming the field', () => {
    const good = encodeCommitBody({ sessionId: id, token: 7, commitId: 'c1', baseVersion: 1, lastAccessedAt: 5, set: [['a', Uint8Array.of(1)]], del: [] });
    const protocolError = (pattern: RegExp) => (err: unknown) => err instanceof KilnError && err.code === 'KILN_ERR_PROTOCOL' && pattern.test(err.message);
    for (let cut = 1; cut < good.length; cut++) assert.throws(() => decodeCommitBody(good.subarray(0, cut)), protocolError(/malformed|"/), `cut at ${cut}`);
    assert.throws(() => decodeCommitBody(Buffer.concat([good, Buffer.of(0)])), protocolError(/trailing/));
    const withFlags = Buffer.from(good);
    withFlags[1] = 0x80;
    assert.throws(() => decodeCommitBody(withFlags), protocolError(/"flags"/));
    const negativeToken = Buffer.from(good);
    negativeToken.writeDoubleBE(-1, 2);
    assert.throws(() => decodeCommitBody(negativeToken), protocolError(/"tk"/));
    const fractionalBase = Buffer.from(good);
    fractionalBase.writeDoubleBE(1.5, 10);
    assert.throws(() => decodeCommitBody(fractionalBase), protocolError(/"base"/));
    const badId = encodeCommitBody({ sessionId: 'not-an-id', token: 7, commitId: 'c1', baseVersion: 1, lastAccessedAt: 5, set: [], del: [] });
    assert.throws(() => decodeCommitBody(badId), protocolError(/"id"/));
    const longCid = encodeCommitBody({ sessionId: id, token: 7, commitId: 'c'.repeat(129), baseVersion: 1, lastAccessedAt: 5, set: [], del: [] });
    assert.throws(() => decodeCommitBody(longCid), protocolError(/"cid"/));
    // A set count of four billion is refused before anything is read or allocated for it.
    const setCountAt = good.length - 4 - (2 + 1 + 4 + 1) - 4;
    const overCounted = Buffer.from(good);
    overCounted.writeUInt32BE(0xffffffff, setCountAt);
    assert.throws(() => decodeCommitBody(overCounted), protocolError(/"set"/));
    assert.equal(decodeCommitBody(good).set[0]![0], 'a');
  });

  it('sends a commit whose strings outgrow the layout as MessagePack, which reads the same', () => {
    const name = 'é'.repeat(40_000); // 80,000 UTF-8 bytes: more than a u16 length says
    const commit = { sessionId: id, token: 7, commitId: 'c1', baseVersion: 1, lastAccessedAt: 5, set: [[name, Uint8Array.of(1)]] as [string, Uint8Array][], del: [] };
    const encoded = encodeCommitBody(commit);
    assert.notEqual(encoded[0], 0xc1);
    assert.equal(decodeCommitBody(encoded).set[0]![0], name);
    assert.equal(encodeCommitBody({ ...commit, set: [['é'.repeat(30_000), Uint8Array.of(1)]] })[0], 0xc1, '60,000 bytes still fit');
  });

  it('round-trips grants through the binary layout and as MessagePack, every field', () => {
    const uint = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
    const name = fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' });
    const grant: fc.Arbitrary<Omit<LeaseGrant, 'sessionId'>> = fc.record({
      token: uint,
      epoch: fc.string({ minLength: 1, maxLength: 32 }),
      releaseAfterUse: fc.boolean(),
      snapshot: fc.option(
        fc.record({
          meta: fc.record({ id: fc.constant(id), createdAt: uint, lastAccessedAt: uint, idleTimeoutMs: uint, absoluteExpiresAt: uint, principal: fc.option(fc.string({ maxLength: 256 }), { nil: null }), version: uint }),
          attributes: fc.uniqueArray(fc.tuple(name, fc.uint8Array({ maxLength: 300 })), { selector: ([k]) => k, maxLength: 6 }).map((pairs) => new Map(pairs)),
        }),
        { nil: null },
      ),
    });
    const plain = (g: LeaseGrant | Omit<LeaseGrant, 'sessionId'>) => ({ ...g, sessionId: id, snapshot: g.snapshot && { meta: { ...g.snapshot.meta }, attributes: [...g.snapshot.attributes].map(([k, v]) => [k, [...v]]) } });
    fc.assert(
      fc.property(grant, (g) => {
        const encoded = encodeGrantBody(g);
        assert.equal(encoded[0], 0xc1, 'binary layout');
        const back = grantFromWire(encoded, id);
        assert.deepEqual(plain(back), plain(g));
        // Values are copies: the near cache keeps them, not the frame they came in.
        for (const value of back.snapshot?.attributes.values() ?? []) assert.notEqual(value.buffer, encoded.buffer);
        // A server that predates the layout (or a client that did not ask for it): a map.
        assert.deepEqual(plain(grantFromWire(decodeBody(encodeBody(grantToWire(g))), id)), plain(g));
      }),
      { numRuns: 500 },
    );
  });

  it('refuses a binary grant that is cut short, padded, over-counted or out of range, naming the field', () => {
    const snapshot = { meta: { id, createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 3, absoluteExpiresAt: 0, principal: null, version: 4 }, attributes: new Map([['a', Uint8Array.of(1)]]) };
    const good = Buffer.from(encodeGrantBody({ token: 9, epoch: 'e1', snapshot, releaseAfterUse: true }));
    const protocolError = (pattern: RegExp) => (err: unknown) => err instanceof KilnError && err.code === 'KILN_ERR_PROTOCOL' && pattern.test(err.message);
    for (let cut = 1; cut < good.length; cut++) assert.throws(() => grantFromWire(good.subarray(0, cut), id), protocolError(/malformed|"/), `cut at ${cut}`);
    assert.throws(() => grantFromWire(Buffer.concat([good, Buffer.of(0)]), id), protocolError(/trailing/));
    const withFlags = Buffer.from(good);
    withFlags[1] = 0x40;
    assert.throws(() => grantFromWire(withFlags, id), protocolError(/"flags"/));
    const principalWithoutSnapshot = Buffer.from(encodeGrantBody({ token: 9, epoch: 'e1', snapshot: null, releaseAfterUse: false }));
    principalWithoutSnapshot[1] = 4;
    assert.throws(() => grantFromWire(principalWithoutSnapshot, id), protocolError(/"flags"/));
    const negativeToken = Buffer.from(good);
    negativeToken.writeDoubleBE(-1, 2);
    assert.throws(() => grantFromWire(negativeToken, id), protocolError(/"token"/));
    const fractionalVersion = Buffer.from(good);
    const versionAt = 2 + 8 + 2 + 2 + 32;
    fractionalVersion.writeDoubleBE(4.5, versionAt);
    assert.throws(() => grantFromWire(fractionalVersion, id), protocolError(/"meta.version"/));
    const emptyEpoch = encodeGrantBody({ token: 9, epoch: '', snapshot: null, releaseAfterUse: false });
    assert.throws(() => grantFromWire(emptyEpoch, id), protocolError(/"epoch"/));
    const overCounted = Buffer.from(good);
    overCounted.writeUInt32BE(0xffffffff, versionAt + 8);
    assert.throws(() => grantFromWire(overCounted, id), protocolError(/"attrs"/));
    assert.equal(grantFromWire(good, id).snapshot?.meta.version, 4);
    assert.equal(grantFromWire(good, id).releaseAfterUse, true);
    // The MessagePack form is checked too: a token that is not a number is named.
    assert.throws(() => grantFromWire({ token: 'x', epoch: 'e1', snapshot: null }, id), protocolError(/"token"/));
  });

  it('sends a grant whose strings outgrow the layout as MessagePack, which reads the same', () => {
    const principal = 'é'.repeat(40_000);
    const grant = { token: 9, epoch: 'e1', releaseAfterUse: false, snapshot: { meta: { id, createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 3, absoluteExpiresAt: 0, principal, version: 4 }, attributes: new Map() } };
    const encoded = encodeGrantBody(grant);
    assert.notEqual(encoded[0], 0xc1);
    assert.equal(grantFromWire(decodeBody(encoded), id).snapshot?.meta.principal, principal);
  });

  it('fuzz: arbitrary bytes and values only ever fail with KilnError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }).map((b) => ({ raw: b })), fc.anything().map((v) => ({ value: v }))), (input) => {
        try {
          if ('raw' in input) {
            try {
              decodeCommitBody(Buffer.concat([Buffer.of(0xc1), input.raw]));
            } catch (err) {
              assert.ok(err instanceof KilnError, `binary commit threw ${String(err)}`);
            }
            try {
              grantFromWire(Buffer.concat([Buffer.of(0xc1), input.raw]), id);
            } catch (err) {
              assert.ok(err instanceof KilnError, `binary grant threw ${String(err)}`);
            }
          }
          const body = 'raw' in input ? decodeBody(input.raw) : input.value;
          commitFromWire(body);
          touchesFromWire(body);
          snapshotFromWire(body);
          grantFromWire(body, id);
        } catch (err) {
          assert.ok(err instanceof KilnError, `threw ${String(err)}`);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
