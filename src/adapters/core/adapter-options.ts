import { getHashes } from 'node:crypto';
import { SessionClient, createSessionClient } from '../../client/session-client.js';
import { connectEngine } from '../../engines/connect.js';
import type { Engine } from '../../engines/engine.js';
import { createMemoryTier } from '../../engines/memory/memory-engine.js';
import { KilnError, isKilnError } from '../../errors/index.js';
import { redactCredentials } from '../../util/log.js';
import { OptionReader } from '../../util/options.js';
import { assertCookieAttributes, foreignSigner, hmacSigner, type CookieSigner, type ForeignCookieSigner } from './cookies.js';
import type { CookieOptions } from './session-cookie.js';

/**
 * What the options every framework adapter takes mean, checked up front so a bad one
 * fails at start-up naming the property, not on the first request: the option list,
 * cookie attributes, the secret, and the `engine` option (a client, an engine, a URL or
 * nothing), plus the warnings an app server gives about its tier.
 */
export interface KilnSessionOptions<Req = unknown> {
  // Every optional property also takes undefined, so options read from the environment
  // (`route: process.env.NODE_NAME`) compile under exactOptionalPropertyTypes.
  /** A SessionClient, an Engine, or an engine URL (kiln://, redis://, redis+sentinel://, redis+cluster://). Omitted: the in-process memory engine (one process only). */
  engine?: SessionClient | Engine | string | undefined;
  /**
   * Signs the cookie (strings or Buffers). An array rotates: the first signs, all
   * verify. Or a signer object of @fastify/cookie's shape (`sign`, `unsign`).
   * Required: the type takes `undefined` so `secret: process.env.SESSION_SECRET` compiles,
   * and a missing secret fails at start-up (KILN_ERR_INVALID_OPTION), not at a request.
   */
  secret: Secret | readonly Secret[] | ForeignCookieSigner | undefined;
  /** Put in front of the signed id in the cookie value. Default 's:' (express-session's); kiln/fastify's default is '' (@fastify/session's). */
  cookiePrefix?: string | undefined;
  /** HMAC algorithm of the signature. Default 'sha256'. */
  algorithm?: string | undefined;
  /** Cookie name. Default 'connect.sid' (express-session's). */
  name?: string | undefined;
  /** @deprecated express-session's old name for `name`. */
  key?: string | undefined;
  /** The cookie's attributes, or a function giving them per request (express-session 1.19). */
  cookie?: CookieOptions | ((req: Req) => CookieOptions) | undefined;
  /** Send the cookie (with a fresh expiry) on every response. */
  rolling?: boolean | undefined;
  /** Accepted for compatibility; Kiln commits deltas, so there is nothing to re-save. */
  resave?: boolean | undefined;
  /** Store new sessions even when the request put nothing in them. Default false. */
  saveUninitialized?: boolean | undefined;
  /** Makes the id of a new session (16–128 base64url characters). Default: 256 random bits. */
  genid?: ((req: Req) => string) | undefined;
  /** Trust X-Forwarded-Proto for `secure` cookies. Default: the framework's own notion (Express: 'trust proxy'). */
  proxy?: boolean | undefined;
  /** What `delete req.session` / `req.session = null` means: keep the stored session, or destroy it. */
  unset?: 'keep' | 'destroy' | undefined;
  /** Idle timeout of new sessions. Default: cookie.maxAge, else 24 hours. */
  idleTimeout?: number | undefined;
  /** Absolute lifetime of new sessions; rolling cookies never outlive it. Default none. */
  absoluteTimeout?: number | undefined;
  commitMode?: 'sync' | 'async' | undefined;
  /** Route suffix of new ids (the load balancer's name for this app server). */
  route?: string | undefined;
  /** Lease scope of a request: 'read' routes get a snapshot and do not block others on the same session. */
  scope?: ((req: Req) => 'read' | 'write') | undefined;
  /** When the server tier cannot be reached: fail the request (default) or serve it with a session that is not stored. */
  onUnavailable?: 'fail' | 'continue' | undefined;
  /** Longest a request waits for its session (lease, engine). Default 10 s. */
  timeoutMs?: number | undefined;
  /**
   * Give a stored session a new id when its principal goes from none to a user (a login
   * without regenerate()): the data moves to the new id, the old one is destroyed, the
   * response carries the new cookie. Defeats session fixation. Default true.
   */
  rotateOnLogin?: boolean | undefined;
}

/** A signing secret: express-session (cookie-signature) takes strings and Buffers alike. */
export type Secret = string | Buffer;

/** Every option an adapter takes; anything else is refused, naming it. */
export const ADAPTER_OPTIONS = ['engine', 'secret', 'cookiePrefix', 'algorithm', 'name', 'key', 'cookie', 'rolling', 'resave', 'saveUninitialized', 'genid', 'proxy', 'unset', 'idleTimeout', 'absoluteTimeout', 'commitMode', 'route', 'scope', 'onUnavailable', 'timeoutMs', 'rotateOnLogin', 'store'];

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
  if (isKilnError(err) && code === 'KILN_ERR_MISSING_DEPENDENCY') {
    return [`${owner}: ${detail}. Requests fail with ${code} until it is installed.`, { code }];
  }
  if (isKilnError(err) && !err.retryable) {
    const hint = code === 'KILN_ERR_AUTH' ? "its token is wrong or missing: set KILN_TOKEN (or the engine's token option) to one of the server's tokens" : code === 'KILN_ERR_TLS' ? "the TLS settings do not match the tier's certificate" : 'this app server and the tier do not agree';
    // The server's own words, unless they only repeat the hint.
    const said = code === 'KILN_ERR_AUTH' && /^wrong or missing token$/.test(detail) ? '' : ` (${detail})`;
    return [`${owner}: the session tier at ${where} refused this app server: ${hint}${said}. Not retrying: requests fail with ${code} until the configuration is fixed.`, { code }];
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

const COOKIE_KEYS = ['maxAge', 'expires', 'domain', 'path', 'httpOnly', 'secure', 'sameSite', 'partitioned', 'priority'];
export const COOKIE_DEFAULTS: CookieOptions = { path: '/', httpOnly: true, sameSite: 'lax' };

/**
 * Cookie options with Kiln's defaults, checked: a lifetime that is not a number or a
 * valid date fails here (at start-up, or for the request whose cookie function gave it),
 * not as `Max-Age=NaN` on the wire.
 */
export function resolveCookieOptions(owner: string, cookie: CookieOptions): CookieOptions {
  new OptionReader(`${owner} cookie`, cookie, COOKIE_KEYS);
  const { maxAge, expires } = cookie;
  if (maxAge !== undefined && maxAge !== null && (typeof maxAge !== 'number' || !Number.isFinite(maxAge))) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "cookie.maxAge" must be a finite number of milliseconds`, { details: { option: 'cookie.maxAge' } });
  }
  if (expires !== undefined && expires !== null && !(expires instanceof Date && Number.isFinite(expires.getTime()))) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "cookie.expires" must be a valid Date`, { details: { option: 'cookie.expires' } });
  }
  const secure: unknown = cookie.secure;
  if (secure !== undefined && secure !== true && secure !== false && secure !== 'auto' && secure !== 'true') {
    // express-session takes any truthy value as true: 'false' or 'yes' would silently decide.
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "cookie.secure" must be true, false or 'auto' (got ${JSON.stringify(secure)})`, { details: { option: 'cookie.secure' } });
  }
  assertCookieAttributes(owner, cookie);
  return { ...COOKIE_DEFAULTS, ...cookie, secure: secure === 'true' ? true : cookie.secure };
}

/** The `secret` option (strings, Buffers, or a signer object) as the runtime's signer. */
export function signerFromOption(owner: string, secret: unknown, prefix: string, algorithm: string): CookieSigner {
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

let detachedClient: SessionClient | undefined;
/** Sessions for requests served while the tier is down (onUnavailable: 'continue'): never stored. */
export function createDetachedClient(): SessionClient {
  detachedClient ??= createSessionClient({ engine: createMemoryTier().engine() });
  return detachedClient;
}
