import { randomBytes } from 'node:crypto';
import { KilnError } from '../errors/index.js';

/** 32 random bytes = 256 bits from the CSPRNG, base64url without padding: 43 characters. */
export const SESSION_ID_BYTES = 32;
/**
 * Ids Kiln generates are 43 characters; ids from elsewhere (a custom `genid`,
 * express-session's own 32-character ids through KilnStore) are accepted from 16 to 128
 * characters of the same alphabet. Their entropy is their generator's business.
 */
const BASE_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
/** A route names the app server a load balancer should send the session to (`app-1`). */
export const ROUTE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Upper bound on a whole id, so every layer can reject longer input before parsing it. */
export const MAX_SESSION_ID_LENGTH = 128 + 1 + 64;

/**
 * A new session id: `<43 base64url chars>[.<route>]`.
 *
 * @example
 * generateSessionId()          // 'k3V…Q'
 * generateSessionId('app-2')   // 'k3V…Q.app-2'
 */
export function generateSessionId(route?: string): string {
  const base = randomBytes(SESSION_ID_BYTES).toString('base64url');
  if (route === undefined || route === '') return base;
  if (!ROUTE_PATTERN.test(route)) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `route ${JSON.stringify(route)} must match ${ROUTE_PATTERN}`);
  }
  return `${base}.${route}`;
}

/**
 * Checks a `route` option up front: `KILN_ERR_INVALID_OPTION` naming it (details.option
 * 'route'), said by `scope` (who was given it), unless it is absent, '' (none) or a route.
 */
export function checkRouteOption(route: string | undefined, scope: string): void {
  if (route === undefined || route === '' || ROUTE_PATTERN.test(route)) return;
  throw new KilnError('KILN_ERR_INVALID_OPTION', `${scope}: option "route" must be 1 to 64 letters, digits, '_' or '-' (the balancer's name for this app server; got ${JSON.stringify(route.slice(0, 80))})`, { details: { option: 'route' } });
}

export interface ParsedSessionId {
  base: string;
  route: string | undefined;
}

/** Splits an id into its random part and route; undefined when the id is not well-formed. */
export function parseSessionId(id: unknown): ParsedSessionId | undefined {
  if (typeof id !== 'string' || id.length < 16 || id.length > MAX_SESSION_ID_LENGTH) return undefined;
  const dot = id.indexOf('.');
  const base = dot < 0 ? id : id.slice(0, dot);
  if (!BASE_PATTERN.test(base)) return undefined;
  if (dot < 0) return { base, route: undefined };
  const route = id.slice(dot + 1);
  return ROUTE_PATTERN.test(route) ? { base, route } : undefined;
}

export function isValidSessionId(id: unknown): id is string {
  return parseSessionId(id) !== undefined;
}

/** Throws KILN_ERR_INVALID_ARGUMENT unless `id` is a well-formed session id. */
export function assertSessionId(id: unknown): asserts id is string {
  if (!isValidSessionId(id)) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'session id must be 16 to 128 base64url characters with an optional .route suffix');
  }
}

/** The same session under another route (what a balancer does when a node dies). */
export function withRoute(id: string, route: string | undefined): string {
  const parsed = parseSessionId(id);
  if (!parsed) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'not a session id');
  if (route === undefined || route === '') return parsed.base;
  if (!ROUTE_PATTERN.test(route)) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `route ${JSON.stringify(route)} must match ${ROUTE_PATTERN}`);
  return `${parsed.base}.${route}`;
}
