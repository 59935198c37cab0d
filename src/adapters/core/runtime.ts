import { redactCredentials } from '../../util/log.js';
import { SessionClient, createSessionClient } from '../../client/session-client.js';
import type { SessionHandle } from '../../client/session-handle.js';
import type { Engine } from '../../engines/engine.js';
import { createMemoryTier } from '../../engines/memory/memory-engine.js';
import { connectEngine } from '../../engines/connect.js';
import { KilnError, isKilnError } from '../../errors/index.js';
import { assertSessionId, isValidSessionId, withRoute } from '../../session/id.js';
import { OptionReader } from '../../util/options.js';
import { getHashes } from 'node:crypto';
import { MAX_COOKIE_VALUE_LENGTH, decodeCookieValue, foreignSigner, hmacSigner, readRawCookie, signValue, serializeCookie, type CookieSigner, type ForeignCookieSigner } from './cookies.js';
import { SessionCookie, type CookieOptions, type CookieOverride } from './session-cookie.js';

/**
 * What every framework adapter shares: options, cookie verification, loading the
 * session at the start of a request, deciding whether to send a cookie, and committing
 * at the end. An adapter only maps its framework's hooks onto SessionRuntime.open(),
 * RequestSession.setCookieHeader() and RequestSession.finish().
 */
export interface KilnSessionOptions<Req = unknown> {
  /** A SessionClient, an Engine, or an engine URL (kiln://, redis://, redis+sentinel://, redis+cluster://). Omitted: the in-process memory engine (one process only). */
  engine?: SessionClient | Engine | string;
  /**
   * Signs the cookie (strings or Buffers). An array rotates: the first signs, all
   * verify. Or a signer object of @fastify/cookie's shape (`sign`, `unsign`).
   * Required: the type takes `undefined` so `secret: process.env.SESSION_SECRET` compiles,
   * and a missing secret fails at start-up (KILN_ERR_INVALID_OPTION), not at a request.
   */
  secret: Secret | readonly Secret[] | ForeignCookieSigner | undefined;
  /** Put in front of the signed id in the cookie value. Default 's:' (express-session's); kiln/fastify's default is '' (@fastify/session's). */
  cookiePrefix?: string;
  /** HMAC algorithm of the signature. Default 'sha256'. */
  algorithm?: string;
  /** Cookie name. Default 'connect.sid' (express-session's). */
  name?: string;
  /** @deprecated express-session's old name for `name`. */
  key?: string;
  /** The cookie's attributes, or a function giving them per request (express-session 1.19). */
  cookie?: CookieOptions | ((req: Req) => CookieOptions);
  /** Send the cookie (with a fresh expiry) on every response. */
  rolling?: boolean;
  /** Accepted for compatibility; Kiln commits deltas, so there is nothing to re-save. */
  resave?: boolean;
  /** Store new sessions even when the request put nothing in them. Default false. */
  saveUninitialized?: boolean;
  /** Makes the id of a new session (16–128 base64url characters). Default: 256 random bits. */
  genid?: (req: Req) => string;
  /** Trust X-Forwarded-Proto for `secure` cookies. Default: the framework's own notion (Express: 'trust proxy'). */
  proxy?: boolean;
  /** What `delete req.session` / `req.session = null` means: keep the stored session, or destroy it. */
  unset?: 'keep' | 'destroy';
  /** Idle timeout of new sessions. Default: cookie.maxAge, else 24 hours. */
  idleTimeout?: number;
  /** Absolute lifetime of new sessions; rolling cookies never outlive it. Default none. */
  absoluteTimeout?: number;
  commitMode?: 'sync' | 'async';
  /** Route suffix of new ids (the load balancer's name for this app server). */
  route?: string;
  /** Lease scope of a request: 'read' routes get a snapshot and do not block others on the same session. */
  scope?: (req: Req) => 'read' | 'write';
  /** When the server tier cannot be reached: fail the request (default) or serve it with a session that is not stored. */
  onUnavailable?: 'fail' | 'continue';
  /** Longest a request waits for its session (lease, engine). Default 10 s. */
  timeoutMs?: number;
  /**
   * Give a stored session a new id when its principal goes from none to a user (a login
   * without regenerate()): the data moves to the new id, the old one is destroyed, the
   * response carries the new cookie. Defeats session fixation. Default true.
   */
  rotateOnLogin?: boolean;
}

/** A signing secret: express-session (cookie-signature) takes strings and Buffers alike. */
export type Secret = string | Buffer;

const KNOWN = ['engine', 'secret', 'cookiePrefix', 'algorithm', 'name', 'key', 'cookie', 'rolling', 'resave', 'saveUninitialized', 'genid', 'proxy', 'unset', 'idleTimeout', 'absoluteTimeout', 'commitMode', 'route', 'scope', 'onUnavailable', 'timeoutMs', 'rotateOnLogin', 'store'];

/** Reserved attribute holding an application's cookie lifetime change. */
export const COOKIE_ATTRIBUTE = '__kiln.cookie';

let memoryWarningShown = false;

/**
 * What an app server says when its first connection to the tier fails. A refusal (wrong
 * token, untrusted certificate, another protocol version) is not retried and is named as
 * such, once; anything else is transient and the engine keeps trying. The warning's code
 * is the error's KILN_ERR_ code (docs/errors.md).
 */
export function connectWarning(owner: string, where: string, err: Error): [string, { code: string }] {
  const code = isKilnError(err) ? err.code : 'KILN_ERR_ENGINE_UNAVAILABLE';
  const detail = redactCredentials(err.message);
  if (isKilnError(err) && !err.retryable) {
    const hint = code === 'KILN_ERR_AUTH' ? "the token is wrong or missing (KILN_TOKEN, or the engine's token option)" : code === 'KILN_ERR_TLS' ? "the TLS settings do not match the tier's certificate" : 'this app server and the tier do not agree';
    return [`${owner}: the session tier at ${where} refused this app server: ${hint} (${detail}). Not retrying: requests fail with ${code} until the configuration is fixed.`, { code }];
  }
  return [`${owner}: cannot reach the session tier at ${where} yet (${detail}); retrying in the background, requests wait at most their timeout`, { code: 'KILN_ERR_ENGINE_UNAVAILABLE' }];
}

/**
 * The `engine` option of every adapter and of KilnStore: a SessionClient (used as is),
 * an Engine, an engine URL (kiln:// or redis…://), or nothing (the in-process memory engine, with
 * express-session's MemoryStore warning in production).
 */
export function clientFromOption(
  engine: unknown,
  owner: string,
  options: { idleTimeoutMs: number; absoluteTimeoutMs: number; acquireTimeoutMs: number; requestTimeoutMs: number; commitMode: 'sync' | 'async'; route: string | undefined },
): { client: SessionClient; owned: boolean } {
  if (engine instanceof SessionClient) return { client: engine, owned: false };
  let resolved: Engine;
  if (engine === undefined) {
    resolved = createMemoryTier().engine();
    if (process.env['NODE_ENV'] === 'production' && !memoryWarningShown) {
      memoryWarningShown = true;
      process.emitWarning(`${owner} is using the in-process memory engine: sessions live in this process only and are lost when it stops. Pass { engine: 'kiln://host:9510' } to share them across app servers.`, { code: 'KILN_MEMORY_ENGINE' });
    }
  } else if (typeof engine === 'string') {
    const t = options.acquireTimeoutMs;
    // The route names the app server in the kiln server's client list and console.
    resolved = connectEngine(engine, { operationTimeoutMs: Math.min(t, 5000), acquireTimeoutMs: t, connectTimeoutMs: Math.min(t, 5000), ...(options.route ? { name: options.route } : {}) });
    // Connect now, not at the first request that needs the tier: the app server shows up
    // in the console at start, and a wrong URL or token is logged at once (the engine
    // keeps retrying in the background; requests wait at most their timeout).
    resolved.connect().catch((err: Error) => process.emitWarning(...connectWarning(owner, redactCredentials(engine), err)));
  } else if (engine && typeof (engine as Engine).acquire === 'function') {
    resolved = engine as Engine;
  } else {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "engine" must be an engine URL (kiln://, redis://, redis+sentinel://, redis+cluster://), an Engine or a SessionClient`, { details: { option: 'engine' } });
  }
  return { client: createSessionClient({ engine: resolved, ...options }), owned: true };
}

/**
 * A `scope` option from path patterns: requests whose path matches get a read-only
 * snapshot of their session and never wait behind, or block, other requests on it.
 *
 * @example
 * session({ secret, scope: readOnlyPaths('/api/catalog', /^\/uploads\//) })
 */
export function readOnlyPaths(...patterns: (string | RegExp)[]): (req: { url?: string; path?: string }) => 'read' | 'write' {
  return (req) => {
    const path = (req.path ?? req.url ?? '/').split('?')[0]!;
    return patterns.some((p) => (typeof p === 'string' ? path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`) : p.test(path))) ? 'read' : 'write';
  };
}

/** Verified cookie values remembered (about 150 bytes each), and as many signed ones. */
const VERIFIED_COOKIES = 10_000;

const COOKIE_KEYS = ['maxAge', 'expires', 'domain', 'path', 'httpOnly', 'secure', 'sameSite', 'partitioned', 'priority'];
const COOKIE_DEFAULTS: CookieOptions = { path: '/', httpOnly: true, sameSite: 'lax' };

/**
 * Cookie options with Kiln's defaults, checked: a lifetime that is not a number or a
 * valid date fails here (at start-up, or for the request whose cookie function gave it),
 * not as `Max-Age=NaN` on the wire.
 */
function resolveCookieOptions(owner: string, cookie: CookieOptions): CookieOptions {
  new OptionReader(`${owner} cookie`, cookie, COOKIE_KEYS);
  const { maxAge, expires } = cookie;
  if (maxAge !== undefined && maxAge !== null && (typeof maxAge !== 'number' || !Number.isFinite(maxAge))) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "cookie.maxAge" must be a finite number of milliseconds`, { details: { option: 'cookie.maxAge' } });
  }
  if (expires !== undefined && expires !== null && !(expires instanceof Date && Number.isFinite(expires.getTime()))) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "cookie.expires" must be a valid Date`, { details: { option: 'cookie.expires' } });
  }
  return { ...COOKIE_DEFAULTS, ...cookie, secure: cookie.secure === ('true' as unknown) ? true : cookie.secure };
}

/** The `secret` option (strings, Buffers, or a signer object) as the runtime's signer. */
function signerFromOption(owner: string, secret: unknown, prefix: string, algorithm: string): CookieSigner {
  if (secret && typeof secret === 'object' && !Array.isArray(secret) && !Buffer.isBuffer(secret)) {
    const s = secret as Partial<ForeignCookieSigner>;
    if (typeof s.sign === 'function' && typeof s.unsign === 'function') return foreignSigner(s as ForeignCookieSigner, prefix);
  }
  const secrets: unknown[] = Array.isArray(secret) ? secret : secret === undefined ? [] : [secret];
  if (secrets.length === 0 || !secrets.every((x) => (typeof x === 'string' || Buffer.isBuffer(x)) && x.length > 0)) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "secret" is required: a non-empty string or Buffer, an array of them (the first signs, all verify), or a signer object with sign() and unsign()`, { details: { option: 'secret' } });
  }
  if (!getHashes().includes(algorithm)) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "algorithm" must be a hash Node.js knows (${JSON.stringify(algorithm)} is not)`, { details: { option: 'algorithm' } });
  }
  // A copy: the verified-cookie cache assumes the secrets never change (rotate by restarting).
  return hmacSigner([...(secrets as Secret[])], prefix, algorithm);
}

let keyWarningShown = false;
let cookieParserWarningShown = false;

/** Adds to a bounded cache of HMAC results, the oldest entry out first. */
function remember(cache: Map<string, string>, key: string, value: string): void {
  if (cache.size >= VERIFIED_COOKIES) cache.delete(cache.keys().next().value!);
  cache.set(key, value);
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
    const o = new OptionReader(adapter, options, KNOWN);
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
    return new RequestSession(this, req, handle, incomingId, secure, detached, cookieOptions);
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

let detachedClient: SessionClient | undefined;
/** Sessions for requests served while the tier is down (onUnavailable: 'continue'): never stored. */
function createDetachedClient(): SessionClient {
  detachedClient ??= createSessionClient({ engine: createMemoryTier().engine() });
  return detachedClient;
}

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
    if (this.destroyed) return this.incomingId ? this.clearCookie() : undefined;
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
    if (this.destroyed || this.unsetByApp || this.saving || !this.cookie.isValid()) return false;
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
    if (typeof attribute === 'string' && attribute !== COOKIE_ATTRIBUTE) this.handle.revert(attribute);
    else this.handle.discardChanges();
  }

  private async commitNow(final: boolean): Promise<void> {
    if (this.finished || this.destroyed || this.detached || this.abandoned || this.handle.readOnly) return;
    if (this.loginNeedsRotation()) await this.rotate();
    const handle = this.handle;
    const cookie = this.cookie;
    if (cookie.changed) {
      handle.set(COOKIE_ATTRIBUTE, cookie.override());
      const lifetime = cookie.originalMaxAge;
      if (lifetime !== null && lifetime > 0) handle.setIdleTimeout(lifetime);
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

  async destroy(): Promise<void> {
    if (this.finished || this.destroyed) return;
    await this.saving;
    if (!this.detached) await this.handle.destroy();
    this.destroyed = true;
  }

  async regenerate(keep: readonly string[] = []): Promise<void> {
    if (this.finished) throw new KilnError('KILN_ERR_CLOSED', 'the request has ended');
    await this.saving;
    const wasDestroyed = this.destroyed;
    await this.handle.regenerate(keep, this.runtime.newIdFor(this.req));
    this.destroyed = false;
    this.idChanged = true;
    this.unsetByApp = false;
    this.refreshed = false;
    if (!wasDestroyed || this.handle.isNew) this.cookie = this.runtime.newCookie(this.handle, this, this.cookieOptions);
  }

  /**
   * A stored session whose principal goes from none to a user in this request: its id may
   * have been planted (session fixation) and must not become the user's. A new session's
   * id is ours, and one regenerate() made is new. Once headers have gone (a streamed
   * response) the new cookie could not reach the browser, which would keep a dead id:
   * then the id stays (docs/security.md).
   */
  private loginNeedsRotation(): boolean {
    const handle = this.handle;
    return this.runtime.rotateOnLogin && !handle.isNew && !this.headersGone && handle.base.meta.principal === null && typeof handle.principal === 'string';
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
