/**
 * What the kiln engine reads out of the server's answers beyond the message bodies
 * themselves: the limits and heartbeat a Welcome implies, a listing page. Pure. Rule
 * kept: a server that leaves a value out (an older version) gets the documented default,
 * and a malformed answer is a KILN_ERR_PROTOCOL, never a wrong value passed on.
 */
import { KilnError } from '../../errors/index.js';
import { metaFromWire, PRINCIPAL_WALK_STEPS_MIN, record, sessionId, uint } from '../../protocol/messages.js';
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

/** Where the next page of a principal's sessions starts, as the server gave it (handed back unchanged). */
export interface PrincipalPageCursor {
  id: string;
  join: number;
}

/**
 * Reads the pages of a FindPrincipal, checking that they end: a page with sessions goes
 * on from an earlier login than the last one (its cursor's join is lower); an empty page
 * with a cursor is a walk the server cut (same join); and there are never more sessions
 * than the first page said the principal had (later logins are not met). A server
 * answering otherwise gets KILN_ERR_PROTOCOL, so it cannot keep the client reading, or
 * gathering, without end. Empty pages in a row beyond what the principal's sessions
 * (the most any page reported) need at PRINCIPAL_WALK_STEPS_MIN a page set
 * `tooManyEmptyPages`: a server could send them forever, and a real one under heavy
 * churn (the walk's resting point logging out, logins past count) can too, so the
 * caller reads again rather than calling the server broken.
 */
export class PrincipalPageReader {
  readonly sessions: SessionMeta[] = [];
  tooManyEmptyPages = false;
  private firstTotal = -1;
  private mostTotal = 0;
  private previous: PrincipalPageCursor | null = null;
  private emptyInARow = 0;

  /** Takes one answer; the cursor of the next page, or null after the last. */
  page(body: unknown): PrincipalPageCursor | null {
    const page = record(body, 'principal page');
    const sessions = page['sessions'];
    if (!Array.isArray(sessions)) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed principal listing');
    const total = uint(page, 'total');
    if (this.firstTotal < 0) this.firstTotal = total;
    this.mostTotal = Math.max(this.mostTotal, total);
    for (const meta of sessions) this.sessions.push(metaFromWire(meta));
    if (this.sessions.length > this.firstTotal) throw new KilnError('KILN_ERR_PROTOCOL', `malformed principal listing: more sessions than the ${this.firstTotal} the principal had`);
    if (page['next'] === null || page['next'] === undefined) return null;
    const cursor = record(page['next'], 'principal page cursor');
    const next = { id: sessionId(cursor, 'id'), join: uint(cursor, 'join') };
    const previous = this.previous;
    if (sessions.length > 0) {
      if (previous !== null && next.join >= previous.join) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed principal listing: a page that does not go on to earlier logins');
      this.emptyInARow = 0;
    } else {
      if (previous === null || next.join !== previous.join) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed principal listing: an empty page that is not a walk going on');
      if (++this.emptyInARow > Math.ceil((2 * this.mostTotal) / PRINCIPAL_WALK_STEPS_MIN) + 8) this.tooManyEmptyPages = true;
    }
    this.previous = next;
    return next;
  }
}
