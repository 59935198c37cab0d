/**
 * What a commit's replica confirmations mean, under `replicaPolicy` (pure: the engine
 * feeds it ROLE observations and WAIT results, with the time).
 *
 * The rule it keeps: an acknowledged commit is never on one node only while that node
 * may be on its way out. A master cannot tell a dead replica from one being promoted
 * (a failover, or a partition that cut it off): in both, its replica stops confirming.
 * Acknowledging without the replica at that moment loses the write when the master is
 * demoted — measured: a Sentinel failover under the chaos run lost acknowledged cart
 * adds that way. So a shortage of replicas is first a refusal (503, a retry is safe: same
 * commit id), for every policy. Only 'best-effort', and only once ROLE has shown the
 * shortage for `graceMs` (longer than a failover takes: the replica is gone, not
 * promoted), acknowledges with the replicas that remain, counting each such commit.
 */
export type ReplicaPolicy = 'best-effort' | 'strict';

export type ReplicaVerdict = 'confirmed' | 'under-replicated' | 'refused';

export class ReplicaGuard {
  private online: number;
  private shortSince: number | undefined;

  constructor(
    readonly required: number,
    readonly policy: ReplicaPolicy,
    readonly graceMs: number,
  ) {
    this.online = required;
  }

  /** Replicas the master had online at the last look. */
  get seenOnline(): number {
    return this.online;
  }

  /** ROLE on the master listed this many replicas. */
  observe(online: number, now: number): void {
    if (online >= this.required) {
      this.online = this.required;
      this.shortSince = undefined;
    } else {
      this.online = online;
      this.shortSince ??= now;
    }
  }

  /** Another master now (a failover): what was seen of the old one's replicas no longer holds. */
  reset(): void {
    this.online = this.required;
    this.shortSince = undefined;
  }

  /** Best effort, and the shortage has lasted the grace: commits go on with fewer replicas. */
  degraded(now: number): boolean {
    return this.policy === 'best-effort' && this.shortSince !== undefined && now - this.shortSince >= this.graceMs;
  }

  /** How many replicas a commit's WAIT asks for (0: no WAIT). */
  waitFor(now: number): number {
    return this.degraded(now) ? this.online : this.required;
  }

  verdict(confirmed: number, now: number): ReplicaVerdict {
    if (confirmed >= this.required) return 'confirmed';
    // A replica that ROLE lists but that did not confirm is lagging, not gone: refused too.
    return this.degraded(now) && confirmed >= this.online ? 'under-replicated' : 'refused';
  }
}
