import type { TierRecord } from '../../tier/session-table.js';

/**
 * The rule `kiln repair` rebuilds a damaged data directory by, with no I/O: it reads the
 * salvaged records in replay order (snapshot, then logs) with a marker wherever bytes
 * were skipped, and says which records to apply and which sessions to forget, so that
 * every session kept holds a state the server acknowledged.
 *
 * - A session is built only from a record that creates it whole: a create commit
 *   (version 1, with createdAt and timeouts) or a snapshot record. Updates, touches,
 *   destroys and expiries of a session that was never built are skipped.
 * - At a gap in a log every live session is dropped: its destroy or an update may be in
 *   the lost bytes, and replaying its later records would build a state that never
 *   existed. Its later records are skipped. When in doubt a session is dropped, never
 *   revived.
 * - A gap inside the snapshot drops nothing already read. A snapshot holds each session
 *   once, whole (one record: its state when the snapshot was taken, or its tombstone),
 *   so the lost bytes can hold only other sessions' records: those sessions are lost
 *   (their later records have no creation to apply to), the ones read are not touched.
 * - A session (re)created after the gap, with its whole history after it, is kept: a
 *   create happens only when no session of that id exists, so it starts a new history.
 * - Tombstones ('b', and the tombstone a salvaged destroy leaves) are always kept: they
 *   only stop a destroyed id from being created again, which errs on the dropping side.
 *
 * Online: each decision depends only on what came before, so the shell streams records
 * into one SessionTable and never holds the directory's contents twice.
 */

export type DropReason = 'liveAtGap' | 'noCreation';

export interface RepairPlanCounts {
  /** Salvaged records applied, whole or in part (a touch record keeps its live sessions' items). */
  recordsApplied: number;
  /** Salvaged records whose session was dropped or never built. */
  recordsSkipped: number;
  gaps: number;
  sessionsKept: number;
  sessionsDropped: number;
  dropped: Record<DropReason, number>;
}

export class RepairPlanner {
  private readonly live = new Set<string>();
  /** Ids not built, and why; sticky until a later create starts a new history. */
  private readonly dropped = new Map<string, DropReason>();
  private applied = 0;
  private skipped = 0;
  private gapCount = 0;

  /**
   * The record to apply for a salvaged record (itself, a touch record narrowed to the
   * live sessions, or a destroy reduced to its tombstone), or undefined to skip it.
   */
  record(record: TierRecord): TierRecord | undefined {
    switch (record.t) {
      case 'c': {
        // Version 1 is a create (base version 0); createdAt is written on creates only.
        if (record.ca !== undefined || record.v === 1) return this.create(record.id, record);
        if (this.live.has(record.id)) return this.apply(record);
        this.orphan(record.id);
        return this.skip();
      }
      case 's':
        return this.create(record.meta.id, record);
      case 'd':
        if (this.live.delete(record.id)) return this.apply(record);
        this.skipped++;
        // The session part is skipped; the tombstone still keeps the id from coming back.
        return { t: 'b', id: record.id, until: record.until };
      case 'e':
        if (this.live.delete(record.id)) return this.apply(record);
        return this.skip();
      case 'a': {
        const items = record.items.filter(([id]) => {
          if (this.live.has(id)) return true;
          this.orphan(id);
          return false;
        });
        if (items.length === 0) return this.skip();
        return this.apply(items.length === record.items.length ? record : { t: 'a', items });
      }
      case 'b':
        return this.apply(record);
      default: {
        // A record kind this planner does not know cannot be judged safe: skip it, visibly.
        const unknown: never = record;
        void unknown;
        return this.skip();
      }
    }
  }

  /**
   * Bytes were skipped here. In a log every live session is dropped; in the snapshot
   * none is (see the rules above). Returns the ids dropped, for the caller to remove.
   */
  gap(where: 'log' | 'snapshot' = 'log'): string[] {
    this.gapCount++;
    if (where === 'snapshot') return [];
    const ids = [...this.live];
    for (const id of ids) this.dropped.set(id, 'liveAtGap');
    this.live.clear();
    return ids;
  }

  /** Whether a session is kept so far (live, with a whole history since its creation). */
  isLive(id: string): boolean {
    return this.live.has(id);
  }

  counts(): RepairPlanCounts {
    const dropped: Record<DropReason, number> = { liveAtGap: 0, noCreation: 0 };
    for (const reason of this.dropped.values()) dropped[reason]++;
    return {
      recordsApplied: this.applied,
      recordsSkipped: this.skipped,
      gaps: this.gapCount,
      sessionsKept: this.live.size,
      sessionsDropped: dropped.liveAtGap + dropped.noCreation,
      dropped,
    };
  }

  /** Ids dropped, by reason (for tests and messages). */
  droppedIds(): Map<string, DropReason> {
    return new Map(this.dropped);
  }

  keptIds(): string[] {
    return [...this.live];
  }

  private create(id: string, record: TierRecord): TierRecord {
    this.live.add(id);
    this.dropped.delete(id);
    return this.apply(record);
  }

  /** A record for a session not live: if no earlier reason holds, its creation is missing. */
  private orphan(id: string): void {
    if (!this.dropped.has(id)) this.dropped.set(id, 'noCreation');
  }

  private apply(record: TierRecord): TierRecord {
    this.applied++;
    return record;
  }

  private skip(): undefined {
    this.skipped++;
    return undefined;
  }
}

export type PlanStep = { kind: 'record'; record: TierRecord } | { kind: 'gap'; where?: 'log' | 'snapshot' };

export interface RepairPlan extends RepairPlanCounts {
  kept: string[];
  droppedIds: Map<string, DropReason>;
  /** What to replay, in order, to build the kept state; a gap's evictions are `{ t: 'e' }` records. */
  apply: TierRecord[];
}

/** The whole plan for a sequence held in memory (tests, small directories); repair.ts streams instead. */
export function planRepair(steps: Iterable<PlanStep>): RepairPlan {
  const planner = new RepairPlanner();
  const apply: TierRecord[] = [];
  for (const step of steps) {
    if (step.kind === 'gap') {
      for (const id of planner.gap(step.where)) apply.push({ t: 'e', id });
      continue;
    }
    const out = planner.record(step.record);
    if (out) apply.push(out);
  }
  return { ...planner.counts(), kept: planner.keptIds().sort(), droppedIds: planner.droppedIds(), apply };
}
