import { KilnError, isKilnError } from '../errors/index.js';
import { withoutPatches, type CommittedValues } from '../session/delta.js';
import { deltaBytes, type AttributeDelta, type CommitRequest } from '../session/model.js';
import type { CommitSender } from './commit-sender.js';
import { applyCommitted } from './committed-state.js';
import type { ClientCounters } from './counters.js';
import { commitChannel } from './diagnostics.js';
import type { KeyedQueue } from './keyed-queue.js';
import type { LeaseKeeper } from './lease-keeper.js';
import type { NearCache } from './near-cache.js';
import { SessionCounts } from './session-counts.js';
import type { CachedSession, CommitResult, MetaChanges, SentChanges, SessionHandle } from './session-handle.js';
import type { WriteBehind } from './write-behind.js';

/**
 * A request's commit, from its delta to the handle standing on what the tier
 * acknowledged. The path goes down once: take the lease for a new session, hand the
 * changes to write-behind (async mode) or build the request and send it (CommitSender,
 * with its retries), then update the cached copy — and returns.
 *
 * Pipelining: a request's last commit on a session this process keeps a lease for may
 * let the next request on it start before the acknowledgement. The fencing token and
 * base version make that safe: the next request builds on the expected result, and if
 * the tier acknowledges another version (or refuses), its commit is refused in turn and
 * the cached copy, which ran ahead of the tier, is dropped.
 */
export interface CommitSettings {
  commitMode: 'sync' | 'async';
  /** Given to new sessions (0 = none), as the client's options say. */
  idleTimeoutMs: number;
  absoluteTimeoutMs: number;
}

export class CommitPipeline {
  constructor(
    private readonly settings: CommitSettings,
    private readonly keeper: LeaseKeeper,
    private readonly sender: CommitSender,
    private readonly writeBehind: WriteBehind,
    private readonly cache: NearCache<CachedSession>,
    private readonly queue: KeyedQueue,
    private readonly counters: ClientCounters,
    /**
     * What may still read a session's cached bytes besides the request holding its lock:
     * read-only handles, and a request released by its final commit until it closes.
     * While one is counted, nothing is overwritten in place.
     */
    private readonly readers: SessionCounts,
  ) {}

  /**
   * Commits of stored sessions in flight that are not pipelined. A request that ended
   * without waiting for one (its client went away) lets the next request run on the copy
   * that commit started from: that request must not pipeline, or requests after it would
   * be built on a version the tier numbers as the one this commit makes. Since only a
   * pipelined commit overwrites in place, this also keeps the bytes such a commit's
   * acknowledgement applies its patches to as they are.
   */
  private readonly unconfirmed = new SessionCounts();

  /** A commit with something to send, within the request's deadline (retries included). */
  async commit(handle: SessionHandle, options: { force: boolean; final: boolean }, delta: AttributeDelta, sent: SentChanges, now: number, deadline: number): Promise<CommitResult> {
    const sessionId = handle.id;
    const meta = sent.meta;
    const bytes = deltaBytes(delta);
    if (handle.isNew) {
      const grant = await this.keeper.acquire(sessionId, deadline);
      if (grant.snapshot) {
        throw new KilnError('KILN_ERR_SESSION_EXISTS', 'a session with this id exists already', { details: { sessionId } });
      }
    } else if (this.settings.commitMode === 'async') {
      // Write-behind merges the changes of several requests: whole values merge, patches do not.
      const whole = withoutPatches(delta, handle.base.attributes);
      this.writeBehind.enqueue(handle, whole, sent, now);
      this.counters.commits++;
      this.counters.commitBytes += deltaBytes(whole);
      return { committed: true, version: handle.base.meta.version, bytes: deltaBytes(whole) };
    }

    const request = this.request(handle, delta, meta, now);
    // A session that bounces between processes gives its lease back after each use: the
    // last commit of the request does it in the same round trip (and carries the access
    // time, so no touch follows).
    const releasing = options.final && !handle.isNew && this.keeper.leases.get(sessionId)?.releaseAfterUse === true && this.queue.waiting(sessionId) === 0;
    if (releasing) request.release = true;
    const started = commitChannel.hasSubscribers ? performance.now() : 0;
    const pipelined = options.final && this.canPipeline(handle);
    let expected: CachedSession | undefined;
    if (pipelined) {
      // The next request starts on what this commit makes (see SessionHandle.commit).
      // If this commit fails, the cache and lease go (below): the base's bytes may be overwritten.
      const values = this.committedValues(sessionId, delta, true);
      expected = applyCommitted(handle.base, request, delta, handle.base.meta.version + 1, now, false, values);
      if (values) this.counters.overwritesInPlace += values.overwrittenInPlace;
      this.cache.set(sessionId, expected);
      handle.adopt(expected, sent);
    }
    let ack: { version: number; token: number };
    const inFlight = !pipelined && !handle.isNew;
    if (inFlight) this.unconfirmed.add(sessionId);
    try {
      const sent = this.sender.send(request, deadline);
      if (pipelined) {
        this.counters.pipelinedCommits++;
        handle.releaseSession();
        // Until it closes, this request may still read attributes it has not read yet,
        // from the bytes of the version it committed: none may be overwritten meanwhile.
        this.readers.add(sessionId);
        handle.readerOf = sessionId;
      }
      ack = await sent;
    } catch (err) {
      if (inFlight) this.unconfirmed.remove(sessionId);
      if (commitChannel.hasSubscribers) commitChannel.publish({ sessionId, error: isKilnError(err) ? err.code : String(err) });
      // The cache ran ahead of the tier: whatever the error, it must not be served again
      // (unless a later request has taken the lease anew and loaded the truth since).
      if (pipelined && this.keeper.leases.get(sessionId)?.token === request.token) {
        this.keeper.releaseUnused(sessionId);
        this.keeper.forget(sessionId);
      }
      throw err;
    }
    if (commitChannel.hasSubscribers) commitChannel.publish({ sessionId, bytes, version: ack.version, ms: performance.now() - started });
    this.counters.commits++;
    this.counters.commitBytes += bytes;
    if (handle.isNew) this.counters.created++;
    if (expected) {
      // Not the version the next requests assumed: they will be refused; reload.
      if (ack.version !== expected.meta.version) this.cache.delete(sessionId);
      return { committed: true, version: ack.version, bytes };
    }
    const committed = applyCommitted(handle.base, request, delta, ack.version, now, handle.isNew, this.committedValues(sessionId, delta, false));
    if (inFlight) this.unconfirmed.remove(sessionId);
    const lease = this.keeper.leases.get(sessionId);
    if (releasing) {
      if (lease?.token === ack.token) this.keeper.forget(sessionId);
    } else if (lease !== undefined) {
      // Only onto the copy it was built on, under the lease it went under: an
      // acknowledgement that comes late (a retry's, a slow disk's) after the lease was
      // taken anew and a fresher copy loaded must not put this older one back.
      if (lease.token === ack.token && (this.cache.peek(sessionId) ?? handle.base) === handle.base) this.cache.set(sessionId, committed);
      else this.cache.delete(sessionId);
    }
    handle.adopt(committed, sent);
    handle.isNewSession = false;
    return { committed: true, version: ack.version, bytes };
  }

  /**
   * How this commit's patches become values (see applyDelta): in place only when pipelined
   * (a failure drops the copy that ran ahead; none is while another commit of the session
   * is unconfirmed) and nothing else may still read the session's bytes (`readers`:
   * read-only requests, the request whose final commit let this one start until it closes).
   */
  private committedValues(sessionId: string, delta: AttributeDelta, pipelined: boolean): CommittedValues | undefined {
    if (!delta.patch) return undefined;
    return { inPlace: pipelined && !this.readers.has(sessionId), overwrittenInPlace: 0 };
  }

  private request(handle: SessionHandle, delta: AttributeDelta, meta: MetaChanges, now: number): CommitRequest {
    const isNew = handle.isNew;
    const { idleTimeoutMs, absoluteTimeoutMs } = this.settings;
    return {
      sessionId: handle.id,
      token: this.keeper.leases.get(handle.id)?.token ?? 0,
      commitId: this.sender.nextCommitId(),
      baseVersion: isNew ? 0 : handle.base.meta.version,
      lastAccessedAt: now,
      set: delta.set,
      del: delta.del,
      patch: delta.patch,
      principal: meta.principal,
      idleTimeoutMs: isNew ? (meta.idleTimeoutMs ?? idleTimeoutMs) : meta.idleTimeoutMs,
      absoluteExpiresAt: isNew ? (meta.absoluteExpiresAt ?? (absoluteTimeoutMs > 0 ? now + absoluteTimeoutMs : 0)) : meta.absoluteExpiresAt,
    };
  }

  /**
   * Whether a request's last commit may let the next request start before it is
   * acknowledged: a sync commit of a stored session under a lease this process keeps,
   * sent in order on the wire. A principal change is not pipelined: the Redis engine
   * adds the session to the principal's index first, so its commit could overtake.
   */
  private canPipeline(handle: SessionHandle): boolean {
    if (this.settings.commitMode !== 'sync' || handle.isNew || handle.unlock === undefined || handle.metaChanges.principal !== undefined) return false;
    const lease = this.keeper.leases.get(handle.id);
    return lease !== undefined && !lease.recalled && !lease.releaseAfterUse && this.cache.peek(handle.id) !== undefined && !this.unconfirmed.has(handle.id);
  }
}

