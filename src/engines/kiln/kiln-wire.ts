/**
 * What the kiln engine reads out of the server's answers beyond the message bodies
 * themselves: the limits and heartbeat a Welcome implies, a listing page. Pure. Rule
 * kept: a server that leaves a value out (an older version) gets the documented default,
 * and a malformed answer is a KILN_ERR_PROTOCOL, never a wrong value passed on.
 */
import { KilnError } from '../../errors/index.js';
import { metaFromWire, record, sessionId, uint } from '../../protocol/messages.js';
import type { SessionMeta } from '../../session/model.js';
import type { EngineLimits, ListPage } from '../engine.js';

/** The session limits a Welcome announces, with the defaults for those it leaves out. */
export function limitsFromWelcome(l: Record<string, number> | undefined): EngineLimits {
  const w = l ?? {};
  return {
    maxAttributeBytes: w['maxAttributeBytes'] ?? 1 << 20,
    maxSessionBytes: w['maxSessionBytes'] ?? 4 << 20,
    maxAttributes: w['maxAttributes'] ?? 1000,
    maxAttributeNameLength: w['maxAttributeNameLength'] ?? 256,
    maxPrincipalLength: w['maxPrincipalLength'] ?? 256,
    touchGraceMs: w['touchGraceMs'],
  };
}

/**
 * How often to ping: the option when given, else a third of the server's idle timeout
 * (30 s assumed when it has none), kept between 100 ms and 10 s, so the server never
 * drops a connection that is only quiet.
 */
export function pingIntervalFor(l: Record<string, number> | undefined, option: number | undefined): number {
  const idle = (l ?? {})['idleConnectionTimeoutMs'] ?? 60_000;
  return option ?? Math.max(100, Math.min(10_000, Math.floor((idle || 30_000) / 3)));
}

/** A List answer as a ListPage. */
export function listPageFromWire(body: unknown): ListPage {
  const page = record(body, 'page');
  const sessions = page['sessions'];
  if (!Array.isArray(sessions)) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed session listing');
  return { sessions: sessions.map(metaFromWire), next: typeof page['next'] === 'string' ? page['next'] : null, total: Number(page['total']) };
}

/** Where the next page of a principal's sessions starts, as the server gave it (opaque to the client but for its checks). */
export interface PrincipalPageCursor {
  id: string;
  join: number;
}

/**
 * A FindPrincipal answer. Pages go from newer logins to older ones, so each page's
 * cursor joined before the last one's: a server answering otherwise could keep the
 * client reading forever, and gets KILN_ERR_PROTOCOL.
 */
export function principalPageFromWire(body: unknown, previous: PrincipalPageCursor | null): { sessions: SessionMeta[]; next: PrincipalPageCursor | null } {
  const page = record(body, 'principal page');
  const sessions = page['sessions'];
  if (!Array.isArray(sessions)) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed principal listing');
  let next: PrincipalPageCursor | null = null;
  if (page['next'] !== null && page['next'] !== undefined) {
    const cursor = record(page['next'], 'principal page cursor');
    next = { id: sessionId(cursor, 'id'), join: uint(cursor, 'join') };
    if (sessions.length === 0 || (previous !== null && next.join >= previous.join)) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed principal listing: a page that does not advance');
  }
  return { sessions: sessions.map(metaFromWire), next };
}
