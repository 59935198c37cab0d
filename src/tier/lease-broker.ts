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
import { SLICE_ITEMS, SLICE_MS } from './sliced-work.js';
import type { LeaseActivity, TierOwner } from './tier-types.js';

/** Leases a drop moves on between two looks at the clock (see runDrops). */
const DROP_STEP = 64;

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
  /** Acquires waiting for a grant, per owner then per session: a detach visits its owner's only. */
  private readonly pending = new Map<OwnerId, Map<string, PendingAcquire[]>>();
  /** Detached owners whose leases are still being moved on, a slice per turn of the event loop. */
  private readonly drops: OwnerId[] = [];
  private dropTurn: NodeJS.Immediate | undefined;
  /** A slice is running (a detach from inside one, through an owner's callback, waits for the next). */
  private inDropSlice = false;
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
    // Ids are never reused (a connection counter, random bits in process): a reused one
    // would have its new leases moved on by the drop of the old.
    if (this.table.isDropping(owner.id)) throw new KilnError('KILN_ERR_INTERNAL', `owner id ${owner.id} attached while its earlier leases are still moving on`);
    this.owners.set(owner.id, owner);
  }

  /**
   * The owner is gone: its waits are cancelled, and its leases move on, the first
   * slice now and the rest a slice per turn of the event loop (a lease asked for
   * meanwhile moves on at once; see LeaseTable.beginDrop).
   */
  detach(ownerId: OwnerId): void {
    if (!this.owners.delete(ownerId)) return;
    const waits = this.pending.get(ownerId);
    this.pending.delete(ownerId);
    for (const list of waits?.values() ?? []) {
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(new KilnError('KILN_ERR_CONNECTION_LOST', 'owner detached while waiting for a lease'));
      }
    }
    this.apply(this.table.beginDrop(ownerId, this.clock()));
    this.drops.push(ownerId);
    if (this.dropTurn === undefined && !this.inDropSlice) this.runDrops();
  }

  acquire(ownerId: OwnerId, sessionId: string, timeoutMs: number): Promise<LeaseGrant> {
    const effects = this.table.acquire(ownerId, sessionId, this.clock());
    const only = effects.grants.length === 1 && effects.recalls.length === 0 && effects.revokes.length === 0 ? effects.grants[0]! : undefined;
    // A free session (nearly every acquire) is granted here and now: no entry in the
    // pending map, no timer. Churning those long-lived tables per acquire filled the old
    // generation with discarded hash tables when a server was filled with sessions.
    if (only && only.owner === ownerId && only.sessionId === sessionId && this.pending.get(ownerId)?.has(sessionId) !== true) {
      return Promise.resolve({ sessionId, token: only.token, epoch: this.epoch, snapshot: this.snapshot(sessionId), releaseAfterUse: only.releaseAfterUse });
    }
    return new Promise<LeaseGrant>((resolve, reject) => {
      const timer = setTimeout(() => {
        const waits = this.pending.get(ownerId)?.get(sessionId);
        if (!waits) return;
        const at = waits.findIndex((w) => w.timer === timer);
        if (at >= 0) waits.splice(at, 1);
        if (waits.length === 0) {
          this.takeWaits(ownerId, sessionId);
          this.table.cancelWait(ownerId, sessionId);
        }
        reject(new KilnError('KILN_ERR_LEASE_TIMEOUT', `lease for the session was not granted within ${timeoutMs} ms`, { details: { sessionId, timeoutMs } }));
      }, timeoutMs);
      let byOwner = this.pending.get(ownerId);
      if (!byOwner) this.pending.set(ownerId, (byOwner = new Map()));
      let waits = byOwner.get(sessionId);
      if (!waits) byOwner.set(sessionId, (waits = []));
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
      const waits = this.takeWaits(grant.owner, grant.sessionId);
      if (!waits || waits.length === 0) {
        // Nobody is waiting for it any more (timed out in the same instant): pass it on.
        this.apply(this.table.release(grant.owner, grant.sessionId, grant.token, this.clock()));
        continue;
      }
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

  /** Stops the recall timer and the drops, and fails every wait. */
  close(): void {
    this.closed = true;
    if (this.recallTimer) clearTimeout(this.recallTimer);
    if (this.dropTurn !== undefined) clearImmediate(this.dropTurn);
    this.dropTurn = undefined;
    for (const byOwner of this.pending.values()) {
      for (const waits of byOwner.values()) {
        for (const w of waits) {
          clearTimeout(w.timer);
          w.reject(new KilnError('KILN_ERR_CLOSED', 'the session tier is shutting down'));
        }
      }
    }
    this.pending.clear();
  }

  /** The waits of an owner for a session, taken out of the pending map. */
  private takeWaits(ownerId: OwnerId, sessionId: string): PendingAcquire[] | undefined {
    const byOwner = this.pending.get(ownerId);
    const waits = byOwner?.get(sessionId);
    if (waits === undefined) return undefined;
    byOwner!.delete(sessionId);
    if (byOwner!.size === 0) this.pending.delete(ownerId);
    return waits;
  }

  /**
   * One slice of the drops: visits detached owners' leases, DROP_STEP at a time, until
   * SLICE_ITEMS leases or SLICE_MS are used, then yields to the event loop if any are
   * left. Owners are taken in the order they closed.
   */
  private runDrops = (): void => {
    this.dropTurn = undefined;
    if (this.closed) return;
    this.inDropSlice = true;
    try {
      const started = performance.now();
      let visited = 0;
      while (this.drops.length > 0 && visited < SLICE_ITEMS && performance.now() - started < SLICE_MS) {
        const slice = this.table.dropSlice(this.drops[0]!, this.clock(), Math.min(DROP_STEP, SLICE_ITEMS - visited));
        // An owner with nothing left still counts one: a thousand closing at once take turns too.
        visited += Math.max(1, slice.visited);
        if (slice.done) this.drops.shift();
        this.apply(slice.effects);
      }
    } finally {
      this.inDropSlice = false;
    }
    if (this.drops.length > 0 && !this.closed) this.dropTurn = setImmediate(this.runDrops);
  };

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
