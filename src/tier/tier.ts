import { randomBytes } from 'node:crypto';
import { KilnError } from '../errors/index.js';
import { checkDeltaNames, DEFAULT_SESSION_LIMITS, type SessionLimits } from '../session/limits.js';
import { deltaBytes, expiryDeadline, type CommitAck, type CommitRequest, type LeaseGrant, type SessionEvent, type SessionMeta, type SessionSnapshot, type TouchItem } from '../session/model.js';
import { ExpiryWheel } from './expiry-wheel.js';
import { LeaseBroker } from './lease-broker.js';
import { DEFAULT_LEASE_OPTIONS, type OwnerId } from './lease-table.js';
import { Listeners } from './listeners.js';
import { GroupSizes, SessionCaps } from './session-counts.js';
import { listPage, type ListOptions, type ListPage } from './session-listing.js';
import { SessionTable, type PrincipalCursor, type PrincipalPage, type TierRecord } from './session-table.js';
import { forEachInSlices, SlicedQueue } from './sliced-work.js';
import { SlotDeadlines } from './slot-deadlines.js';
import { SortedIds } from './sorted-ids.js';
import type { LeaseActivity, TierCounters, TierOptions, TierOwner, TierStats, TierStorage } from './tier-types.js';

export type { LeaseActivity, TierCounters, TierOptions, TierOwner, TierStats, TierStorage } from './tier-types.js';
export type { ListOptions, ListPage } from './session-listing.js';

/** Records of "log out everywhere" written together (one flush of the storage). */
const DESTROY_WRITES_AT_ONCE = 1024;

/**
 * The server tier's logic in one object: sessions, leases, expiry, events. Both the
 * in-process memory engine and the kiln server run exactly this; they differ only in
 * how owners reach it (a function call, or a TCP connection) and whether records are
 * written to disk. Keeping one implementation is what makes the engines agree.
 *
 * This file is the shell that ties the parts together (commits, touches, destroy,
 * expiry, storage); leases live in LeaseBroker, caps and group sizes in
 * session-counts, paging in session-listing, slicing of bulk work in sliced-work.
 */
export class Tier {
  readonly epoch: string;
  readonly limits: SessionLimits;
  private readonly sessions = new SessionTable();
  private readonly leases: LeaseBroker;
  /** When each session is next checked for expiry, by its slot in the table (no id string kept per session). */
  private readonly deadlines = new SlotDeadlines();
  private readonly tombstoneWheel: ExpiryWheel<string>;
  private readonly listeners = new Listeners<SessionEvent>();
  private readonly clock: () => number;
  private readonly storage: TierStorage | undefined;
  readonly touchGraceMs: number;
  private readonly maxTombstoneMs: number;
  private readonly sweepTimer: NodeJS.Timeout;
  /** Ids in order for list(), kept up to date by merging the changes since the last listing. */
  private readonly sortedIds = new SortedIds(() => this.sessions.ids());
  private readonly expiryQueue = new SlicedQueue<number>();
  private expiryDrainScheduled = false;
  private closed = false;
  private readonly counters: Omit<TierCounters, 'leaseGrants' | 'leaseRecalls' | 'leaseHandovers' | 'leaseRevocations' | 'pingPongGrants' | 'sessionLimitRefusals'> = {
    created: 0,
    commits: 0,
    commitBytes: 0,
    duplicateCommits: 0,
    rejectedCommits: 0,
    touches: 0,
    expired: 0,
    destroyed: 0,
    leaseLimitRefusals: 0,
  };
  private readonly maxLeasesPerOwner: number;
  private readonly caps: SessionCaps;
  private readonly groups: GroupSizes;

  constructor(options: TierOptions = {}) {
    this.epoch = options.epoch ?? randomBytes(8).toString('hex');
    this.limits = { ...DEFAULT_SESSION_LIMITS, ...options.limits };
    this.clock = options.clock ?? Date.now;
    this.storage = options.storage;
    this.caps = new SessionCaps(options.maxSessions ?? 0, options.maxSessionsPerPrincipal ?? 0);
    this.maxLeasesPerOwner = options.maxLeasesPerOwner ?? 0;
    this.groups = new GroupSizes(options.keyGroup);
    this.touchGraceMs = options.touchGraceMs ?? 2000;
    this.maxTombstoneMs = options.maxTombstoneMs ?? 24 * 3600_000;
    this.leases = new LeaseBroker({
      lease: {
        recallTimeoutMs: options.recallTimeoutMs ?? DEFAULT_LEASE_OPTIONS.recallTimeoutMs,
        pingPongThreshold: options.pingPongThreshold ?? DEFAULT_LEASE_OPTIONS.pingPongThreshold,
        pingPongHalfLifeMs: options.pingPongHalfLifeMs ?? DEFAULT_LEASE_OPTIONS.pingPongHalfLifeMs,
      },
      firstToken: options.firstToken ?? 0,
      epoch: this.epoch,
      clock: this.clock,
      snapshot: (sessionId) => this.sessions.snapshot(sessionId),
    });
    const sweepMs = options.expirySweepMs ?? 1000;
    this.tombstoneWheel = new ExpiryWheel(Math.max(sweepMs, 1000));
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
  }

  /** Applies a stored record at start-up (before any owner attaches). */
  restore(record: TierRecord): void {
    const before = this.sessions.size;
    const slot = this.sessions.replay(record);
    if (this.sessions.size !== before) this.groups.count(record.t === 's' ? record.meta.id : 'id' in record ? record.id : '', this.sessions.size - before);
    this.sortedIds.reset();
    if (record.t === 's' || (record.t === 'c' && (record.ca !== undefined || record.it !== undefined || record.ae !== undefined))) {
      this.deadlines.schedule(slot, this.sessions.deadlineOf(slot));
    }
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
    return this.groups.size(group, this.sessions.size);
  }

  attach(owner: TierOwner): void {
    this.assertOpen();
    this.leases.attach(owner);
  }

  /** The owner is gone: its waits are cancelled and its leases move on (in slices, see LeaseBroker.detach). */
  detach(ownerId: OwnerId): void {
    this.leases.detach(ownerId);
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Lease hand-overs as they happen (admin console, metrics); never sent to clients. */
  onLeaseActivity(listener: (event: LeaseActivity) => void): () => void {
    return this.leases.activity.add(listener);
  }

  acquire(ownerId: OwnerId, sessionId: string, timeoutMs: number): Promise<LeaseGrant> {
    this.assertOwner(ownerId);
    const table = this.leases.table;
    // O(1): the owner's count, and whether it holds this one already (a re-acquire takes nothing more).
    if (this.maxLeasesPerOwner > 0 && table.leasesHeldBy(ownerId) >= this.maxLeasesPerOwner && table.holderOf(sessionId)?.owner !== ownerId) {
      this.counters.leaseLimitRefusals++;
      return Promise.reject(new KilnError('KILN_ERR_LEASE_LIMIT', `this connection holds its limit of ${this.maxLeasesPerOwner} leases; release some first`, { details: { limit: this.maxLeasesPerOwner } }));
    }
    return this.leases.acquire(ownerId, sessionId, timeoutMs);
  }

  release(ownerId: OwnerId, sessionId: string, token: number, lastAccessedAt?: number): void {
    if (lastAccessedAt !== undefined) this.touch(ownerId, [{ sessionId, token, at: lastAccessedAt }]);
    this.leases.release(ownerId, sessionId, token);
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
        if (req.release) this.release(ownerId, req.sessionId, req.token);
        // The first try's record may still wait on the disk (a client that gave up on a
        // stalled one retries the same commit): acknowledged only once it is written, and
        // while the disk is far behind, not waited for at all (each wait holds a place).
        this.refuseWhileStorageBehind(req, true);
        // Returned, not awaited, as a new commit's answer is (see below).
        const settled = this.storage?.settled?.();
        if (settled) return this.duplicateOnceSettled(settled, known);
        this.counters.duplicateCommits++;
        return { version: known, duplicate: true };
      }
      this.assertLease(ownerId, req.sessionId, req.token);
      // A malformed delta gets its own error whatever else is wrong (as on every engine).
      checkDeltaNames(req);
      // The caps are checked before anything changes; a refusal stores nothing.
      this.caps.check(req, this.sessions);
      // So is the disk: a commit applied in memory and then left waiting on a stalled
      // disk would be seen by every reader, yet never acknowledged and lost at a crash.
      // Asked last, once the commit has passed every check of its own, so a conflict or
      // a commit over a limit gets its own error (409, 413), not a retryable 503 that
      // would fail the same way once the disk catches up.
      result = this.sessions.applyCommit(req, this.limits, now, this.storage !== undefined, this.storage ? this.refuseNewWhileStorageBehind : undefined);
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
        this.groups.count(req.sessionId, 1);
      }
      // A commit only moves the deadline later (access time), which the sweep finds when
      // the earlier entry comes due; only a create or a changed timeout needs a new entry.
      if (record.ca !== undefined || record.it !== undefined || record.ae !== undefined) this.scheduleExpiry(req.sessionId);
    }
    if (req.release) this.release(ownerId, req.sessionId, req.token);
    if (!record || !this.storage) return result.ack;
    // Returned, not awaited: a commit suspended here would keep its request and its record
    // (the session's new values, twice) until the disk answers, beside the encoded record
    // that the log's backlog counts, so a stalled disk would hold several times its limit.
    return acknowledgedOnceWritten(this.storage.append(record), result.ack);
  }

  private readonly refuseNewWhileStorageBehind = (req: CommitRequest): void => this.refuseWhileStorageBehind(req, false);

  /** A retried commit's answer once the first try's record is on disk; it holds nothing of the retry. */
  private duplicateOnceSettled(settled: Promise<void>, version: number): Promise<CommitAck> {
    return settled.then(
      () => {
        this.counters.duplicateCommits++;
        return { version, duplicate: true };
      },
      (err: unknown) => {
        this.counters.rejectedCommits++;
        throw err;
      },
    );
  }

  /**
   * Throws KILN_ERR_STORAGE_BEHIND while the storage takes no commit (its disk behind):
   * `applied` for the retry of a commit applied already, whose change stands.
   */
  private refuseWhileStorageBehind(req: CommitRequest, applied: boolean): void {
    const behind = this.storage?.refusal?.();
    if (behind === undefined) return;
    const what = applied ? "the commit's first try is applied and waits for the disk" : 'the commit was not applied';
    throw new KilnError('KILN_ERR_STORAGE_BEHIND', `${behind}; ${what}, try again later`, { details: applied ? { sessionId: req.sessionId, applied } : { sessionId: req.sessionId } });
  }

  /** Access times from lease holders. Touches carrying a stale token are ignored. */
  touch(ownerId: OwnerId, items: readonly TouchItem[]): number {
    const now = this.clock();
    const applied: [string, number][] = [];
    for (const item of items) {
      if (!this.leases.table.isCurrent(ownerId, item.sessionId, item.token)) continue;
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
    this.groups.count(sessionId, -1);
    if (reason === 'expired') this.counters.expired++;
    else this.counters.destroyed++;
    this.tombstoneWheel.schedule(sessionId, until);
    this.leases.apply(this.leases.table.endSession(sessionId, 'destroyed', now, ownerId ?? undefined));
    // A holder ending a session whose idle time it saw run out reports an expiry.
    this.listeners.emit({ type: reason === 'expired' ? 'expired' : 'destroyed', sessionId, principal: result.meta.principal, at: now, reason });
    if (this.storage) await this.storage.append(result.record);
    return true;
  }

  /**
   * Sessions in id order, a page at a time: `after` is the last id of the previous page,
   * `prefix` narrows to ids that start with it. The sorted index merges the creates and
   * removals since the last listing (SortedIds) rather than sorting every id again.
   */
  async list(options: ListOptions): Promise<ListPage> {
    const ids = await this.sortedIds.view();
    return listPage(ids, options, (id) => this.peek(id), this.sessions.size);
  }

  /** Every session of a principal at once, for in-process callers (the memory engine); the wire pages (findByPrincipalPage). */
  findByPrincipal(principal: string): SessionMeta[] {
    return this.sessions.principalSessions(principal);
  }

  /** How many sessions name this principal (O(1)). */
  principalCount(principal: string): number {
    return this.sessions.principalCount(principal);
  }

  /**
   * One page of a principal's sessions, newest login first: what a client far from the
   * tier reads, a frame at a time, where findByPrincipal would answer every session at
   * once. `after` is the previous page's `next`. Work is O(limit) while it names a
   * session still logged in, and bounded otherwise (see PrincipalIndex.pageOf).
   */
  findByPrincipalPage(principal: string, limit: number, after?: PrincipalCursor): PrincipalPage {
    return this.sessions.principalPage(principal, limit, after);
  }

  /**
   * "Log out everywhere". Every holder is told, the requesting owner included: it does
   * not know which of its cached sessions belong to the principal, and the revocations
   * reach it before this call's answer.
   */
  async destroyByPrincipal(principal: string): Promise<number> {
    // The sessions the principal has now; a login that completes while this runs keeps
    // its new session (it happened after the request, as far as the user can tell).
    // Their slots, not their ids: making 100,000 id strings at once held the server for
    // tens of milliseconds. An id is read when its slice comes.
    const mark = this.sessions.principalMark();
    const slots = this.sessions.slotsOf(principal);
    // A principal with 100,000 sessions: other requests run between slices. Each destroy
    // is done in memory when called; the writes of its records are awaited 1,024 at a
    // time (the storage writes what one turn appended together), not one after another:
    // that was one disk flush per session, in turn, under --fsync always.
    let n = 0;
    // Each promise gets its handler when made: one rejecting while others are still being
    // made (a failed write, the tier closing) must not go unhandled and stop the process.
    let failure: { error: unknown } | undefined;
    let writes: Promise<void>[] = [];
    const awaitWrites = async (): Promise<void> => {
      await Promise.all(writes);
      writes = [];
    };
    await forEachInSlices(slots, async (slot) => {
      if (failure) return; // no more sessions ended after a write failed
      const id = this.sessions.sessionInSlot(slot, principal, mark);
      if (id !== undefined) {
        writes.push(
          this.destroy(null, id, 'principal').then(
            (destroyed) => {
              if (destroyed) n++;
            },
            (error: unknown) => {
              failure ??= { error };
            },
          ),
        );
      }
      if (writes.length >= DESTROY_WRITES_AT_ONCE) await awaitWrites();
    });
    await awaitWrites();
    if (failure) throw failure.error;
    return n;
  }

  /** A session's data without taking its lease, for the admin console's inspector only. */
  snapshotForAdmin(sessionId: string): SessionSnapshot | null {
    return this.sessions.snapshot(sessionId);
  }

  /** Metadata of one session without taking its lease (admin, status). */
  peek(sessionId: string): SessionMeta | undefined {
    return this.sessions.meta(sessionId);
  }

  stats(): TierStats {
    const table = this.leases.table;
    const lc = table.counters;
    return {
      epoch: this.epoch,
      sessions: this.sessions.size,
      sessionBytes: this.sessions.bytes,
      tombstones: this.sessions.tombstoneCount,
      leases: table.size,
      leaseWaiters: table.waitingCount(),
      owners: this.leases.ownerCount,
      counters: {
        ...this.counters,
        leaseGrants: lc.grants,
        leaseRecalls: lc.recalls,
        leaseHandovers: lc.handovers,
        leaseRevocations: lc.revocations,
        pingPongGrants: lc.pingPongGrants,
        sessionLimitRefusals: this.caps.refusals,
      },
    };
  }

  leasesHeldBy(ownerId: OwnerId): number {
    return this.leases.table.leasesHeldBy(ownerId);
  }

  /**
   * Runs expiry now (tests with a fake clock call it; the interval timer does otherwise).
   * Each sweep starts a pass over the sessions' deadlines (SlotDeadlines), a slice of
   * slots per turn of the event loop; the due sessions are queued and expired in slices
   * too (SlicedQueue: a bounded number of sessions and milliseconds per turn), so 100,000
   * sessions expiring together never hold up the requests of the others. A session stays
   * readable until its slice comes, as it does until the sweep after its deadline: expiry
   * resolution is expirySweepMs plus the slices before it.
   */
  sweep(): void {
    if (this.closed) return;
    const now = this.clock();
    this.deadlines.startPass();
    this.sessions.sweepTombstones(now, this.tombstoneWheel.due(now));
    this.leases.table.sweepBounces(now);
    this.drainExpiry();
  }

  /** Sessions due and not yet expired (queued by sweep()); for stats and tests. */
  get expiryBacklog(): number {
    return this.expiryQueue.backlog;
  }

  private drainExpiry(): void {
    this.expiryDrainScheduled = false;
    if (this.closed) return;
    const now = this.clock();
    const scanning = this.deadlines.scan(now, (slot) => this.expiryQueue.push(slot));
    const more = this.expiryQueue.runSlice((slot) => this.expireIfDue(slot, now));
    if ((more || scanning) && !this.expiryDrainScheduled) {
      this.expiryDrainScheduled = true;
      setImmediate(() => this.drainExpiry());
    }
  }

  /** A slot's session (whichever lives there now: slots are reused) expires if its time is up. */
  private expireIfDue(slot: number, now: number): void {
    if (!this.sessions.isLive(slot)) return;
    const id = this.sessions.idOf(slot);
    const leased = this.leases.table.holderOf(id) !== undefined;
    const deadline = this.sessions.deadlineOf(slot, leased ? this.touchGraceMs : 0);
    if (deadline > now) {
      this.deadlines.schedule(slot, deadline);
      return;
    }
    const result = this.sessions.expire(id);
    if (!result) return;
    this.sortedIds.remove(id);
    this.groups.count(id, -1);
    this.counters.expired++;
    this.leases.apply(this.leases.table.endSession(id, 'expired', now));
    this.listeners.emit({ type: 'expired', sessionId: id, principal: result.meta.principal, at: now });
    if (this.storage) void this.storage.append(result.record).catch(() => undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    this.leases.close();
    this.sortedIds.close(); // a listing order being built or merged stops at its next slice, and is not built again
  }

  private scheduleExpiry(sessionId: string): void {
    const slot = this.sessions.slotOf(sessionId);
    if (slot >= 0) this.deadlines.schedule(slot, this.sessions.deadlineOf(slot));
  }

  private assertLease(ownerId: OwnerId, sessionId: string, token: number): void {
    if (!this.leases.table.isCurrent(ownerId, sessionId, token)) {
      throw new KilnError('KILN_ERR_LEASE_LOST', 'the lease token is not current (revoked, moved, or never granted)', { details: { sessionId, token } });
    }
  }

  private assertOwner(ownerId: OwnerId): void {
    this.assertOpen();
    if (!this.leases.hasOwner(ownerId)) throw new KilnError('KILN_ERR_CLOSED', 'owner is not attached to the tier');
  }

  private assertOpen(): void {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'the session tier is shutting down');
  }
}

/** The acknowledgement, once its record is on disk; it holds nothing of the commit but the answer. */
function acknowledgedOnceWritten(written: Promise<void>, ack: CommitAck): Promise<CommitAck> {
  return written.then(() => ack);
}
