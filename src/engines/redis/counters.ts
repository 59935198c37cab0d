/**
 * This process's share of the cluster-wide counters (the `{idx}:stats` hash). Counts are
 * kept locally and added with HINCRBY about once a second, so the request path never
 * waits on the one shard that holds the hash; a failed flush puts its counts back, so a
 * count is added exactly once or stays pending (never lost to a hiccup, never doubled).
 */
import { num, text, type Reply } from './replies.js';

export const COUNTER_NAMES = ['created', 'commits', 'commitBytes', 'duplicateCommits', 'rejectedCommits', 'touches', 'expired', 'destroyed', 'leaseGrants', 'leaseRecalls', 'leaseHandovers', 'leaseRevocations', 'pingPongGrants', 'underReplicatedCommits', 'sessionBytes'] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

/** What a part needs to count: one function, not the counters themselves. */
export type Count = (name: CounterName, by?: number) => void;

/** The lease counters a lease-moving script appends to its reply, in scripts.ts's order. */
const SCRIPT_STAT_NAMES = ['leaseGrants', 'leaseRecalls', 'leaseHandovers', 'pingPongGrants', 'leaseRevocations'] as const;

export class Counters {
  private readonly unflushed = new Map<CounterName, number>();

  readonly count: Count = (name, by = 1) => {
    if (by !== 0) this.unflushed.set(name, (this.unflushed.get(name) ?? 0) + by);
  };

  /** Adds the {grants, recalls, handovers, pingPongGrants, revocations} a script reported. */
  addScriptStats(stat: Reply): void {
    if (!Array.isArray(stat)) return;
    SCRIPT_STAT_NAMES.forEach((name, i) => this.count(name, num(stat[i])));
  }

  /** Counts not yet flushed (tests, and to skip a flush with nothing to say). */
  pending(): ReadonlyMap<CounterName, number> {
    return this.unflushed;
  }

  /** Hands every pending count to `add`; on failure they are pending again and the error is rethrown. */
  async flush(add: (name: CounterName, by: number) => Promise<unknown>): Promise<void> {
    if (this.unflushed.size === 0) return;
    const entries = [...this.unflushed];
    this.unflushed.clear();
    try {
      await Promise.all(entries.map(([name, by]) => add(name, by)));
    } catch (err) {
      for (const [name, by] of entries) this.count(name, by);
      throw err;
    }
  }
}

/** The stats hash (HGETALL, flat) as counters, every known name present; sessionBytes apart. */
export function countersFrom(hash: Reply[]): { counters: Record<string, number>; sessionBytes: number } {
  const counters: Record<string, number> = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]));
  for (let i = 0; i + 1 < hash.length; i += 2) counters[text(hash[i])] = num(hash[i + 1]);
  const sessionBytes = counters['sessionBytes'] ?? 0;
  delete counters['sessionBytes'];
  return { counters, sessionBytes };
}
