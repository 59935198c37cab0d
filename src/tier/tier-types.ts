/**
 * The tier's public shapes: what an owner, a storage hook and the options look like, and
 * what stats and lease activity report. They live apart from the Tier so that the parts
 * the Tier is built from can name them without importing the Tier (no cycles).
 */
import type { SessionLimits } from '../session/limits.js';
import type { OwnerId } from './lease-table.js';
import type { TierRecord } from './session-table.js';

export interface TierOwner {
  id: OwnerId;
  /** Another owner wants this session: finish, flush, then release(sessionId, token). */
  onRecall(sessionId: string, token: number): void;
  /** The lease is gone without a release (deadline overrun, destroyed, expired): drop the cached copy. */
  onRevoke(sessionId: string, token: number, reason: string): void;
}

/** Where the tier's records go to survive a restart. */
export interface TierStorage {
  /** Resolves once the record is as durable as the fsync policy promises. */
  append(record: TierRecord): Promise<void>;
  /** Why no commit should be applied now (the disk is behind), or undefined. */
  refusal?(): string | undefined;
  /** Resolves once everything appended so far is durable (the policy's promise), or rejects as its write did. */
  settled?(): Promise<void>;
}

export interface TierOptions {
  limits?: Partial<SessionLimits>;
  recallTimeoutMs?: number;
  pingPongThreshold?: number;
  pingPongHalfLifeMs?: number;
  /** How often expiry runs; also the resolution of expiry. */
  expirySweepMs?: number;
  /** Slack given to a lease holder's batched touches before its session is expired. */
  touchGraceMs?: number;
  /** Longest a tombstone is kept for a session that had no expiry. */
  maxTombstoneMs?: number;
  storage?: TierStorage;
  /** Sessions the tier holds at most; a create beyond it fails with KILN_ERR_SESSION_LIMIT. 0 = no limit. */
  maxSessions?: number;
  /** Sessions one principal may have; a commit naming it on one more fails with KILN_ERR_PRINCIPAL_SESSION_LIMIT. 0 = no limit. */
  maxSessionsPerPrincipal?: number;
  /**
   * Leases one owner (a kiln server connection) may hold; an acquire of one more fails with
   * KILN_ERR_LEASE_LIMIT. A lease needs no session (new ones are leased before their first
   * commit), so without it one client could lease random ids until the server ran out of
   * memory. 0 = no limit.
   */
  maxLeasesPerOwner?: number;
  /**
   * Sorts session keys into groups whose sizes the tier keeps (groupSize): the kiln
   * server's namespaces. The tier gives the groups no other meaning.
   */
  keyGroup?: (key: string) => string;
  clock?: () => number;
  epoch?: string;
  firstToken?: number;
}

export interface TierStats {
  epoch: string;
  sessions: number;
  sessionBytes: number;
  tombstones: number;
  leases: number;
  leaseWaiters: number;
  owners: number;
  counters: TierCounters;
}

export interface TierCounters {
  created: number;
  commits: number;
  commitBytes: number;
  duplicateCommits: number;
  rejectedCommits: number;
  touches: number;
  expired: number;
  destroyed: number;
  leaseGrants: number;
  leaseRecalls: number;
  leaseHandovers: number;
  leaseRevocations: number;
  pingPongGrants: number;
  /** Creates and logins refused by maxSessions or maxSessionsPerPrincipal. */
  sessionLimitRefusals: number;
  /** Acquires refused by maxLeasesPerOwner. */
  leaseLimitRefusals: number;
}

export interface LeaseActivity {
  type: 'recall' | 'revoke';
  sessionId: string;
  /** The holder asked to give the session back (recall) or that lost it (revoke). */
  owner: OwnerId;
  at: number;
  reason?: string;
}
