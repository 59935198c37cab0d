import { randomBytes } from 'node:crypto';
import type { Engine, EngineLimits } from '../engines/engine.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS } from '../engines/engine.js';
import { KilnError, isKilnError } from '../errors/index.js';
import { applyDelta, withoutPatches } from '../session/delta.js';
import { generateSessionId, isValidSessionId } from '../session/id.js';
import { checkDeltaLimits, DEFAULT_SESSION_LIMITS } from '../session/limits.js';
import { attributeBytes, deltaBytes, expiryDeadline, type AttributeDelta, type CommitRequest, type LeaseGrant, type SessionEvent, type SessionMeta, type SessionSnapshot, type TouchItem } from '../session/model.js';
import { passed, within } from '../util/deadline.js';
import { OptionReader } from '../util/options.js';
import { cacheChannel, commitChannel, leaseChannel } from './diagnostics.js';
import { KeyedQueue } from './keyed-queue.js';
import { NearCache, type NearCacheStats } from './near-cache.js';
import { SessionHandle, type CachedSession, type CommitResult, type HandleHost, type MetaChanges } from './session-handle.js';

/**
 * The Kiln client every app server runs: it keeps session leases greedily, serves
 * sessions it holds from its near cache, and commits only what changed.
 *
 * Lease rules as the client keeps them:
 * - a session is read or written only under its lease, and the cached copy is trusted
 *   only while the lease is held (revoke, disconnect and recall all drop it);
 * - a recall waits for the requests already queued on the session, flushes their
 *   commits, then releases;
 * - a commit that lost its lease mid-flight is retried under a new lease with the same
 *   commit id and base version: the engine applies it only if nothing else changed
 *   the session meanwhile, and acknowledges it again if it had been applied.
 *
 * @example
 * import { connect, createSessionClient } from 'kiln';
 * const kiln = createSessionClient({ engine: connect('kiln://127.0.0.1:9510', { token }) });
 * const session = await kiln.open(idFromCookie);   // a fresh session when unknown
 * session.set('cart', [...(session.get('cart') ?? []), sku]);
 * await session.commit();
 * session.close();
 */
export interface SessionClientOptions {
  engine: Engine;
  /** 'sync' (default): a commit resolves once the engine acknowledged it. 'async': write-behind. */
  commitMode?: 'sync' | 'async';
  /** Longest a write-behind commit waits before it is sent (async mode). Default 20 ms. */
  asyncFlushMs?: number;
  /** Idle timeout given to new sessions. Default 30 minutes; 0 = none. */
  idleTimeoutMs?: number;
  /** Absolute lifetime given to new sessions. Default 0 = none. */
  absoluteTimeoutMs?: number;
  /** How often batched access-time touches are sent. Default 1000 ms. */
  touchIntervalMs?: number;
  /** Longest one wait for a session's lease (from another process, or behind other requests in this one). Default 10 s. */
  acquireTimeoutMs?: number;
  /**
   * The bound of one request on the session layer, whatever fails: opening, committing,
   * destroying and regenerating together, with every wait and retry inside them (the
   * queue, the lease, the tier's answers, reconnecting), never take longer than this.
   * The application's own time between them is not counted. Past it the step fails
   * with the error of what it was waiting for (KILN_ERR_ENGINE_UNAVAILABLE,
   * KILN_ERR_LEASE_TIMEOUT, KILN_ERR_TIMEOUT: 503 + Retry-After). Default 10 s.
   */
  requestTimeoutMs?: number;
  /** Near cache bounds. Defaults: 10,000 sessions, 64 MiB. */
  cache?: { maxEntries?: number; maxBytes?: number };
  /** Most leases kept after use; the least recently used beyond it are released. Default 100,000. */
  maxLeases?: number;
  /** Route suffix for new session ids (the load balancer's name for this app server). */
  route?: string;
  /** How often this client's figures are reported to the tier for the console (0 = never). Default 2000 ms. */
  statsIntervalMs?: number;
}

export interface OpenOptions {
  /** Take a snapshot and let other requests on the session run; changes are refused. */
  readOnly?: boolean;
  /** The id to give the session if it has to be a new one (default: 256 random bits + route). */
  newId?: () => string;
  /** This request's bound on the session layer (default: the client's requestTimeoutMs). */
  timeoutMs?: number;
}

export interface SessionClientStats {
  ownerId: string;
  leases: number;
  cache: NearCacheStats;
  counters: {
    opens: number;
    created: number;
    acquires: number;
    loads: number;
    commits: number;
    commitBytes: number;
    emptyCommits: number;
    commitRetries: number;
    /** Final commits that let the next request on their session start before their acknowledgement. */
    pipelinedCommits: number;
    handovers: number;
    revocations: number;
    leasesLost: number;
    asyncCommitErrors: number;
    touchesSent: number;
    localExpiries: number;
  };
}

interface LeaseState {
  token: number;
  /** Used since the last trim (second-chance eviction of leases beyond maxLeases). */
  used?: boolean;
  releaseAfterUse: boolean;
  recalled: boolean;
}

/** Write-behind state of one session (async mode). */
interface AsyncState {
  /** Changes not yet sent, merged. */
  pending: (AttributeDelta & { meta: MetaChanges; lastAccessedAt: number }) | undefined;
  /** Last version the engine acknowledged. */
  ackedVersion: number;
  /** The send in progress, if any. */
  inflight: Promise<void> | undefined;
  timer: NodeJS.Timeout | undefined;
}

const RETRYABLE_COMMIT_CODES = new Set(['KILN_ERR_LEASE_LOST', 'KILN_ERR_CONNECTION_LOST', 'KILN_ERR_ENGINE_UNAVAILABLE', 'KILN_ERR_TIMEOUT']);
const COMMIT_ATTEMPTS = 3;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

export class SessionClient implements HandleHost {
  readonly engine: Engine;
  private readonly commitMode: 'sync' | 'async';
  private readonly asyncFlushMs: number;
  private readonly idleTimeoutMs: number;
  private readonly absoluteTimeoutMs: number;
  private readonly acquireTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxLeases: number;
  private readonly route: string | undefined;
  private readonly leases = new Map<string, LeaseState>();
  private readonly cache: NearCache<CachedSession>;
  private readonly queue = new KeyedQueue();
  private readonly touches = new Map<string, TouchItem>();
  private readonly asyncStates = new Map<string, AsyncState>();
  /** Recalls that arrived before the grant they refer to was processed. */
  private readonly earlyRecalls = new Map<string, number>();
  private readonly asyncErrorListeners = new Set<(err: KilnError, sessionId: string) => void>();
  private touchTimer: NodeJS.Timeout;
  private touchIntervalMs: number;
  private readonly configuredTouchIntervalMs: number;
  private statsTimer: NodeJS.Timeout | undefined;
  private readonly commitPrefix = randomBytes(6).toString('base64url');
  private commitSeq = 0;
  private closed = false;
  private readonly counters: SessionClientStats['counters'] = {
    opens: 0,
    created: 0,
    acquires: 0,
    loads: 0,
    commits: 0,
    commitBytes: 0,
    emptyCommits: 0,
    commitRetries: 0,
    pipelinedCommits: 0,
    handovers: 0,
    revocations: 0,
    leasesLost: 0,
    asyncCommitErrors: 0,
    touchesSent: 0,
    localExpiries: 0,
  };

  constructor(options: SessionClientOptions) {
    const o = new OptionReader('SessionClient', options, ['engine', 'commitMode', 'asyncFlushMs', 'idleTimeoutMs', 'absoluteTimeoutMs', 'touchIntervalMs', 'acquireTimeoutMs', 'requestTimeoutMs', 'cache', 'maxLeases', 'route', 'statsIntervalMs']);
    const engine = o.any('engine') as Engine | undefined;
    if (!engine || typeof engine.acquire !== 'function') throw new KilnError('KILN_ERR_INVALID_OPTION', 'SessionClient: option "engine" is required (createMemoryTier().engine(), connect(url), …)', { details: { option: 'engine' } });
    this.engine = engine;
    this.commitMode = o.oneOf('commitMode', ['sync', 'async'], 'sync');
    this.asyncFlushMs = o.int('asyncFlushMs', 20, 0, 60_000);
    this.idleTimeoutMs = o.int('idleTimeoutMs', 30 * 60_000);
    this.absoluteTimeoutMs = o.int('absoluteTimeoutMs', 0);
    this.acquireTimeoutMs = o.int('acquireTimeoutMs', DEFAULT_ACQUIRE_TIMEOUT_MS, 1);
    this.requestTimeoutMs = o.int('requestTimeoutMs', DEFAULT_REQUEST_TIMEOUT_MS, 1);
    this.maxLeases = o.int('maxLeases', 100_000, 1);
    this.route = o.string('route', undefined);
    if (this.route !== undefined) generateSessionId(this.route); // validates the route
    const cacheOptions = new OptionReader('SessionClient cache', options.cache, ['maxEntries', 'maxBytes']);
    this.cache = new NearCache({ maxEntries: cacheOptions.int('maxEntries', 10_000, 0), maxBytes: cacheOptions.int('maxBytes', 64 * 1024 * 1024, 0) }, (sessionId) => {
      if (cacheChannel.hasSubscribers) cacheChannel.publish({ type: 'evicted', sessionId });
    });
    this.configuredTouchIntervalMs = o.int('touchIntervalMs', 1000, 10, 3_600_000);
    this.touchIntervalMs = this.configuredTouchIntervalMs;
    this.touchTimer = setInterval(() => void this.flushTouches(), this.touchIntervalMs);
    this.touchTimer.unref();
    const statsIntervalMs = o.int('statsIntervalMs', 2000, 0);
    if (statsIntervalMs > 0 && engine.reportClientStats) {
      this.statsTimer = setInterval(() => void engine.reportClientStats?.({ ...this.stats(), pid: process.pid }).catch(() => undefined), statsIntervalMs);
      this.statsTimer.unref();
    }
    engine.setLeaseHandler({
      recall: (sessionId, token) => this.onRecall(sessionId, token),
      revoked: (sessionId, token) => this.onRevoked(sessionId, token),
      lost: () => this.onAllLeasesLost(),
    });
  }

  private get limits(): EngineLimits {
    return this.engine.limits ?? DEFAULT_SESSION_LIMITS;
  }

  /**
   * Opens a session for one request. An unknown, malformed, expired or destroyed id
   * gives a fresh session (isNew) with a new id, and costs no engine call until it is
   * first committed. `readOnly` takes a snapshot and lets other requests on the same
   * session run meanwhile; such a handle refuses changes.
   */
  async open(sessionId?: string | null, options: OpenOptions = {}): Promise<SessionHandle> {
    this.assertOpen();
    this.counters.opens++;
    const readOnly = options.readOnly === true;
    const budgetMs = options.timeoutMs ?? this.requestTimeoutMs;
    const deadline = Date.now() + budgetMs;
    const fresh = (): SessionHandle => withTimeLeft(this.fresh(readOnly, options.newId), deadline);
    if (typeof sessionId !== 'string' || !isValidSessionId(sessionId)) return fresh();
    const unlock = await this.queue.lock(sessionId, within(this.acquireTimeoutMs, deadline));
    try {
      const cached = await this.loadUnderLease(sessionId, deadline);
      const now = Date.now();
      if (!cached) {
        this.releaseUnusedLease(sessionId);
        unlock();
        return fresh();
      }
      if (expiryDeadline(cached.meta) <= now) {
        // The lease holder is the authority on access time: it ends the session itself.
        this.counters.localExpiries++;
        await this.engine.destroy(sessionId, { reason: 'expired', deadline }).catch(() => undefined);
        this.forget(sessionId);
        unlock();
        return fresh();
      }
      return withTimeLeft(this.handOut(sessionId, cached, now, readOnly, unlock, this.leases.get(sessionId)), deadline);
    } catch (err) {
      unlock();
      throw err;
    }
  }

  /**
   * open() without waiting, for the path most requests of sticky traffic take: this
   * process holds the lease, the session is in the near cache and no other request of
   * this process is using it. Returns undefined otherwise (then call open()). Spares the
   * promises and microtask hops of open() on every such request.
   */
  openCached(sessionId: string, options: OpenOptions = {}): SessionHandle | undefined {
    if (this.closed) return undefined;
    const lease = this.leases.get(sessionId);
    if (!lease || lease.recalled) return undefined;
    const cached = this.cache.peek(sessionId);
    const now = Date.now();
    if (!cached || expiryDeadline(cached.meta) <= now) return undefined;
    const unlock = this.queue.tryLock(sessionId);
    if (!unlock) return undefined;
    this.counters.opens++;
    markUsed(lease);
    this.cache.get(sessionId); // counts the hit and marks the entry used
    if (cacheChannel.hasSubscribers) cacheChannel.publish({ type: 'hit', sessionId });
    const handle = this.handOut(sessionId, cached, now, options.readOnly === true, unlock, lease);
    handle.timeLeftMs = options.timeoutMs ?? this.requestTimeoutMs;
    return handle;
  }

  /**
   * The common end of open() and openCached(): notes the access for the next batch of
   * touches and hands the session to the request. A read-only handle holds no lock.
   */
  private handOut(sessionId: string, cached: CachedSession, now: number, readOnly: boolean, unlock: () => void, lease: LeaseState | undefined): SessionHandle {
    cached.meta.lastAccessedAt = now;
    if (lease) {
      const touch = this.touches.get(sessionId);
      if (touch) {
        touch.token = lease.token;
        touch.at = now;
      } else {
        this.touches.set(sessionId, { sessionId, token: lease.token, at: now });
      }
      this.fitTouchInterval();
    }
    if (readOnly) {
      const handle = new SessionHandle(this, cached, false, true, undefined);
      this.finishUse(sessionId);
      unlock();
      return handle;
    }
    return new SessionHandle(this, cached, false, false, unlock);
  }

  /** Runs fn on a session, commits what it changed and closes the handle. */
  async withSession<T>(sessionId: string | null | undefined, fn: (session: SessionHandle) => T | Promise<T>): Promise<T> {
    const session = await this.open(sessionId);
    try {
      const result = await fn(session);
      await session.commit({ final: true });
      return result;
    } finally {
      session.close();
    }
  }

  /** Destroys a session from anywhere (admin, logout from another device). */
  async destroy(sessionId: string): Promise<boolean> {
    this.assertOpen();
    const destroyed = await this.engine.destroy(sessionId, { reason: 'request' });
    this.forget(sessionId);
    return destroyed;
  }

  findByPrincipal(principal: string): Promise<SessionMeta[]> {
    this.assertOpen();
    return this.engine.findByPrincipal(principal);
  }

  /** "Log out everywhere": ends every session of the principal, on every app server (this one included). */
  destroyByPrincipal(principal: string): Promise<number> {
    this.assertOpen();
    // The tier revokes every holder's lease, this process's too, so caches drop themselves.
    return this.engine.destroyByPrincipal(principal);
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    return this.engine.onEvent(listener);
  }

  /** Write-behind commits that failed after their request had completed (async mode). */
  onAsyncCommitError(listener: (err: KilnError, sessionId: string) => void): () => void {
    this.asyncErrorListeners.add(listener);
    return () => this.asyncErrorListeners.delete(listener);
  }

  stats(): SessionClientStats {
    return { ownerId: this.engine.ownerId, leases: this.leases.size, cache: this.cache.stats(), counters: { ...this.counters } };
  }

  /** Whether this process currently holds the session's lease (for tests and status). */
  holdsLease(sessionId: string): boolean {
    return this.leases.has(sessionId);
  }

  /** Sends every pending write-behind commit and touch now. */
  async flush(): Promise<void> {
    await Promise.all([...this.asyncStates.keys()].map((id) => this.flushAsync(id)));
    await this.flushTouches();
  }

  /** Flushes, releases every lease (so other processes get them at once) and closes the engine. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => undefined);
    this.closed = true;
    clearInterval(this.touchTimer);
    clearInterval(this.statsTimer);
    const releases = [...this.leases].map(([id, lease]) => this.engine.release(id, lease.token).catch(() => undefined));
    this.leases.clear();
    this.cache.clear();
    await Promise.all(releases);
    await this.engine.close();
  }

  /** @internal A request that changed nothing ended without a commit call (adapters' fast path). */
  noteUnchanged(): void {
    this.counters.emptyCommits++;
  }

  // ---- HandleHost ---------------------------------------------------------------------

  /** @internal */
  async commitHandle(handle: SessionHandle, options: { force: boolean; final: boolean }): Promise<CommitResult> {
    const delta = handle.tracker.delta();
    const meta = handle.metaChanges;
    const hasMeta = Object.keys(meta).length > 0;
    if (delta.set.length === 0 && delta.del.length === 0 && !delta.patch && !hasMeta && !(handle.isNew && options.force)) {
      this.counters.emptyCommits++;
      return { committed: false, version: handle.base.meta.version, bytes: 0 };
    }
    checkDeltaLimits(handle.base.attributes, handle.base.bytes, delta, this.limits);
    const started = Date.now();
    const deadline = startStep(handle, started, 'commit');
    try {
      return await this.commitChanges(handle, options, delta, meta, started, deadline);
    } finally {
      handle.timeLeftMs = deadline - Date.now();
    }
  }

  /** A commit with something to send, within the request's deadline (retries included). */
  private async commitChanges(handle: SessionHandle, options: { force: boolean; final: boolean }, delta: AttributeDelta, meta: MetaChanges, now: number, deadline: number): Promise<CommitResult> {
    const sessionId = handle.id;
    const bytes = deltaBytes(delta);
    if (handle.isNew) {
      const grant = await this.acquire(sessionId, deadline);
      if (grant.snapshot) {
        throw new KilnError('KILN_ERR_SESSION_EXISTS', 'a session with this id exists already', { details: { sessionId } });
      }
    } else if (this.commitMode === 'async') {
      // Write-behind merges the changes of several requests: whole values merge, patches do not.
      const whole = withoutPatches(delta, handle.base.attributes);
      this.enqueueAsync(handle, whole, meta, now);
      this.counters.commits++;
      this.counters.commitBytes += deltaBytes(whole);
      return { committed: true, version: handle.base.meta.version, bytes: deltaBytes(whole) };
    }

    const request: CommitRequest = {
      sessionId,
      token: this.leases.get(sessionId)?.token ?? 0,
      commitId: this.nextCommitId(),
      baseVersion: handle.isNew ? 0 : handle.base.meta.version,
      lastAccessedAt: now,
      set: delta.set,
      del: delta.del,
      patch: delta.patch,
      principal: meta.principal,
      idleTimeoutMs: handle.isNew ? (meta.idleTimeoutMs ?? this.idleTimeoutMs) : meta.idleTimeoutMs,
      absoluteExpiresAt: handle.isNew ? (meta.absoluteExpiresAt ?? (this.absoluteTimeoutMs > 0 ? now + this.absoluteTimeoutMs : 0)) : meta.absoluteExpiresAt,
    };
    // A session that bounces between processes gives its lease back after each use: the
    // last commit of the request does it in the same round trip (and carries the access
    // time, so no touch follows).
    const releasing = options.final && !handle.isNew && this.leases.get(sessionId)?.releaseAfterUse === true && this.queue.waiting(sessionId) === 0;
    if (releasing) request.release = true;
    const started = commitChannel.hasSubscribers ? performance.now() : 0;
    const pipelined = options.final && this.canPipeline(handle);
    let expected: CachedSession | undefined;
    if (pipelined) {
      // The next request starts on what this commit makes (see SessionHandle.commit).
      expected = applyCommitted(handle.base, request, delta, handle.base.meta.version + 1, now, false);
      this.cache.set(sessionId, expected);
      this.adopt(handle, expected);
    }
    let ack: { version: number };
    try {
      const sent = this.sendCommit(request, deadline);
      if (pipelined) {
        this.counters.pipelinedCommits++;
        handle.releaseSession();
      }
      ack = await sent;
    } catch (err) {
      if (commitChannel.hasSubscribers) commitChannel.publish({ sessionId, error: isKilnError(err) ? err.code : String(err) });
      // The cache ran ahead of the tier: whatever the error, it must not be served again
      // (unless a later request has taken the lease anew and loaded the truth since).
      if (pipelined && this.leases.get(sessionId)?.token === request.token) {
        this.releaseUnusedLease(sessionId);
        this.forget(sessionId);
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
    const committed = applyCommitted(handle.base, request, delta, ack.version, now, handle.isNew);
    if (releasing) {
      if (this.leases.get(sessionId)?.token === request.token) this.forget(sessionId);
    } else if (this.leases.has(sessionId)) {
      this.cache.set(sessionId, committed);
    }
    this.adopt(handle, committed);
    handle.isNewSession = false;
    return { committed: true, version: ack.version, bytes };
  }

  /** The handle now stands on `committed`: its changes are in it. */
  private adopt(handle: SessionHandle, committed: CachedSession): void {
    handle.tracker.rebase(committed.attributes);
    handle.base = committed;
    handle.metaChanges = {};
  }

  /**
   * Whether a request's last commit may let the next request start before it is
   * acknowledged: a sync commit of a stored session under a lease this process keeps,
   * sent in order on the wire. A principal change is not pipelined: the Redis engine
   * adds the session to the principal's index first, so its commit could overtake.
   */
  private canPipeline(handle: SessionHandle): boolean {
    if (this.commitMode !== 'sync' || handle.isNew || handle.unlock === undefined || handle.metaChanges.principal !== undefined) return false;
    const lease = this.leases.get(handle.id);
    return lease !== undefined && !lease.recalled && !lease.releaseAfterUse && this.cache.peek(handle.id) !== undefined;
  }

  /** @internal */
  async destroyHandle(handle: SessionHandle): Promise<void> {
    const sessionId = handle.id;
    if (!handle.isNew) {
      this.dropAsync(sessionId);
      const started = Date.now();
      const deadline = startStep(handle, started, 'destroy');
      try {
        await this.engine.destroy(sessionId, { reason: 'request', deadline });
      } finally {
        handle.timeLeftMs = deadline - Date.now();
      }
    }
    this.forget(sessionId);
  }

  /** @internal */
  async regenerateHandle(handle: SessionHandle, keep: readonly string[], newId?: () => string): Promise<void> {
    // The new id is made (and checked) before the old session is destroyed: a failing generator loses nothing.
    const id = this.newSessionId(newId);
    const kept = keep.filter((name) => handle.has(name)).map((name) => [name, handle.get(name)] as const);
    const principal = handle.metaChanges.principal;
    if (!handle.isDestroyed) await this.destroyHandle(handle);
    handle.unlock?.();
    handle.unlock = undefined;
    handle.reset(this.emptySession(id), true);
    for (const [name, value] of kept) handle.set(name, value);
    if (principal !== undefined) handle.setPrincipal(principal);
  }

  /** @internal */
  closeHandle(handle: SessionHandle): void {
    if (!handle.readOnly) this.finishUse(handle.id);
    handle.unlock?.();
    handle.unlock = undefined;
  }

  // ---- leases -------------------------------------------------------------------------

  private async loadUnderLease(sessionId: string, deadline: number): Promise<CachedSession | null> {
    const lease = this.leases.get(sessionId);
    if (lease) {
      markUsed(lease);
      const cached = this.cache.get(sessionId);
      if (cacheChannel.hasSubscribers) cacheChannel.publish({ type: cached ? 'hit' : 'miss', sessionId });
      if (cached) return cached;
      // Evicted while write-behind changes were pending: send them before reloading.
      if (this.asyncStates.has(sessionId)) await this.flushAsync(sessionId);
      try {
        this.counters.loads++;
        const snapshot = await this.engine.load(sessionId, lease.token, { deadline });
        return this.remember(sessionId, snapshot);
      } catch (err) {
        if (!isKilnError(err, 'KILN_ERR_LEASE_LOST')) throw err;
        this.forget(sessionId);
      }
    }
    const grant = await this.acquire(sessionId, deadline);
    return this.remember(sessionId, grant.snapshot);
  }

  private async acquire(sessionId: string, deadline: number): Promise<LeaseGrant> {
    this.counters.acquires++;
    let grant: LeaseGrant;
    for (let attempt = 1; ; attempt++) {
      try {
        grant = await this.engine.acquire(sessionId, { timeoutMs: this.acquireTimeoutMs, deadline });
        break;
      } catch (err) {
        // The connection dropped with the request in flight: the server freed whatever
        // it had granted us with it, so asking again is safe.
        if (!isKilnError(err, 'KILN_ERR_CONNECTION_LOST') || attempt >= COMMIT_ATTEMPTS || this.closed || passed(deadline)) throw err;
      }
    }
    this.leases.set(sessionId, { token: grant.token, releaseAfterUse: grant.releaseAfterUse, recalled: false });
    if (leaseChannel.hasSubscribers) leaseChannel.publish({ type: 'acquired', sessionId, token: grant.token, releaseAfterUse: grant.releaseAfterUse });
    const early = this.earlyRecalls.get(sessionId);
    if (early !== undefined) {
      this.earlyRecalls.delete(sessionId);
      if (early === grant.token) this.onRecall(sessionId, grant.token);
    }
    this.trimLeases();
    return grant;
  }

  private remember(sessionId: string, snapshot: SessionSnapshot | null): CachedSession | null {
    if (!snapshot) return null;
    const cached = toCached(snapshot);
    const async = this.asyncStates.get(sessionId);
    if (async) async.ackedVersion = cached.meta.version;
    this.cache.set(sessionId, cached);
    return cached;
  }

  private onRecall(sessionId: string, token: number): void {
    const lease = this.leases.get(sessionId);
    if (!lease || lease.token !== token) {
      // The grant this recall refers to may still be on its way to us.
      if (!lease || lease.token < token) this.earlyRecalls.set(sessionId, token);
      return;
    }
    if (lease.recalled) return;
    lease.recalled = true;
    // Queued behind the requests already waiting for this session: they finish first.
    this.queue
      .run(sessionId, this.acquireTimeoutMs, () => this.handOver(sessionId, token))
      .catch(() => undefined);
  }

  private async handOver(sessionId: string, token: number): Promise<void> {
    const lease = this.leases.get(sessionId);
    if (!lease || lease.token !== token) return;
    await this.flushAsync(sessionId).catch(() => undefined);
    if (this.leases.get(sessionId)?.token !== token) return;
    this.counters.handovers++;
    if (leaseChannel.hasSubscribers) leaseChannel.publish({ type: 'handed-over', sessionId, token });
    await this.giveBack(sessionId, token);
  }

  private onRevoked(sessionId: string, token: number): void {
    const lease = this.leases.get(sessionId);
    if (!lease || lease.token !== token) return;
    this.counters.revocations++;
    this.forget(sessionId);
    if (leaseChannel.hasSubscribers) leaseChannel.publish({ type: 'revoked', sessionId, token });
  }

  private onAllLeasesLost(): void {
    this.counters.leasesLost += this.leases.size;
    this.leases.clear();
    this.cache.clear();
    this.touches.clear();
    this.earlyRecalls.clear();
  }

  /** After a request: release at once when the session ping-pongs or was never stored. */
  private finishUse(sessionId: string): void {
    const lease = this.leases.get(sessionId);
    if (!lease || this.queue.waiting(sessionId) > 0) return;
    if (lease.releaseAfterUse) {
      void this.releaseLease(sessionId, lease.token);
    }
  }

  private releaseUnusedLease(sessionId: string): void {
    const lease = this.leases.get(sessionId);
    if (lease) void this.releaseLease(sessionId, lease.token);
  }

  /**
   * Gives a lease back, with the access time not yet sent (one call). Without
   * write-behind changes pending it leaves in this very tick, so a process asking for
   * the session next finds it free instead of paying for a recall.
   */
  private async releaseLease(sessionId: string, token: number): Promise<void> {
    if (this.asyncStates.has(sessionId)) await this.flushAsync(sessionId).catch(() => undefined);
    if (this.leases.get(sessionId)?.token !== token) return;
    await this.giveBack(sessionId, token);
  }

  /** Forgets the lease and gives it back with the access time not yet sent, in one call. */
  private async giveBack(sessionId: string, token: number): Promise<void> {
    const touch = this.touches.get(sessionId);
    this.forget(sessionId);
    const at = touch?.token === token ? touch.at : undefined;
    if (at !== undefined) this.counters.touchesSent++;
    await this.engine.release(sessionId, token, at).catch(() => undefined);
  }

  /** Keeps the number of leases held bounded: the least recently used idle ones go back. */
  private trimLeases(): void {
    if (this.leases.size <= this.maxLeases) return;
    for (const [sessionId, lease] of this.leases) {
      if (this.leases.size <= this.maxLeases) break;
      if (this.queue.isBusy(sessionId)) continue;
      if (lease.used) {
        // Used since the last trim: move it behind the others (the map iterates in insertion order).
        lease.used = false;
        this.leases.delete(sessionId);
        this.leases.set(sessionId, lease);
        continue;
      }
      // releaseLease forgets the lease itself (after flushing write-behind changes).
      void this.releaseLease(sessionId, lease.token);
    }
  }

  private forget(sessionId: string): void {
    this.leases.delete(sessionId);
    this.cache.delete(sessionId);
    this.touches.delete(sessionId);
  }

  // ---- commits ------------------------------------------------------------------------

  /**
   * Sends a commit; when its lease was lost on the way (revoked, connection dropped),
   * takes the lease again and resends the same commit id and base version. The engine
   * either applies it (nothing else changed the session), acknowledges it again (it had
   * been applied), or refuses it with a conflict: never a lost or doubled update.
   */
  private async sendCommit(request: CommitRequest, deadline: number | undefined): Promise<{ version: number }> {
    let attempt = 0;
    let current = request;
    for (;;) {
      try {
        return await this.engine.commit(current, { deadline });
      } catch (err) {
        attempt++;
        if (!isKilnError(err) || !RETRYABLE_COMMIT_CODES.has(err.code) || attempt >= COMMIT_ATTEMPTS || this.closed || passed(deadline)) {
          if (isKilnError(err) && ['KILN_ERR_CONFLICT', 'KILN_ERR_SESSION_DESTROYED', 'KILN_ERR_SESSION_NOT_FOUND', 'KILN_ERR_LEASE_LOST'].includes(err.code)) {
            // Our copy is stale or the session is gone: never serve it from cache again.
            this.releaseUnusedLease(current.sessionId);
            this.forget(current.sessionId);
          }
          throw err;
        }
        this.counters.commitRetries++;
        // The tier did not answer in time or had no replica to confirm: the lease may
        // well still be ours (a lost one is dropped by the engine's handler), and then
        // the same commit goes again under it; otherwise the lease is taken anew.
        const stillHeld = (err.code === 'KILN_ERR_TIMEOUT' || err.code === 'KILN_ERR_ENGINE_UNAVAILABLE') && this.leases.get(current.sessionId)?.token === current.token;
        if (stillHeld) continue;
        if (this.leases.get(current.sessionId)?.token === current.token) this.forget(current.sessionId);
        const grant = await this.acquire(current.sessionId, deadline ?? Date.now() + this.requestTimeoutMs);
        current = { ...current, token: grant.token };
      }
    }
  }

  /** Async mode: apply locally now, merge into the session's pending commit, send within asyncFlushMs. */
  private enqueueAsync(handle: SessionHandle, delta: AttributeDelta, meta: MetaChanges, now: number): void {
    const sessionId = handle.id;
    let state = this.asyncStates.get(sessionId);
    if (!state) {
      state = { pending: undefined, ackedVersion: handle.base.meta.version, inflight: undefined, timer: undefined };
      this.asyncStates.set(sessionId, state);
    }
    state.pending = mergeDelta(state.pending, delta, meta, now);
    // The acknowledged version stays until the flush is acknowledged.
    const committed = applyCommitted(handle.base, meta, delta, handle.base.meta.version, now, false);
    if (this.leases.has(sessionId)) this.cache.set(sessionId, committed);
    handle.tracker.rebase(committed.attributes);
    handle.base = committed;
    handle.metaChanges = {};
    if (!state.timer && !state.inflight) {
      state.timer = setTimeout(() => void this.flushAsync(sessionId).catch(() => undefined), this.asyncFlushMs);
      state.timer.unref?.();
    }
  }

  private async flushAsync(sessionId: string): Promise<void> {
    const state = this.asyncStates.get(sessionId);
    if (!state) return;
    if (state.timer) clearTimeout(state.timer);
    state.timer = undefined;
    while (state.inflight) await state.inflight;
    const pending = state.pending;
    if (!pending) {
      this.asyncStates.delete(sessionId);
      return;
    }
    state.pending = undefined;
    const lease = this.leases.get(sessionId);
    const request: CommitRequest = {
      sessionId,
      token: lease?.token ?? 0,
      commitId: this.nextCommitId(),
      baseVersion: state.ackedVersion,
      lastAccessedAt: pending.lastAccessedAt,
      set: pending.set,
      del: pending.del,
      principal: pending.meta.principal,
      idleTimeoutMs: pending.meta.idleTimeoutMs,
      absoluteExpiresAt: pending.meta.absoluteExpiresAt,
    };
    state.inflight = (async () => {
      try {
        // Write-behind runs after its requests ended: only the engine's own bounds apply.
        const ack = await this.sendCommit(request, undefined);
        state.ackedVersion = ack.version;
        const cached = this.cache.peek(sessionId);
        if (cached) cached.meta.version = ack.version;
      } catch (err) {
        this.counters.asyncCommitErrors++;
        this.dropAsync(sessionId);
        this.forget(sessionId);
        const error = isKilnError(err) ? err : new KilnError('KILN_ERR_INTERNAL', String(err), { cause: err });
        for (const listener of this.asyncErrorListeners) listener(error, sessionId);
        throw error;
      } finally {
        state.inflight = undefined;
      }
    })();
    await state.inflight;
    if (state.pending) await this.flushAsync(sessionId);
    else if (this.asyncStates.get(sessionId) === state) this.asyncStates.delete(sessionId);
  }

  private dropAsync(sessionId: string): void {
    const state = this.asyncStates.get(sessionId);
    if (state?.timer) clearTimeout(state.timer);
    this.asyncStates.delete(sessionId);
  }

  /**
   * The tier expires a held session once its last reported access is older than the
   * idle timeout plus the grace it announces; touches must arrive well within that.
   */
  private fitTouchInterval(): void {
    const grace = this.engine.limits?.touchGraceMs;
    const wanted = grace ? Math.max(10, Math.min(this.configuredTouchIntervalMs, Math.floor(grace / 2))) : this.configuredTouchIntervalMs;
    if (wanted === this.touchIntervalMs || this.closed) return;
    this.touchIntervalMs = wanted;
    clearInterval(this.touchTimer);
    this.touchTimer = setInterval(() => void this.flushTouches(), wanted);
    this.touchTimer.unref();
  }

  private async flushTouches(): Promise<void> {
    if (this.touches.size === 0) return;
    const items = [...this.touches.values()];
    this.touches.clear();
    this.counters.touchesSent += items.length;
    await this.engine.touch(items).catch(() => undefined);
  }

  // ---- helpers ------------------------------------------------------------------------

  private fresh(readOnly: boolean, newId?: () => string): SessionHandle {
    return new SessionHandle(this, this.emptySession(this.newSessionId(newId)), true, readOnly, undefined);
  }

  /** An id for a new session: the application's generator (checked) or ours. */
  private newSessionId(newId: (() => string) | undefined): string {
    if (!newId) return generateSessionId(this.route);
    const id = newId();
    if (!isValidSessionId(id)) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'a generated session id must be 16 to 128 base64url characters with an optional .route suffix');
    return id;
  }

  private emptySession(id: string): CachedSession {
    const now = Date.now();
    return {
      meta: { id, createdAt: now, lastAccessedAt: now, idleTimeoutMs: this.idleTimeoutMs, absoluteExpiresAt: this.absoluteTimeoutMs > 0 ? now + this.absoluteTimeoutMs : 0, principal: null, version: 0 },
      attributes: new Map(),
      bytes: 0,
    };
  }

  private nextCommitId(): string {
    return `${this.commitPrefix}:${(++this.commitSeq).toString(36)}`;
  }

  private assertOpen(): void {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'the session client is closed');
  }
}

export function createSessionClient(options: SessionClientOptions): SessionClient {
  return new SessionClient(options);
}

/** Marks a lease used: trimLeases passes over it once (second chance) instead of giving it back. */
/** The handle with what is left of its request's time, counted from now to `deadline`. */
function withTimeLeft(handle: SessionHandle, deadline: number): SessionHandle {
  handle.timeLeftMs = deadline - Date.now();
  return handle;
}

/**
 * The deadline of a handle's next step. A request whose time is spent fails its step at
 * once, with the status of a tier that did not answer in time.
 */
function startStep(handle: SessionHandle, now: number, step: string): number {
  if (handle.timeLeftMs <= 0) {
    throw new KilnError('KILN_ERR_TIMEOUT', `the request's time on the session layer (requestTimeoutMs) was spent before its ${step}`, { details: { sessionId: handle.id, step } });
  }
  return now + handle.timeLeftMs;
}

function markUsed(lease: LeaseState): void {
  lease.used = true;
}

/** The cached session after a delta (and metadata changes) applied at `version`. */
function applyCommitted(base: CachedSession, changes: MetaChanges, delta: AttributeDelta, version: number, now: number, created: boolean): CachedSession {
  const attributes = applyDelta(base.attributes, delta);
  const meta: SessionMeta = { ...base.meta, version, lastAccessedAt: now, createdAt: created ? now : base.meta.createdAt };
  if (changes.principal !== undefined) meta.principal = changes.principal;
  if (changes.idleTimeoutMs !== undefined) meta.idleTimeoutMs = changes.idleTimeoutMs;
  if (changes.absoluteExpiresAt !== undefined) meta.absoluteExpiresAt = changes.absoluteExpiresAt;
  return { meta, attributes, bytes: attributeBytes(attributes) };
}

function toCached(snapshot: SessionSnapshot): CachedSession {
  return { meta: snapshot.meta, attributes: snapshot.attributes, bytes: attributeBytes(snapshot.attributes) };
}

function mergeDelta(
  into: (AttributeDelta & { meta: MetaChanges; lastAccessedAt: number }) | undefined,
  delta: AttributeDelta,
  meta: MetaChanges,
  now: number,
): AttributeDelta & { meta: MetaChanges; lastAccessedAt: number } {
  const set = new Map(into?.set ?? []);
  const del = new Set(into?.del ?? []);
  for (const name of delta.del) {
    set.delete(name);
    del.add(name);
  }
  for (const [name, value] of delta.set) {
    del.delete(name);
    set.set(name, value);
  }
  return { set: [...set], del: [...del], meta: { ...into?.meta, ...meta }, lastAccessedAt: now };
}
