import { createHmac, timingSafeEqual } from 'node:crypto';
import { KilnError } from '../../errors/index.js';

/**
 * Cookie parsing, serialising and signing, pure. Signed values use the format of
 * express-session (cookie-signature): `s:<value>.<base64 HMAC-SHA256 without padding>`,
 * so a cookie signed by express-session with the same secret verifies here.
 */

/** Longest cookie value we read; anything longer is treated as absent (and costs no lookup). */
export const MAX_COOKIE_VALUE_LENGTH = 1024;
/** Browsers keep cookies up to about 4096 bytes (name, value and attributes). */
export const MAX_SET_COOKIE_BYTES = 4096;

export function readCookie(header: string | undefined, name: string): string | undefined {
  const raw = readRawCookie(header, name);
  return raw === undefined ? undefined : decodeCookieValue(raw);
}

/**
 * A cookie's value as it stands in the header (quotes removed, still percent-encoded).
 * Readers that remember what they decoded key their cache by this and skip the decoding.
 */
export function readRawCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  let at = 0;
  // The next '=' is looked for again only once passed: a header of many pairs without
  // one (`;;;;…`) is read in one pass, not once per pair.
  let eq = -1;
  while (at < header.length) {
    let end = header.indexOf(';', at);
    if (end < 0) end = header.length;
    if (eq < at) {
      eq = header.indexOf('=', at);
      if (eq < 0) return undefined;
    }
    if (eq > at && eq < end && header.slice(at, eq).trim() === name) {
      const value = header.slice(eq + 1, end).trim();
      if (value.length > MAX_COOKIE_VALUE_LENGTH) return undefined;
      return value.startsWith('"') && value.endsWith('"') && value.length >= 2 ? value.slice(1, -1) : value;
    }
    at = end + 1;
  }
  return undefined;
}

/** A raw cookie value percent-decoded, or undefined when it is malformed. */
export function decodeCookieValue(raw: string): string | undefined {
  try {
    return raw.includes('%') ? decodeURIComponent(raw) : raw;
  } catch {
    return undefined;
  }
}

function mac(value: string, secret: string | Buffer, algorithm = 'sha256'): string {
  return createHmac(algorithm, secret).update(value).digest('base64').replace(/=+$/, '');
}

/** Signs a session id into a cookie value and verifies one back; undefined for anything that does not verify. */
export interface CookieSigner {
  sign(value: string): string;
  unsign(signed: string): string | undefined;
}

/**
 * A custom signer of @fastify/cookie's shape (`secret: signer` in @fastify/session):
 * unsign() answers `{ valid, value }`.
 */
export interface ForeignCookieSigner {
  sign(value: string): string;
  unsign(signed: string): { valid: boolean; renew?: boolean; value: string | null };
}

/**
 * HMAC signing as express-session (cookie-signature) and @fastify/cookie do it:
 * `<prefix><value>.<base64 HMAC without padding>`. express-session's prefix is `s:`;
 * @fastify/session's is none (its `cookiePrefix` option). Every secret is tried, in
 * constant time, so rotation (new first, old after) keeps old cookies valid.
 */
export function hmacSigner(secrets: readonly (string | Buffer)[], prefix = 's:', algorithm = 'sha256'): CookieSigner {
  const first = secrets[0]!;
  return {
    sign: (value) => `${prefix}${value}.${mac(value, first, algorithm)}`,
    unsign(signed) {
      if (!signed.startsWith(prefix)) return undefined;
      const body = signed.slice(prefix.length);
      const dot = body.lastIndexOf('.');
      if (dot <= 0) return undefined;
      const value = body.slice(0, dot);
      const given = Buffer.from(body.slice(dot + 1));
      let ok = false;
      for (const secret of secrets) {
        const expected = Buffer.from(mac(value, secret, algorithm));
        // Compare every secret (no early exit) so timing does not tell which one matched.
        if (expected.length === given.length && timingSafeEqual(expected, given)) ok = true;
      }
      return ok ? value : undefined;
    },
  };
}

/** An application's signer (@fastify/cookie's shape), with `prefix` in front as @fastify/session puts it. */
export function foreignSigner(signer: ForeignCookieSigner, prefix = ''): CookieSigner {
  return {
    sign: (value) => `${prefix}${signer.sign(value)}`,
    unsign(signed) {
      if (!signed.startsWith(prefix)) return undefined;
      const result = signer.unsign(signed.slice(prefix.length));
      return result && result.valid === true && typeof result.value === 'string' ? result.value : undefined;
    },
  };
}

export function signValue(value: string, secret: string | Buffer): string {
  return hmacSigner([secret]).sign(value);
}

/** The value inside an express-session signed cookie (`s:…`) if any secret verifies it, else undefined. */
export function unsignValue(signed: string | undefined, secrets: readonly (string | Buffer)[]): string | undefined {
  return signed ? hmacSigner(secrets).unsign(signed) : undefined;
}

export type SameSite = 'lax' | 'strict' | 'none' | boolean;

export interface CookieAttributes {
  maxAge?: number | undefined;
  expires?: Date | undefined;
  domain?: string | undefined;
  path?: string | undefined;
  httpOnly?: boolean | undefined;
  secure?: boolean | undefined;
  sameSite?: SameSite | undefined;
  partitioned?: boolean | undefined;
  priority?: 'low' | 'medium' | 'high' | undefined;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A cookie Domain: labels of letters, digits and hyphens, an optional leading dot (the `cookie` package's rule). */
const DOMAIN = /^\.?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;
/** A cookie Path: printable ASCII but ';' (which would start another attribute). */
const PATH = /^[\u0020-\u003A\u003C-\u007E]*$/;
const SAME_SITE: ReadonlySet<unknown> = new Set([true, false, 'lax', 'strict', 'none']);
const PRIORITY: ReadonlySet<unknown> = new Set(['low', 'medium', 'high']);
/** Strings compared without case, as the `cookie` package compares them ('Lax' is 'lax'). */
const lower = (value: unknown): unknown => (typeof value === 'string' ? value.toLowerCase() : value);

/** The last name that passed the token check: a runtime serializes one name all its life. */
let checkedName = '';

type CheckedAttribute = 'domain' | 'path' | 'sameSite' | 'priority';
/** What each attribute must be, as the `cookie` package (express-session's) has it. */
const ATTRIBUTE_RULES: Record<CheckedAttribute, (value: unknown) => boolean> = {
  domain: (value) => typeof value === 'string' && DOMAIN.test(value),
  path: (value) => typeof value === 'string' && PATH.test(value),
  sameSite: (value) => SAME_SITE.has(lower(value)),
  priority: (value) => PRIORITY.has(lower(value)),
};
/** The last value of each that passed (most apps write one of each): it is not checked again. */
const lastValid: Record<CheckedAttribute, unknown> = { domain: '', path: '', sameSite: 'lax', priority: 'medium' };

/** Throws KILN_ERR_INVALID_OPTION naming the attribute (and `owner`) unless `value` may be written. */
function checkAttribute(name: CheckedAttribute, value: unknown, owner = 'Set-Cookie'): void {
  if (value === lastValid[name]) return;
  if (!ATTRIBUTE_RULES[name](value)) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: cookie.${name} ${JSON.stringify(String(value)).slice(0, 80)} is not valid (it would change the Set-Cookie header)`, { details: { option: `cookie.${name}` } });
  }
  lastValid[name] = value;
}

/**
 * Checks the attributes serializeCookie would write, up front (options at start-up),
 * naming the bad one. Options may also say `domain: ''` (none) and `sameSite: 'auto'`
 * (None over TLS, Lax otherwise), resolved before a cookie is written.
 */
export function assertCookieAttributes(owner: string, attrs: { domain?: unknown; path?: unknown; sameSite?: unknown; priority?: unknown }): void {
  if (attrs.domain !== undefined && attrs.domain !== '') checkAttribute('domain', attrs.domain, owner);
  if (attrs.path !== undefined) checkAttribute('path', attrs.path, owner);
  if (attrs.sameSite !== undefined && lower(attrs.sameSite) !== 'auto') checkAttribute('sameSite', attrs.sameSite, owner);
  if (attrs.priority !== undefined) checkAttribute('priority', attrs.priority, owner);
}
/** Expires is written in whole seconds: one formatted date serves every response of that second. */
let expiresSecond = NaN;
let expiresText = '';

function httpDate(date: Date): string {
  const second = Math.floor(date.getTime() / 1000);
  if (second !== expiresSecond) {
    expiresText = date.toUTCString();
    expiresSecond = second;
  }
  return expiresText;
}

export function serializeCookie(name: string, value: string, attrs: CookieAttributes): string {
  if (name !== checkedName) {
    if (!TOKEN.test(name)) throw new KilnError('KILN_ERR_INVALID_OPTION', `cookie name ${JSON.stringify(name)} is not a valid token`);
    checkedName = name;
  }
  // Always percent-encoded, as express-session (the `cookie` package) does: its cookies read here and ours there.
  let cookie = `${name}=${encodeURIComponent(value)}`;
  if (attrs.maxAge !== undefined) cookie += `; Max-Age=${Math.max(0, Math.round(attrs.maxAge / 1000))}`;
  // Checked as the `cookie` package checks them, whether from options or a per-request
  // cookie function (a Domain taken from the Host header must not add attributes).
  if (attrs.domain) {
    checkAttribute('domain', attrs.domain);
    cookie += `; Domain=${attrs.domain}`;
  }
  if (attrs.path) {
    checkAttribute('path', attrs.path);
    cookie += `; Path=${attrs.path}`;
  }
  if (attrs.expires) cookie += `; Expires=${httpDate(attrs.expires)}`;
  if (attrs.httpOnly) cookie += '; HttpOnly';
  if (attrs.secure) cookie += '; Secure';
  if (attrs.partitioned) cookie += '; Partitioned';
  if (attrs.priority) {
    checkAttribute('priority', attrs.priority);
    cookie += `; Priority=${attrs.priority[0]!.toUpperCase()}${attrs.priority.slice(1)}`;
  }
  if (attrs.sameSite !== undefined) checkAttribute('sameSite', attrs.sameSite);
  const sameSite = attrs.sameSite === true ? 'strict' : attrs.sameSite;
  if (sameSite) cookie += `; SameSite=${sameSite[0]!.toUpperCase()}${sameSite.slice(1)}`;
  // A UTF-8 character takes at most 3 bytes: only a long cookie needs counting.
  if (cookie.length * 3 > MAX_SET_COOKIE_BYTES && Buffer.byteLength(cookie) > MAX_SET_COOKIE_BYTES) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `Set-Cookie would be ${Buffer.byteLength(cookie)} bytes, above the ${MAX_SET_COOKIE_BYTES} browsers keep`);
  }
  return cookie;
}
