import { rememberBounded } from '../../util/bounded-map.js';
import type { SessionHandle } from '../../client/session-handle.js';
import type { SessionClient } from '../../client/session-client.js';
import { KilnError, isKilnError } from '../../errors/index.js';
import { assertSessionId, checkRouteOption, isValidSessionId, withRoute } from '../../session/id.js';
import { OptionReader } from '../../util/options.js';
import { ADAPTER_OPTIONS, COOKIE_ATTRIBUTE, COOKIE_DEFAULTS, clientFromOption, createDetachedClient, resolveCookieOptions, signerFromOption, type KilnSessionOptions, type Secret } from './adapter-options.js';
import { MAX_COOKIE_VALUE_LENGTH, decodeCookieValue, readRawCookie, signValue, serializeCookie, type CookieSigner } from './cookies.js';
import { RequestSession, type RequestSecurity } from './request-session.js';
import { SessionCookie, type CookieOptions, type CookieOverride } from './session-cookie.js';

/**
 * What every framework adapter shares: options, cookie verification, loading the
 * session at the start of a request, deciding whether to send a cookie, and committing
 * at the end. An adapter only maps its framework's hooks onto SessionRuntime.open(),
 * RequestSession.setCookieHeader() and RequestSession.finish(). The options' meaning is
 * in adapter-options.ts, one request's session in request-session.ts.
 */
export { COOKIE_ATTRIBUTE, clientFromOption, connectWarning, readOnlyPaths, type KilnSessionOptions, type Secret } from './adapter-options.js';
export { RequestSession, type RequestSecurity } from './request-session.js';

/** Verified cookie values remembered (about 150 bytes each), and as many signed ones. */
const VERIFIED_COOKIES = 10_000;

let keyWarningShown = false;
let cookieParserWarningShown = false;

/** Adds to a bounded cache of HMAC results, the oldest entry out first. */
function remember(cache: Map<string, string>, key: string, value: string): void {
  rememberBounded(cache, key, value, VERIFIED_COOKIES);
}

export class SessionRuntime<Req = unknown> {
  readonly client: SessionClient;
  readonly name: string;
  /** Signs ids into cookie values and verifies them back. */
  readonly signer: CookieSigner;
  /** The string and Buffer secrets (none with an application's signer), to recognise cookie-parser's. */
  private readonly secrets: readonly Secret[];
  /** The cookie options (the static ones; a cookie function's come per request). */
  readonly cookieOptions: CookieOptions;
  private readonly cookieFunction: ((req: Req) => CookieOptions) | undefined;
  private readonly adapter: string;
  readonly rolling: boolean;
  readonly saveUninitialized: boolean;
  readonly proxy: boolean | undefined;
  readonly unset: 'keep' | 'destroy';
  readonly onUnavailable: 'fail' | 'continue';
  readonly rotateOnLogin: boolean;
  private readonly genid: ((req: Req) => string) | undefined;
  private readonly scope: ((req: Req) => 'read' | 'write') | undefined;
  readonly route: string | undefined;
  private readonly ownsClient: boolean;
  private readonly idleTimeout: number;
  private readonly absoluteTimeout: number;
  /**
   * Signed cookie values (as sent, still percent-encoded) already verified → their session id. The HMAC is the costliest
   * step of a request that only reads its session, and a value verifies the same way
   * every time (the secrets are fixed for the runtime's life).
   */
  private readonly verified = new Map<string, string>();
  /** Session id → its signed cookie value: a session whose cookie is sent again (a write, with maxAge) signs the same id. */
  private readonly signed = new Map<string, string>();

  /**
   * `adapter` names the caller in errors; `storeHint` says what to use instead of a
   * `store` (each framework's users come from a different incumbent).
   */
  constructor(options: KilnSessionOptions<Req>, adapter: string, storeHint = 'To keep express-session itself, use KilnStore from kiln/express-store.') {
    const o = new OptionReader(adapter, options, ADAPTER_OPTIONS);
    if (o.any('store') !== undefined) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `${adapter}: option "store" is not Kiln's: Kiln is the store. Pass "engine" instead (a kiln:// or redis:// URL, an Engine, or a SessionClient). ${storeHint}`, { details: { option: 'store' } });
    }
    this.adapter = adapter;
    const prefix = o.any('cookiePrefix') ?? 's:';
    if (typeof prefix !== 'string' || prefix.length > 64) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `${adapter}: option "cookiePrefix" must be a string of at most 64 characters ('' for none)`, { details: { option: 'cookiePrefix' } });
    }
    this.signer = signerFromOption(adapter, o.any('secret'), prefix, o.string('algorithm', 'sha256'));
    const secret = o.any('secret');
    this.secrets = (Array.isArray(secret) ? secret : [secret]).filter((x): x is Secret => typeof x === 'string' || Buffer.isBuffer(x));
    const key = o.string('key', undefined);
    if (key !== undefined && !keyWarningShown) {
      keyWarningShown = true;
      process.emitWarning(`${adapter}: option "key" is deprecated; use "name"`, { type: 'DeprecationWarning', code: 'KILN_DEP_KEY' });
    }
    this.name = o.string('name', key ?? 'connect.sid');
    this.rolling = o.bool('rolling', false);
    o.bool('resave', false);
    this.saveUninitialized = o.bool('saveUninitialized', false);
    this.proxy = o.any('proxy') === undefined ? undefined : o.bool('proxy', false);
    this.unset = o.oneOf('unset', ['keep', 'destroy'], 'keep');
    this.onUnavailable = o.oneOf('onUnavailable', ['fail', 'continue'], 'fail');
    this.rotateOnLogin = o.bool('rotateOnLogin', true);
    this.genid = o.fn<(req: Req) => string>('genid');
    this.scope = o.fn<(req: Req) => 'read' | 'write'>('scope');
    this.route = o.string('route', undefined);
    checkRouteOption(this.route, adapter);
    const cookie = o.any('cookie') ?? {};
    if (typeof cookie === 'function') {
      this.cookieFunction = cookie as (req: Req) => CookieOptions;
      this.cookieOptions = { ...COOKIE_DEFAULTS };
    } else if (typeof cookie === 'object' && cookie !== null) {
      this.cookieOptions = resolveCookieOptions(adapter, cookie as CookieOptions);
      this.checkCookieName();
    } else {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `${adapter}: option "cookie" must be an object of cookie attributes or a function of the request returning one`, { details: { option: 'cookie' } });
    }
    const maxAge = this.cookieOptions.maxAge;
    this.idleTimeout = o.int('idleTimeout', typeof maxAge === 'number' && maxAge > 0 ? maxAge : 24 * 3600_000, 0);
    this.absoluteTimeout = o.int('absoluteTimeout', 0, 0);
    const timeoutMs = o.int('timeoutMs', 10_000, 1);
    const commitMode = o.oneOf('commitMode', ['sync', 'async'], 'sync');
    const { client, owned } = clientFromOption(o.any('engine'), adapter, {
      idleTimeoutMs: this.idleTimeout,
      absoluteTimeoutMs: this.absoluteTimeout,
      acquireTimeoutMs: timeoutMs,
      requestTimeoutMs: timeoutMs,
      commitMode,
      route: this.route,
    });
    this.client = client;
    this.ownsClient = owned;
  }

  /** Verified session id from a Cookie header, or undefined (absent, unsigned, tampered, oversized, malformed). */
  sessionIdFrom(cookieHeader: string | undefined): string | undefined {
    // Keyed by the value as sent: a known cookie costs neither its decoding nor its HMAC.
    const raw = readRawCookie(cookieHeader, this.name);
    if (raw === undefined) return undefined;
    const known = this.verified.get(raw);
    if (known !== undefined) return known;
    const decoded = decodeCookieValue(raw);
    const id = decoded === undefined ? undefined : this.signer.unsign(decoded);
    if (id === undefined || !isValidSessionId(id)) return undefined;
    // Only values that verified get in, so forged cookies cannot churn it.
    remember(this.verified, raw, id);
    return id;
  }

  /**
   * The session id of a cookie that reached the app another way (cookie-parser's
   * req.signedCookies, or req.cookies, after a middleware consumed the Cookie header);
   * express-session reads those too, with a deprecation warning.
   */
  sessionIdFromParsed(signedCookies: unknown, cookies: unknown, parserSecret: unknown): string | undefined {
    const signed = (signedCookies as Record<string, unknown> | undefined)?.[this.name];
    const raw = (cookies as Record<string, unknown> | undefined)?.[this.name];
    let id: string | undefined;
    // cookie-parser verified req.signedCookies with its own secret (req.secret): trusted
    // only when that is one of ours, or anyone knowing another secret could pick an id.
    if (typeof signed === 'string' && this.isOwnSecret(parserSecret)) id = signed;
    else if (typeof raw === 'string' && raw.length <= MAX_COOKIE_VALUE_LENGTH) id = this.signer.unsign(raw);
    if (id === undefined || !isValidSessionId(id)) return undefined;
    if (!cookieParserWarningShown) {
      cookieParserWarningShown = true;
      process.emitWarning(`${this.adapter}: the session cookie was read from req.signedCookies/req.cookies; it should be available in req.headers.cookie`, { type: 'DeprecationWarning', code: 'KILN_DEP_PARSED_COOKIE' });
    }
    return id;
  }

  /** Whether cookieOptionsFor() can answer anything but `cookieOptions` (a cookie function, or a path other than '/'). */
  get cookieVariesByRequest(): boolean {
    return this.cookieFunction !== undefined || (this.cookieOptions.path ?? '/') !== '/';
  }

  private isOwnSecret(secret: unknown): boolean {
    if (typeof secret !== 'string' && !Buffer.isBuffer(secret)) return false;
    return this.secrets.some((own) => (typeof own === 'string' ? own : own.toString('utf8')) === (typeof secret === 'string' ? secret : secret.toString('utf8')));
  }

  /**
   * This request's cookie options, or undefined when its path is outside cookie.path:
   * then, as with express-session, the request gets no session and no cookie.
   */
  cookieOptionsFor(req: Req, url: string): CookieOptions | undefined {
    let options = this.cookieOptions;
    if (this.cookieFunction) {
      options = resolveCookieOptions(this.adapter, this.cookieFunction(req) ?? {});
      if (this.name.startsWith('__')) this.checkCookiePrefix(options);
    }
    const path = options.path ?? '/';
    if (path === '/') return options;
    const query = url.indexOf('?');
    return (query < 0 ? url : url.slice(0, query)).startsWith(path) ? options : undefined;
  }

  /** Whether `secure` cookies may be sent on this request. */
  isSecure(direct: boolean, forwardedProto: string | undefined, frameworkSecure: boolean | undefined): boolean {
    if (this.proxy === true) return direct || (forwardedProto ?? '').split(',')[0]!.trim().toLowerCase() === 'https';
    if (this.proxy === false) return direct;
    return frameworkSecure ?? direct;
  }

  isReadOnly(req: Req): boolean {
    return this.scope?.(req) === 'read';
  }

  /**
   * The request's session at once, when the near cache has it and it is free (see
   * SessionClient.openCached); undefined means: use open().
   */
  openNow(req: Req, incomingId: string | undefined, secure: RequestSecurity, cookieOptions: CookieOptions = this.cookieOptions): RequestSession<Req> | undefined {
    if (incomingId === undefined) return undefined;
    const handle = this.client.openCached(incomingId, { readOnly: this.isReadOnly(req) });
    if (!handle) return undefined;
    try {
      return new RequestSession(this, req, handle, incomingId, secure, false, cookieOptions);
    } catch (err) {
      handle.close();
      throw err;
    }
  }

  /**
   * Loads the request's session (a fresh one when the cookie names none that lives).
   * `incomingId` is the verified id of the request's cookie (sessionIdFrom()), if any.
   */
  async open(req: Req, incomingId: string | undefined, secure: RequestSecurity, cookieOptions: CookieOptions = this.cookieOptions, force: { readOnly?: boolean } = {}): Promise<RequestSession<Req>> {
    const readOnly = force.readOnly ?? this.isReadOnly(req);
    let handle: SessionHandle;
    let detached = false;
    try {
      handle = await this.client.open(incomingId, { readOnly, newId: this.newIdFor(req) });
    } catch (err) {
      if (this.onUnavailable === 'continue' && isKilnError(err) && err.retryable) {
        handle = await createDetachedClient().open(undefined);
        detached = true;
      } else {
        throw err;
      }
    }
    try {
      return new RequestSession(this, req, handle, incomingId, secure, detached, cookieOptions);
    } catch (err) {
      // (A stored cookie override that does not decode, say): the session's lock goes with the error.
      handle.close();
      throw err;
    }
  }

  /** The application's genid for this request (new sessions and regenerate()), if it gave one. */
  newIdFor(req: Req): (() => string) | undefined {
    const genid = this.genid;
    return genid ? () => this.routed(genid(req)) : undefined;
  }

  private routed(id: string): string {
    assertSessionId(id);
    return this.route ? withRoute(id, this.route) : id;
  }

  /** The request's cookie; `request.secure` is read only for a secure or sameSite of 'auto'. */
  newCookie(handle: SessionHandle, request: { readonly secure: boolean }, options: CookieOptions): SessionCookie {
    const override = handle.isNew ? undefined : (handle.get<CookieOverride>(COOKIE_ATTRIBUTE) ?? undefined);
    const requestSecure = options.secure === 'auto' || options.sameSite === 'auto' ? request.secure : false;
    const startedAt = this.rolling || handle.isNew ? Date.now() : handle.createdAt;
    return new SessionCookie(options, requestSecure, startedAt, override, handle.absoluteExpiresAt);
  }

  /** A session id's signed cookie value (remembered: a session's cookie is sent again on every change with maxAge, or on every response with rolling). */
  signedValue(id: string): string {
    let value = this.signed.get(id);
    if (value === undefined) remember(this.signed, id, (value = this.signer.sign(id)));
    return value;
  }

  signedCookie(id: string, cookie: SessionCookie): string {
    return cookie.serialize(this.name, this.signedValue(id));
  }

  async close(): Promise<void> {
    if (this.ownsClient) await this.client.close();
  }

  /** The __Host- and __Secure- prefixes' rules, for the static options and each cookie function's answer. */
  private checkCookiePrefix(c: CookieOptions): void {
    const name = this.name;
    if (name.startsWith('__Host-') && (c.secure === false || c.secure === undefined || c.path !== '/' || c.domain)) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `cookie name "${name}": the __Host- prefix needs cookie.secure (true or 'auto'), path '/' and no domain, or browsers drop it`, { details: { option: 'name' } });
    }
    if (name.startsWith('__Secure-') && !c.secure) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `cookie name "${name}": the __Secure- prefix needs cookie.secure (true or 'auto')`, { details: { option: 'name' } });
    }
  }

  private checkCookieName(): void {
    const name = this.name;
    this.checkCookiePrefix(this.cookieOptions);
    // Fails now, not on the first response, if name and attributes cannot fit a cookie.
    serializeCookie(name, signValue('x'.repeat(128), 'k'), { ...this.cookieOptions, sameSite: this.cookieOptions.sameSite === 'auto' ? 'none' : this.cookieOptions.sameSite, secure: this.cookieOptions.secure === true, expires: new Date() });
  }
}
