/**
 * The shell around the pure LeaseTable: attached owners, promises waiting for a grant
 * (each with its timeout), recall and revoke callbacks, and the one timer for the next
 * recall deadline. Rule kept: every effect the table decides is carried out here and
 * nowhere else, so no grant is lost (a grant nobody waits for is passed on at once) and
 * no holder keeps a lease past its recall deadline.
 */
import { KilnError } from '../errors/index.js';
import type { LeaseGrant, SessionSnapshot } from '../session/model.js';
import { LeaseTable, type LeaseEffects, type LeaseTableOptions, type OwnerId } from './lease-table.js';
import { Listeners } from './listeners.js';
import type { LeaseActivity, TierOwner } from './tier-types.js';

interface PendingAcquire {
  resolve: (grant: LeaseGrant) => void;
  reject: (err: KilnError) => void;
  timer: NodeJS.Timeout;
}

export interface LeaseBrokerOptions {
  lease: LeaseTableOptions;
  firstToken: number;
  epoch: string;
  clock: () => number;
  /** The session's data as a grant carries it. */
  snapshot: (sessionId: string) => SessionSnapshot | null;
}

export class LeaseBroker {
  readonly table: LeaseTable;
  /** Lease hand-overs as they happen (admin console, metrics); never sent to clients. */
  readonly activity = new Listeners<LeaseActivity>();
  private readonly owners = new Map<OwnerId, TierOwner>();
  private readonly pending = new Map<string, PendingAcquire[]>();
  private readonly epoch: string;
  private readonly clock: () => number;
  private readonly snapshot: (sessionId: string) => SessionSnapshot | null;
  private recallTimer: NodeJS.Timeout | undefined;
  private recallTimerAt = Infinity;
  private closed = false;

  constructor(options: LeaseBrokerOptions) {
    this.table = new LeaseTable(options.lease, options.firstToken);
    this.epoch = options.epoch;
    this.clock = options.clock;
    this.snapshot = options.snapshot;
  }

  get ownerCount(): number {
    return this.owners.size;
  }

  hasOwner(ownerId: OwnerId): boolean {
    return this.owners.has(ownerId);
  }

  attach(owner: TierOwner): void {
    this.owners.set(owner.id, owner);
  }

  /** The owner is gone: its leases move on at once and its waits are cancelled. */
  detach(ownerId: OwnerId): void {
    if (!this.owners.delete(ownerId)) return;
    for (const [key, waits] of this.pending) {
      if (key.startsWith(`${ownerId}\u0000`)) {
        this.pending.delete(key);
        for (const w of waits) {
          clearTimeout(w.timer);
          w.reject(new KilnError('KILN_ERR_CONNECTION_LOST', 'owner detached while waiting for a lease'));
        }
      }
    }
    this.apply(this.table.dropOwner(ownerId, this.clock()));
  }

  acquire(ownerId: OwnerId, sessionId: string, timeoutMs: number): Promise<LeaseGrant> {
    const effects = this.table.acquire(ownerId, sessionId, this.clock());
    const only = effects.grants.length === 1 && effects.recalls.length === 0 && effects.revokes.length === 0 ? effects.grants[0]! : undefined;
    // A free session (nearly every acquire) is granted here and now: no entry in the
    // pending map, no timer. Churning those long-lived tables per acquire filled the old
    // generation with discarded hash tables when a server was filled with sessions.
    if (only && only.owner === ownerId && only.sessionId === sessionId && !this.pending.has(pendingKey(ownerId, sessionId))) {
      return Promise.resolve({ sessionId, token: only.token, epoch: this.epoch, snapshot: this.snapshot(sessionId), releaseAfterUse: only.releaseAfterUse });
    }
    return new Promise<LeaseGrant>((resolve, reject) => {
      const key = pendingKey(ownerId, sessionId);
      const timer = setTimeout(() => {
        const waits = this.pending.get(key);
        if (!waits) return;
        const at = waits.findIndex((w) => w.timer === timer);
        if (at >= 0) waits.splice(at, 1);
        if (waits.length === 0) {
          this.pending.delete(key);
          this.table.cancelWait(ownerId, sessionId);
        }
        reject(new KilnError('KILN_ERR_LEASE_TIMEOUT', `lease for the session was not granted within ${timeoutMs} ms`, { details: { sessionId, timeoutMs } }));
      }, timeoutMs);
      let waits = this.pending.get(key);
      if (!waits) this.pending.set(key, (waits = []));
      waits.push({ resolve, reject, timer });
      this.apply(effects);
    });
  }

  release(ownerId: OwnerId, sessionId: string, token: number): void {
    this.apply(this.table.release(ownerId, sessionId, token, this.clock()));
  }

  /** Carries out what the lease table decided: grants to waiters, recalls, revokes, the recall timer. */
  apply(effects: LeaseEffects): void {
    for (const grant of effects.grants) {
      const key = pendingKey(grant.owner, grant.sessionId);
      const waits = this.pending.get(key);
      if (!waits || waits.length === 0) {
        // Nobody is waiting for it any more (timed out in the same instant): pass it on.
        this.apply(this.table.release(grant.owner, grant.sessionId, grant.token, this.clock()));
        continue;
      }
      this.pending.delete(key);
      const snapshot = this.snapshot(grant.sessionId);
      for (const w of waits) {
        clearTimeout(w.timer);
        w.resolve({ sessionId: grant.sessionId, token: grant.token, epoch: this.epoch, snapshot, releaseAfterUse: grant.releaseAfterUse });
      }
    }
    for (const recall of effects.recalls) {
      this.owners.get(recall.owner)?.onRecall(recall.sessionId, recall.token);
      this.activity.emit({ type: 'recall', sessionId: recall.sessionId, owner: recall.owner, at: this.clock() });
    }
    for (const revoke of effects.revokes) {
      this.owners.get(revoke.owner)?.onRevoke(revoke.sessionId, revoke.token, revoke.reason);
      this.activity.emit({ type: 'revoke', sessionId: revoke.sessionId, owner: revoke.owner, at: this.clock(), reason: revoke.reason });
    }
    this.armRecallTimer();
  }

  /** Stops the recall timer and fails every wait. */
  close(): void {
    this.closed = true;
    if (this.recallTimer) clearTimeout(this.recallTimer);
    for (const waits of this.pending.values()) {
      for (const w of waits) {
        clearTimeout(w.timer);
        w.reject(new KilnError('KILN_ERR_CLOSED', 'the session tier is shutting down'));
      }
    }
    this.pending.clear();
  }

  private armRecallTimer(): void {
    const next = this.table.nextRecallDeadline();
    if (next === this.recallTimerAt) return;
    if (this.recallTimer) clearTimeout(this.recallTimer);
    this.recallTimer = undefined;
    this.recallTimerAt = next;
    if (next === Infinity || this.closed) return;
    this.recallTimer = setTimeout(() => {
      this.recallTimer = undefined;
      this.recallTimerAt = Infinity;
      this.apply(this.table.revokeOverdue(this.clock()));
    }, Math.max(0, next - this.clock()));
  }
}

function pendingKey(ownerId: OwnerId, sessionId: string): string {
  return `${ownerId}\u0000${sessionId}`;
}
