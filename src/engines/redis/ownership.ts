/**
 * The leases this process holds, and how long it trusts each without hearing from Redis.
 * The rule it keeps is fencing from this side: Redis drops a lease at its time limit (or
 * at a recall's deadline) whether or not we are listening, so this process stops trusting
 * it VALIDITY_MARGIN_MS earlier and tells the client, which then neither serves nor
 * commits from a copy another process may already be changing. Leases it stopped trusting
 * for connection trouble are remembered, to be handed back once Redis answers again.
 */
import { forEachInSlices } from '../../tier/sliced-work.js';
import { settlePooled } from '../../util/slices.js';
import type { LeaseHandler } from '../engine.js';

/** Renewals in flight at once (see settlePooled). */
export const RENEW_SLICE = 256;

/** Small safety margin so this process stops trusting a lease before Redis drops it. */
export const VALIDITY_MARGIN_MS = 250;

export interface HeldLease {
  token: number;
  /** Until when this process may trust the lease without hearing from Redis. */
  validUntil: number;
}

/** The granularity renewAll orders leases by: whole seconds of `validUntil`. */
const RENEW_ORDER_MS = 1000;

/** How long a fresh grant is trusted: until its recall deadline if it came recalled, else a time limit from when it was asked for. */
export function grantValidUntil(recallDeadline: number, sentAt: number, leaseTimeMs: number): number {
  return recallDeadline > 0 ? recallDeadline - VALIDITY_MARGIN_MS : sentAt + leaseTimeMs - VALIDITY_MARGIN_MS;
}

/**
 * The renew script's answer: 0 the lease is gone (expired or moved), 1 renewed for a
 * full time limit, more than 1 the recall deadline it is under (a recall message we may
 * have missed: pub/sub delivers at most once), below 0 no answer.
 */
export type RenewVerdict = { kind: 'lapsed' } | { kind: 'renewed' } | { kind: 'recalled'; deadline: number } | { kind: 'unknown' };

export function renewVerdict(reply: number): RenewVerdict {
  if (reply === 0) return { kind: 'lapsed' };
  if (reply === 1) return { kind: 'renewed' };
  if (reply > 1) return { kind: 'recalled', deadline: reply };
  return { kind: 'unknown' };
}

export class Ownership {
  private readonly held = new Map<string, HeldLease>();
  /** Sessions whose renewal is under way (one that outlived its round is not sent again meanwhile). */
  private readonly renewing = new Set<string>();
  /** Leases we stopped trusting (connection trouble) but Redis may still list as ours. */
  private readonly toRelease = new Map<string, number>();
  private handler: LeaseHandler | undefined;

  constructor(private readonly leaseTimeMs: number) {}

  setHandler(handler: LeaseHandler): void {
    this.handler = handler;
  }

  get size(): number {
    return this.held.size;
  }

  tokenOf(sessionId: string): number | undefined {
    return this.held.get(sessionId)?.token;
  }

  validUntil(sessionId: string): number | undefined {
    return this.held.get(sessionId)?.validUntil;
  }

  /** A grant reached us (asked for at `sentAt`). */
  granted(sessionId: string, token: number, recallDeadline: number, sentAt: number): void {
    this.held.set(sessionId, { token, validUntil: grantValidUntil(recallDeadline, sentAt, this.leaseTimeMs) });
    this.toRelease.delete(sessionId);
  }

  /** We gave the lease back (release, or a commit that released): no longer ours to trust. */
  released(sessionId: string, token: number): void {
    if (this.held.get(sessionId)?.token === token) this.held.delete(sessionId);
  }

  /** A release is on its way: nothing left to hand back after trouble. */
  releasing(sessionId: string, token: number): void {
    this.released(sessionId, token);
    this.toRelease.delete(sessionId);
  }

  /** Drops the lease whatever its token, without telling the client (it ended the session itself). */
  drop(sessionId: string): void {
    this.held.delete(sessionId);
  }

  /** Connection trouble or a failover: every lease may move on; the client drops its copies. */
  loseAll(reason: string): void {
    for (const [sessionId, lease] of this.held) this.toRelease.set(sessionId, lease.token);
    this.held.clear();
    this.handler?.lost(reason);
  }

  /** The lease ended without a release: the client hears of it once. */
  revokeLocally(sessionId: string, token: number, reason: string): void {
    const lease = this.held.get(sessionId);
    if (!lease || lease.token !== token) return;
    this.held.delete(sessionId);
    this.handler?.revoked(sessionId, token, reason);
  }

  /** Someone wants the session: trusted no longer than `deadline` (when given), and the client is told. */
  recalled(sessionId: string, token: number, deadline?: number): void {
    const lease = this.held.get(sessionId);
    if (lease && lease.token === token && deadline !== undefined) lease.validUntil = Math.min(lease.validUntil, deadline - VALIDITY_MARGIN_MS);
    this.handler?.recall(sessionId, token);
  }

  /** A lease whose time limit may have run out in Redis is no longer trusted here. */
  checkValidity(now: number): void {
    for (const [sessionId, lease] of this.held) if (lease.validUntil <= now) this.revokeLocally(sessionId, lease.token, 'lease-expired');
  }

  /** The leases to hand back now that Redis answers again; each is handed out once. */
  takeToRelease(): [string, number][] {
    const all = [...this.toRelease];
    this.toRelease.clear();
    return all;
  }

  /** Everything Redis may still list as ours (close hands it all back). */
  everyToken(): [string, number][] {
    return [...[...this.held].map(([id, lease]) => [id, lease.token] as [string, number]), ...this.toRelease];
  }

  clear(): void {
    this.held.clear();
  }

  /**
   * Renews the held leases, at most RENEW_SLICE at once, the next sent as one answers
   * (`renew` answers as the renew script does, -1 for no answer). None is sent at or after
   * `deadline`, and the call returns by then (the heartbeat that waits for it checks for
   * failovers too): a lease not reached is renewed next round, the leases whose trust
   * runs out soonest going first; one that goes unrenewed until its trust runs out is
   * dropped here as 'lease-expired' (checkValidity), as Redis drops it. A renewal still
   * under way at the deadline is applied when it answers, and not sent again meanwhile.
   */
  async renewAll(renew: (sessionId: string, token: number) => Promise<number>, deadline?: number): Promise<void> {
    await settlePooled(
      await this.dueForRenewal(),
      RENEW_SLICE,
      async ([sessionId, lease]) => {
        // Each renewal's own send time: one sent later counts from when it was asked.
        const sent = Date.now();
        this.renewing.add(sessionId);
        let answer: number;
        try {
          answer = await renew(sessionId, lease.token);
        } finally {
          this.renewing.delete(sessionId);
        }
        const verdict = renewVerdict(answer);
        if (this.held.get(sessionId) !== lease) return;
        if (verdict.kind === 'lapsed') this.revokeLocally(sessionId, lease.token, 'lease-expired');
        else if (verdict.kind === 'renewed') lease.validUntil = sent + this.leaseTimeMs - VALIDITY_MARGIN_MS;
        else if (verdict.kind === 'recalled') this.recalled(sessionId, lease.token, verdict.deadline);
      },
      deadline,
    );
  }

  /**
   * The held leases not being renewed, those whose trust runs out soonest first: a round
   * cut short by its deadline skips those that can best wait (a fresh grant, one just
   * renewed), not those about to lapse. Ordered to the second, by buckets (linear), and
   * read in slices that yield: an exact sort of 50,000 leases held the event loop about
   * 100 ms every round. A lease dropped while this runs is asked anyway; its answer is
   * not applied (renewAll checks it is still the lease held).
   */
  private async dueForRenewal(): Promise<[string, HeldLease][]> {
    const buckets = new Map<number, [string, HeldLease][]>();
    await forEachInSlices(this.held, async (entry) => {
      if (this.renewing.has(entry[0])) return;
      const second = Math.floor(entry[1].validUntil / RENEW_ORDER_MS);
      const bucket = buckets.get(second);
      if (bucket) bucket.push(entry);
      else buckets.set(second, [entry]);
    });
    // As many buckets as seconds between the soonest and latest trust (about leaseTimeMs / 1000).
    // Pushed in a loop: flatMap took several times as long over 200,000 leases.
    const due: [string, HeldLease][] = [];
    for (const second of [...buckets.keys()].sort((x, y) => x - y)) for (const entry of buckets.get(second)!) due.push(entry);
    return due;
  }
}
