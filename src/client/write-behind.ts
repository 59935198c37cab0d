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
/**
 * Changes of a session that stand on one base: those made on the copies of one lineage
 * (each request's copy built on the last), sent as one commit.
 */
interface Batch {
  /** Changes not yet sent, merged. */
  changes: PendingChanges | undefined;
  /**
   * The version of the load these changes were made on, when the session was loaded
   * again while earlier changes were still to go; undefined for the first batch, which
   * stands on the last acknowledged version.
   */
  reloadedAt: number | undefined;
  /** The cached copy the batch's last request made: the one its acknowledgement may renumber. */
  copy: CachedSession | undefined;
}

/** A batch with nothing in it yet, standing on the acknowledged version or on a load made at `reloadedAt`. */
function emptyBatch(reloadedAt?: number): Batch {
  return { changes: undefined, reloadedAt, copy: undefined };
}

interface SessionBacklog {
  /** Unsent batches, oldest first; never empty. Changes join the last one. */
  batches: Batch[];
  /** Last version the engine acknowledged. */
  ackedVersion: number;
  /** The send in progress, if any. */
  inflight: Promise<void> | undefined;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Batches one session may keep unsent. A batch begins only at a reload made while
 * earlier changes were still to go, which a request does only after waiting out its
 * deadline for them, so this is reached only with a tier that takes no commit for long;
 * the oldest unsent batch is then given up on, and reported.
 */
export const MAX_BATCHES_PER_SESSION = 8;

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
   * if another process changed the session meanwhile, instead of writing them over it;
   * changes made on this load form a batch of their own, which goes after them on this
   * load's version, and does not share their fate if they are refused.
   */
  loaded(sessionId: string, version: number): void {
    const backlog = this.backlogs.get(sessionId);
    if (!backlog) return;
    const last = backlog.batches[backlog.batches.length - 1]!;
    if (backlog.inflight === undefined && backlog.batches.length === 1 && last.changes === undefined) {
      backlog.ackedVersion = version;
      last.reloadedAt = undefined;
    } else if (last.changes === undefined) {
      // Nothing made since the last send began or the last load: this load is its base.
      last.reloadedAt = version;
      last.copy = undefined;
    } else {
      if (backlog.batches.length >= MAX_BATCHES_PER_SESSION) this.giveUp(sessionId, backlog.batches.shift()!);
      backlog.batches.push(emptyBatch(version));
    }
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
      backlog = { batches: [emptyBatch()], ackedVersion: handle.base.meta.version, inflight: undefined, timer: undefined };
      this.backlogs.set(sessionId, backlog);
    }
    const batch = backlog.batches[backlog.batches.length - 1]!;
    batch.changes = mergeDelta(batch.changes, delta, meta, now);
    // The acknowledged version stays until the flush is acknowledged.
    const committed = applyCommitted(handle.base, meta, delta, handle.base.meta.version, now, false);
    if (this.keeper.leases.has(sessionId)) this.cache.set(sessionId, committed);
    batch.copy = committed;
    handle.adopt(committed, sent);
    if (!backlog.timer && !backlog.inflight) {
      backlog.timer = setTimeout(() => void this.flush(sessionId).catch(() => undefined), this.flushMs);
      backlog.timer.unref?.();
    }
  }

  /**
   * Sends the session's pending changes now, batch by batch (and waits for a send in
   * flight). Rejects with the first batch that failed; the batches after it that stand
   * on a reload of their own are still sent.
   */
  async flush(sessionId: string): Promise<void> {
    const backlog = this.backlogs.get(sessionId);
    if (!backlog) return;
    if (backlog.timer) clearTimeout(backlog.timer);
    backlog.timer = undefined;
    let failure: unknown;
    for (;;) {
      while (backlog.inflight) await backlog.inflight.catch(() => undefined);
      if (this.backlogs.get(sessionId) !== backlog) break;
      const batch = backlog.batches[0]!;
      if (batch.changes === undefined && backlog.batches.length === 1) {
        this.backlogs.delete(sessionId);
        break;
      }
      if (backlog.batches.length > 1) backlog.batches.shift();
      else backlog.batches[0] = emptyBatch();
      if (batch.changes === undefined) continue;
      try {
        await this.send(sessionId, backlog, batch);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
  }

  /** One batch's commit, on its base: the acknowledged version, or the version of the load it was made on. */
  private send(sessionId: string, backlog: SessionBacklog, batch: Batch): Promise<void> {
    const changes = batch.changes!;
    // A reload batch goes on the version it was made on, even after the older batch
    // landed: a load made before that landed lacks its changes, and what was read there
    // and written back (x = x + 1) would undo them. Refused then, and reported.
    const baseVersion = batch.reloadedAt ?? backlog.ackedVersion;
    const request: CommitRequest = {
      sessionId,
      token: this.keeper.leases.get(sessionId)?.token ?? 0,
      commitId: this.sender.nextCommitId(),
      baseVersion,
      lastAccessedAt: changes.lastAccessedAt,
      set: changes.set,
      del: changes.del,
      principal: changes.meta.principal,
      idleTimeoutMs: changes.meta.idleTimeoutMs,
      absoluteExpiresAt: changes.meta.absoluteExpiresAt,
    };
    const inflight = (async () => {
      try {
        // Write-behind runs after its requests ended: only the engine's own bounds apply.
        // A failure gives the lease back, unless newer changes wait to go under it; only
        // for a failure the sender would keep it after (not a refusal as stale, nor one
        // given up on after retries: those give it back whatever we ask, and the newer
        // batch takes it again through its own retry).
        const ack = await this.sender.send(request, undefined, { releaseOnFailure: !backlog.batches.some((b) => b.changes !== undefined) });
        backlog.ackedVersion = ack.version;
        // Our own copy now stands at the acknowledged version. One built on a load made
        // meanwhile (a later batch's) would be labelled with a version whose changes it
        // may lack: it goes, and the next request loads the truth.
        const cached = this.cache.peek(sessionId);
        if (cached && cached === this.lineageCopy(backlog, batch)) cached.meta.version = ack.version;
        else if (cached) this.cache.delete(sessionId);
      } catch (err) {
        this.counters.asyncCommitErrors++;
        // The changes made after these on the same copies stand on them: they go too.
        // Those made on a later load (a batch with reloadedAt) do not, and still go out.
        while (backlog.batches.length > 0 && backlog.batches[0]!.reloadedAt === undefined) backlog.batches.shift();
        if (backlog.batches.length === 0) backlog.batches.push(emptyBatch());
        // The lease the send went under was given back by the sender (releaseOnFailure);
        // a lease taken since is another request's. The cached copy held the failed
        // changes, or stands on a load the next batch's send must be acknowledged first.
        this.cache.delete(sessionId);
        throw this.report(sessionId, err);
      } finally {
        backlog.inflight = undefined;
      }
    })();
    backlog.inflight = inflight;
    return inflight;
  }

  /**
   * The newest copy built on the acknowledged batch: its own last one, or that of the
   * changes made on top of it since (not on a load). None once a load came between.
   */
  private lineageCopy(backlog: SessionBacklog, acknowledged: Batch): CachedSession | undefined {
    if (backlog.batches.length !== 1) return undefined;
    const next = backlog.batches[0]!;
    if (next.reloadedAt !== undefined) return undefined;
    return next.copy ?? acknowledged.copy;
  }

  /** A batch left unsent (too many behind a tier that takes nothing): reported as a failed commit. */
  private giveUp(sessionId: string, batch: Batch): void {
    if (batch.changes === undefined) return;
    this.counters.asyncCommitErrors++;
    this.report(sessionId, new KilnError('KILN_ERR_TIMEOUT', `write-behind changes not sent: ${MAX_BATCHES_PER_SESSION} batches of this session were waiting for the tier`, { details: { sessionId } }));
  }

  private report(sessionId: string, err: unknown): KilnError {
    const error = isKilnError(err) ? err : new KilnError('KILN_ERR_INTERNAL', String(err), { cause: err });
    for (const listener of this.errorListeners) listener(error, sessionId);
    return error;
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
