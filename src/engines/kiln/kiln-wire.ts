/**
 * What the kiln engine reads out of the server's answers beyond the message bodies
 * themselves: the limits and heartbeat a Welcome implies, a listing page. Pure. Rule
 * kept: a server that leaves a value out (an older version) gets the documented default,
 * and a malformed answer is a KILN_ERR_PROTOCOL, never a wrong value passed on.
 */
import { KilnError } from '../../errors/index.js';
import { metaFromWire, record } from '../../protocol/messages.js';
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
