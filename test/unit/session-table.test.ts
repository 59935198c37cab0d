import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from '../../src/errors/index.js';
import { generateSessionId } from '../../src/session/id.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/session/limits.js';
import type { CommitRequest } from '../../src/session/model.js';
import { SMALL_RECORD_BYTES } from '../../src/tier/session-arena.js';
import { packAttributesToBytes, REMEMBERED_COMMITS, SessionTable, type TierRecord } from '../../src/tier/session-table.js';

const limits = { ...DEFAULT_SESSION_LIMITS, maxAttributeBytes: 100, maxSessionBytes: 250, maxAttributes: 3 };
const bytes = (n: number): Uint8Array => new Uint8Array(n);
let seq = 0;
function commit(id: string, base: number, set: [string, Uint8Array][] = [], extra: Partial<CommitRequest> = {}): CommitRequest {
  return { sessionId: id, token: 1, commitId: `c${++seq}`, baseVersion: base, lastAccessedAt: 10, set, del: [], ...extra };
}
const code = (c: string) => (err: unknown) => err instanceof KilnError && err.code === c;

describe('session table', () => {
  it('creates at version 1, refuses a second create, applies in version order', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    assert.equal(t.applyCommit(commit(id, 0, [['a', bytes(3)]]), limits, 100).ack.version, 1);
    assert.throws(() => t.applyCommit(commit(id, 0), limits, 100), code('KILN_ERR_SESSION_EXISTS'));
    assert.throws(() => t.applyCommit(commit(id, 5), limits, 100), code('KILN_ERR_CONFLICT'));
    assert.equal(t.applyCommit(commit(id, 1, [['b', bytes(2)]]), limits, 100).ack.version, 2);
    assert.equal(t.get(id)!.bytes, 1 + 3 + 1 + 2);
  });

  it("dates a session's creation at its first access (the creating commit's), never after it", () => {
    const t = new SessionTable();
    const id = generateSessionId();
    t.applyCommit({ ...commit(id, 0), lastAccessedAt: 90 }, limits, 100);
    assert.deepEqual([t.get(id)!.createdAt, t.get(id)!.lastAccessedAt], [90, 90]);
    t.applyCommit({ ...commit(id, 1), lastAccessedAt: 150 }, limits, 200);
    assert.deepEqual([t.get(id)!.createdAt, t.get(id)!.lastAccessedAt], [90, 150]);
    const ahead = generateSessionId();
    t.applyCommit({ ...commit(ahead, 0), lastAccessedAt: 10_000 }, limits, 300);
    assert.deepEqual([t.get(ahead)!.createdAt, t.get(ahead)!.lastAccessedAt], [300, 300], 'a client clock ahead is cut to now');
  });

  it('acknowledges a repeated commit id without applying it twice', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    t.applyCommit(commit(id, 0), limits, 1);
    const c = commit(id, 1, [['n', Uint8Array.of(1)]]);
    assert.deepEqual(t.applyCommit(c, limits, 1).ack, { version: 2, duplicate: false });
    assert.deepEqual(t.applyCommit(c, limits, 1).ack, { version: 2, duplicate: true });
    assert.equal(t.get(id)!.version, 2);
  });

  it('a rejected commit changes nothing', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    t.applyCommit(commit(id, 0, [['a', bytes(50)]]), limits, 1);
    const before = JSON.stringify(t.snapshot(id), (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v instanceof Map ? [...v] : v));
    assert.throws(() => t.applyCommit(commit(id, 1, [['b', bytes(101)]]), limits, 1), code('KILN_ERR_ATTRIBUTE_TOO_LARGE'));
    assert.throws(() => t.applyCommit(commit(id, 1, [['b', bytes(100)], ['c', bytes(100)]]), limits, 1), code('KILN_ERR_SESSION_TOO_LARGE'));
    assert.throws(() => t.applyCommit(commit(id, 1, [['b', bytes(1)], ['c', bytes(1)], ['d', bytes(1)]]), limits, 1), code('KILN_ERR_TOO_MANY_ATTRIBUTES'));
    const after = JSON.stringify(t.snapshot(id), (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v instanceof Map ? [...v] : v));
    assert.equal(after, before);
  });

  it('counts bytes and attributes right through many deletes, and refuses a name given twice', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    const roomy = { ...limits, maxAttributes: 20 };
    const names = Array.from({ length: 12 }, (_, i) => `n${i}`);
    t.applyCommit(commit(id, 0, names.map((n) => [n, bytes(4)])), roomy, 1);
    assert.equal(t.get(id)!.bytes, 10 * (2 + 4) + 2 * (3 + 4));
    // Twelve deletes (past the list scan) and three of them set again: the delete applies first.
    t.applyCommit(commit(id, 1, [['n0', bytes(1)], ['n5', bytes(2)], ['n11', bytes(3)]], { del: names }), roomy, 1);
    const s = t.get(id)!;
    assert.deepEqual([...t.snapshot(id)!.attributes.keys()].sort(), ['n0', 'n11', 'n5']);
    assert.equal(s.bytes, 2 + 1 + 2 + 2 + 3 + 3);
    assert.throws(() => t.applyCommit(commit(id, 2, [['x', bytes(1)], ['x', bytes(2)]]), roomy, 1), code('KILN_ERR_INVALID_ARGUMENT'));
    assert.throws(() => t.applyCommit(commit(id, 2, [], { del: [...names, 'n3'] }), roomy, 1), code('KILN_ERR_INVALID_ARGUMENT'));
    assert.equal(t.get(id)!.version, 2);
    assert.equal(t.get(id)!.bytes, s.bytes);
    // A short delete list (scanned, not a Set): deleted and set again is counted once.
    t.applyCommit(commit(id, 2, [['n5', bytes(7)]], { del: ['n5', 'n0'] }), roomy, 1);
    assert.equal(t.get(id)!.bytes, 2 + 7 + 3 + 3);
    assert.deepEqual([...t.snapshot(id)!.attributes.keys()].sort(), ['n11', 'n5']);
  });

  it('a stored create that names an attribute twice (written before such commits were refused) replays with each name once', () => {
    const id = generateSessionId();
    const packed = packAttributesToBytes([['x', bytes(5)], ['y', bytes(1)], ['x', bytes(3)]]);
    const t = new SessionTable();
    t.replay({ t: 'c', id, v: 1, cid: 'old', la: 1, ca: 1, it: 0, ae: 0, pb: 3 * 1 + 5 + 1 + 3, packed, del: [] });
    assert.deepEqual([...t.snapshot(id)!.attributes].map(([k, v]) => [k, v.length]).sort(), [['x', 3], ['y', 1]]);
    assert.equal(t.get(id)!.bytes, 1 + 3 + 1 + 1);
    assert.equal(t.bytes, 6);
  });

  it('a destroyed session never comes back', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    t.applyCommit(commit(id, 0), limits, 1);
    t.destroy(id, 1000);
    assert.throws(() => t.applyCommit(commit(id, 1), limits, 2), code('KILN_ERR_SESSION_DESTROYED'));
    assert.throws(() => t.applyCommit(commit(id, 0), limits, 2), code('KILN_ERR_SESSION_DESTROYED'));
    assert.equal(t.get(id), undefined);
  });

  it('keeps the principal index in step', () => {
    const t = new SessionTable();
    const [a, b] = [generateSessionId(), generateSessionId()];
    t.applyCommit(commit(a, 0, [], { principal: 'alice' }), limits, 1);
    t.applyCommit(commit(b, 0, [], { principal: 'alice' }), limits, 1);
    assert.deepEqual(t.principalSessions('alice').map((m) => m.id).sort(), [a, b].sort());
    t.applyCommit(commit(a, 1, [], { principal: 'bob' }), limits, 1);
    t.destroy(b, 100);
    assert.deepEqual(t.principalSessions('alice').map((m) => m.id), []);
    assert.deepEqual(t.principalSessions('bob').map((m) => m.id), [a]);
    // The index is kept by slot: a removed session's slot, reused, belongs to its new session only.
    const freed = t.slotOf(a);
    t.expire(a);
    const c = generateSessionId();
    t.applyCommit(commit(c, 0, [], { principal: 'carol' }), limits, 1);
    assert.equal(t.slotOf(c), freed, 'the freed slot is reused');
    assert.deepEqual(t.principalSessions('bob').map((m) => m.id), []);
    assert.deepEqual(t.principalSessions('carol').map((m) => m.id), [c]);
    t.applyCommit(commit(c, 1, [], { principal: null }), limits, 1);
    assert.equal(t.principalCount('carol'), 0);
    const d = generateSessionId();
    t.applyCommit(commit(d, 0, [], { principal: 'carol' }), limits, 1);
    assert.deepEqual(t.principalSessions('carol').map((m) => m.id), [d]);
    assert.equal(t.principalCount('carol'), 1);
  });

  it("pages a principal's sessions with a cursor in one step each; a cursor naming another principal's session is not followed into that principal's list", () => {
    const t = new SessionTable();
    const ann = Array.from({ length: 5 }, () => generateSessionId());
    const bob = Array.from({ length: 3 }, () => generateSessionId());
    // Interleaved, so the two lists' joins alternate: ann 1, bob 2, ann 3, bob 4, ann 5, bob 6, ann 7, ann 8.
    for (let i = 0; i < 5; i++) {
      t.applyCommit(commit(ann[i]!, 0, [], { principal: 'ann' }), limits, 1);
      if (i < 3) t.applyCommit(commit(bob[i]!, 0, [], { principal: 'bob' }), limits, 1);
    }
    const first = t.principalPage('ann', 2);
    assert.deepEqual(first.sessions.map((m) => m.id), [ann[4], ann[3]]);
    assert.equal(first.sessions[0]!.principal, 'ann');
    assert.deepEqual(first.next, { id: ann[3], join: 7 });
    assert.equal(first.total, 5);
    const second = t.principalPage('ann', 2, first.next!);
    assert.deepEqual(second.sessions.map((m) => m.id), [ann[2], ann[1]]);
    assert.equal(second.steps, 1, "from the last page's last session: one step");
    const last = t.principalPage('ann', 2, second.next!);
    assert.deepEqual(last.sessions.map((m) => m.id), [ann[0]]);
    assert.equal(last.next, null);
    // Bob's newest session with its own join: ann's listing must not walk on into bob's list.
    const hostile = t.principalPage('ann', 10, { id: bob[2]!, join: 6 });
    assert.deepEqual(hostile.sessions.map((m) => m.id), [ann[2], ann[1], ann[0]], "only ann's, those that joined before join 6, from her list's head");
    assert.equal(hostile.steps, 2, 'from the head of ann\'s list');
    // An id that names no session: the walk from the head.
    assert.deepEqual(t.principalPage('ann', 10, { id: generateSessionId(), join: 7 }).sessions.map((m) => m.id), [ann[2], ann[1], ann[0]]);
  });

  it('a slot taken for "log out everywhere" names its session only while that session lives and keeps its principal', () => {
    const t = new SessionTable();
    const [a, b, c] = [generateSessionId(), generateSessionId(), generateSessionId()];
    t.applyCommit(commit(a, 0, [], { principal: 'pat' }), limits, 10);
    t.applyCommit(commit(c, 0, [], { principal: 'pat' }), limits, 10);
    const mark = t.principalMark();
    const slots = t.slotsOf('pat');
    const slotA = t.slotOf(a);
    const slotC = t.slotOf(c);
    assert.deepEqual([...slots].sort(), [slotA, slotC].sort());
    assert.equal(t.sessionInSlot(slotA, 'pat', mark), a);
    assert.equal(t.sessionInSlot(slotA, 'someone', mark), undefined, 'another principal');
    t.expire(a);
    assert.equal(t.sessionInSlot(slotA, 'pat', mark), undefined, 'ended');
    // Its slot taken by a login of the same principal after the mark (the clock says the
    // same millisecond, or earlier: a count decides, not a clock): left alone.
    t.applyCommit(commit(b, 0, [], { principal: 'pat' }), limits, 5);
    assert.equal(t.slotOf(b), slotA);
    assert.equal(t.sessionInSlot(slotA, 'pat', mark), undefined);
    assert.equal(t.sessionInSlot(slotA, 'pat', t.principalMark()), b);
    // Logged out and in again after the mark: a new login, left alone too.
    t.applyCommit(commit(c, 1, [], { principal: null }), limits, 11);
    t.applyCommit(commit(c, 2, [], { principal: 'pat' }), limits, 11);
    assert.equal(t.sessionInSlot(slotC, 'pat', mark), undefined);
  });

  it('replaying the records it produced rebuilds the same state (also from a dump)', () => {
    const t = new SessionTable();
    const records: TierRecord[] = [];
    const ids = Array.from({ length: 5 }, () => generateSessionId());
    for (const [i, id] of ids.entries()) {
      const r = t.applyCommit(commit(id, 0, [['a', bytes(i)]], { principal: `p${i % 2}` }), limits, 1);
      records.push(r.record!);
      const r2 = t.applyCommit(commit(id, 1, [['b', bytes(2)]], { del: ['a'] }), limits, 1);
      records.push(r2.record!);
    }
    records.push(t.destroy(ids[0]!, 999)!.record);
    const replayed = new SessionTable();
    for (const r of records) replayed.replay(r);
    const fromDump = new SessionTable();
    for (const r of t.dump(0)) fromDump.replay(r);
    // A snapshot record over a session that names another principal moves it in the index.
    const moved = [...t.dump(0)].find((r) => r.t === 's' && r.meta.id === ids[1])!;
    const over = new SessionTable();
    over.applyCommit(commit(ids[1]!, 0, [], { principal: 'someone-else' }), limits, 1);
    over.replay(moved);
    assert.deepEqual(over.principalSessions('someone-else').map((m) => m.id), []);
    assert.deepEqual(over.principalSessions('p1').map((m) => m.id), [ids[1]]);
    for (const copy of [replayed, fromDump]) {
      assert.equal(copy.size, t.size);
      assert.equal(copy.bytes, t.bytes);
      for (const p of ['p0', 'p1']) {
        assert.deepEqual(copy.principalSessions(p).map((m) => m.id).sort(), t.principalSessions(p).map((m) => m.id).sort(), p);
        assert.equal(copy.principalCount(p), t.principalCount(p), p);
      }
      assert.equal(copy.isTombstoned(ids[0]!, 0), true);
      for (const id of ids.slice(1)) assert.deepEqual(copy.snapshot(id), t.snapshot(id));
    }
  });

  it('a commit with patches and deletes stores what replaying its record stores, with or without storage', () => {
    const big = { ...limits, maxAttributeBytes: 4096, maxSessionBytes: 16_384, maxAttributes: 8 };
    const value = Uint8Array.from({ length: 2000 }, (_, i) => i % 251);
    const durable = new SessionTable();
    const memoryOnly = new SessionTable();
    const records: TierRecord[] = [];
    const id = generateSessionId();
    const steps: CommitRequest[] = [
      commit(id, 0, [['list', value], ['a', bytes(3)], ['gone', bytes(5)]]),
      commit(id, 1, [['a', bytes(4)]], { del: ['gone'], patch: [{ name: 'list', at: 10, cut: 2, bytes: Uint8Array.of(7, 7, 7), baseLength: 2000 }] }),
      commit(id, 2, [], { patch: [{ name: 'list', at: 1990, cut: 0, bytes: Uint8Array.of(9), baseLength: 2001 }] }),
    ];
    for (const step of steps) {
      records.push(durable.applyCommit(step, big, 1).record!);
      const light = memoryOnly.applyCommit(step, big, 1, false).record!;
      assert.equal(light.t === 'c' && light.packed, undefined, 'no packed copy without storage');
    }
    const replayed = new SessionTable();
    for (const r of records) replayed.replay(r);
    const expected = Uint8Array.from([...value.subarray(0, 10), 7, 7, 7, ...value.subarray(12, 1989), 9, ...value.subarray(1989)]);
    for (const table of [durable, memoryOnly, replayed]) {
      const snap = table.snapshot(id)!;
      assert.deepEqual(new Map([...snap.attributes].map(([k, v]) => [k, Uint8Array.from(v)])), new Map([['list', expected], ['a', bytes(4)]]));
      assert.equal(table.bytes, durable.bytes);
      assert.equal(snap.meta.version, 3);
    }
  });

  it('applies patches to values larger than its reusable buffers, and keeps nothing of them', () => {
    const huge = { ...limits, maxAttributeBytes: 400_000, maxSessionBytes: 1_000_000, maxAttributes: 8 };
    const t = new SessionTable();
    const id = generateSessionId();
    const other = generateSessionId();
    const a = Uint8Array.from({ length: 150_000 }, (_, i) => i % 253);
    const b = Uint8Array.from({ length: 90_000 }, (_, i) => i % 241);
    t.applyCommit(commit(id, 0, [['a', a], ['b', b]]), huge, 1, false);
    t.applyCommit(commit(other, 0, [['x', bytes(10)]]), huge, 1, false);
    // Two patched values in one commit: the second does not fit the buffer the first used.
    t.applyCommit(commit(id, 1, [], { patch: [{ name: 'a', at: 0, cut: 1, bytes: Uint8Array.of(1, 2), baseLength: a.length }, { name: 'b', at: b.length, cut: 0, bytes: Uint8Array.of(3), baseLength: b.length }] }), huge, 1, false);
    // A later commit of another session reuses the buffers: the first session is unchanged.
    t.applyCommit(commit(other, 1, [['x', bytes(20)]]), huge, 1, false);
    const snap = new Map(t.snapshot(id)!.attributes);
    assert.deepEqual(Uint8Array.from(snap.get('a')!), Uint8Array.from([1, 2, ...a.subarray(1)]));
    assert.deepEqual(Uint8Array.from(snap.get('b')!), Uint8Array.from([...b, 3]));
  });
  it('a large session that keeps its size is rewritten in place, and no reader ever sees it change', (ctx) => {
    const roomy = { ...limits, maxAttributeBytes: 100_000, maxSessionBytes: 200_000, maxAttributes: 8 };
    const t = new SessionTable();
    const id = generateSessionId();
    const list = Uint8Array.from({ length: SMALL_RECORD_BYTES + 500 }, (_, i) => i % 249);
    // Commit ids of one length: the record keeps its size once REMEMBERED_COMMITS are remembered.
    const cid = (n: number) => `same-length-${String(n).padStart(4, '0')}`;
    t.applyCommit(commit(id, 0, [['list', list], ['n', Uint8Array.of(1)]], { commitId: cid(0) }), roomy, 1, false);
    for (let v = 1; v < REMEMBERED_COMMITS; v++) t.applyCommit(commit(id, v, [['n', Uint8Array.of(1)]], { commitId: cid(v) }), roomy, 1, false);
    const reserved = t.reservedBytes;
    const before = t.snapshot(id)!;
    const dumped = [...t.dump(1)];
    const at = REMEMBERED_COMMITS;
    // A new buffer of the same size would leave reservedBytes alone: count the allocations.
    const allocations = ctx.mock.method(Buffer, 'allocUnsafeSlow');
    t.applyCommit(commit(id, at, [['n', Uint8Array.of(2)]], { commitId: cid(at), patch: [{ name: 'list', at: 7, cut: 2, bytes: Uint8Array.of(0xaa, 0xbb), baseLength: list.length }] }), roomy, 1, false);
    assert.equal(allocations.mock.callCount(), 0, 'rewritten where it was: no new buffer');
    allocations.mock.restore();
    assert.equal(t.reservedBytes, reserved);
    // A snapshot or dump taken before is a copy: the rewrite does not reach it.
    assert.deepEqual(Uint8Array.from(before.attributes.get('list')!), list);
    assert.deepEqual(Uint8Array.from(before.attributes.get('n')!), Uint8Array.of(1));
    const replayed = new SessionTable();
    for (const r of dumped) replayed.replay(r);
    assert.deepEqual(Uint8Array.from(replayed.snapshot(id)!.attributes.get('list')!), list);
    // A rejected commit leaves the record as it was.
    assert.throws(() => t.applyCommit(commit(id, at + 1, [['big', bytes(150_000)]], { patch: [{ name: 'list', at: 0, cut: 1, bytes: Uint8Array.of(0), baseLength: list.length }] }), roomy, 1, false), code('KILN_ERR_ATTRIBUTE_TOO_LARGE'));
    const changed = Uint8Array.from(list);
    changed.set([0xaa, 0xbb], 7);
    assert.deepEqual(Uint8Array.from(t.snapshot(id)!.attributes.get('list')!), changed);
    // Shrunk into the shared chunks and grown out of them again, the data follows.
    t.applyCommit(commit(id, at + 1, [['list', bytes(10)]]), roomy, 1, false);
    assert.deepEqual(Uint8Array.from(t.snapshot(id)!.attributes.get('list')!), bytes(10));
    t.applyCommit(commit(id, at + 2, [['list', list]]), roomy, 1, false);
    assert.deepEqual(Uint8Array.from(t.snapshot(id)!.attributes.get('list')!), list);
    assert.equal(t.bytes, 'list'.length + list.length + 'n'.length + 1);
    assert.equal(t.get(id)!.version, at + 3);
  });

  it('refuses principals and attribute names with a lone surrogate (no UTF-8 form: they would come back as another string)', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    assert.throws(() => t.applyCommit(commit(id, 0, [], { principal: 'bob\uD800' }), limits, 1), code('KILN_ERR_INVALID_ARGUMENT'));
    assert.throws(() => t.applyCommit(commit(id, 0, [['x\uDC00', bytes(1)]]), limits, 1), code('KILN_ERR_INVALID_ARGUMENT'));
    assert.equal(t.size, 0);
    t.applyCommit(commit(id, 0, [['ok😀', bytes(1)]], { principal: 'bob😀' }), limits, 1);
    assert.deepEqual(t.principalSessions('bob😀').map((m) => m.id), [id]);
    t.destroy(id, 10);
    assert.equal(t.principalCount('bob😀'), 0);
  });

  it('a principal past 65,534 bytes survives commits and a dump', () => {
    const wide = { ...limits, maxPrincipalLength: 80_000 };
    const t = new SessionTable();
    const id = generateSessionId();
    const principal = 'ü'.repeat(35_000);
    t.applyCommit(commit(id, 0, [['a', bytes(3)]], { principal }), wide, 1);
    t.applyCommit(commit(id, 1, [['b', bytes(2)]]), wide, 1);
    t.applyCommit(commit(id, 2, [['a', bytes(4)]]), wide, 1);
    const fromDump = new SessionTable();
    for (const r of t.dump(0)) fromDump.replay(r);
    for (const table of [t, fromDump]) {
      assert.equal(table.get(id)!.principal, principal);
      assert.deepEqual(table.principalSessions(principal).map((m) => m.id), [id]);
      assert.equal(table.get(id)!.version, 3);
      assert.deepEqual([...table.snapshot(id)!.attributes.keys()].sort(), ['a', 'b']);
    }
    assert.equal(fromDump.committedVersion(id, `c${seq}`), 3);
  });

  it('remembers the last REMEMBERED_COMMITS commit ids of a session, across a dump', () => {
    const t = new SessionTable();
    const id = generateSessionId();
    const total = REMEMBERED_COMMITS + 5;
    for (let v = 0; v < total; v++) t.applyCommit(commit(id, v, [['n', Uint8Array.of(v)]], { commitId: `cid-${v}-${'x'.repeat(v)}` }), limits, 1);
    const fromDump = new SessionTable();
    for (const r of t.dump(0)) fromDump.replay(r);
    for (const table of [t, fromDump]) {
      for (let v = 0; v < total; v++) {
        const known = table.committedVersion(id, `cid-${v}-${'x'.repeat(v)}`);
        assert.equal(known, v < total - REMEMBERED_COMMITS ? undefined : v + 1, `commit ${v}`);
      }
      assert.equal(table.committedVersion(id, 'cid-3'), undefined, 'a prefix of a remembered id is not it');
    }
  });

  it('keeps every field of many sessions through creates, changes, touches and removals', () => {
    const t = new SessionTable();
    const model = new Map<string, { v: number; n: number; la: number; p: string | null }>();
    const ids = Array.from({ length: 3000 }, () => generateSessionId());
    let now = 1000;
    for (let round = 0; round < 4; round++) {
      for (const [i, id] of ids.entries()) {
        now++;
        const m = model.get(id);
        if (m && (i + round) % 7 === 0) {
          t.destroy(id, now + 10);
          model.delete(id);
          continue;
        }
        // Sizes that move sessions between size classes and out to buffers of their own.
        const n = (i * 37 + round * 101) % 3000;
        const p = i % 5 === 0 ? `user-${i % 50}` : null;
        if (!m) {
          if (t.isTombstoned(id, now)) continue;
          t.applyCommit(commit(id, 0, [['v', new Uint8Array(n).fill(i % 256)]], { principal: p ?? undefined, lastAccessedAt: now }), { ...limits, maxAttributeBytes: 5000, maxSessionBytes: 10_000 }, now);
          model.set(id, { v: 1, n, la: now, p });
        } else {
          t.applyCommit(commit(id, m.v, [['v', new Uint8Array(n).fill(i % 256)]], { lastAccessedAt: now }), { ...limits, maxAttributeBytes: 5000, maxSessionBytes: 10_000 }, now);
          model.set(id, { v: m.v + 1, n, la: now, p: m.p });
          if (i % 3 === 0) {
            t.touch(id, now + 5, now + 5);
            model.get(id)!.la = now + 5;
          }
        }
      }
    }
    assert.equal(t.size, model.size);
    let total = 0;
    for (const [id, m] of model) {
      const meta = t.get(id)!;
      assert.equal(meta.version, m.v);
      assert.equal(meta.lastAccessedAt, m.la);
      assert.equal(meta.principal, m.p);
      assert.equal(meta.bytes, 1 + m.n);
      const value = t.snapshot(id)!.attributes.get('v')!;
      assert.equal(value.length, m.n);
      total += 1 + m.n;
    }
    assert.equal(t.bytes, total);
    assert.equal(new Set(t.ids()).size, model.size);
    for (const id of t.ids()) assert.ok(model.has(id));
    const byPrincipal = [...model].filter(([, m]) => m.p === 'user-5').map(([id]) => id).sort();
    assert.deepEqual(t.principalSessions('user-5').map((m) => m.id).sort(), byPrincipal);
  });
});
