import { serializeCookie, type CookieAttributes, type SameSite } from './cookies.js';

/**
 * `req.session.cookie`, as express-session users know it: `maxAge` counts down,
 * `originalMaxAge` is the configured lifetime, `expires` is when the browser drops it.
 * Kiln does not store the expiry with every request: it is derived from the session's
 * creation time (or from now, when rolling), so reading a session never writes it.
 * Only an application's change (`cookie.maxAge = …`, "remember me") is kept, and it
 * changes the session's idle timeout to match.
 */
export interface CookieOptions {
  maxAge?: number | undefined;
  expires?: Date | undefined;
  domain?: string | undefined;
  path?: string;
  httpOnly?: boolean;
  /** true, false, or 'auto' (secure when the request is). */
  secure?: boolean | 'auto';
  /** 'auto' (express-session 1.19): Lax over HTTP, None (and Secure) over HTTPS. */
  sameSite?: SameSite | 'auto';
  partitioned?: boolean;
  priority?: 'low' | 'medium' | 'high';
}

/** What an application changed, persisted in the reserved attribute. */
export interface CookieOverride {
  originalMaxAge?: number | null;
  expires?: number | null;
}

export class SessionCookie {
  path: string;
  domain: string | undefined;
  httpOnly: boolean;
  secure: boolean;
  sameSite: SameSite | undefined;
  partitioned: boolean;
  priority: 'low' | 'medium' | 'high' | undefined;
  originalMaxAge: number | null;
  private expiresAt: number | null;
  /** The expiry as loaded (stored or derived), to tell how far a renewal moved it. */
  private readonly loadedExpiresAt: number | null;
  /** @internal set when the application changed the lifetime in this request */
  changed = false;

  /**
   * `requestIsSecure` matters only for `secure: 'auto'` and `sameSite: 'auto'`: a
   * SameSite=None cookie must be Secure, or browsers reject it.
   */
  constructor(options: CookieOptions, requestIsSecure: boolean, startedAt: number, override?: CookieOverride, capAt?: number) {
    this.path = options.path ?? '/';
    this.domain = options.domain;
    this.httpOnly = options.httpOnly ?? true;
    const autoSameSite = options.sameSite === 'auto';
    this.secure = options.secure === true || ((options.secure === 'auto' || autoSameSite) && requestIsSecure);
    this.sameSite = options.sameSite === 'auto' ? (requestIsSecure ? 'none' : 'lax') : options.sameSite;
    // SameSite=None without Secure is rejected by browsers: over plain HTTP with
    // secure 'auto', fall back to Lax (as @fastify/session does).
    if (this.sameSite === 'none' && !this.secure && options.secure === 'auto') this.sameSite = 'lax';
    this.partitioned = options.partitioned ?? false;
    this.priority = options.priority;
    const configuredMaxAge = options.maxAge ?? (options.expires ? options.expires.getTime() - Date.now() : undefined);
    this.originalMaxAge = override?.originalMaxAge !== undefined ? override.originalMaxAge : (configuredMaxAge ?? null);
    if (override?.expires !== undefined) this.expiresAt = override.expires;
    else this.expiresAt = this.originalMaxAge === null ? null : startedAt + this.originalMaxAge;
    if (capAt && capAt > 0 && (this.expiresAt === null || this.expiresAt > capAt)) this.expiresAt = capAt;
    this.loadedExpiresAt = this.expiresAt;
  }

  /**
   * @internal Whether a renewal moved the expiry far enough to be worth storing: by more
   * than 1 % of the lifetime. Under a stream of writes the stored expiry (which only
   * what `cookie.maxAge` reports on later requests depends on) then lags the one sent by
   * at most that, and most writes carry no cookie attribute.
   */
  get renewalWorthStoring(): boolean {
    if (this.expiresAt === null || this.loadedExpiresAt === null || this.originalMaxAge === null) return true;
    return this.expiresAt - this.loadedExpiresAt > this.originalMaxAge / 100;
  }

  get expires(): Date | null {
    return this.expiresAt === null ? null : new Date(this.expiresAt);
  }

  /** An invalid Date is kept (as express-session keeps it) and refused when the session is saved. */
  set expires(value: Date | null) {
    this.expiresAt = value ? new Date(value).getTime() : null;
    this.originalMaxAge = this.expiresAt === null ? null : this.expiresAt - Date.now();
    this.changed = true;
  }

  /** Milliseconds left; setting it restarts the lifetime ("remember me for 30 days"). */
  get maxAge(): number | null {
    return this.expiresAt === null ? null : this.expiresAt - Date.now();
  }

  set maxAge(ms: number | null) {
    // express-session's deprecated form: a Date is an expiry.
    if ((ms as unknown) instanceof Date) {
      this.expires = ms as unknown as Date;
      return;
    }
    if (ms !== null && ms !== undefined && typeof ms !== 'number') throw new TypeError('cookie.maxAge must be a number of milliseconds or null');
    this.originalMaxAge = ms ?? null;
    this.expiresAt = ms === null || ms === undefined ? null : Date.now() + ms;
    this.changed = true;
  }

  /** Whether the cookie expires (maxAge or expires), without making a Date. */
  get hasExpiry(): boolean {
    return this.expiresAt !== null;
  }

  /** False when the application gave an expiry that is not a date or a lifetime that is not finite (NaN). */
  isValid(): boolean {
    return this.expiresAt === null || Number.isFinite(this.expiresAt);
  }

  /** @internal restart the lifetime from now (rolling sessions, touch()). */
  restart(capAt?: number): void {
    if (this.originalMaxAge !== null && Number.isFinite(this.originalMaxAge)) this.expiresAt = Date.now() + this.originalMaxAge;
    if (capAt && capAt > 0 && (this.expiresAt === null || this.expiresAt > capAt)) this.expiresAt = capAt;
  }

  /** @internal Takes over another cookie's lifetime (new attributes, same expiry). */
  adopt(other: SessionCookie): void {
    this.originalMaxAge = other.originalMaxAge;
    this.expiresAt = other.expiresAt;
    this.changed = other.changed;
  }

  /** @internal */
  override(): CookieOverride {
    return { originalMaxAge: this.originalMaxAge, expires: this.expiresAt };
  }

  attributes(): CookieAttributes {
    const expires = this.expires ?? undefined;
    return {
      expires,
      maxAge: expires ? Math.max(0, expires.getTime() - Date.now()) : undefined,
      domain: this.domain,
      path: this.path,
      httpOnly: this.httpOnly,
      secure: this.secure,
      sameSite: this.sameSite,
      partitioned: this.partitioned,
      priority: this.priority,
    };
  }

  serialize(name: string, value: string): string {
    return serializeCookie(name, value, this.attributes());
  }

  toJSON(): Record<string, unknown> {
    return { originalMaxAge: this.originalMaxAge, expires: this.expires, secure: this.secure, httpOnly: this.httpOnly, domain: this.domain, path: this.path, sameSite: this.sameSite };
  }
}
