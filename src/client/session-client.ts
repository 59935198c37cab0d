import type { Engine, EngineLimits } from '../engines/engine.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS } from '../engines/engine.js';
import { KilnError } from '../errors/index.js';
import { checkRouteOption, generateSessionId, isValidSessionId } from '../session/id.js';
import { checkDeltaLimits, DEFAULT_SESSION_LIMITS } from '../session/limits.js';
import { lastWriteStamp } from '../session/live-value.js';
import { expiryDeadline, type SessionEvent, type SessionMeta } from '../session/model.js';
import { within } from '../util/deadline.js';
import { OptionReader } from '../util/options.js';
import { AccessTouches } from './access-touches.js';
import { CommitPipeline } from './commit-pipeline.js';
import { CommitSender } from './commit-sender.js';
import { newCounters, type ClientCounters } from './counters.js';
import { cacheChannel } from './diagnostics.js';
import { KeyedQueue } from './keyed-queue.js';
import { LeaseKeeper, type LeaseState } from './lease-keeper.js';
import { NearCache, type NearCacheStats } from './near-cache.js';
import { SessionCounts } from './session-counts.js';
import { endStep, startStep, withTimeLeft } from './request-time.js';
import { SessionHandle, type CachedSession, type CommitResult, type HandleHost, type SentChanges } from './session-handle.js';
import { WriteBehind } from './write-behind.js';

/**
 * The Kiln client every app server runs: it keeps session leases greedily, serves
 * sessions it holds from its near cache, and commits only what changed.
 *
 * This class is the façade: options, opening sessions for requests (the per-session
 * queue, the request's time) and the public API. The lease rules live in the parts it
 * wires together, each in its own module:
 * - LeaseKeeper (lease-keeper.ts): what this process holds of each session — lease,
 *   cached copy, access time — and recalls, revocations, trimming; a cached copy is
 *   trusted only while its lease is held;
 * - CommitPipeline (commit-pipeline.ts): a request's commit, pipelined when safe;
 * - CommitSender (commit-sender.ts): retries a commit that lost its lease under a new
 *   one with the same commit id and base version (never lost, never doubled);
 * - WriteBehind (write-behind.ts): async mode, flushed before a lease goes;
 * - AccessTouches (access-touches.ts): batched access times.
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
  counters: ClientCounters;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

export class SessionClient implements HandleHost {
  readonly engine: Engine;
  private readonly idleTimeoutMs: number;
  private readonly absoluteTimeoutMs: number;
  private readonly acquireTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly route: string | undefined;
  private readonly cache: NearCache<CachedSession>;
  private readonly queue = new KeyedQueue();
  private readonly counters = newCounters();
  private readonly touches: AccessTouches;
  private readonly keeper: LeaseKeeper;
  private readonly writeBehind: WriteBehind;
  private readonly pipeline: CommitPipeline;
  private readonly readers = new SessionCounts();
  private statsTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: SessionClientOptions) {
    const o = new OptionReader('SessionClient', options, ['engine', 'commitMode', 'asyncFlushMs', 'idleTimeoutMs', 'absoluteTimeoutMs', 'touchIntervalMs', 'acquireTimeoutMs', 'requestTimeoutMs', 'cache', 'maxLeases', 'route', 'statsIntervalMs']);
    const engine = o.any('engine') as Engine | undefined;
    if (!engine || typeof engine.acquire !== 'function') throw new KilnError('KILN_ERR_INVALID_OPTION', 'SessionClient: option "engine" is required (createMemoryTier().engine(), connect(url), …)', { details: { option: 'engine' } });
    this.engine = engine;
    const commitMode = o.oneOf('commitMode', ['sync', 'async'], 'sync');
    const asyncFlushMs = o.int('asyncFlushMs', 20, 0, 60_000);
    this.idleTimeoutMs = o.int('idleTimeoutMs', 30 * 60_000);
    this.absoluteTimeoutMs = o.int('absoluteTimeoutMs', 0);
    this.acquireTimeoutMs = o.int('acquireTimeoutMs', DEFAULT_ACQUIRE_TIMEOUT_MS, 1);
    this.requestTimeoutMs = o.int('requestTimeoutMs', DEFAULT_REQUEST_TIMEOUT_MS, 1);
    const maxLeases = o.int('maxLeases', 100_000, 1);
    this.route = o.string('route', undefined);
    checkRouteOption(this.route, 'SessionClient');
    const cacheOptions = new OptionReader('SessionClient cache', options.cache, ['maxEntries', 'maxBytes']);
    this.cache = new NearCache({ maxEntries: cacheOptions.int('maxEntries', 10_000, 0), maxBytes: cacheOptions.int('maxBytes', 64 * 1024 * 1024, 0) }, (sessionId) => {
      if (cacheChannel.hasSubscribers) cacheChannel.publish({ type: 'evicted', sessionId });
    });
    this.touches = new AccessTouches(engine, this.counters, o.int('touchIntervalMs', 1000, 10, 3_600_000));
    const isClosed = () => this.closed;
    // The parts below are wired once, here; none of them calls back up into the client.
    this.keeper = new LeaseKeeper({
      engine,
      queue: this.queue,
      cache: this.cache,
      touches: this.touches,
      counters: this.counters,
      acquireTimeoutMs: this.acquireTimeoutMs,
      maxLeases,
      isClosed,
      hasPending: (sessionId) => this.writeBehind.has(sessionId),
      flushPending: (sessionId) => this.writeBehind.flush(sessionId),
      loaded: (sessionId, version) => this.writeBehind.loaded(sessionId, version),
    });
    const sender = new CommitSender(engine, this.keeper, this.counters, isClosed, this.requestTimeoutMs);
    this.writeBehind = new WriteBehind(sender, this.keeper, this.cache, this.counters, asyncFlushMs);
    this.pipeline = new CommitPipeline({ commitMode, idleTimeoutMs: this.idleTimeoutMs, absoluteTimeoutMs: this.absoluteTimeoutMs }, this.keeper, sender, this.writeBehind, this.cache, this.queue, this.counters, this.readers);
    const statsIntervalMs = o.int('statsIntervalMs', 2000, 0);
    if (statsIntervalMs > 0 && engine.reportClientStats) {
      this.statsTimer = setInterval(() => void engine.reportClientStats?.({ ...this.stats(), pid: process.pid }).catch(() => undefined), statsIntervalMs);
      this.statsTimer.unref();
    }
    engine.setLeaseHandler({
      recall: (sessionId, token) => this.keeper.recall(sessionId, token),
      revoked: (sessionId, token) => this.keeper.revoked(sessionId, token),
      lost: () => this.keeper.lostAll(),
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
      const cached = await this.keeper.load(sessionId, deadline);
      const now = Date.now();
      if (!cached) {
        this.keeper.releaseUnused(sessionId);
        unlock();
        return fresh();
      }
      if (expiryDeadline(cached.meta) <= now) {
        // The lease holder is the authority on access time: it ends the session itself.
        this.counters.localExpiries++;
        await this.engine.destroy(sessionId, { reason: 'expired', deadline }).catch(() => undefined);
        this.keeper.forget(sessionId);
        unlock();
        return fresh();
      }
      return withTimeLeft(this.handOut(sessionId, cached, now, readOnly, unlock, this.keeper.leases.get(sessionId)), deadline);
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
    const lease = this.keeper.leases.get(sessionId);
    if (!lease || lease.recalled) return undefined;
    const cached = this.cache.peek(sessionId);
    const now = Date.now();
    if (!cached || expiryDeadline(cached.meta) <= now) return undefined;
    const unlock = this.queue.tryLock(sessionId);
    if (!unlock) return undefined;
    this.counters.opens++;
    lease.used = true;
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
    if (lease) this.touches.note(sessionId, lease.token, now);
    if (readOnly) {
      const handle = new SessionHandle(this, cached, false, true, undefined);
      handle.readerOf = sessionId;
      this.readers.add(sessionId);
      this.keeper.finishUse(sessionId);
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
    let destroyed: boolean;
    try {
      destroyed = await this.engine.destroy(sessionId, { reason: 'request' });
    } catch (err) {
      if (ranOnEngine(err)) this.keeper.forget(sessionId);
      throw err;
    }
    this.keeper.forget(sessionId);
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
    return this.writeBehind.onError(listener);
  }

  stats(): SessionClientStats {
    return { ownerId: this.engine.ownerId, leases: this.keeper.size, cache: this.cache.stats(), counters: { ...this.counters } };
  }

  /** Whether this process currently holds the session's lease (for tests and status). */
  holdsLease(sessionId: string): boolean {
    return this.keeper.leases.has(sessionId);
  }

  /** Sends every pending write-behind commit and touch now. */
  async flush(): Promise<void> {
    await this.writeBehind.flushAll();
    await this.touches.flush();
  }

  /** Flushes, releases every lease (so other processes get them at once) and closes the engine. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => undefined);
    this.closed = true;
    this.touches.stop();
    clearInterval(this.statsTimer);
    await this.keeper.releaseAll();
    await this.engine.close();
  }

  /** @internal A request that changed nothing ended without a commit call (adapters' fast path). */
  noteUnchanged(): void {
    this.counters.emptyCommits++;
  }

  // ---- HandleHost ---------------------------------------------------------------------

  /** @internal */
  async commitHandle(handle: SessionHandle, options: { force: boolean; final: boolean }): Promise<CommitResult> {
    // What this commit carries: the writes up to now (later ones, made while it is on its
    // way, stay for the next commit) and a copy of the metadata changes, for the same reason.
    const sent: SentChanges = { upTo: lastWriteStamp(), meta: { ...handle.metaChanges } };
    handle.lastSent = sent;
    const delta = handle.tracker.delta();
    const meta = sent.meta;
    const hasMeta = Object.keys(meta).length > 0;
    if (delta.set.length === 0 && delta.del.length === 0 && !delta.patch && !hasMeta && !(handle.isNew && options.force)) {
      this.counters.emptyCommits++;
      return { committed: false, version: handle.base.meta.version, bytes: 0 };
    }
    checkDeltaLimits(handle.base.attributes, handle.base.bytes, delta, this.limits);
    const started = Date.now();
    const deadline = startStep(handle, started, 'commit');
    try {
      return await this.pipeline.commit(handle, options, delta, sent, started, deadline);
    } finally {
      endStep(handle, deadline);
    }
  }

  /** @internal */
  async destroyHandle(handle: SessionHandle): Promise<void> {
    const sessionId = handle.id;
    if (!handle.isNew) {
      this.writeBehind.drop(sessionId);
      const deadline = startStep(handle, Date.now(), 'destroy');
      try {
        await this.engine.destroy(sessionId, { reason: 'request', deadline });
      } catch (err) {
        if (ranOnEngine(err)) this.keeper.forget(sessionId);
        throw err;
      } finally {
        endStep(handle, deadline);
      }
    }
    this.keeper.forget(sessionId);
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
    if (handle.readerOf !== undefined) this.readers.remove(handle.readerOf);
    handle.readerOf = undefined;
    if (!handle.readOnly) this.keeper.finishUse(handle.id);
    handle.unlock?.();
    handle.unlock = undefined;
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

  private assertOpen(): void {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'the session client is closed');
  }
}

export function createSessionClient(options: SessionClientOptions): SessionClient {
  return new SessionClient(options);
}

/**
 * A destroy refused after it ran (Redis: its WAIT came back short of replicas): the
 * session and its lease are gone from the engine, so the cached copy and the lease this
 * process holds go too (kept, the next request would run on a session that is gone).
 */
function ranOnEngine(err: unknown): boolean {
  return err instanceof KilnError && err.details?.applied === true;
}
