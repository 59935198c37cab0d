/**
 * Where the Redis engine keeps things. Every key of one session carries the session id
 * as its hash tag (`kiln:{id}:m`), so each session operation is one script on one slot
 * (one Redis Cluster shard). The few cluster-wide structures (expiry index, id index,
 * counters, epoch) share the `{idx}` tag and live on one shard; nothing on the request
 * path touches them except creates and timeout changes.
 */

/**
 * The keys of one session, in the order every script receives them (KEYS 1–9):
 *   m   metadata hash (v, ca, la, it, ae, p, b = bytes); its existence is the session's
 *   a   attributes hash: name → encoded value
 *   c   recent commit ids, "commitId\tversion", newest first (idempotent retries)
 *   l   lease hash: o (owner), t (token), rd (recall deadline, 0 = none); TTL = time limit
 *   w   waiting owners, first come first served
 *   wd  waiting owner → epoch ms until which it waits
 *   k   fencing token counter
 *   b   ping-pong history: lo (last owner), sc (score), at
 *   x   tombstone of a destroyed session (TTL = until it would have expired)
 */
const SESSION_KEY_SUFFIXES = ['m', 'a', 'c', 'l', 'w', 'wd', 'k', 'b', 'x'] as const;

/** The Redis type of each key of sessionKeyList, in its order (what TYPE answers). */
export const SESSION_KEY_TYPES: readonly string[] = ['hash', 'hash', 'list', 'hash', 'list', 'hash', 'string', 'hash', 'string'];

export function sessionKeyList(prefix: string, sessionId: string): string[] {
  const base = `${prefix}{${sessionId}}:`;
  return SESSION_KEY_SUFFIXES.map((suffix) => base + suffix);
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
  /** HASH owner → JSON of what that app server's client last reported (the console's cluster view). */
  clients: string;
}

export function indexKeys(prefix: string): IndexKeys {
  const base = `${prefix}{idx}:`;
  return { expiry: `${base}exp`, ids: `${base}ids`, stats: `${base}stats`, epoch: `${base}epoch`, sweeper: `${base}sweeper`, owners: `${base}owners`, clients: `${base}clients` };
}

/**
 * The set of session ids of one principal. It lives wherever the principal hashes to,
 * so it is kept outside the commit script: added to before a commit names the principal,
 * pruned after; readers drop members whose metadata names someone else.
 */
export function principalKey(prefix: string, principal: string): string {
  return `${prefix}principal:${escapeKeyPart(principal)}`;
}

/**
 * A principal is the app's text (an e-mail, a user name): `{` and `}` in it would pick
 * the hash slot, and glob characters would widen a pattern built from the key, so those
 * and `%` (to keep the mapping one-to-one) are percent-escaped. Common names are unchanged.
 */
export function escapeKeyPart(text: string): string {
  return text.replace(/[%{}*?[\]\\]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** Pub/sub channel one owner (engine) listens on: recalls, grants, revocations. */
export function ownerChannel(prefix: string, ownerId: string): string {
  return `${prefix}owner:${ownerId}`;
}

/** Pattern matching every owner's channel: the console watches lease traffic with it. */
export function ownerChannelPattern(prefix: string): string {
  return `${ownerChannel(prefix, '').replace(/[*?[\]\\]/g, '\\$&')}*`;
}

/** Pub/sub channel of expiry and destroy events. */
export function eventChannel(prefix: string): string {
  return `${prefix}events`;
}
