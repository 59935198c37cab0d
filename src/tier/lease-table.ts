/**
 * The lease table: who holds which session, who waits for it, and which holders have
 * been asked to give a session back. A pure state machine: every method returns the
 * effects (grants to deliver, recalls to send, revocations to announce) and the shell
 * (the Tier) carries them out. No timers, no I/O, so every race can be unit-tested by
 * calling methods in the racy order.
 *
 * Safety: at most one holder per session (rule 1); every grant gets a fencing token
 * larger than any before it (rule 3); a lease moves only on release by the holder, the
 * holder's death (beginDrop, then dropSlice) or an overrun recall deadline
 * (revokeOverdue) (rule 4).
 */
import { DeadlineHeap } from './deadline-heap.js';

export type OwnerId = string;

export interface LeaseGrantEffect {
  owner: OwnerId;
  sessionId: string;
  token: number;
  releaseAfterUse: boolean;
}

export interface LeaseRecallEffect {
  owner: OwnerId;
  sessionId: string;
  token: number;
}

export interface LeaseRevokeEffect {
  owner: OwnerId;
  sessionId: string;
  token: number;
  reason: 'recall-timeout' | 'destroyed' | 'expired';
}

export interface LeaseEffects {
  grants: LeaseGrantEffect[];
  recalls: LeaseRecallEffect[];
  revokes: LeaseRevokeEffect[];
}

interface Lease {
  holder: OwnerId;
  token: number;
  /** Who waits, in order; NO_WAITERS (shared, never added to) while nobody does, as for most leases. */
  waiters: OwnerId[];
  /** Set while a recall is outstanding: when the holder must have let go. */
  recallDeadline: number;
}

/** A decaying count of how often a session changed hands recently. */
interface Bounce {
  lastOwner: OwnerId;
  score: number;
  at: number;
}

export interface LeaseTableOptions {
  /** How long a holder has to hand a recalled session over before it is revoked. */
  recallTimeoutMs: number;
  /** Hand-overs (decayed) at which a session is considered ping-ponging. */
  pingPongThreshold: number;
  /** Half-life of the hand-over count. */
  pingPongHalfLifeMs: number;
}

export const DEFAULT_LEASE_OPTIONS: Readonly<LeaseTableOptions> = Object.freeze({
  recallTimeoutMs: 3000,
  // One change of process marks the grant that made it: the session is given back after
  // that request, and the next grant decides again. A balancer without affinity moves a
  // session on most requests, so every grant is marked and no request pays a recall (a
  // message to the holder and its hand-over); a failover moves a session once, which
  // costs it one extra acquire on its new process. At 2 (10 s half-life) a session
  // requested every 2 s paid recalls on its first three moves, and the benchmark's
  // no-affinity rows, about three requests per session, measured mostly those.
  pingPongThreshold: 1,
  pingPongHalfLifeMs: 10_000,
});

export const MAX_BOUNCE_ENTRIES = 100_000;

/**
 * The waiters of every lease nobody waits for: one array for all, where an empty array
 * each cost 16 bytes of heap a lease (a tenth of one). Only read, shifted or spliced while
 * empty, which changes nothing; acquire gives a lease its own array for its first waiter.
 */
const NO_WAITERS: OwnerId[] = [];

export class LeaseTable {
  private readonly leases = new Map<string, Lease>();
  private readonly byOwner = new Map<OwnerId, Set<string>>();
  /**
   * The sessions each owner waits for. A closing connection visits these (and the
   * leases it holds), not every lease of the tier: with a million leases, a scan per
   * disconnect held the event loop for tens of milliseconds.
   */
  private readonly waitsByOwner = new Map<OwnerId, Set<string>>();
  /** Every lease's waiters together, kept as they change (stats read it; counting meant a scan). */
  private waiterCount = 0;
  /**
   * Ping-pong history: the owner a session last went to (a plain string: no object per
   * session on the affine path) or, once it has changed hands, a decaying Bounce.
   */
  private readonly bounces = new Map<string, OwnerId | Bounce>();
  /**
   * Owners that are gone, each with where the pass over the leases it held stands (a
   * live iterator of its `byOwner` set). Until the pass reaches a lease, anyone asking
   * for it gets it passed on at once (see acquire).
   */
  private readonly dropping = new Map<OwnerId, Iterator<string>>();
  /**
   * The sessions each owner holds and has been recalled from (someone waits for them):
   * what beginDrop moves on at once, as those waiters are owed an answer.
   */
  private readonly recalledByOwner = new Map<OwnerId, Set<string>>();
  private lastToken: number;
  /** Outstanding recall deadlines, earliest first: (sessionId, token) current while that lease still waits on that deadline. */
  private readonly recallDeadlines = new DeadlineHeap<{ sessionId: string; token: number }>((item, deadline) => {
    const lease = this.leases.get(item.sessionId);
    return lease !== undefined && lease.token === item.token && lease.recallDeadline === deadline;
  });
  readonly counters = { grants: 0, recalls: 0, handovers: 0, revocations: 0, pingPongGrants: 0 };

  constructor(
    private readonly options: LeaseTableOptions = DEFAULT_LEASE_OPTIONS,
    firstToken = 0,
  ) {
    this.lastToken = firstToken;
  }

  get size(): number {
    return this.leases.size;
  }

  holderOf(sessionId: string): { owner: OwnerId; token: number } | undefined {
    const lease = this.leases.get(sessionId);
    return lease ? { owner: lease.holder, token: lease.token } : undefined;
  }

  isCurrent(owner: OwnerId, sessionId: string, token: number): boolean {
    const lease = this.leases.get(sessionId);
    return lease !== undefined && lease.holder === owner && lease.token === token;
  }

  leasesHeldBy(owner: OwnerId): number {
    return this.byOwner.get(owner)?.size ?? 0;
  }

  /** Owners waiting for a lease, over all sessions (O(1)). */
  waitingCount(): number {
    return this.waiterCount;
  }

  /**
   * `owner` asks for the session. Granted at once when free (or already its own);
   * otherwise queued, and the holder is recalled if it has not been already.
   */
  acquire(owner: OwnerId, sessionId: string, now: number): LeaseEffects {
    const effects = emptyEffects();
    let lease = this.leases.get(sessionId);
    if (lease !== undefined && lease.holder !== owner && this.dropping.size > 0 && this.dropping.has(lease.holder)) {
      // Its holder is gone and the pass over its leases has not come to this one yet:
      // move it now rather than recall a holder that cannot answer.
      this.passOn(sessionId, lease, now, effects);
      lease = this.leases.get(sessionId);
      // The asker was queued already: the grant passOn made is its answer.
      if (lease?.holder === owner) return effects;
    }
    if (!lease) {
      effects.grants.push(this.grant(owner, sessionId, now, NO_WAITERS));
      return effects;
    }
    if (lease.holder === owner) {
      // The holder asking again (it lost track, e.g. after a local eviction race):
      // the same lease, same token. Nothing moves.
      effects.grants.push({ owner, sessionId, token: lease.token, releaseAfterUse: this.isPingPong(sessionId, now) });
      return effects;
    }
    if (!lease.waiters.includes(owner)) {
      if (lease.waiters === NO_WAITERS) lease.waiters = [owner];
      else lease.waiters.push(owner);
      this.startWait(owner, sessionId);
    }
    if (lease.recallDeadline === 0) {
      lease.recallDeadline = now + this.options.recallTimeoutMs;
      this.recallDeadlines.push(lease.recallDeadline, { sessionId, token: lease.token });
      this.noteRecalled(lease.holder, sessionId);
      this.counters.recalls++;
      effects.recalls.push({ owner: lease.holder, sessionId, token: lease.token });
    }
    return effects;
  }

  /** A waiter gave up (its acquire timed out): take it out of the queue. */
  cancelWait(owner: OwnerId, sessionId: string): void {
    const lease = this.leases.get(sessionId);
    if (!lease) return;
    const at = lease.waiters.indexOf(owner);
    if (at >= 0) {
      lease.waiters.splice(at, 1);
      if (lease.waiters.length === 0) lease.waiters = NO_WAITERS;
      this.endWait(owner, sessionId);
    }
  }

  /** The holder lets go. A stale token (already revoked or moved) changes nothing. */
  release(owner: OwnerId, sessionId: string, token: number, now: number): LeaseEffects {
    const effects = emptyEffects();
    const lease = this.leases.get(sessionId);
    if (!lease || lease.holder !== owner || lease.token !== token) return effects;
    this.passOn(sessionId, lease, now, effects);
    return effects;
  }

  /** Holders that overran their recall deadline lose the lease; their token dies with it. */
  revokeOverdue(now: number): LeaseEffects {
    const effects = emptyEffects();
    for (const { sessionId } of this.recallDeadlines.popDue(now)) {
      const lease = this.leases.get(sessionId)!;
      this.counters.revocations++;
      effects.revokes.push({ owner: lease.holder, sessionId, token: lease.token, reason: 'recall-timeout' });
      this.passOn(sessionId, lease, now, effects);
    }
    return effects;
  }

  /** The earliest outstanding recall deadline, so the shell can set one timer (O(log n), whatever the number of leases). */
  nextRecallDeadline(): number {
    return this.recallDeadlines.next();
  }

  /** The session is gone (destroyed or expired): the holder is told, waiters get the (empty) lease. */
  endSession(sessionId: string, reason: 'destroyed' | 'expired', now: number, except?: OwnerId): LeaseEffects {
    const effects = emptyEffects();
    const lease = this.leases.get(sessionId);
    if (!lease) return effects;
    if (lease.holder !== except) effects.revokes.push({ owner: lease.holder, sessionId, token: lease.token, reason });
    this.passOn(sessionId, lease, now, effects);
    return effects;
  }

  /**
   * The owner is gone (connection closed, process dead): its waits end now, and so do
   * its leases that others wait for (returned: the grants to them). The rest move on in
   * slices (dropSlice), so a process that held a million leases does not hold up the
   * tier while they move; until a lease's slice comes, acquire moves it on demand.
   */
  beginDrop(owner: OwnerId, now: number): LeaseEffects {
    const effects = emptyEffects();
    for (const sessionId of this.waitsByOwner.get(owner) ?? []) {
      const lease = this.leases.get(sessionId);
      const at = lease?.waiters.indexOf(owner) ?? -1;
      if (at >= 0) {
        lease!.waiters.splice(at, 1);
        if (lease!.waiters.length === 0) lease!.waiters = NO_WAITERS;
        this.waiterCount--;
      }
    }
    this.waitsByOwner.delete(owner);
    // Those who wait already were told to expect the dead holder's answer: they get
    // their leases now, not when a slice comes (passOn takes each out of the set).
    const recalled = this.recalledByOwner.get(owner);
    for (const sessionId of recalled ?? []) {
      const lease = this.leases.get(sessionId);
      if (lease !== undefined && lease.holder === owner) this.passOn(sessionId, lease, now, effects);
      else recalled!.delete(sessionId);
    }
    if (recalled?.size === 0) this.recalledByOwner.delete(owner);
    const held = this.byOwner.get(owner);
    if (held !== undefined && !this.dropping.has(owner)) this.dropping.set(owner, held.values());
    return effects;
  }

  /**
   * Moves on up to `maxLeases` of a dropped owner's leases (beginDrop). `done` once it
   * holds none.
   */
  dropSlice(owner: OwnerId, now: number, maxLeases: number): { effects: LeaseEffects; done: boolean; visited: number } {
    const effects = emptyEffects();
    const pass = this.dropping.get(owner);
    if (pass === undefined) return { effects, done: true, visited: 0 };
    let passed = false;
    let visited = 0;
    while (visited < maxLeases) {
      const next = pass.next();
      if (next.done === true) {
        passed = true;
        break;
      }
      visited++;
      const lease = this.leases.get(next.value);
      // The set is live: what acquire moved on meanwhile is gone from it already.
      if (lease !== undefined && lease.holder === owner) this.passOn(next.value, lease, now, effects);
    }
    const done = passed || !this.byOwner.has(owner);
    if (done) this.dropping.delete(owner);
    return { effects, done, visited };
  }

  /** Whether an owner's leases are still being moved on (beginDrop): its id is not to be attached again meanwhile. */
  isDropping(owner: OwnerId): boolean {
    return this.dropping.has(owner);
  }

  /**
   * Drops decayed ping-pong history so the table stays bounded. Sessions that never
   * changed hands are remembered (who had them last) until the table is half full, then
   * dropped oldest first: deleting them all every sweep made the map shrink and regrow
   * every second under a stream of new sessions, and the discarded tables piled up in the
   * old generation (a third of the garbage of filling a server with a million sessions).
   */
  sweepBounces(now: number): void {
    let dropOwners = this.bounces.size > MAX_BOUNCE_ENTRIES / 2 ? this.bounces.size - MAX_BOUNCE_ENTRIES / 4 : 0;
    for (const [sessionId, bounce] of this.bounces) {
      if (typeof bounce === 'string') {
        if (dropOwners > 0) {
          dropOwners--;
          this.bounces.delete(sessionId);
        }
      } else if (this.decayed(bounce, now) < 0.05) {
        this.bounces.delete(sessionId);
      }
    }
  }

  private passOn(sessionId: string, lease: Lease, now: number, effects: LeaseEffects): void {
    this.forget(lease.holder, sessionId, lease.recallDeadline !== 0);
    const next = lease.waiters.shift();
    if (next === undefined) {
      this.leases.delete(sessionId);
      return;
    }
    this.endWait(next, sessionId);
    this.counters.handovers++;
    const grant = this.grant(next, sessionId, now, lease.waiters.length > 0 ? lease.waiters : NO_WAITERS);
    effects.grants.push(grant);
    if (lease.waiters.length > 0) {
      // Others are still queued: the new holder is asked to give the session back as
      // soon as its current use ends (the recall follows the grant on the wire).
      const deadline = now + this.options.recallTimeoutMs;
      this.leases.get(sessionId)!.recallDeadline = deadline;
      this.recallDeadlines.push(deadline, { sessionId, token: grant.token });
      this.noteRecalled(next, sessionId);
      this.counters.recalls++;
      effects.recalls.push({ owner: next, sessionId, token: grant.token });
    }
  }

  private grant(owner: OwnerId, sessionId: string, now: number, waiters: OwnerId[]): LeaseGrantEffect {
    const token = ++this.lastToken;
    this.leases.set(sessionId, { holder: owner, token, waiters, recallDeadline: 0 });
    let held = this.byOwner.get(owner);
    if (!held) this.byOwner.set(owner, (held = new Set()));
    held.add(sessionId);
    this.counters.grants++;
    const releaseAfterUse = this.noteOwner(sessionId, owner, now);
    if (releaseAfterUse) this.counters.pingPongGrants++;
    return { owner, sessionId, token, releaseAfterUse };
  }

  private startWait(owner: OwnerId, sessionId: string): void {
    let waits = this.waitsByOwner.get(owner);
    if (!waits) this.waitsByOwner.set(owner, (waits = new Set()));
    waits.add(sessionId);
    this.waiterCount++;
  }

  private endWait(owner: OwnerId, sessionId: string): void {
    this.waiterCount--;
    const waits = this.waitsByOwner.get(owner);
    if (!waits) return;
    waits.delete(sessionId);
    if (waits.size === 0) this.waitsByOwner.delete(owner);
  }

  /** `wasRecalled`: the lease had a recall outstanding (only those are in recalledByOwner). */
  private forget(owner: OwnerId, sessionId: string, wasRecalled: boolean): void {
    if (wasRecalled) {
      const recalled = this.recalledByOwner.get(owner);
      if (recalled?.delete(sessionId) === true && recalled.size === 0) this.recalledByOwner.delete(owner);
    }
    const held = this.byOwner.get(owner);
    if (!held) return;
    held.delete(sessionId);
    if (held.size === 0) this.byOwner.delete(owner);
  }

  private noteRecalled(owner: OwnerId, sessionId: string): void {
    let recalled = this.recalledByOwner.get(owner);
    if (!recalled) this.recalledByOwner.set(owner, (recalled = new Set()));
    recalled.add(sessionId);
  }

  private decayed(bounce: Bounce, now: number): number {
    return bounce.score * Math.pow(0.5, (now - bounce.at) / this.options.pingPongHalfLifeMs);
  }

  private isPingPong(sessionId: string, now: number): boolean {
    const bounce = this.bounces.get(sessionId);
    return typeof bounce === 'object' && this.decayed(bounce, now) >= this.options.pingPongThreshold;
  }

  /** Records who got the session; returns whether it is now ping-ponging. */
  private noteOwner(sessionId: string, owner: OwnerId, now: number): boolean {
    const bounce = this.bounces.get(sessionId);
    if (bounce === undefined) {
      // A full table makes room only at the next sweep (the sweep timer): sweeping here
      // walked all MAX_BOUNCE_ENTRIES on every grant of a new id while the table stayed
      // full of recent hand-overs, which two connections can keep it. Until then a new
      // session's first holder is not remembered: its first move counts one bounce less.
      if (this.bounces.size < MAX_BOUNCE_ENTRIES) this.bounces.set(sessionId, owner);
      return false;
    }
    if (typeof bounce === 'string') {
      if (bounce === owner) return false;
      this.bounces.set(sessionId, { lastOwner: owner, score: 1, at: now });
      return 1 >= this.options.pingPongThreshold;
    }
    let score = this.decayed(bounce, now);
    if (bounce.lastOwner !== owner) score += 1;
    bounce.score = score;
    bounce.at = now;
    bounce.lastOwner = owner;
    return score >= this.options.pingPongThreshold;
  }
}

function emptyEffects(): LeaseEffects {
  return { grants: [], recalls: [], revokes: [] };
}

