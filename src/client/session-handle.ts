import { KilnError } from '../errors/index.js';
import { DeltaTracker } from '../session/delta.js';
import { assertSafeAttributeName, isPrototypePath } from '../session/limits.js';
import type { SessionMeta } from '../session/model.js';
import type { Unlock } from './keyed-queue.js';

/** A session as the client caches it: committed attributes (encoded) and metadata. */
export interface CachedSession {
  meta: SessionMeta;
  attributes: Map<string, Uint8Array>;
  bytes: number;
}

/** What a handle asks of its client; implemented by SessionClient. */
export interface HandleHost {
  commitHandle(handle: SessionHandle, options: { force: boolean; final: boolean }): Promise<CommitResult>;
  destroyHandle(handle: SessionHandle): Promise<void>;
  regenerateHandle(handle: SessionHandle, keep: readonly string[], newId?: () => string): Promise<void>;
  closeHandle(handle: SessionHandle): void;
}

export interface CommitResult {
  /** Whether anything was sent (a request that changed nothing sends nothing). */
  committed: boolean;
  version: number;
  /** Bytes of attribute data sent. */
  bytes: number;
}

/** Metadata a request changed, sent with its next commit. */
export interface MetaChanges {
  principal?: string | null;
  idleTimeoutMs?: number;
  absoluteExpiresAt?: number;
}

/**
 * What one commit carries: the request's writes stamped up to `upTo` (see
 * lastWriteStamp) and its metadata changes as they were when the commit was taken. Its
 * acknowledgement clears those and nothing the request changed after.
 */
export interface SentChanges {
  upTo: number;
  meta: MetaChanges;
}

/**
 * One request's view of one session. Get and set attributes, then `commit()` and
 * `close()` (adapters do both at the end of the request). While a handle is open no
 * other request of this process works on the same session.
 *
 * @example
 * const session = await kiln.open(cookieValue);
 * session.set('visits', ((session.get('visits') as number) ?? 0) + 1);
 * await session.commit();
 * session.close();
 */
export class SessionHandle {
  /** @internal */ tracker: DeltaTracker;
  /** @internal */ metaChanges: MetaChanges = {};
  /** @internal */ unlock: Unlock | undefined;
  /**
   * @internal What is left of this request's time on the session layer (see
   * SessionClientOptions.requestTimeoutMs): each step (open, commit, destroy,
   * regenerate) spends from it; the application's own time between steps does not.
   */
  timeLeftMs = 0;
  /**
   * @internal The session this handle is counted a reader of until it closes (see
   * CommitPipeline.readers): a read-only handle, or one whose final commit let the next request start.
   */
  readerOf: string | undefined;
  private state: 'open' | 'destroyed' | 'closed' = 'open';

  /** @internal */
  constructor(
    private readonly host: HandleHost,
    /** @internal */ public base: CachedSession,
    /** @internal */ public isNewSession: boolean,
    readonly readOnly: boolean,
    unlock: Unlock | undefined,
  ) {
    // Only a handle holding the session's lock may keep decoded values across requests.
    this.tracker = new DeltaTracker(base.attributes, !readOnly);
    this.unlock = unlock;
  }

  get id(): string {
    return this.base.meta.id;
  }

  /** True until the session has been committed once (a fresh id nobody stored yet). */
  get isNew(): boolean {
    return this.isNewSession;
  }

  get isDestroyed(): boolean {
    return this.state === 'destroyed';
  }

  /** Metadata as of load or the last commit, with this request's pending changes applied. */
  get meta(): Readonly<SessionMeta> {
    return {
      ...this.base.meta,
      principal: this.metaChanges.principal !== undefined ? this.metaChanges.principal : this.base.meta.principal,
      idleTimeoutMs: this.metaChanges.idleTimeoutMs ?? this.base.meta.idleTimeoutMs,
      absoluteExpiresAt: this.metaChanges.absoluteExpiresAt ?? this.base.meta.absoluteExpiresAt,
    };
  }

  get principal(): string | null {
    return this.metaChanges.principal !== undefined ? this.metaChanges.principal : this.base.meta.principal;
  }

  /** When the session was created (epoch ms). */
  get createdAt(): number {
    return this.base.meta.createdAt;
  }

  /** The absolute expiry (epoch ms, 0 = none), with this request's change if any. */
  get absoluteExpiresAt(): number {
    return this.metaChanges.absoluteExpiresAt ?? this.base.meta.absoluteExpiresAt;
  }

  /** Ties the session to a user so `destroyByPrincipal` ("log out everywhere") finds it. */
  setPrincipal(principal: string | null): void {
    this.assertWritable();
    if (principal !== null && (typeof principal !== 'string' || principal.length === 0)) {
      throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'principal must be a non-empty string or null');
    }
    this.metaChanges.principal = principal;
  }

  /** Changes the idle timeout (e.g. "remember me"); 0 disables idle expiry. */
  setIdleTimeout(ms: number): void {
    this.assertWritable();
    if (!Number.isSafeInteger(ms) || ms < 0) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'idle timeout must be a non-negative integer of milliseconds');
    this.metaChanges.idleTimeoutMs = ms;
  }

  /** Sets the absolute expiry (epoch ms); 0 disables it. */
  setAbsoluteExpiry(at: number): void {
    this.assertWritable();
    if (!Number.isSafeInteger(at) || at < 0) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'absolute expiry must be epoch milliseconds or 0');
    this.metaChanges.absoluteExpiresAt = at;
  }

  // A prototype path stored before Kiln refused them (or by a writer that does not check)
  // is invisible: get, has and keys never hand it to code that builds objects from them.
  get<T = unknown>(name: string): T | undefined {
    this.assertUsable();
    return isPrototypePath(name) ? undefined : (this.tracker.get(name) as T | undefined);
  }

  /** Throws KILN_ERR_INVALID_ARGUMENT at once for `__proto__`, `constructor` and `prototype`. */
  set(name: string, value: unknown): void {
    this.assertWritable();
    if (typeof name !== 'string' || name.length === 0) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'attribute name must be a non-empty string');
    assertSafeAttributeName(name);
    this.tracker.set(name, value);
  }

  delete(name: string): void {
    this.assertWritable();
    this.tracker.delete(name);
  }

  has(name: string): boolean {
    this.assertUsable();
    return !isPrototypePath(name) && this.tracker.has(name);
  }

  keys(): string[] {
    this.assertUsable();
    const keys = this.tracker.keys();
    return keys.some(isPrototypePath) ? keys.filter((k) => !isPrototypePath(k)) : keys;
  }

  /** Decodes every attribute (for debugging and full-session APIs; costs a decode each). */
  toObject(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const key of this.keys()) out[key] = this.get(key);
    return out;
  }

  /** True when this request may have changed something (cheap; the commit decides exactly). */
  get mayHaveChanged(): boolean {
    return !this.tracker.pristine || Object.keys(this.metaChanges).length > 0;
  }

  /**
   * Sends what changed, if anything. `force` stores a new session even when it is
   * empty (express-session's saveUninitialized).
   *
   * `final` promises that this request will not touch the session again (adapters pass
   * it for the commit at the end of a request). Then the next request on the session
   * may start as soon as the commit is sent, on the state it commits, instead of after
   * the acknowledgement: commits of one session are pipelined. This commit's promise
   * still resolves only when the tier acknowledged it, and if it fails, the requests
   * already built on it fail too (the tier refuses their base version), so nothing
   * is lost or applied out of order.
   *
   * @example
   * session.set('visits', 2);
   * await session.commit({ final: true }); // the next request on this session is already running
   * session.close();
   */
  commit(options: { force?: boolean; final?: boolean } = {}): Promise<CommitResult> {
    if (this.state !== 'open' || this.readOnly) return Promise.resolve({ committed: false, version: this.base.meta.version, bytes: 0 });
    this.lastSent = undefined; // set by the host once the commit is taken
    return this.host.commitHandle(this, { force: options.force === true, final: options.final === true });
  }

  /** Ends the session everywhere (logout). The handle stays usable as a fresh, empty session only via regenerate(). */
  async destroy(): Promise<void> {
    if (this.state !== 'open') return;
    await this.host.destroyHandle(this);
    this.state = 'destroyed';
  }

  /**
   * Replaces the session id (do it on login: it defeats session fixation). The old
   * session is destroyed; attributes named in `keep` move to the new one. `newId` makes
   * the new id (an application's genid), else the client's generator does.
   */
  async regenerate(keep: readonly string[] = [], newId?: () => string): Promise<void> {
    this.assertWritable(true);
    await this.host.regenerateHandle(this, keep, newId);
    this.state = 'open';
  }

  /**
   * @internal The handle now stands on `committed`, which holds what `sent` carried. A
   * change made while that commit was on its way (the request went on after a save()
   * it did not wait for) is not in it, and stays to be sent by the next commit.
   */
  adopt(committed: CachedSession, sent: SentChanges): void {
    this.tracker.rebase(committed.attributes, sent.upTo);
    this.base = committed;
    this.metaChanges = metaChangedSince(this.metaChanges, sent.meta);
  }

  /**
   * @internal After a final commit was sent: the next request may run. Kept values go
   * back for it (this request's views refuse writes from now on).
   */
  releaseSession(): void {
    this.tracker.retire(true);
    this.unlock?.();
    this.unlock = undefined;
  }

  /** Lets the next request on this session run. Safe to call twice. */
  close(): void {
    if (this.state === 'closed') return;
    this.tracker.retire(this.state === 'open');
    this.state = 'closed';
    this.host.closeHandle(this);
  }

  /** Throws away this request's uncommitted change to one attribute (it reads as last committed again). */
  revert(name: string): void {
    this.assertUsable();
    this.tracker.revert(name);
  }

  /** @internal What the last commit of this handle carried, once taken (see discardSent). */
  lastSent: SentChanges | undefined;

  /**
   * @internal After a refused commit: forgets what it carried, and keeps what the request
   * changed after it was taken. With nothing changed since (or no commit taken), all of it goes.
   */
  discardSent(): void {
    const sent = this.lastSent;
    if (!sent || !this.tracker.changedAfter(sent.upTo)) {
      this.discardChanges();
      return;
    }
    this.assertUsable();
    for (const name of this.tracker.changedNames()) this.tracker.revertUpTo(name, sent.upTo);
    this.metaChanges = metaChangedSince(this.metaChanges, sent.meta);
  }

  /** @internal After a refused commit that named one attribute: forgets its change if the commit carried it. */
  revertSent(name: string): void {
    this.assertUsable();
    const sent = this.lastSent;
    if (sent) this.tracker.revertUpTo(name, sent.upTo);
    else this.tracker.revert(name);
  }

  /** Throws away this request's changes not yet committed (attributes and metadata). */
  discardChanges(): void {
    this.assertUsable();
    this.tracker.retire(false);
    this.tracker = new DeltaTracker(this.base.attributes, !this.readOnly);
    this.metaChanges = {};
  }

  /** @internal */
  reset(base: CachedSession, isNew: boolean): void {
    this.base = base;
    this.isNewSession = isNew;
    this.tracker.retire(false);
    this.tracker = new DeltaTracker(base.attributes, !this.readOnly);
    this.metaChanges = {};
  }

  private assertUsable(): void {
    if (this.state === 'closed') throw new KilnError('KILN_ERR_CLOSED', 'this session handle was closed at the end of its request');
  }

  private assertWritable(allowDestroyed = false): void {
    this.assertUsable();
    if (this.readOnly) throw new KilnError('KILN_ERR_READ_ONLY_SESSION', 'this route declared its session read-only; it cannot change it');
    if (this.state === 'destroyed' && !allowDestroyed) throw new KilnError('KILN_ERR_SESSION_DESTROYED', 'the session was destroyed in this request; regenerate() starts a new one');
  }
}

/** The metadata changes of `current` that `sent` did not carry (a key set again since, or to another value). */
function metaChangedSince(current: MetaChanges, sent: MetaChanges): MetaChanges {
  let kept: MetaChanges | undefined;
  for (const key of Object.keys(current) as (keyof MetaChanges)[]) {
    if (key in sent && sent[key] === current[key]) continue;
    (kept ??= {})[key] = current[key] as never;
  }
  return kept ?? {};
}
