/**
 * Where the Redis engine keeps things. Every key of one session carries the session id
 * as its hash tag (`kiln:{id}:m`), so each session operation is one script on one slot
 * (one Redis Cluster shard). The few cluster-wide structures (expiry index, id index,
 * counters, epoch) share the `{idx}` tag and live on one shard; nothing on the request
 * path touches them except creates and timeout changes.
 */

export interface SessionKeys {
  /** Metadata hash: v, ca, la, it, ae, p, b (bytes). Its existence is the session's. */
  meta: string;
  /** Attribute hash: name → encoded value. */
  attrs: string;
  /** Recent commit ids, "commitId\tversion", newest first (idempotent retries). */
  commits: string;
  /** Lease hash: o (owner), t (token), rd (recall deadline, 0 = none). TTL = lease time limit. */
  lease: string;
  /** Waiting owners, first come first served. */
  waiters: string;
  /** Waiting owner → epoch ms until which it waits. */
  waitDeadlines: string;
  /** Fencing token counter. */
  tokens: string;
  /** Ping-pong history: lo (last owner), sc (score), at. */
  bounce: string;
  /** Tombstone of a destroyed session (TTL = until it would have expired). */
  tombstone: string;
}

/** Key order every session script uses (KEYS[1..9]). */
export function sessionKeys(prefix: string, sessionId: string): SessionKeys {
  const base = `${prefix}{${sessionId}}:`;
  return {
    meta: `${base}m`,
    attrs: `${base}a`,
    commits: `${base}c`,
    lease: `${base}l`,
    waiters: `${base}w`,
    waitDeadlines: `${base}wd`,
    tokens: `${base}k`,
    bounce: `${base}b`,
    tombstone: `${base}x`,
  };
}

export function sessionKeyList(prefix: string, sessionId: string): string[] {
  const k = sessionKeys(prefix, sessionId);
  return [k.meta, k.attrs, k.commits, k.lease, k.waiters, k.waitDeadlines, k.tokens, k.bounce, k.tombstone];
}

export interface IndexKeys {
  /** ZSET id → earliest time the session may expire (the sweep re-checks the real deadline). */
  expiry: string;
  /** ZSET of every session id, all scores 0: ordered paging with ZRANGEBYLEX. */
  ids: string;
  /** HASH of cluster-wide counters, flushed by every engine about once a second. */
  stats: string;
  /** The tier's epoch: written once, survives failovers (it is replicated like the data). */
  epoch: string;
  /** Who sweeps expiry right now (SET NX PX), so processes take turns instead of racing. */
  sweeper: string;
  /** ZSET owner → last heartbeat: live processes for stats and the console. */
  owners: string;
}

export function indexKeys(prefix: string): IndexKeys {
  const base = `${prefix}{idx}:`;
  return { expiry: `${base}exp`, ids: `${base}ids`, stats: `${base}stats`, epoch: `${base}epoch`, sweeper: `${base}sweeper`, owners: `${base}owners` };
}

/**
 * The set of session ids of one principal. It lives wherever the principal hashes to,
 * so it is kept outside the commit script: added to before a commit names the principal,
 * pruned after; readers drop members whose metadata names someone else.
 */
export function principalKey(prefix: string, principal: string): string {
  return `${prefix}principal:${principal}`;
}

/** Pub/sub channel one owner (engine) listens on: recalls, grants, revocations. */
export function ownerChannel(prefix: string, ownerId: string): string {
  return `${prefix}owner:${ownerId}`;
}

/** Pub/sub channel of expiry and destroy events. */
export function eventChannel(prefix: string): string {
  return `${prefix}events`;
}
