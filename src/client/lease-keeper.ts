import type { Engine } from '../engines/engine.js';
import { KilnError, isKilnError } from '../errors/index.js';
import type { LeaseGrant, SessionSnapshot } from '../session/model.js';
import { passed, withTimeout } from '../util/deadline.js';
import type { AccessTouches } from './access-touches.js';
import { toCached } from './committed-state.js';
import type { ClientCounters } from './counters.js';
import { cacheChannel, leaseChannel } from './diagnostics.js';
import type { KeyedQueue } from './keyed-queue.js';
import type { NearCache } from './near-cache.js';
import { SessionCounts } from './session-counts.js';
import type { CachedSession } from './session-handle.js';

/**
 * What this process holds of each session: its lease, its cached copy (the near cache)
 * and its access time not yet sent. One room, because the lease rule ties them: the
 * cached copy is trusted only while the lease is held, so whatever ends a lease
 * (recall, revocation, disconnect, trimming, a commit that found the copy stale) ends
 * the other two with it — forget() is the one place that does.
 *
 * Lease rules kept here:
 * - a recall waits for the requests already queued on the session in this process,
 *   sends their write-behind changes, then gives the lease back with the last access
 *   time, in one call;
 * - a recall that overtakes its grant on the wire is remembered and served when the
 *   grant lands;
 * - a session that ping-pongs between processes (releaseAfterUse) goes back after use;
 * - at most maxLeases are kept: idle ones beyond go back, least recently used first
 *   (CLOCK: a lease used since the last trim gets a second chance).
 */
export interface LeaseState {
  token: number;
  /** Used since the last trim (second-chance eviction of leases beyond maxLeases). */
  used?: boolean;
  releaseAfterUse: boolean;
  recalled: boolean;
}

export interface LeaseKeeperParts {
  engine: Engine;
  queue: KeyedQueue;
  cache: NearCache<CachedSession>;
  touches: AccessTouches;
  counters: ClientCounters;
  acquireTimeoutMs: number;
  maxLeases: number;
  isClosed: () => boolean;
  /** Write-behind changes of a session: whether any wait, and sending them (before its lease goes or it is reloaded). */
  hasPending: (sessionId: string) => boolean;
  flushPending: (sessionId: string) => Promise<void>;
  /** A snapshot was loaded: write-behind bases its next commit on this version. */
  loaded: (sessionId: string, version: number) => void;
}

/** A dropped connection freed what the server had granted with it: asking again is safe, this often. */
const ACQUIRE_ATTEMPTS = 3;

export class LeaseKeeper {
  readonly leases = new Map<string, LeaseState>();
  /** Recalls that arrived before the grant they refer to was processed. */
  private readonly earlyRecalls = new Map<string, number>();
  /** Acquires on their way, by session: a recall is kept for later only while one is (see recall). */
  private readonly acquiring = new SessionCounts();

  constructor(private readonly p: LeaseKeeperParts) {}

  get size(): number {
    return this.leases.size;
  }

  /** The session under its lease: the cached copy, else loaded (taking the lease if need be); null when it does not exist. */
  async load(sessionId: string, deadline: number): Promise<CachedSession | null> {
    // Changes of this process still to go, made under a lease since lost, go first on
    // their own base (a reload must not become their base: see WriteBehind.loaded). A
    // flush that fails was reported; one that outlasts the request goes on without it.
    if (!this.leases.has(sessionId) && this.p.hasPending(sessionId)) await this.flushWithin(sessionId, deadline).catch(() => undefined);
    const lease = this.leases.get(sessionId);
    if (lease) {
      lease.used = true;
      const cached = this.p.cache.get(sessionId);
      if (cacheChannel.hasSubscribers) cacheChannel.publish({ type: cached ? 'hit' : 'miss', sessionId });
      if (cached) return cached;
      // Evicted while write-behind changes were pending: send them before reloading,
      // within the request's deadline (the flush goes on without it if the tier is slow).
      if (this.p.hasPending(sessionId)) await this.flushWithin(sessionId, deadline);
      try {
        this.p.counters.loads++;
        const snapshot = await this.p.engine.load(sessionId, lease.token, { deadline });
        return this.remember(sessionId, snapshot);
      } catch (err) {
        if (!isKilnError(err, 'KILN_ERR_LEASE_LOST')) throw err;
        this.forget(sessionId);
      }
    }
    const grant = await this.acquire(sessionId, deadline);
    return this.remember(sessionId, grant.snapshot);
  }

  private flushWithin(sessionId: string, deadline: number): Promise<void> {
    return withTimeout(this.p.flushPending(sessionId), Math.max(0, deadline - Date.now()), () => new KilnError('KILN_ERR_TIMEOUT', "the session's earlier changes were not sent within the request's time"));
  }

  /** Takes the lease (within the deadline) and keeps it. */
  async acquire(sessionId: string, deadline: number): Promise<LeaseGrant> {
    this.p.counters.acquires++;
    let grant: LeaseGrant;
    this.acquiring.add(sessionId);
    let failed = true;
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          grant = await this.p.engine.acquire(sessionId, { timeoutMs: this.p.acquireTimeoutMs, deadline });
          break;
        } catch (err) {
          // The connection dropped with the request in flight: the server freed whatever
          // it had granted us with it, so asking again is safe.
          if (!isKilnError(err, 'KILN_ERR_CONNECTION_LOST') || attempt >= ACQUIRE_ATTEMPTS || this.p.isClosed() || passed(deadline)) throw err;
        }
      }
      failed = false;
    } finally {
      this.acquiring.remove(sessionId);
      // A recall kept for a grant that never came to us is kept no longer.
      if (failed && !this.acquiring.has(sessionId)) this.earlyRecalls.delete(sessionId);
    }
    this.leases.set(sessionId, { token: grant.token, releaseAfterUse: grant.releaseAfterUse, recalled: false });
    if (leaseChannel.hasSubscribers) leaseChannel.publish({ type: 'acquired', sessionId, token: grant.token, releaseAfterUse: grant.releaseAfterUse });
    const early = this.earlyRecalls.get(sessionId);
    if (early !== undefined) {
      this.earlyRecalls.delete(sessionId);
      if (early === grant.token) this.recall(sessionId, grant.token);
    }
    this.trim();
    return grant;
  }

  /** Caches a loaded snapshot (null: the session does not exist). */
  remember(sessionId: string, snapshot: SessionSnapshot | null): CachedSession | null {
    if (!snapshot) return null;
    const cached = toCached(snapshot);
    this.p.loaded(sessionId, cached.meta.version);
    this.p.cache.set(sessionId, cached);
    return cached;
  }

  /** The tier wants the lease for another process. */
  recall(sessionId: string, token: number): void {
    const lease = this.leases.get(sessionId);
    if (!lease || lease.token !== token) {
      // The grant this recall refers to may still be on its way to us: kept while an
      // acquire of ours is (any other recall crossed our own release, and is dropped, so
      // the map stays as small as the acquires in flight).
      if ((!lease || lease.token < token) && this.acquiring.has(sessionId)) this.earlyRecalls.set(sessionId, token);
      return;
    }
    if (lease.recalled) return;
    lease.recalled = true;
    // Queued behind the requests already waiting for this session: they finish first.
    this.p.queue
      .run(sessionId, this.p.acquireTimeoutMs, () => this.handOver(sessionId, token))
      .catch(() => undefined);
  }

  /** The lease ended without a release (deadline overrun, destroyed, expired). */
  revoked(sessionId: string, token: number): void {
    const lease = this.leases.get(sessionId);
    if (!lease || lease.token !== token) return;
    this.p.counters.revocations++;
    this.forget(sessionId);
    if (leaseChannel.hasSubscribers) leaseChannel.publish({ type: 'revoked', sessionId, token });
  }

  /** Every lease is gone (disconnect, new epoch): every cached copy goes with them. */
  lostAll(): void {
    this.p.counters.leasesLost += this.leases.size;
    this.leases.clear();
    this.p.cache.clear();
    this.p.touches.clear();
    this.earlyRecalls.clear();
  }

  /** After a request: release at once when the session ping-pongs. */
  finishUse(sessionId: string): void {
    const lease = this.leases.get(sessionId);
    if (!lease || this.p.queue.waiting(sessionId) > 0) return;
    if (lease.releaseAfterUse) void this.release(sessionId, lease.token);
  }

  /** Gives back a lease whose session turned out not to exist or to be stale. */
  releaseUnused(sessionId: string): void {
    const lease = this.leases.get(sessionId);
    if (lease) void this.release(sessionId, lease.token);
  }

  /** Drops what this process holds of the session: lease, cached copy and access time. */
  forget(sessionId: string): void {
    this.leases.delete(sessionId);
    this.p.cache.delete(sessionId);
    this.p.touches.delete(sessionId);
  }

  /** Gives every lease back at once (closing), so other processes get them without a recall. */
  async releaseAll(): Promise<void> {
    const releases = [...this.leases].map(([id, lease]) => this.p.engine.release(id, lease.token).catch(() => undefined));
    this.leases.clear();
    this.p.cache.clear();
    await Promise.all(releases);
  }

  private async handOver(sessionId: string, token: number): Promise<void> {
    const lease = this.leases.get(sessionId);
    if (!lease || lease.token !== token) return;
    await this.p.flushPending(sessionId).catch(() => undefined);
    // A flush that failed has forgotten the lease, which the tier still counts as ours:
    // it goes back all the same, or the process waiting for it would wait out the recall.
    if (!this.mayGiveBack(sessionId, token)) return;
    this.p.counters.handovers++;
    if (leaseChannel.hasSubscribers) leaseChannel.publish({ type: 'handed-over', sessionId, token });
    await this.giveBack(sessionId, token);
  }

  /**
   * Gives a lease back, with the access time not yet sent (one call). Without
   * write-behind changes pending it leaves in this very tick, so a process asking for
   * the session next finds it free instead of paying for a recall.
   */
  private async release(sessionId: string, token: number): Promise<void> {
    if (this.p.hasPending(sessionId)) await this.p.flushPending(sessionId).catch(() => undefined);
    if (!this.mayGiveBack(sessionId, token)) return;
    await this.giveBack(sessionId, token);
  }

  /**
   * After waiting: whether the lease `token` is still ours to give back. Forgotten
   * meanwhile (a failed commit dropped it) it is: the tier holds it for us until a
   * release (one for a token it no longer knows changes nothing). Not when a newer
   * grant has replaced it.
   */
  private mayGiveBack(sessionId: string, token: number): boolean {
    const lease = this.leases.get(sessionId);
    return lease === undefined || lease.token === token;
  }

  private async giveBack(sessionId: string, token: number): Promise<void> {
    const at = this.p.touches.take(sessionId, token);
    this.forget(sessionId);
    if (at !== undefined) this.p.counters.touchesSent++;
    await this.p.engine.release(sessionId, token, at).catch(() => undefined);
  }

  /** Keeps the number of leases held bounded: the least recently used idle ones go back. */
  private trim(): void {
    if (this.leases.size <= this.p.maxLeases) return;
    for (const [sessionId, lease] of this.leases) {
      if (this.leases.size <= this.p.maxLeases) break;
      if (this.p.queue.isBusy(sessionId)) continue;
      if (lease.used) {
        // Used since the last trim: move it behind the others (the map iterates in insertion order).
        lease.used = false;
        this.leases.delete(sessionId);
        this.leases.set(sessionId, lease);
        continue;
      }
      // release() forgets the lease itself (after flushing write-behind changes).
      void this.release(sessionId, lease.token);
    }
  }
}
