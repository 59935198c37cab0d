import type { SessionHandle } from '../../client/session-handle.js';
import { KilnError, isKilnError } from '../../errors/index.js';
import { COOKIE_ATTRIBUTE, resolveCookieOptions } from './adapter-options.js';
import { serializeCookie } from './cookies.js';
import type { SessionRuntime } from './runtime.js';
import type { CookieOptions, SessionCookie } from './session-cookie.js';

/*
 * One request's session, framework-neutral: what the request changed, whether a cookie
 * goes out, and the commit at its end — with the rules the adapters' behaviour suite
 * holds every framework to: a login rotates a planted id (session fixation), save()
 * and the final commit never overlap, a failed commit sends no cookie for what was not
 * stored. SessionRuntime (runtime.ts) opens it; each adapter drives it from its hooks.
 */

/**
 * Whether a request came over TLS: known at once, or a function asked only when an
 * answer is needed (a secure or 'auto' cookie), since Express's req.secure walks the
 * trust-proxy settings.
 */
export type RequestSecurity = boolean | (() => boolean);

/** One request's session, framework-neutral. */
export class RequestSession<Req = unknown> {
  cookie: SessionCookie;
  private destroyed = false;
  private finished = false;
  private idChanged = false;
  private committed = false;
  /** This request's commit carried a renewed cookie expiry: the cookie goes out again. */
  private refreshed = false;
  /** The explicit save() in flight, which the next commit waits for: one session, one commit at a time. */
  private saving: Promise<void> | undefined;
  /**
   * A destroy() in flight, which the end of the request waits for: `req.session.destroy();
   * res.redirect('/')` (not awaited) logs the user out before the response goes.
   */
  private destroying: Promise<void> | undefined;
  private secureAnswer: boolean | undefined;
  /** Set when the application removed the session (`delete req.session`). */
  unsetByApp = false;
  /** Set when the application pointed req.sessionID elsewhere: nothing is saved, no cookie sent. */
  abandoned = false;
  /** Set when the commit at the end of the request failed: no cookie for what was not stored. */
  failed = false;
  /** Headers went before the commit (a streamed response): the cookie can no longer change. */
  private headersGone = false;
  /** Told the new id after a login's automatic rotation (see rotateOnLogin). */
  onRotate: ((id: string) => void) | undefined;

  constructor(
    readonly runtime: SessionRuntime<Req>,
    readonly req: Req,
    public handle: SessionHandle,
    readonly incomingId: string | undefined,
    private readonly security: RequestSecurity,
    /** Served without the tier (onUnavailable: 'continue'): nothing is stored. */
    readonly detached: boolean,
    public cookieOptions: CookieOptions = runtime.cookieOptions,
  ) {
    this.cookie = runtime.newCookie(handle, this, cookieOptions);
  }

  /** Whether this request came over TLS (asked once, when first needed). */
  get secure(): boolean {
    if (this.secureAnswer === undefined) this.secureAnswer = typeof this.security === 'function' ? this.security() : this.security;
    return this.secureAnswer;
  }

  get id(): string {
    return this.handle.id;
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  get readOnly(): boolean {
    return this.handle.readOnly;
  }

  /**
   * The Set-Cookie value this response needs, if any. Call when headers are about to go.
   * The rule is express-session's: a new session's cookie when it is stored; an existing
   * session's when its id changed, with `rolling`, or when a change was saved and the
   * cookie expires (its expiry moves on, so an active user keeps the cookie). Kiln adds:
   * a cookie whose lifetime the application changed, and clearing the cookie of a session
   * the request destroyed. A cookie whose session no longer exists is not cleared (as
   * with express-session): a request still in flight with the cookie of the session a
   * login just replaced would clear the new session's cookie, and log the user out.
   */
  setCookieHeader(): string | undefined {
    if (!this.finished) this.headersGone = true;
    if (this.abandoned) return undefined;
    if (this.destroyed || this.destroying) return this.incomingId ? this.clearCookie() : undefined;
    if (this.detached || this.unsetByApp || this.failed) return undefined;
    const handle = this.handle;
    let send: boolean;
    if (handle.isNew) send = this.committed || this.runtime.saveUninitialized || handle.mayHaveChanged || this.cookie.changed;
    else send = this.idChanged || this.runtime.rolling || this.cookie.changed || this.refreshed || this.incomingId !== handle.id || this.refreshesOnCommit();
    // Never send a Secure cookie over plain HTTP: the browser would drop it anyway. An
    // invalid expiry is reported by finish(); no cookie carries it.
    if (send && (this.cookie.secure && !this.secure || !this.cookie.isValid())) send = false;
    if (!send) return undefined;
    if (this.runtime.rolling && !this.cookie.changed) this.cookie.restart(handle.absoluteExpiresAt);
    return this.runtime.signedCookie(handle.id, this.cookie);
  }

  /**
   * Headers going out before the commit (a streamed response): whether the commit will
   * move the cookie's expiry on (a change to a session whose cookie expires). Then the
   * renewed expiry goes out now, and the commit stores the same one.
   */
  private refreshesOnCommit(): boolean {
    if (this.finished || this.runtime.rolling || this.cookie.changed || !this.cookie.hasExpiry || !this.handle.mayHaveChanged) return false;
    this.cookie.restart(this.handle.absoluteExpiresAt);
    this.refreshed = true;
    return true;
  }

  /** A Set-Cookie that drops the cookie, with this request's attributes (Secure and SameSite as the cookie was sent, so the browser takes it). */
  private clearCookie(): string {
    const c = this.cookie;
    return serializeCookie(this.runtime.name, '', { path: c.path, domain: c.domain, expires: new Date(0), maxAge: 0, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure, partitioned: c.partitioned });
  }

  /** Commits what the request changed (per saveUninitialized and unset), then lets the next request run. */
  async finish(): Promise<void> {
    if (this.finished) return;
    try {
      // A destroy() still on its way when the request ends: nobody could handle its
      // failure, so it fails the request (an error answer; nothing is committed) rather
      // than leave the user logged in behind a successful reply.
      if (this.destroying) await this.destroying;
      if (this.destroyed || this.detached || this.abandoned) return;
      if (!this.cookie.isValid()) {
        throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'req.session.cookie.expires is not a valid date (or maxAge not a number): the session was not saved and no cookie was sent', { details: { attribute: 'cookie' } });
      }
      if (this.unsetByApp) {
        if (this.runtime.unset === 'destroy' && !this.handle.isNew) {
          await this.handle.destroy();
          this.destroyed = true;
        }
        return;
      }
      await this.save(true);
    } catch (err) {
      this.failed = true;
      throw err;
    } finally {
      this.finished = true;
      this.handle.close();
    }
  }

  /**
   * Ends the request at once, with no promise in between, when it needs nothing of the
   * engine: nothing changed and nothing is to be stored. Returns false (and does nothing)
   * otherwise; then finish() does the work. Most requests only read their session: this
   * lets their response go out in the same tick.
   */
  finishIfUnchanged(): boolean {
    if (this.finished) return true;
    if (this.destroyed || this.destroying || this.unsetByApp || this.saving || !this.cookie.isValid()) return false;
    const handle = this.handle;
    if (!this.detached && !handle.readOnly && !this.abandoned) {
      if (this.cookie.changed || handle.mayHaveChanged || (handle.isNew && this.runtime.saveUninitialized)) return false;
      this.runtime.client.noteUnchanged();
    }
    this.finished = true;
    handle.close();
    return true;
  }

  /** Ends the request without committing (aborted response). */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.handle.close();
  }

  /**
   * Commits now; `final` (the end of the request) lets the next request on the session
   * start before the acknowledgement. A save() the application did not wait for and the
   * commit at the end are one after the other, never two racing commits.
   *
   * A save() the tier refuses rolls back what it refused, so the end of the request does
   * not try it again and the application can catch the error and still answer: the
   * attribute the error names (a too-large or unserializable one), else every
   * uncommitted change. A save() that fails for a while (the tier unreachable) keeps the
   * changes: the commit at the end of the request tries them again.
   */
  save(final = false): Promise<void> {
    const previous = this.saving;
    // `saving` never rejects (see below): one handler is enough.
    const run = previous ? previous.then(() => this.commitNow(final)) : this.commitNow(final);
    if (final) return run;
    // The rollback is part of what the next commit waits for, so it never sees the refused change.
    const guarded = run.catch((err: unknown) => {
      this.rollBack(err);
      throw err;
    });
    const done = (): void => {
      if (this.saving === settled) this.saving = undefined;
    };
    const settled: Promise<void> = guarded.then(done, done);
    this.saving = settled;
    return guarded;
  }

  /** After a refused save(): forget what the tier refused (see save()). */
  private rollBack(err: unknown): void {
    if (this.finished || this.destroyed || this.handle.isDestroyed || (isKilnError(err) && err.retryable)) return;
    const attribute = isKilnError(err) ? err.details?.['attribute'] : undefined;
    // Only what the refused save carried: what the request changed after it stays.
    if (typeof attribute === 'string' && attribute !== COOKIE_ATTRIBUTE) this.handle.revertSent(attribute);
    else this.handle.discardSent();
  }

  private async commitNow(final: boolean): Promise<void> {
    // A save() after a destroy() not awaited: nothing to store once it has gone.
    if (this.destroying && !final) await this.destroying.catch(() => undefined);
    if (this.finished || this.destroyed || this.detached || this.abandoned || this.handle.readOnly) return;
    if (this.loginNeedsRotation()) await this.rotate();
    const handle = this.handle;
    const cookie = this.cookie;
    if (cookie.changed) {
      handle.set(COOKIE_ATTRIBUTE, cookie.override());
      const lifetime = cookie.originalMaxAge;
      // Whole milliseconds: express-session takes `maxAge = 0.1 * week` as it is.
      if (lifetime !== null && lifetime > 0) handle.setIdleTimeout(Math.max(1, Math.round(lifetime)));
    } else if (!handle.isNew && !this.runtime.rolling && cookie.hasExpiry && handle.mayHaveChanged) {
      // express-session saves the cookie with every change, so a saved change moves its
      // expiry on; the renewed expiry travels with the change and the cookie goes again
      // (already renewed when the headers went first: refreshesOnCommit).
      if (!this.refreshed) cookie.restart(handle.absoluteExpiresAt);
      if (cookie.renewalWorthStoring) handle.set(COOKIE_ATTRIBUTE, cookie.override());
      this.refreshed = true;
    }
    const result = await handle.commit({ force: handle.isNew && this.runtime.saveUninitialized, final });
    if (result.committed) this.committed = true;
  }

  /**
   * Ends the session. Marked at once, so the end of the request waits for it even when
   * the application did not. Called after the request ended (a callback that ran late),
   * it still ends the session, by id: never a silent no-op.
   */
  destroy(): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    if (this.finished) return this.destroyAfterEnd();
    this.destroying ??= this.destroyNow().finally(() => (this.destroying = undefined));
    return this.destroying;
  }

  private async destroyNow(): Promise<void> {
    await this.saving;
    if (!this.detached) await this.handle.destroy();
    this.destroyed = true;
  }

  private async destroyAfterEnd(): Promise<void> {
    if (this.detached || this.handle.isNew) return;
    await this.runtime.client.destroy(this.handle.id);
    this.destroyed = true;
  }

  async regenerate(keep: readonly string[] = []): Promise<void> {
    if (this.finished) throw new KilnError('KILN_ERR_CLOSED', 'the request has ended');
    await this.saving;
    // `destroy(); regenerate()`: the new session comes after the old one has gone.
    if (this.destroying) await this.destroying.catch(() => undefined);
    const wasDestroyed = this.destroyed;
    await this.handle.regenerate(keep, this.runtime.newIdFor(this.req));
    this.destroyed = false;
    this.idChanged = true;
    this.unsetByApp = false;
    this.refreshed = false;
    if (!wasDestroyed || this.handle.isNew) this.cookie = this.runtime.newCookie(this.handle, this, this.cookieOptions);
  }

  /**
   * A stored session whose principal becomes a user in this request (from none, or from
   * another user: an attacker may plant a session logged in as themselves): its id may
   * have been planted (session fixation) and must not become the user's. A new session's
   * id is ours, and one regenerate() made is new. Once headers have gone (a streamed
   * response) the new cookie could not reach the browser, which would keep a dead id:
   * then the id stays (docs/security.md).
   */
  private loginNeedsRotation(): boolean {
    const handle = this.handle;
    return this.runtime.rotateOnLogin && !handle.isNew && !this.headersGone && typeof handle.principal === 'string' && handle.principal !== handle.base.meta.principal;
  }

  /** regenerate() keeping everything: attributes (committed or not), principal, lifetimes. */
  private async rotate(): Promise<void> {
    const handle = this.handle;
    const { idleTimeoutMs, absoluteExpiresAt } = handle.meta;
    await handle.regenerate(handle.keys(), this.runtime.newIdFor(this.req));
    handle.setIdleTimeout(idleTimeoutMs);
    handle.setAbsoluteExpiry(absoluteExpiresAt);
    this.idChanged = true;
    // The cookie keeps its options and any lifetime the app set; its expiry counts from
    // now, as the new session's creation time does.
    if (!this.runtime.rolling && !this.cookie.changed && this.cookie.hasExpiry) this.cookie.restart(absoluteExpiresAt);
    this.onRotate?.(handle.id);
  }

  /** Throws away this request's uncommitted changes (express-session's reload). */
  reload(): void {
    this.handle.discardChanges();
  }

  touch(): void {
    this.cookie.restart(this.handle.absoluteExpiresAt);
  }

  /**
   * @fastify/session's `session.options(opts)`: cookie attributes for this response. A
   * new lifetime (maxAge, expires) is the application's change, kept as `cookie.maxAge = …` is.
   */
  setCookieOptions(opts: Record<string, unknown>): void {
    if (Object.keys(opts).length === 0) return;
    const merged = resolveCookieOptions("session.options()", { ...this.cookieOptions, ...opts } as CookieOptions);
    const lifetime = 'maxAge' in opts || 'expires' in opts;
    const next = this.runtime.newCookie(this.handle, this, merged);
    if (lifetime) {
      if (merged.maxAge !== undefined) next.maxAge = merged.maxAge;
      else next.expires = merged.expires ?? null;
    } else {
      next.adopt(this.cookie);
    }
    this.cookieOptions = merged;
    this.cookie = next;
  }

  /** Whether this request changed the session (cheap and conservative: an object read and not watched counts). */
  get isModified(): boolean {
    return this.handle.mayHaveChanged;
  }

  /** Whether a save in this request reached the tier. */
  get isSaved(): boolean {
    return this.committed;
  }

  /** The cookie value of this session (signed), as @fastify/session's encryptedSessionId. */
  get signedId(): string {
    return this.runtime.signedValue(this.handle.id);
  }

  /** Ends every session of this session's principal, on every app server. */
  async destroyAllOfPrincipal(): Promise<number> {
    const principal = this.handle.principal;
    if (!principal) return 0;
    const n = await this.runtime.client.destroyByPrincipal(principal);
    this.destroyed = true;
    return n;
  }
}
