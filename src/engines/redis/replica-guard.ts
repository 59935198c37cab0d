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
 *
 * A WAIT holds its connection: Redis reads nothing more from it until the WAIT returns,
 * and while replicas are short every WAIT runs its whole timeout. So once a connection's
 * master is known to lack replicas (a WAIT came back short, or ROLE listed fewer), its
 * commits are refused before they are sent, and ROLE, which holds nothing up, is asked
 * at most once per `probeSpacingMs` whether they are back. Back means acknowledging:
 * ROLE must show enough replicas whose acknowledged offset has reached the master's
 * offset at the first look after the shortage began. A replica that is frozen or cut off
 * without a reset stays listed until Redis's repl-timeout (60 s), and counting it would
 * let every other WAIT hold the connection again. A shortage is kept per connection: on
 * a cluster one shard without its replica stops only its own commits. So is best
 * effort's clock: one shard short past its grace does not let another shard's commits
 * go unconfirmed (the heartbeat reads ROLE on every master of a cluster).
 */
export type ReplicaPolicy = 'best-effort' | 'strict';

export type ReplicaVerdict = 'confirmed' | 'under-replicated' | 'refused';

/** What ROLE says of a master: its replication offset and each online replica's acknowledged one. */
export interface RoleView {
  masterOffset: number;
  replicaOffsets: number[];
}

/** How one commit is confirmed. */
export interface ConfirmationPlan {
  /** Replicas its WAIT asks for (0: no WAIT). */
  waitFor: number;
  /** Refused before it is sent: its master is known to lack replicas. */
  refuse: boolean;
  /** Ask ROLE on that master now whether they are back (see roleSeen). */
  probe: boolean;
}

/** What ROLE last listed on one connection's master, and since when it has listed too few. */
interface ReplicaClock {
  online: number;
  shortSince: number;
}

export class ReplicaGuard {
  /** Per connection ('' where there is one: standalone, Sentinel). */
  private readonly clocks = new Map<string, ReplicaClock>();
  /**
   * Connections whose master is known to lack replicas: when ROLE may next be asked, and
   * the master's offset at the first look since (replicas must acknowledge past it).
   */
  private readonly shortages = new Map<string, { nextProbeAt: number; sinceOffset: number | undefined }>();
  /** The plan of nearly every commit, made once (plan() runs per commit). */
  private readonly waitForAll: ConfirmationPlan;

  constructor(
    readonly required: number,
    readonly policy: ReplicaPolicy,
    readonly graceMs: number,
    readonly probeSpacingMs = 0,
  ) {
    this.waitForAll = Object.freeze({ waitFor: required, refuse: false, probe: false });
  }

  /** Whether commits on `connection` are refused before they are sent. */
  isShort(connection = ''): boolean {
    return this.shortages.has(connection);
  }

  /** Replicas the masters had online at the last look: the fewest of any (on a cluster, the shard worst off). */
  get seenOnline(): number {
    let fewest = this.required;
    for (const clock of this.clocks.values()) fewest = Math.min(fewest, clock.online);
    return fewest;
  }

  /** ROLE on `connection`'s master (the heartbeat's, on every master) listed this many replicas. */
  observe(online: number, now: number, connection = ''): void {
    if (online >= this.required) {
      this.clocks.delete(connection);
      return;
    }
    const clock = this.clocks.get(connection);
    if (clock) clock.online = online;
    else this.clocks.set(connection, { online, shortSince: now });
  }

  /** ROLE on `connection`'s master: a shortage begins (too few listed), or ends (enough acknowledging again). */
  roleSeen(connection: string, role: RoleView, now: number): void {
    const shortage = this.shortages.get(connection);
    if (!shortage) {
      if (role.replicaOffsets.length < this.required) this.shortages.set(connection, { nextProbeAt: now + this.probeSpacingMs, sinceOffset: role.masterOffset });
      return;
    }
    if (shortage.sinceOffset === undefined) {
      shortage.sinceOffset = role.masterOffset;
      return;
    }
    const since = shortage.sinceOffset;
    if (role.replicaOffsets.filter((offset) => offset >= since).length >= this.required) this.shortages.delete(connection);
  }

  /**
   * Another master now (a failover): what was seen of the old one's replicas no longer
   * holds. `masters`, on a cluster, the connections of the masters now: only what was
   * seen of the others goes (a failover of one shard leaves the others' shortages and
   * grace as they were; a new master is a new connection, seen afresh).
   */
  reset(masters?: readonly string[]): void {
    if (masters === undefined) {
      this.clocks.clear();
      this.shortages.clear();
      return;
    }
    const now = new Set(masters);
    for (const connection of [...this.clocks.keys()]) if (!now.has(connection)) this.clocks.delete(connection);
    for (const connection of [...this.shortages.keys()]) if (!now.has(connection)) this.shortages.delete(connection);
  }

  /** Best effort, and `connection`'s shortage has lasted the grace: its commits go on with fewer replicas. */
  degraded(now: number, connection = ''): boolean {
    if (this.policy !== 'best-effort') return false;
    const clock = this.clocks.get(connection);
    return clock !== undefined && now - clock.shortSince >= this.graceMs;
  }

  /**
   * How the next commit on `connection` is confirmed. Degraded: a WAIT for the replicas
   * that remain. A known shortage: refused unsent (strict, or best effort within its grace).
   */
  plan(now: number, connection = ''): ConfirmationPlan {
    if (this.degraded(now, connection)) return { waitFor: this.clocks.get(connection)!.online, refuse: false, probe: false };
    const shortage = this.shortages.get(connection);
    if (!shortage) return this.waitForAll;
    const probe = now >= shortage.nextProbeAt;
    if (probe) shortage.nextProbeAt = now + this.probeSpacingMs;
    return { waitFor: 0, refuse: true, probe };
  }

  /** What `confirmed` replicas mean for a commit whose WAIT asked for `waitedFor` on `connection`. */
  verdict(confirmed: number, now: number, waitedFor = this.required, connection = ''): ReplicaVerdict {
    if (confirmed >= this.required) {
      this.shortages.delete(connection);
      return 'confirmed';
    }
    // A WAIT for all that came back short: the next commits on this connection are refused unsent.
    if (waitedFor >= this.required && !this.shortages.has(connection)) this.shortages.set(connection, { nextProbeAt: now, sinceOffset: undefined });
    // A replica that ROLE lists but that did not confirm is lagging, not gone: refused too.
    return this.degraded(now, connection) && confirmed >= this.clocks.get(connection)!.online ? 'under-replicated' : 'refused';
  }
}
