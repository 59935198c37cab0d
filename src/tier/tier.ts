import { randomBytes } from 'node:crypto';
import { KilnError } from '../errors/index.js';
import { DEFAULT_SESSION_LIMITS, type SessionLimits } from '../session/limits.js';
import { deltaBytes, expiryDeadline, type CommitAck, type CommitRequest, type LeaseGrant, type SessionEvent, type SessionMeta, type SessionSnapshot, type TouchItem } from '../session/model.js';
import { ExpiryWheel } from './expiry-wheel.js';
import { DEFAULT_LEASE_OPTIONS, LeaseTable, type LeaseEffects, type OwnerId } from './lease-table.js';
import { metaOf, SessionTable, type TierRecord } from './session-table.js';
import { SortedIds } from './sorted-ids.js';

/**
 * The server tier's logic in one object: sessions, leases, expiry, events. Both the
 * in-process memory engine and the kiln server run exactly this; they differ only in
 * how owners reach it (a function call, or a TCP connection) and whether records are
 * written to disk. Keeping one implementation is what makes the engines agree.
 */

export interface TierOwner {
  id: OwnerId;
  /** Another owner wants this session: finish, flush, then release(sessionId, token). */
  onRecall(sessionId: string, token: number): void;
  /** The lease is gone without a release (deadline overrun, destroyed, expired): drop the cached copy. */
  onRevoke(sessionId: string, token: number, reason: string): void;
}

/** Where the tier's records go to survive a restart. */
export interface TierStorage {
  /** Resolves once the record is as durable as the fsync policy promises. */
  append(record: TierRecord): Promise<void>;
}

export interface TierOptions {
  limits?: Partial<SessionLimits>;
  recallTimeoutMs?: number;
  pingPongThreshold?: number;
  pingPongHalfLifeMs?: number;
  /** How often expiry runs; also the resolution of expiry. */
  expirySweepMs?: number;
  /** Slack given to a lease holder's batched touches before its session is expired. */
  touchGraceMs?: number;
  /** Longest a tombstone is kept for a session that had no expiry. */
  maxTombstoneMs?: number;
  storage?: TierStorage;
  /** Sessions the tier holds at most; a create beyond it fails with KILN_ERR_SESSION_LIMIT. 0 = no limit. */
  maxSessions?: number;
  /** Sessions one principal may have; a commit naming it on one more fails with KILN_ERR_PRINCIPAL_SESSION_LIMIT. 0 = no limit. */
  maxSessionsPerPrincipal?: number;
  /**
   * Sorts session keys into groups whose sizes the tier keeps (groupSize): the kiln
   * server's namespaces. The tier gives the groups no other meaning.
   */
  keyGroup?: (key: string) => string;
  clock?: () => number;
  epoch?: string;
  firstToken?: number;
}

export interface TierStats {
  epoch: string;
  sessions: number;
  sessionBytes: number;
  tombstones: number;
  leases: number;
  leaseWaiters: number;
  owners: number;
  counters: TierCounters;
}

export interface TierCounters {
  created: number;
  commits: number;
  commitBytes: number;
  duplicateCommits: number;
  rejectedCommits: number;
  touches: number;
  expired: number;
  destroyed: number;
  leaseGrants: number;
  leaseRecalls: number;
  leaseHandovers: number;
  leaseRevocations: number;
  pingPongGrants: number;
  /** Creates and logins refused by maxSessions or maxSessionsPerPrincipal. */
  sessionLimitRefusals: number;
}

export interface LeaseActivity {
  type: 'recall' | 'revoke';
  sessionId: string;
  /** The holder asked to give the session back (recall) or that lost it (revoke). */
  owner: OwnerId;
  at: number;
  reason?: string;
}

export interface ListOptions {
  /** Last id of the previous page. */
  after?: string;
  limit: number;
  prefix?: string;
}

export interface ListPage {
  sessions: SessionMeta[];
  /** Pass as `after` for the next page; null on the last page. */
  next: string | null;
  /** Sessions in the tier (not only those matching the prefix). */
  total: number;
}

/** Bulk work (expiry, destroy by principal) runs in slices of at most this many sessions… */
const EXPIRY_SLICE = 2000;
/** …and this long, then lets the event loop serve other requests. */
const SLICE_MS = 4;

interface PendingAcquire {
  resolve: (grant: LeaseGrant) => void;
  reject: (err: KilnError) => void;
  timer: NodeJS.Timeout;
}

export class Tier {
  readonly epoch: string;
  readonly limits: SessionLimits;
  private readonly sessions = new SessionTable();
  private readonly leases: LeaseTable;
  private readonly wheel: ExpiryWheel<string>;
  private readonly tombstoneWheel: ExpiryWheel<string>;
  private readonly owners = new Map<OwnerId, TierOwner>();
  private readonly pending = new Map<string, PendingAcquire[]>();
  private readonly listeners = new Set<(event: SessionEvent) => void>();
  private readonly leaseListeners = new Set<(event: LeaseActivity) => void>();
  private readonly clock: () => number;
  private readonly storage: TierStorage | undefined;
  readonly touchGraceMs: number;
  private readonly maxTombstoneMs: number;
  private readonly sweepTimer: NodeJS.Timeout;
  private recallTimer: NodeJS.Timeout | undefined;
  private recallTimerAt = Infinity;
  /** Ids in order for list(), kept up to date by merging the changes since the last listing. */
  private readonly sortedIds = new SortedIds(() => this.sessions.ids());
  private expiryQueue: string[] = [];
  private expiryHead = 0;
  private expiryDrainScheduled = false;
  private closed = false;
  private readonly counters: Omit<TierCounters, 'leaseGrants' | 'leaseRecalls' | 'leaseHandovers' | 'leaseRevocations' | 'pingPongGrants'> = {
    created: 0,
    commits: 0,
    commitBytes: 0,
    duplicateCommits: 0,
    rejectedCommits: 0,
    touches: 0,
    expired: 0,
    destroyed: 0,
    sessionLimitRefusals: 0,
  };
  private readonly maxSessions: number;
  private readonly maxSessionsPerPrincipal: number;
  private readonly keyGroup: ((key: string) => string) | undefined;
  private readonly groupSizes = new Map<string, number>();

  constructor(options: TierOptions = {}) {
    this.epoch = options.epoch ?? randomBytes(8).toString('hex');
    this.limits = { ...DEFAULT_SESSION_LIMITS, ...options.limits };
    this.clock = options.clock ?? Date.now;
    this.storage = options.storage;
    this.maxSessions = options.maxSessions ?? 0;
    this.maxSessionsPerPrincipal = options.maxSessionsPerPrincipal ?? 0;
    this.keyGroup = options.keyGroup;
    this.touchGraceMs = options.touchGraceMs ?? 2000;
    this.maxTombstoneMs = options.maxTombstoneMs ?? 24 * 3600_000;
    this.leases = new LeaseTable(
      {
        recallTimeoutMs: options.recallTimeoutMs ?? DEFAULT_LEASE_OPTIONS.recallTimeoutMs,
        pingPongThreshold: options.pingPongThreshold ?? DEFAULT_LEASE_OPTIONS.pingPongThreshold,
        pingPongHalfLifeMs: options.pingPongHalfLifeMs ?? DEFAULT_LEASE_OPTIONS.pingPongHalfLifeMs,
      },
      options.firstToken ?? 0,
    );
    const sweepMs = options.expirySweepMs ?? 1000;
    this.wheel = new ExpiryWheel(sweepMs);
    this.tombstoneWheel = new ExpiryWheel(Math.max(sweepMs, 1000));
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
  }

  /** Applies a stored record at start-up (before any owner attaches). */
  restore(record: TierRecord): void {
    const before = this.sessions.size;
    this.sessions.replay(record);
    if (this.sessions.size !== before) this.countGroup(record.t === 's' ? record.meta.id : 'id' in record ? record.id : '', this.sessions.size - before);
    this.sortedIds.reset();
    if (record.t === 's') this.scheduleExpiry(record.meta.id);
    else if (record.t === 'c' && (record.ca !== undefined || record.it !== undefined || record.ae !== undefined)) this.scheduleExpiry(record.id);
    if (record.t === 'd' || record.t === 'b') this.tombstoneWheel.schedule(record.id, record.until);
  }

  /** Every record describing the current state (compaction). */
  dump(): Generator<TierRecord> {
    return this.sessions.dump(this.clock());
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Sessions whose key `keyGroup` puts in this group (every session without a keyGroup). */
  groupSize(group: string): number {
    return this.keyGroup ? (this.groupSizes.get(group) ?? 0) : this.sessions.size;
  }

  private countGroup(key: string, delta: number): void {
    if (!this.keyGroup) return;
    const group = this.keyGroup(key);
    const n = (this.groupSizes.get(group) ?? 0) + delta;
    if (n > 0) this.groupSizes.set(group, n);
    else this.groupSizes.delete(group);
  }

  /**
   * The caps on sessions, checked before anything changes: counts the tables keep, so
   * a check costs two map reads whatever the number of sessions. A principal over its
   * cap refuses the new login (the commit that names it), never evicts an older
   * session: the user's other devices keep working and the refusal is the app's to show.
   */
  private checkSessionLimits(req: CommitRequest): void {
    if (this.maxSessions === 0 && this.maxSessionsPerPrincipal === 0) return;
    const current = this.sessions.get(req.sessionId);
    if (this.maxSessions > 0 && req.baseVersion === 0 && !current && this.sessions.size >= this.maxSessions) {
      this.counters.sessionLimitRefusals++;
      throw new KilnError('KILN_ERR_SESSION_LIMIT', `the server holds its limit of ${this.maxSessions} sessions`, { details: { limit: this.maxSessions } });
    }
    const p = req.principal;
    if (this.maxSessionsPerPrincipal > 0 && typeof p === 'string' && p !== (current?.principal ?? null) && this.sessions.principalCount(p) >= this.maxSessionsPerPrincipal) {
      this.counters.sessionLimitRefusals++;
      throw new KilnError('KILN_ERR_PRINCIPAL_SESSION_LIMIT', `the principal has its limit of ${this.maxSessionsPerPrincipal} sessions`, { details: { limit: this.maxSessionsPerPrincipal } });
    }
  }

  attach(owner: TierOwner): void {
    this.assertOpen();
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
    this.apply(this.leases.dropOwner(ownerId, this.clock()));
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Lease hand-overs as they happen (admin console, metrics); never sent to clients. */
  onLeaseActivity(listener: (event: LeaseActivity) => void): () => void {
    this.leaseListeners.add(listener);
    return () => this.leaseListeners.delete(listener);
  }

  acquire(ownerId: OwnerId, sessionId: string, timeoutMs: number): Promise<LeaseGrant> {
    this.assertOwner(ownerId);
    const effects = this.leases.acquire(ownerId, sessionId, this.clock());
    const only = effects.grants.length === 1 && effects.recalls.length === 0 && effects.revokes.length === 0 ? effects.grants[0]! : undefined;
    // A free session (nearly every acquire) is granted here and now: no entry in the
    // pending map, no timer. Churning those long-lived tables per acquire filled the old
    // generation with discarded hash tables when a server was filled with sessions.
    if (only && only.owner === ownerId && only.sessionId === sessionId && !this.pending.has(pendingKey(ownerId, sessionId))) {
      return Promise.resolve({ sessionId, token: only.token, epoch: this.epoch, snapshot: this.sessions.snapshot(sessionId), releaseAfterUse: only.releaseAfterUse });
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
          this.leases.cancelWait(ownerId, sessionId);
        }
        reject(new KilnError('KILN_ERR_LEASE_TIMEOUT', `lease for the session was not granted within ${timeoutMs} ms`, { details: { sessionId, timeoutMs } }));
      }, timeoutMs);
      let waits = this.pending.get(key);
      if (!waits) this.pending.set(key, (waits = []));
      waits.push({ resolve, reject, timer });
      this.apply(effects);
    });
  }

  release(ownerId: OwnerId, sessionId: string, token: number, lastAccessedAt?: number): void {
    if (lastAccessedAt !== undefined) this.touch(ownerId, [{ sessionId, token, at: lastAccessedAt }]);
    this.apply(this.leases.release(ownerId, sessionId, token, this.clock()));
  }

  load(ownerId: OwnerId, sessionId: string, token: number): SessionSnapshot | null {
    this.assertLease(ownerId, sessionId, token);
    return this.sessions.snapshot(sessionId);
  }

  async commit(ownerId: OwnerId, req: CommitRequest): Promise<CommitAck> {
    this.assertOpen();
    const now = this.clock();
    let result: ReturnType<SessionTable['applyCommit']>;
    try {
      // A commit already applied is acknowledged again whoever holds the lease now:
      // that answer changes nothing, and the retry may come after the lease moved.
      const known = this.sessions.committedVersion(req.sessionId, req.commitId);
      if (known !== undefined) {
        this.counters.duplicateCommits++;
        if (req.release) this.release(ownerId, req.sessionId, req.token);
        return { version: known, duplicate: true };
      }
      this.assertLease(ownerId, req.sessionId, req.token);
      this.checkSessionLimits(req);
      result = this.sessions.applyCommit(req, this.limits, now, this.storage !== undefined);
    } catch (err) {
      this.counters.rejectedCommits++;
      throw err;
    }
    const { record } = result;
    if (record?.t === 'c') {
      this.counters.commits++;
      // What the commit carried (a patch counts its changed bytes), as every engine counts it.
      this.counters.commitBytes += deltaBytes(req);
      if (record.ca !== undefined) {
        this.counters.created++;
        this.sortedIds.add(req.sessionId);
        this.countGroup(req.sessionId, 1);
      }
      // A commit only moves the deadline later (access time), which the sweep finds when
      // the earlier entry comes due; only a create or a changed timeout needs a new entry.
      if (record.ca !== undefined || record.it !== undefined || record.ae !== undefined) this.scheduleExpiry(req.sessionId);
    }
    if (req.release) this.release(ownerId, req.sessionId, req.token);
    if (record && this.storage) await this.storage.append(record);
    return result.ack;
  }

  /** Access times from lease holders. Touches carrying a stale token are ignored. */
  touch(ownerId: OwnerId, items: readonly TouchItem[]): number {
    const now = this.clock();
    const applied: [string, number][] = [];
    for (const item of items) {
      if (!this.leases.isCurrent(ownerId, item.sessionId, item.token)) continue;
      if (this.sessions.touch(item.sessionId, item.at, now)) applied.push([item.sessionId, Math.min(item.at, now)]);
    }
    this.counters.touches += applied.length;
    if (applied.length > 0 && this.storage) void this.storage.append({ t: 'a', items: applied }).catch(() => undefined);
    return applied.length;
  }

  /**
   * Destroys a session from anywhere (its holder, another process, an admin). The
   * holder, if someone else, is told at once; a tombstone keeps late commits out.
   */
  async destroy(ownerId: OwnerId | null, sessionId: string, reason = 'request'): Promise<boolean> {
    this.assertOpen();
    const now = this.clock();
    const current = this.sessions.get(sessionId);
    if (!current) return false;
    // Until the session would have expired anyway (at least a second, at most maxTombstoneMs).
    const until = Math.max(Math.min(expiryDeadline(current, this.touchGraceMs), now + this.maxTombstoneMs), now + 1000);
    const result = this.sessions.destroy(sessionId, until);
    if (!result) return false;
    this.sortedIds.remove(sessionId);
    this.countGroup(sessionId, -1);
    if (reason === 'expired') this.counters.expired++;
    else this.counters.destroyed++;
    this.tombstoneWheel.schedule(sessionId, until);
    this.apply(this.leases.endSession(sessionId, 'destroyed', now, ownerId ?? undefined));
    // A holder ending a session whose idle time it saw run out reports an expiry.
    this.emit({ type: reason === 'expired' ? 'expired' : 'destroyed', sessionId, principal: result.meta.principal, at: now, reason });
    if (this.storage) await this.storage.append(result.record);
    return true;
  }

  /**
   * Sessions in id order, a page at a time: `after` is the last id of the previous page,
   * `prefix` narrows to ids that start with it. The sorted index merges the creates and
   * removals since the last listing (SortedIds) rather than sorting every id again.
   */
  list(options: ListOptions): ListPage {
    const ids = this.sortedIds.view();
    const prefix = options.prefix ?? '';
    const from = options.after !== undefined && options.after >= prefix ? options.after : undefined;
    let at = lowerBound(ids, from ?? prefix);
    if (from !== undefined && ids[at] === from) at++;
    const sessions: SessionMeta[] = [];
    while (at < ids.length && sessions.length < options.limit) {
      const id = ids[at++]!;
      if (!id.startsWith(prefix)) break;
      const s = this.sessions.get(id);
      if (s) sessions.push(metaOf(s));
    }
    const more = at < ids.length && ids[at]!.startsWith(prefix);
    return { sessions, next: more && sessions.length > 0 ? sessions[sessions.length - 1]!.id : null, total: this.sessions.size };
  }

  findByPrincipal(principal: string): SessionMeta[] {
    const out: SessionMeta[] = [];
    for (const id of this.sessions.sessionsOf(principal)) {
      const s = this.sessions.get(id);
      if (s) out.push(metaOf(s));
    }
    return out;
  }

  /**
   * "Log out everywhere". Every holder is told, the requesting owner included: it does
   * not know which of its cached sessions belong to the principal, and the revocations
   * reach it before this call's answer.
   */
  async destroyByPrincipal(principal: string): Promise<number> {
    // The sessions the principal has now; a login that completes while this runs keeps
    // its new session (it happened after the request, as far as the user can tell).
    const ids = [...this.sessions.sessionsOf(principal)];
    let n = 0;
    let sliceStart = performance.now();
    for (const id of ids) {
      if (await this.destroy(null, id, 'principal')) n++;
      // A principal with 100,000 sessions: other requests run between slices.
      if (performance.now() - sliceStart > SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
    }
    return n;
  }

  /** A session's data without taking its lease, for the admin console's inspector only. */
  snapshotForAdmin(sessionId: string): SessionSnapshot | null {
    return this.sessions.snapshot(sessionId);
  }

  /** Metadata of one session without taking its lease (admin, status). */
  peek(sessionId: string): SessionMeta | undefined {
    const s = this.sessions.get(sessionId);
    return s ? metaOf(s) : undefined;
  }

  stats(): TierStats {
    const lc = this.leases.counters;
    return {
      epoch: this.epoch,
      sessions: this.sessions.size,
      sessionBytes: this.sessions.bytes,
      tombstones: this.sessions.tombstoneCount,
      leases: this.leases.size,
      leaseWaiters: this.leases.waitingCount(),
      owners: this.owners.size,
      counters: {
        ...this.counters,
        leaseGrants: lc.grants,
        leaseRecalls: lc.recalls,
        leaseHandovers: lc.handovers,
        leaseRevocations: lc.revocations,
        pingPongGrants: lc.pingPongGrants,
      },
    };
  }

  leasesHeldBy(ownerId: OwnerId): number {
    return this.leases.leasesHeldBy(ownerId);
  }

  /**
   * Runs expiry now (tests with a fake clock call it; the interval timer does otherwise).
   * Due sessions are queued and expired in slices (at most EXPIRY_SLICE sessions or
   * SLICE_MS per turn of the event loop), so 100,000 sessions expiring together never
   * hold up the requests of the others. A session stays readable until its slice comes,
   * as it does until the sweep after its deadline: expiry resolution is expirySweepMs
   * plus the slices before it.
   */
  sweep(): void {
    if (this.closed) return;
    const now = this.clock();
    for (const id of this.wheel.due(now)) this.expiryQueue.push(id);
    this.sessions.sweepTombstones(now, this.tombstoneWheel.due(now));
    this.leases.sweepBounces(now);
    this.drainExpiry();
  }

  /** Sessions due and not yet expired (queued by sweep()); for stats and tests. */
  get expiryBacklog(): number {
    return this.expiryQueue.length - this.expiryHead;
  }

  private drainExpiry(): void {
    this.expiryDrainScheduled = false;
    if (this.closed) return;
    const now = this.clock();
    const started = performance.now();
    const stop = Math.min(this.expiryQueue.length, this.expiryHead + EXPIRY_SLICE);
    while (this.expiryHead < stop) {
      this.expireIfDue(this.expiryQueue[this.expiryHead++]!, now);
      if ((this.expiryHead & 63) === 0 && performance.now() - started > SLICE_MS) break;
    }
    if (this.expiryHead < this.expiryQueue.length) {
      if (!this.expiryDrainScheduled) {
        this.expiryDrainScheduled = true;
        setImmediate(() => this.drainExpiry());
      }
      return;
    }
    this.expiryQueue = [];
    this.expiryHead = 0;
  }

  private expireIfDue(id: string, now: number): void {
    const s = this.sessions.get(id);
    if (!s) return;
    const leased = this.leases.holderOf(id) !== undefined;
    const deadline = expiryDeadline(s, leased ? this.touchGraceMs : 0);
    if (deadline > now) {
      this.wheel.schedule(id, deadline);
      return;
    }
    const result = this.sessions.expire(id);
    if (!result) return;
    this.sortedIds.remove(id);
    this.countGroup(id, -1);
    this.counters.expired++;
    this.apply(this.leases.endSession(id, 'expired', now));
    this.emit({ type: 'expired', sessionId: id, principal: result.meta.principal, at: now });
    if (this.storage) void this.storage.append(result.record).catch(() => undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    if (this.recallTimer) clearTimeout(this.recallTimer);
    for (const waits of this.pending.values()) {
      for (const w of waits) {
        clearTimeout(w.timer);
        w.reject(new KilnError('KILN_ERR_CLOSED', 'the session tier is shutting down'));
      }
    }
    this.pending.clear();
  }

  private scheduleExpiry(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (s) this.wheel.schedule(sessionId, expiryDeadline(s));
  }

  private apply(effects: LeaseEffects): void {
    for (const grant of effects.grants) {
      const key = pendingKey(grant.owner, grant.sessionId);
      const waits = this.pending.get(key);
      if (!waits || waits.length === 0) {
        // Nobody is waiting for it any more (timed out in the same instant): pass it on.
        this.apply(this.leases.release(grant.owner, grant.sessionId, grant.token, this.clock()));
        continue;
      }
      this.pending.delete(key);
      const snapshot = this.sessions.snapshot(grant.sessionId);
      for (const w of waits) {
        clearTimeout(w.timer);
        w.resolve({ sessionId: grant.sessionId, token: grant.token, epoch: this.epoch, snapshot, releaseAfterUse: grant.releaseAfterUse });
      }
    }
    for (const recall of effects.recalls) {
      this.owners.get(recall.owner)?.onRecall(recall.sessionId, recall.token);
      this.announceLease({ type: 'recall', sessionId: recall.sessionId, owner: recall.owner, at: this.clock() });
    }
    for (const revoke of effects.revokes) {
      this.owners.get(revoke.owner)?.onRevoke(revoke.sessionId, revoke.token, revoke.reason);
      this.announceLease({ type: 'revoke', sessionId: revoke.sessionId, owner: revoke.owner, at: this.clock(), reason: revoke.reason });
    }
    this.armRecallTimer();
  }

  private armRecallTimer(): void {
    const next = this.leases.nextRecallDeadline();
    if (next === this.recallTimerAt) return;
    if (this.recallTimer) clearTimeout(this.recallTimer);
    this.recallTimer = undefined;
    this.recallTimerAt = next;
    if (next === Infinity || this.closed) return;
    this.recallTimer = setTimeout(() => {
      this.recallTimer = undefined;
      this.recallTimerAt = Infinity;
      this.apply(this.leases.revokeOverdue(this.clock()));
    }, Math.max(0, next - this.clock()));
  }

  private announceLease(event: LeaseActivity): void {
    for (const listener of this.leaseListeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure must not break the tier.
      }
    }
  }

  private emit(event: SessionEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure must not break the tier.
      }
    }
  }

  private assertLease(ownerId: OwnerId, sessionId: string, token: number): void {
    if (!this.leases.isCurrent(ownerId, sessionId, token)) {
      throw new KilnError('KILN_ERR_LEASE_LOST', 'the lease token is not current (revoked, moved, or never granted)', { details: { sessionId, token } });
    }
  }

  private assertOwner(ownerId: OwnerId): void {
    this.assertOpen();
    if (!this.owners.has(ownerId)) throw new KilnError('KILN_ERR_CLOSED', 'owner is not attached to the tier');
  }

  private assertOpen(): void {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'the session tier is shutting down');
  }
}

function lowerBound(sorted: string[], value: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function pendingKey(ownerId: OwnerId, sessionId: string): string {
  return `${ownerId}\u0000${sessionId}`;
}
