import { KilnError, isKilnError } from '../errors/index.js';
import type { AttributeDelta, CommitRequest } from '../session/model.js';
import type { CommitSender } from './commit-sender.js';
import { applyCommitted, mergeDelta, type PendingChanges } from './committed-state.js';
import type { ClientCounters } from './counters.js';
import type { LeaseKeeper } from './lease-keeper.js';
import type { NearCache } from './near-cache.js';
import type { CachedSession, SentChanges, SessionHandle } from './session-handle.js';

/**
 * Write-behind (commitMode 'async'): a request's changes apply to the cached copy at
 * once and are sent within asyncFlushMs, merged with those of the requests after it.
 * The lease rule it keeps: pending changes go out before the lease does (a recall, a
 * release, a trim all flush first) and before the session is reloaded, so no other
 * process ever reads a session without them; at most one send per session is in flight,
 * based on the last version the tier acknowledged.
 */
interface SessionBacklog {
  /** Changes not yet sent, merged. */
  pending: PendingChanges | undefined;
  /** Last version the engine acknowledged. */
  ackedVersion: number;
  /** The send in progress, if any. */
  inflight: Promise<void> | undefined;
  timer: NodeJS.Timeout | undefined;
  /** The cached copy the last request's changes made: the one an acknowledgement may renumber. */
  copy: CachedSession | undefined;
  /**
   * The session was loaded again while changes were pending or in flight: copies since
   * stand on that load, not on what the send carries, and no acknowledgement renumbers them.
   */
  reloaded: boolean;
}

export class WriteBehind {
  private readonly backlogs = new Map<string, SessionBacklog>();
  private readonly errorListeners = new Set<(err: KilnError, sessionId: string) => void>();

  constructor(
    private readonly sender: CommitSender,
    private readonly keeper: LeaseKeeper,
    private readonly cache: NearCache<CachedSession>,
    private readonly counters: ClientCounters,
    private readonly flushMs: number,
  ) {}

  has(sessionId: string): boolean {
    return this.backlogs.has(sessionId);
  }

  /**
   * A snapshot of the session was loaded: the next send builds on its version, unless
   * changes made on an older one are still to go (a lost lease, a flush that timed
   * out). Those keep their own base, so the tier refuses them (a conflict, reported)
   * if another process changed the session meanwhile, instead of writing them over it.
   */
  loaded(sessionId: string, version: number): void {
    const backlog = this.backlogs.get(sessionId);
    if (!backlog) return;
    if (backlog.pending === undefined && backlog.inflight === undefined) backlog.ackedVersion = version;
    else backlog.reloaded = true;
  }

  onError(listener: (err: KilnError, sessionId: string) => void): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /** Applies a request's changes locally now and queues them; the handle stands on the result. */
  enqueue(handle: SessionHandle, delta: AttributeDelta, sent: SentChanges, now: number): void {
    const meta = sent.meta;
    const sessionId = handle.id;
    let backlog = this.backlogs.get(sessionId);
    if (!backlog) {
      backlog = { pending: undefined, ackedVersion: handle.base.meta.version, inflight: undefined, timer: undefined, copy: undefined, reloaded: false };
      this.backlogs.set(sessionId, backlog);
    }
    backlog.pending = mergeDelta(backlog.pending, delta, meta, now);
    // The acknowledged version stays until the flush is acknowledged.
    const committed = applyCommitted(handle.base, meta, delta, handle.base.meta.version, now, false);
    if (this.keeper.leases.has(sessionId)) this.cache.set(sessionId, committed);
    backlog.copy = committed;
    handle.adopt(committed, sent);
    if (!backlog.timer && !backlog.inflight) {
      backlog.timer = setTimeout(() => void this.flush(sessionId).catch(() => undefined), this.flushMs);
      backlog.timer.unref?.();
    }
  }

  /** Sends the session's pending changes now (and waits for a send in flight). */
  async flush(sessionId: string): Promise<void> {
    const backlog = this.backlogs.get(sessionId);
    if (!backlog) return;
    if (backlog.timer) clearTimeout(backlog.timer);
    backlog.timer = undefined;
    while (backlog.inflight) await backlog.inflight;
    const pending = backlog.pending;
    if (!pending) {
      this.backlogs.delete(sessionId);
      return;
    }
    backlog.pending = undefined;
    const request: CommitRequest = {
      sessionId,
      token: this.keeper.leases.get(sessionId)?.token ?? 0,
      commitId: this.sender.nextCommitId(),
      baseVersion: backlog.ackedVersion,
      lastAccessedAt: pending.lastAccessedAt,
      set: pending.set,
      del: pending.del,
      principal: pending.meta.principal,
      idleTimeoutMs: pending.meta.idleTimeoutMs,
      absoluteExpiresAt: pending.meta.absoluteExpiresAt,
    };
    backlog.inflight = (async () => {
      try {
        // Write-behind runs after its requests ended: only the engine's own bounds apply.
        const ack = await this.sender.send(request, undefined, { releaseOnFailure: true });
        backlog.ackedVersion = ack.version;
        // Our own copy now stands at the acknowledged version. One built on a load made
        // meanwhile (from before this commit landed) would be labelled with a version
        // whose changes it lacks: it goes, and the next request loads the truth.
        const cached = this.cache.peek(sessionId);
        if (cached && cached === backlog.copy && !backlog.reloaded) cached.meta.version = ack.version;
        else if (cached) this.cache.delete(sessionId);
        backlog.reloaded = false;
      } catch (err) {
        this.counters.asyncCommitErrors++;
        this.drop(sessionId);
        // The lease the send went under was given back by the sender (releaseOnFailure);
        // a lease taken since is another request's. The cached copy held the failed changes.
        this.cache.delete(sessionId);
        const error = isKilnError(err) ? err : new KilnError('KILN_ERR_INTERNAL', String(err), { cause: err });
        for (const listener of this.errorListeners) listener(error, sessionId);
        throw error;
      } finally {
        backlog.inflight = undefined;
      }
    })();
    await backlog.inflight;
    if (backlog.pending) await this.flush(sessionId);
    else if (this.backlogs.get(sessionId) === backlog) this.backlogs.delete(sessionId);
  }

  async flushAll(): Promise<void> {
    await Promise.all([...this.backlogs.keys()].map((id) => this.flush(id)));
  }

  /** Forgets the session's pending changes (it was destroyed: they must not land). */
  drop(sessionId: string): void {
    const backlog = this.backlogs.get(sessionId);
    if (backlog?.timer) clearTimeout(backlog.timer);
    this.backlogs.delete(sessionId);
  }
}
