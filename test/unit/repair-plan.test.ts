import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planRepair, RepairPlanner, type PlanStep } from '../../src/server/storage/repair-plan.js';
import { packAttributesToBytes, SessionTable, type TierRecord } from '../../src/tier/session-table.js';

// The repair rule alone: which salvaged records are applied and which sessions survive
// the gaps (bytes skipped because of damage) between them.

const n = (value: number): Uint8Array => Uint8Array.of(value);
const create = (id: string, value = 0, at = 1000): TierRecord => ({ t: 'c', id, v: 1, cid: `${id}-1`, la: at, packed: packAttributesToBytes([['n', n(value)]]), pb: 2, del: [], ca: at, it: 60_000, ae: 0 });
const update = (id: string, v: number, value: number): TierRecord => ({ t: 'c', id, v, cid: `${id}-${v}`, la: 1000 + v, packed: packAttributesToBytes([['n', n(value)]]), pb: 2, del: [] });
const destroy = (id: string): TierRecord => ({ t: 'd', id, until: 9e15 });
const expire = (id: string): TierRecord => ({ t: 'e', id });
const touch = (...ids: string[]): TierRecord => ({ t: 'a', items: ids.map((id) => [id, 5000] as [string, number]) });
const snap = (id: string, value: number): TierRecord => ({
  t: 's',
  meta: { id, createdAt: 500, lastAccessedAt: 900, idleTimeoutMs: 30_000, absoluteExpiresAt: 0, principal: null, version: 4 },
  packed: packAttributesToBytes([['n', n(value)]]),
  pb: 2,
  commits: [[`${id}-4`, 4]],
});
const tomb = (id: string): TierRecord => ({ t: 'b', id, until: 9e15 });

const rec = (record: TierRecord): PlanStep => ({ kind: 'record', record });
const GAP: PlanStep = { kind: 'gap' };
const SNAPSHOT_GAP: PlanStep = { kind: 'gap', where: 'snapshot' };

/** Builds the state the plan describes, as repair.ts does. */
function build(steps: PlanStep[]): { table: SessionTable; plan: ReturnType<typeof planRepair> } {
  const plan = planRepair(steps);
  const table = new SessionTable();
  for (const r of plan.apply) table.replay(r);
  return { table, plan };
}

function value(table: SessionTable, id: string): number | undefined {
  const s = table.snapshot(id);
  return s ? s.attributes.get('n')?.[0] : undefined;
}

describe('repair plan', () => {
  it('with no gap, applies every record, as a load would', () => {
    const steps = [create('a', 0), update('a', 2, 1), create('b'), destroy('b'), create('c'), expire('c'), touch('a')].map(rec);
    const { table, plan } = build(steps);
    assert.deepEqual(plan.kept, ['a']);
    assert.equal(plan.recordsApplied, 7);
    assert.equal(plan.recordsSkipped, 0);
    assert.equal(plan.sessionsDropped, 0);
    assert.equal(value(table, 'a'), 1);
    assert.equal(table.get('a')!.lastAccessedAt, 5000);
    assert.ok(table.isTombstoned('b', 0));
  });

  it('drops a session live at a gap and skips its later records: its destroy or an update may be lost', () => {
    const { table, plan } = build([rec(create('a', 0)), rec(update('a', 2, 1)), GAP, rec(update('a', 4, 3)), rec(touch('a'))]);
    assert.deepEqual(plan.kept, []);
    assert.equal(table.size, 0);
    assert.equal(plan.dropped.liveAtGap, 1);
    assert.equal(plan.droppedIds.get('a'), 'liveAtGap');
    assert.equal(plan.recordsSkipped, 2);
    assert.equal(plan.gaps, 1);
  });

  it('a destroy after the gap does not revive, and leaves its tombstone', () => {
    const { table, plan } = build([rec(create('a')), GAP, rec(destroy('a'))]);
    assert.equal(table.size, 0);
    assert.equal(plan.droppedIds.get('a'), 'liveAtGap');
    assert.ok(table.isTombstoned('a', 0), 'the id cannot be created again');
  });

  it('a session destroyed before the gap is neither kept nor counted as dropped', () => {
    const { plan } = build([rec(create('a')), rec(destroy('a')), rec(create('b')), rec(expire('b')), GAP]);
    assert.deepEqual(plan.kept, []);
    assert.equal(plan.sessionsDropped, 0);
  });

  it('keeps a session created after the last gap with its whole history', () => {
    const { table, plan } = build([rec(create('a')), GAP, rec(create('b', 7, 2000)), rec(update('b', 2, 8)), rec(touch('a', 'b'))]);
    assert.deepEqual(plan.kept, ['b']);
    assert.equal(value(table, 'b'), 8);
    const b = table.get('b')!;
    assert.equal(b.createdAt, 2000);
    assert.equal(b.idleTimeoutMs, 60_000);
    assert.equal(b.version, 2);
    assert.equal(b.lastAccessedAt, 5000, 'the touch keeps its live session item');
    assert.equal(table.get('a'), undefined, 'and not the dropped one');
  });

  it('never builds a session whose creation record is missing', () => {
    const { table, plan } = build([rec(update('x', 5, 4)), rec(update('x', 6, 5)), rec(touch('y'))]);
    assert.equal(table.size, 0);
    assert.equal(plan.droppedIds.get('x'), 'noCreation');
    assert.equal(plan.droppedIds.get('y'), 'noCreation');
    assert.equal(plan.dropped.noCreation, 2);
    assert.equal(plan.recordsSkipped, 3);
  });

  it('a session created between two gaps and live at the second is dropped; one created after both is kept', () => {
    const { plan } = build([GAP, rec(create('a')), rec(create('b')), rec(destroy('b')), GAP, rec(create('c'))]);
    assert.deepEqual(plan.kept, ['c']);
    assert.deepEqual([...plan.droppedIds], [['a', 'liveAtGap']]);
  });

  it('a create after the gap starts a new history for a dropped id, without its old attributes', () => {
    const old: TierRecord = { t: 'c', id: 'a', v: 1, cid: 'a-1', la: 1000, packed: packAttributesToBytes([['old', n(1)]]), pb: 4, del: [], ca: 1000, it: 1, ae: 0 };
    const { table, plan } = build([rec(old), GAP, rec(expire('a')), rec(create('a', 9, 3000))]);
    assert.deepEqual(plan.kept, ['a']);
    assert.equal(plan.sessionsDropped, 0);
    assert.equal(table.snapshot('a')!.attributes.has('old'), false);
    assert.equal(table.get('a')!.createdAt, 3000);
    assert.equal(value(table, 'a'), 9);
  });

  it('snapshot records create sessions; a gap inside the snapshot loses only what it held, the sessions read before it are kept', () => {
    // c's snapshot record was in the lost bytes: its later update has nothing to apply to.
    const { table, plan } = build([rec(snap('a', 1)), SNAPSHOT_GAP, rec(snap('b', 2)), rec(tomb('z')), rec(update('b', 5, 3)), rec(update('a', 5, 3)), rec(update('c', 5, 3))]);
    assert.deepEqual(plan.kept, ['a', 'b']);
    assert.equal(value(table, 'a'), 3, 'the session read before the gap takes its later updates');
    assert.equal(value(table, 'b'), 3);
    assert.equal(table.get('b')!.createdAt, 500);
    assert.equal(plan.droppedIds.get('c'), 'noCreation');
    assert.equal(plan.gaps, 1);
    assert.ok(table.isTombstoned('z', 0), 'tombstones are kept');
  });

  it('a gap in a log after the snapshot still drops every session live at it, those of the snapshot included', () => {
    const { plan } = build([rec(snap('a', 1)), SNAPSHOT_GAP, rec(snap('b', 2)), GAP, rec(update('a', 5, 3)), rec(update('b', 5, 3))]);
    assert.deepEqual(plan.kept, []);
    assert.equal(plan.droppedIds.get('a'), 'liveAtGap');
    assert.equal(plan.droppedIds.get('b'), 'liveAtGap');
  });

  it('a version-1 commit without createdAt (an older log) is a create', () => {
    const legacy: TierRecord = { t: 'c', id: 'a', v: 1, cid: 'a-1', la: 1000, set: [['n', n(1)]], del: [] };
    assert.deepEqual(planRepair([rec(legacy)]).kept, ['a']);
  });

  it('the planner streams: gap() returns the ids to evict', () => {
    const p = new RepairPlanner();
    p.record(create('a'));
    p.record(create('b'));
    p.record(destroy('b'));
    assert.deepEqual(p.gap(), ['a']);
    assert.equal(p.isLive('a'), false);
    assert.equal(p.record(update('a', 2, 1)), undefined);
    assert.deepEqual(p.counts(), { recordsApplied: 3, recordsSkipped: 1, gaps: 1, sessionsKept: 0, sessionsDropped: 1, dropped: { liveAtGap: 1, noCreation: 0 } });
  });
});
