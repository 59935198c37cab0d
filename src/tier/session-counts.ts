/**
 * The counts the tier keeps so that a cap check or a namespace's size costs a map read
 * whatever the number of sessions: the caps on sessions (maxSessions,
 * maxSessionsPerPrincipal) and the sizes of the key groups (the kiln server's
 * namespaces). Pure.
 */
import { KilnError } from '../errors/index.js';

/** What the caps read of the session table (SessionTable has it). */
export interface SessionCountView {
  readonly size: number;
  get(sessionId: string): { principal: string | null } | undefined;
  principalCount(principal: string): number;
}

/** The part of a commit the caps look at. */
export interface CappedCommit {
  sessionId: string;
  baseVersion: number;
  principal?: string | null;
}

export class SessionCaps {
  /** Creates and logins refused. */
  refusals = 0;

  constructor(
    private readonly maxSessions: number,
    private readonly maxSessionsPerPrincipal: number,
  ) {}

  /**
   * Checked before anything changes. A principal over its cap refuses the new login (the
   * commit that names it), never evicts an older session: the user's other devices keep
   * working and the refusal is the app's to show.
   */
  check(req: CappedCommit, sessions: SessionCountView): void {
    if (this.maxSessions === 0 && this.maxSessionsPerPrincipal === 0) return;
    const current = sessions.get(req.sessionId);
    if (this.maxSessions > 0 && req.baseVersion === 0 && !current && sessions.size >= this.maxSessions) {
      this.refusals++;
      throw new KilnError('KILN_ERR_SESSION_LIMIT', `the server holds its limit of ${this.maxSessions} sessions`, { details: { limit: this.maxSessions } });
    }
    const p = req.principal;
    if (this.maxSessionsPerPrincipal > 0 && typeof p === 'string' && p !== (current?.principal ?? null) && sessions.principalCount(p) >= this.maxSessionsPerPrincipal) {
      this.refusals++;
      throw new KilnError('KILN_ERR_PRINCIPAL_SESSION_LIMIT', `the principal has its limit of ${this.maxSessionsPerPrincipal} sessions`, { details: { limit: this.maxSessionsPerPrincipal } });
    }
  }
}

/** Sessions per key group; without a keyGroup function nothing is kept and every session is in every group. */
export class GroupSizes {
  private readonly sizes = new Map<string, number>();

  constructor(private readonly keyGroup: ((key: string) => string) | undefined) {}

  count(key: string, delta: number): void {
    if (!this.keyGroup) return;
    const group = this.keyGroup(key);
    const n = (this.sizes.get(group) ?? 0) + delta;
    if (n > 0) this.sizes.set(group, n);
    else this.sizes.delete(group);
  }

  /** The group's size; `total` (all sessions) when there is no keyGroup. */
  size(group: string, total: number): number {
    return this.keyGroup ? (this.sizes.get(group) ?? 0) : total;
  }
}
