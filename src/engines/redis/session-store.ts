/**
 * A session's data on Redis: load, commit, touch, release, destroy, and the indexes kept
 * beside the scripts (ids for listing, expiry for the sweep, principal sets for "log out
 * everywhere"). The scripts hold every lease rule; what this part keeps is the order
 * around them: a session joins its principal's set *before* a commit names the
 * principal (so destroyByPrincipal can never miss it, the set living on another shard),
 * and an index write that fails is repaired by readers (an entry met out of place twice,
 * a minute apart, is dropped) or by Redis's own TTL on the keys, never by failing an
 * applied commit.
 */
import { isKilnError, KilnError } from '../../errors/index.js';
import { checkAttributeName, checkDeltaNames, checkPrincipal, type SessionLimits } from '../../session/limits.js';
import { deltaBytes, type CommitAck, type CommitRequest, type SessionMeta, type SessionSnapshot, type TouchItem } from '../../session/model.js';
import { assertSessionId, isValidSessionId } from '../../session/id.js';
import { settlePooled } from '../../util/slices.js';
import { MAX_LIST_LIMIT, type CallOptions, type ListOptions, type ListPage } from '../engine.js';
import type { Count } from './counters.js';
import { principalKey, type IndexKeys } from './keys.js';
import type { Ownership } from './ownership.js';
import { metaFrom, num, settleBy, snapshotFrom, text, textOrNull, TRANSIENT_CODES, type Reply } from './replies.js';
import { unconfirmedReplyOf, type RunScriptOptions } from './script-runner.js';
import { SCRIPTS, type RedisScript } from './scripts.js';

/** The commit script's arguments after the common ones (see COMMIT in scripts.ts). Names and the principal are checked here, before anything is sent. */
export function commitArgs(request: CommitRequest, limits: SessionLimits, keySlackMs: number): (string | Buffer)[] {
  checkDeltaNames(request);
  const args: (string | Buffer)[] = [
    String(request.token),
    request.commitId,
    String(request.baseVersion),
    String(request.lastAccessedAt),
    request.principal === undefined ? 'u' : request.principal === null ? 'n' : 's',
    request.principal ?? '',
    request.idleTimeoutMs === undefined ? '' : String(request.idleTimeoutMs),
    request.absoluteExpiresAt === undefined ? '' : String(request.absoluteExpiresAt),
    request.release ? '1' : '0',
    String(limits.maxAttributeBytes),
    String(limits.maxSessionBytes),
    String(limits.maxAttributes),
    String(keySlackMs),
    String(request.set.length),
  ];
  for (const [name, value] of request.set) {
    checkAttributeName(name, limits);
    args.push(name, Buffer.from(value.buffer, value.byteOffset, value.byteLength), String(name.length));
  }
  args.push(String(request.del.length));
  for (const name of request.del) args.push(name, String(name.length));
  const patches = request.patch ?? [];
  args.push(String(patches.length));
  for (const p of patches) {
    checkAttributeName(p.name, limits);
    args.push(p.name, String(p.at), String(p.cut), Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength), String(p.baseLength), String(p.name.length));
  }
  return args;
}

/**
 * The commit script's reply: a duplicate (already applied at `version`; the session's
 * deadline and principal now, `expiresAt` undefined when it is gone, and the principal
 * that commit replaced), or what the commit changed.
 */
export type CommitReply =
  | { duplicate: true; version: number; expiresAt: number | undefined; principal: string | null; replacedPrincipal: string | null }
  | { duplicate: false; version: number; oldPrincipal: string | null; created: boolean; expiresAt: number | undefined; bytes: number };

/** What a commit the script applied (not a duplicate) did. */
type AppliedCommit = Extract<CommitReply, { duplicate: false }>;

export function decodeCommitReply(reply: Reply[]): CommitReply {
  if (text(reply[0]) === 'D') {
    return { duplicate: true, version: num(reply[1]), expiresAt: reply[2] === null ? undefined : num(reply[2]), principal: textOrNull(reply[3]), replacedPrincipal: textOrNull(reply[4]) };
  }
  return { duplicate: false, version: num(reply[1]), oldPrincipal: textOrNull(reply[2]), created: num(reply[3]) === 1, expiresAt: reply[4] === null ? undefined : num(reply[4]), bytes: num(reply[5]) };
}

export interface SessionStoreOptions {
  ownerId: string;
  prefix: string;
  idx: Pick<IndexKeys, 'ids' | 'expiry'>;
  limits: SessionLimits;
  keySlackMs: number;
  touchGraceMs: number;
  maxTombstoneMs: number;
  /**
   * Shortest a tombstone lives: past the longest a destroy's WAIT and index clean-up can
   * take (minTombstoneMsOf). While it lives no session is made under the id, so the
   * clean-up of a destroy confirmed late never takes out a new session's entries.
   */
  minTombstoneMs: number;
  runScript: (script: RedisScript, sessionId: string, owner: string, extra: (string | Buffer)[], options?: RunScriptOptions) => Promise<unknown>;
  command: (firstKey: string, args: string[], deadline?: number) => Promise<unknown>;
  /** A write that must be on replicas before the commit that needs it (ScriptRunner.replicatedWrite). */
  replicatedWrite: (firstKey: string, command: string, member: string, deadline?: number) => Promise<void>;
  count: Count;
  ownership: Pick<Ownership, 'releasing' | 'released' | 'tokenOf' | 'drop' | 'revokeLocally'>;
  observeCommit: (ms: number) => void;
  /** The transport's connection generation (RedisTransport.generation): an SSCAN cursor is good only on the server that gave it. */
  generation: () => number;
  /** Which connection serves a key (RedisTransport.connectionOf; a cluster node), '' where there is one. */
  connectionOf: (firstKey: string) => string;
}

/** Ids of a principal's set read, and destroyed, together (SSCAN's COUNT, and a hard cut: COUNT is a hint). */
const PRINCIPAL_SLICE = 256;
/** Passes of "log out everywhere" over a principal's set while members remain (see destroyByPrincipal). */
const DESTROY_PASSES = 3;
/** How long an entry of a principal's set must be met out of place before a reader takes it out: past a commit's deadline (10 s by default). */
const STALE_GRACE_MS = 60_000;
/** A note of an entry met out of place this old is a first meeting again (it may be another login's entry by now). */
const NOTE_MAX_AGE_MS = 10 * 60_000;
/** Notes of entries met out of place kept at most; past it, none is added until some are taken out. */
const MAX_OUT_OF_PLACE = 10_000;
/** Sessions a console page peeks at a time when it needs fewer (a page of 1 among many entries out of place). */
const PAGE_PEEKS = 32;
/** SSCANs one console page of a principal's sessions makes at most (a page of slices gone since is cut short). */
const PAGE_SCANS = 8;
/** Touch scripts in flight at once (see settlePooled). */
const TOUCH_SLICE = 256;
/** ZRANGEBYLEX rounds one page of list() makes at most: past them (entries of sessions gone) the page ends short, with a `next`. */
const LIST_ROUNDS = 8;
/** Scans of a principal's set begun again after the connection changed, before the call fails. */
const MAX_SCAN_RESTARTS = 5;

/** One slice of a principal's set: its sessions that name the principal, and those whose metadata is damaged. */
interface PrincipalSlice {
  metas: SessionMeta[];
  damaged: string[];
}

/**
 * The shortest life of a tombstone: longer than a destroy can take from its script to its
 * index clean-up. Its WAIT may queue behind the WAIT already out on its connection (each
 * up to the operation timeout plus the replica timeout), then the clean-up is sent (up
 * to the operation timeout). At least a second, as before.
 */
export function minTombstoneMsOf(s: { operationTimeoutMs: number; replicaTimeoutMs: number }): number {
  return Math.max(1000, 2 * (s.operationTimeoutMs + s.replicaTimeoutMs) + s.operationTimeoutMs);
}

export class SessionStore {
  /** Principal-set entries a reader found naming no session of that principal, and when first (see sessionsStillOf). */
  private readonly outOfPlaceSince = new Map<string, number>();

  constructor(private readonly o: SessionStoreOptions) {}

  async release(sessionId: string, token: number, lastAccessedAt?: number): Promise<void> {
    this.o.ownership.releasing(sessionId, token);
    const args = lastAccessedAt === undefined ? [String(token)] : [String(token), String(lastAccessedAt), String(this.o.keySlackMs)];
    const reply = await this.o.runScript(SCRIPTS.release, sessionId, this.o.ownerId, args);
    if (Array.isArray(reply) && num(reply[2] as Reply) === 1) this.o.count('touches', 1);
  }

  async load(sessionId: string, token: number, options?: CallOptions): Promise<SessionSnapshot | null> {
    const reply = await this.o.runScript(SCRIPTS.load, sessionId, this.o.ownerId, [String(token)], { deadline: options?.deadline });
    return snapshotFrom(sessionId, reply);
  }

  async commit(request: CommitRequest, options?: CallOptions): Promise<CommitAck> {
    const { o } = this;
    const { idx, command, count } = o;
    const deadline = options?.deadline;
    // The script checks sizes and counts; names and the principal are checked here,
    // before anything is sent.
    let args: (string | Buffer)[];
    try {
      checkPrincipal(request.principal, o.limits);
      assertSessionId(request.sessionId);
      args = commitArgs(request, o.limits, o.keySlackMs);
    } catch (err) {
      count('rejectedCommits'); // refused here as the kiln server refuses it: counted alike
      throw err;
    }
    // The principal index lives on another shard: a session is added to it before a
    // commit names the principal, so "log out everywhere" can never miss it.
    // On a Cluster that shard's replicas confirm it too (see ScriptRunner.replicatedWrite).
    if (typeof request.principal === 'string') await o.replicatedWrite(principalKey(o.prefix, request.principal), 'SADD', request.sessionId, deadline);
    let reply: Reply[];
    const started = performance.now();
    try {
      reply = (await o.runScript(SCRIPTS.commit, request.sessionId, o.ownerId, args, { waitForReplicas: true, deadline })) as Reply[];
      o.observeCommit(performance.now() - started);
    } catch (err) {
      if (isKilnError(err) && !TRANSIENT_CODES.has(err.code)) count('rejectedCommits');
      const applied = unconfirmedReplyOf(err);
      if (Array.isArray(applied)) await this.settleUnconfirmed(request, decodeCommitReply(applied as Reply[]), deadline);
      throw err;
    }
    if (request.release) o.ownership.released(request.sessionId, request.token);
    const done = decodeCommitReply(reply);
    if (done.duplicate) {
      count('duplicateCommits');
      // The first attempt's reply was lost, and the index writes that follow a reply with
      // it: filed again here, each write idempotent (nothing says whether they were made).
      await settleBy(this.refile(request.sessionId, done).catch(() => undefined), deadline);
      return { version: done.version, duplicate: true };
    }
    this.countApplied(request, done);
    const index: Promise<unknown>[] = [];
    if (done.created) {
      index.push(command(idx.ids, ['ZADD', idx.ids, '0', request.sessionId]));
    }
    if (done.expiresAt !== undefined) {
      index.push(done.expiresAt >= 0 ? command(idx.expiry, ['ZADD', idx.expiry, String(done.expiresAt), request.sessionId]) : command(idx.expiry, ['ZREM', idx.expiry, request.sessionId]));
    }
    if (done.oldPrincipal !== null && request.principal !== undefined && request.principal !== done.oldPrincipal) {
      index.push(command(principalKey(o.prefix, done.oldPrincipal), ['SREM', principalKey(o.prefix, done.oldPrincipal), request.sessionId]));
    }
    // The commit is applied and acknowledged either way; a missed index entry is repaired
    // by readers (entries out of place) or by Redis's own TTL on the keys (a missed expiry entry).
    // So the request waits for the index writes only while its time lasts.
    if (index.length > 0) await settleBy(Promise.all(index).catch(() => undefined), deadline);
    return { version: done.version, duplicate: false };
  }

  private countApplied(request: CommitRequest, done: AppliedCommit): void {
    const { count } = this.o;
    count('commits');
    count('sessionBytes', done.bytes);
    count('commitBytes', deltaBytes(request));
    if (done.created) count('created');
  }

  /**
   * A commit that ran on the master and was then refused (its WAIT short of replicas, its
   * connection lost after the reply). It is counted as the master did it (a retry comes
   * back a duplicate, and counts nothing more), and filed in the indexes as far as adding
   * goes: a session it created is listed, and its deadline entry may only move earlier. A
   * failover that loses the commit leaves an entry naming a session that is gone, or due
   * earlier than it is, which readers and the sweep put right; nothing is taken out (a
   * principal it replaced keeps its entry), since taking out on so unsure a ground could
   * let "log out everywhere" miss a session the new master still names. Without this, a
   * commit that is never retried (the request failed, the next one commits anew) left a
   * created session out of the listing and the sweep.
   */
  private async settleUnconfirmed(request: CommitRequest, done: CommitReply, deadline: number | undefined): Promise<void> {
    if (done.duplicate) return;
    this.countApplied(request, done);
    const { idx, command } = this.o;
    const id = request.sessionId;
    const writes: Promise<unknown>[] = [];
    if (done.created) writes.push(command(idx.ids, ['ZADD', idx.ids, '0', id]));
    if (done.expiresAt !== undefined && done.expiresAt >= 0) writes.push(command(idx.expiry, ['ZADD', idx.expiry, 'LT', String(done.expiresAt), id]));
    if (writes.length > 0) await settleBy(Promise.all(writes).catch(() => undefined), deadline);
  }

  /**
   * The index entries of a session whose commit was applied by an earlier attempt. The
   * expiry entry is only ever moved earlier (ZADD LT): the index says when to look, and
   * a later commit may have filed an earlier deadline since. The principal that commit
   * replaced is left only if the session does not name it again by now.
   */
  private async refile(sessionId: string, done: { expiresAt: number | undefined; principal: string | null; replacedPrincipal: string | null }): Promise<void> {
    const { idx, command, prefix } = this.o;
    if (done.expiresAt === undefined) return; // gone since: its destroy or expiry drops the entries
    const writes = [command(idx.ids, ['ZADD', idx.ids, '0', sessionId])];
    if (done.expiresAt >= 0) writes.push(command(idx.expiry, ['ZADD', idx.expiry, 'LT', String(done.expiresAt), sessionId]));
    if (done.replacedPrincipal !== null && done.replacedPrincipal !== done.principal) {
      const key = principalKey(prefix, done.replacedPrincipal);
      writes.push(command(key, ['SREM', key, sessionId]));
    }
    await Promise.all(writes);
  }

  async touch(items: readonly TouchItem[]): Promise<void> {
    for (const item of items) assertSessionId(item.sessionId);
    const outcomes = await settlePooled(items, TOUCH_SLICE, (item) => this.o.runScript(SCRIPTS.touch, item.sessionId, this.o.ownerId, [String(item.token), String(item.at), String(this.o.keySlackMs)]));
    const applied = outcomes.filter((o) => o?.status === 'fulfilled' && num(o.value) === 1).length;
    if (applied > 0) this.o.count('touches', applied);
  }

  /** Destroys the session, telling every holder but `except` ('' for nobody excepted). */
  async destroyAs(except: string, sessionId: string, reason: string, deadline?: number): Promise<boolean> {
    const { o } = this;
    // Confirmed by replicas like a commit: a destroy acknowledged before a replica had it
    // is undone by a failover, and a logged-out session comes back.
    let reply: Reply[];
    try {
      reply = (await o.runScript(SCRIPTS.destroy, sessionId, except, [reason, String(o.touchGraceMs), String(o.maxTombstoneMs), String(o.minTombstoneMs)], { deadline, waitForReplicas: true })) as Reply[];
    } catch (err) {
      // Refused after it ran (its WAIT short of replicas, or the connection lost after its
      // reply): the master has deleted the data, but a failover may yet lose that. Nothing
      // is taken out of the indexes on so unsure a ground (a principal's set that lost a
      // session the new master still has would let "log out everywhere" miss it): a
      // destroy again, once confirmed, finds the tombstone and finishes (below), and
      // entries left meanwhile are cleaned as they are met. Our own lease is let go, and
      // the destroy is counted as the master did it (the retry that confirms it counts
      // nothing: see below).
      const applied = unconfirmedReplyOf(err);
      if (Array.isArray(applied) && num((applied as Reply[])[0]) === 1) {
        this.countDestroy(reason, applied as Reply[]);
        if (textOrNull((applied as Reply[])[3]) === o.ownerId) this.letOwnLeaseGo(except, sessionId);
      }
      throw err;
    }
    const outcome = num(reply[0]);
    if (outcome === 2) {
      // Destroyed before, and this run's WAIT confirmed the replicas have it: what an
      // unconfirmed run left in the indexes goes now. Not counted: the run that deleted
      // the data counted it, confirmed or not.
      await settleBy(this.dropFromIndexes(sessionId, textOrNull(reply[1])), deadline);
      return false;
    }
    if (outcome !== 1) return false;
    this.countDestroy(reason, reply);
    // Our own lease ends with the session: drop it now rather than when the message comes.
    if (textOrNull(reply[3]) === o.ownerId) this.letOwnLeaseGo(except, sessionId);
    await settleBy(this.dropFromIndexes(sessionId, textOrNull(reply[1])), deadline);
    return true;
  }

  /** A destroy's reply {1, principal, bytes freed, …}: counted once, by the run that deleted the data. */
  private countDestroy(reason: string, reply: Reply[]): void {
    this.o.count(reason === 'expired' ? 'expired' : 'destroyed');
    this.o.count('sessionBytes', -num(reply[2]));
  }

  private letOwnLeaseGo(except: string, sessionId: string): void {
    const { o } = this;
    const token = o.ownership.tokenOf(sessionId);
    if (except === o.ownerId) o.ownership.drop(sessionId);
    else if (token !== undefined) o.ownership.revokeLocally(sessionId, token, 'destroyed');
  }

  readonly dropFromIndexes = async (sessionId: string, principal: string | null): Promise<void> => {
    const { idx, command, prefix } = this.o;
    const ops = [command(idx.ids, ['ZREM', idx.ids, sessionId]), command(idx.expiry, ['ZREM', idx.expiry, sessionId])];
    if (principal !== null) ops.push(command(principalKey(prefix, principal), ['SREM', principalKey(prefix, principal), sessionId]));
    await Promise.all(ops).catch(() => undefined);
  };

  /**
   * Every session of a principal. The set is read a slice at a time (SSCAN), so Redis
   * never runs one O(n) command for a principal of 100,000 sessions and at most a slice
   * of sessions is read at once (the answer itself still holds them all).
   */
  async findByPrincipal(principal: string): Promise<SessionMeta[]> {
    const found = new Map<string, SessionMeta>();
    await this.forEachPrincipalSlice(principal, async ({ metas }) => {
      for (const meta of metas) found.set(meta.id, meta); // SSCAN may name an id twice
    });
    return [...found.values()];
  }

  /**
   * Calls `each` with the sessions of one slice of a principal's set that still name it
   * (and those whose metadata is damaged: see sessionsStillOf), and answers how many
   * entries it met that did not and left in the set (see
   * sessionsStillOf; counted once each, up to MAX_OUT_OF_PLACE). SSCAN gives
   * every id in the set from start to end at least once, and may give one twice. Its
   * cursor is good only on the server that gave it: a reconnection, a master change or
   * the key's slot moving to another master starts the scan again from the beginning.
   */
  private async forEachPrincipalSlice(principal: string, each: (slice: PrincipalSlice) => Promise<void>): Promise<number> {
    const key = principalKey(this.o.prefix, principal);
    let cursor = '0';
    let server = this.serverOf(key);
    // The entries met out of place and left in the set (each once, however often SSCAN names it).
    let kept = new Set<string>();
    for (let restarts = 0; ; ) {
      const { following, ids } = await this.scanSlice(key, cursor);
      if (this.serverOf(key) !== server) {
        // Bounded: a connection that keeps changing fails the call (retryable) rather than scanning for good.
        if (++restarts > MAX_SCAN_RESTARTS) throw new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `the connection to Redis changed ${restarts} times while a principal's sessions were read; try again`);
        server = this.serverOf(key);
        cursor = '0';
        kept = new Set();
        continue;
      }
      cursor = following;
      // COUNT is a hint: a set Redis keeps compact (set-max-listpack-entries raised) comes whole.
      for (let at = 0; at < ids.length; at += PRINCIPAL_SLICE) {
        const theirs = await this.sessionsStillOf(principal, key, ids.slice(at, at + PRINCIPAL_SLICE), kept);
        if (theirs.metas.length > 0 || theirs.damaged.length > 0) await each(theirs);
      }
      if (cursor === '0') return kept.size;
    }
  }

  /** One SSCAN of a principal's set: the ids it gives, and the cursor that follows ('0' at the end). */
  private async scanSlice(key: string, cursor: string): Promise<{ following: string; ids: string[] }> {
    const reply = (await this.o.command(key, ['SSCAN', key, cursor, 'COUNT', String(PRINCIPAL_SLICE)])) as Reply[];
    return { following: text(reply[0]), ids: ((reply[1] ?? []) as Reply[]).map(text) };
  }

  /** Which server answers for `key` now: the connection's generation, and on a cluster the node of the key's slot. */
  private serverOf(key: string): string {
    return `${this.o.generation()}/${this.o.connectionOf(key)}`;
  }

  /**
   * The sessions of `ids` that still name the principal, in the order of `ids`. An entry
   * that does not (no session, or one of another principal) stays in the set the first
   * time this process meets it: a login adds its session to the set *before* its commit,
   * which may not have run yet, and a reader taking the entry out then would lose the
   * session from the index for good (a later "log out everywhere" would miss it). Met
   * out of place again STALE_GRACE_MS later, it is taken out: the commit that put it
   * there is over. A note older than NOTE_MAX_AGE_MS is a first meeting again. At
   * MAX_OUT_OF_PLACE notes, the expired ones go first; a young one is never evicted
   * (the oldest, met first by every scan, would never get their second meeting), so
   * while all are young no new one is made. `kept` gathers the entries met out of place
   * and left in the set.
   *
   * Each entry is read on its own, so one bad entry does not fail the rest (a principal's
   * logout failed for good over one): an entry that is no session id (written by
   * someone else; never a login's) is taken out at once, and a session whose metadata
   * cannot be read (KILN_ERR_STORAGE_DAMAGED) is answered apart, in `damaged`. Any
   * other failure is thrown once the slice has settled.
   */
  private async sessionsStillOf(principal: string, key: string, given: string[], kept?: Set<string>): Promise<PrincipalSlice> {
    const ids = given.filter((id) => isValidSessionId(id));
    if (ids.length < given.length) void this.o.command(key, ['SREM', key, ...given.filter((id) => !isValidSessionId(id))]).catch(() => undefined);
    const peeks = await Promise.allSettled(ids.map((id) => this.peek(id)));
    const damaged: string[] = [];
    const metas: (SessionMeta | null)[] = [];
    for (const [i, peek] of peeks.entries()) {
      if (peek.status === 'fulfilled') metas.push(peek.value);
      else if (isKilnError(peek.reason, 'KILN_ERR_STORAGE_DAMAGED')) {
        damaged.push(ids[i]!);
        metas.push(null);
      } else throw peek.reason;
    }
    // Read after the await, and nothing below yields: notes go in in time order even
    // across readers running at once (dropExpiredNotes relies on it).
    const now = performance.now();
    const stale: string[] = [];
    const notes = this.outOfPlaceSince;
    for (const [i, id] of ids.entries()) {
      const note = `${key}\n${id}`;
      if (metas[i]?.principal === principal || damaged.includes(id)) {
        notes.delete(note);
        kept?.delete(id); // met out of place earlier in the scan, in place now (its login committed)
        continue;
      }
      const since = notes.get(note);
      if (since !== undefined && now - since >= STALE_GRACE_MS && now - since < NOTE_MAX_AGE_MS) {
        stale.push(id);
        notes.delete(note);
        kept?.delete(id);
        continue;
      }
      if (kept && kept.size < MAX_OUT_OF_PLACE) kept.add(id);
      if (since !== undefined && now - since >= NOTE_MAX_AGE_MS) {
        notes.delete(note);
        notes.set(note, now);
      } else if (since === undefined) {
        // Notes go in in time order (a renewed one is moved to the end): the expired ones
        // are at the front, and go first when the memory is full.
        if (notes.size >= MAX_OUT_OF_PLACE) dropExpiredNotes(notes, now);
        if (notes.size < MAX_OUT_OF_PLACE) notes.set(note, now);
      }
    }
    if (stale.length > 0) void this.o.command(key, ['SREM', key, ...stale]).catch(() => undefined);
    return { metas: metas.filter((m): m is SessionMeta => m !== null && m.principal === principal), damaged };
  }

  /**
   * A page of a principal's sessions for the console, a slice of the set at a time: the
   * work of a page is a few SSCANs of about 256 ids and the peeks of the page's sessions
   * (PAGE_PEEKS at a time), whatever the principal's size (SMEMBERS read every id for
   * every page). Pages follow the set's own order, each slice in id order. `next` is
   * `<SSCAN cursor>:<last id shown of that slice>`: a slice is read again from its cursor
   * and taken up after that id. A set that grows or shrinks between two pages (Redis
   * resizes its table) may show a session twice or miss one that a resize moved; so may
   * a failover. A page may come back short, even empty, with a `next` (slices of entries
   * out of place: after PAGE_SCANS SSCANs it stops). `total` is the set's size (SCARD):
   * entries out of place and logins under way count in it.
   */
  async principalPage(principal: string, options: { limit: number; after?: string }): Promise<ListPage> {
    const key = principalKey(this.o.prefix, principal);
    const limit = Math.max(1, Math.min(Math.floor(options.limit) || 1, MAX_LIST_LIMIT));
    let [cursor, shownUpTo] = options.after === undefined ? ['0', ''] : parsePrincipalPageCursor(options.after);
    const total = num(await this.o.command(key, ['SCARD', key]));
    const sessions: SessionMeta[] = [];
    for (let scans = 0; scans < PAGE_SCANS; scans++) {
      const { following, ids } = await this.scanSlice(key, cursor);
      const slice = ids.filter((id) => id > shownUpTo).sort();
      for (let at = 0; at < slice.length; ) {
        const room = limit - sessions.length;
        const wanted = slice.slice(at, at + Math.max(room, PAGE_PEEKS));
        at += wanted.length;
        const theirs = (await this.sessionsStillOf(principal, key, wanted)).metas;
        if (theirs.length < room) {
          sessions.push(...theirs);
          continue;
        }
        // The page is full: it ends at the last session taken, and the next takes the slice up after it.
        sessions.push(...theirs.slice(0, room));
        const last = sessions[sessions.length - 1]!.id;
        const next = last !== slice[slice.length - 1] ? `${cursor}:${last}` : following === '0' ? null : `${following}:`;
        return { sessions, next, total };
      }
      if (following === '0') return { sessions, next: null, total };
      cursor = following;
      shownUpTo = '';
    }
    return { sessions, next: `${cursor}:`, total };
  }

  /**
   * "Log out everywhere", a slice of the set at a time: a slice's sessions are destroyed
   * together, then the next slice is read. While the set keeps more entries than the
   * pass met out of place and left there (logins under way, entries left behind), it passes again, at
   * most DESTROY_PASSES times in all: an entry a scan could not see (a slot moving
   * during it) is then reached. A session a login gives the principal while this runs
   * may be logged out too; the kiln server keeps those. A failure is thrown once its
   * slice has settled: calling again finishes the job.
   */
  async destroyByPrincipal(principal: string): Promise<number> {
    const key = principalKey(this.o.prefix, principal);
    let n = 0;
    for (let pass = 0; pass < DESTROY_PASSES; pass++) {
      const leftInPlace = await this.forEachPrincipalSlice(principal, async ({ metas, damaged }) => {
        // Nobody is excepted: every holder is told, this process included. An id SSCAN
        // names twice is destroyed once (the second finds nothing). A session whose
        // metadata is damaged is destroyed too (nobody can use it, and a logout is not
        // blocked by it); its destroy cannot name the principal, so it leaves the set here.
        const outcomes = await Promise.allSettled([
          ...metas.map((meta) => this.destroyAs('', meta.id, 'principal')),
          ...damaged.map(async (id) => {
            const destroyed = await this.destroyAs('', id, 'principal');
            await this.o.command(key, ['SREM', key, id]);
            return destroyed;
          }),
        ]);
        for (const o of outcomes) if (o.status === 'fulfilled' && o.value) n++;
        const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
        if (failed) throw failed.reason;
      });
      if (num(await this.o.command(key, ['SCARD', key])) <= leftInPlace) break;
    }
    return n;
  }

  /**
   * A page of sessions in id order. Entries whose sessions are gone are taken out as they
   * are met; after LIST_ROUNDS reads of the index the page ends, short or even empty,
   * with a `next` that takes up after the last entry read.
   */
  async list(options: ListOptions): Promise<ListPage> {
    const { idx, command } = this.o;
    const limit = Math.max(1, Math.min(options.limit, MAX_LIST_LIMIT));
    const prefix = options.prefix ?? '';
    let after = options.after !== undefined && options.after >= prefix ? options.after : undefined;
    const sessions: SessionMeta[] = [];
    let more = false;
    let next: string | null = null;
    for (let round = 1; ; round++) {
      const from = after !== undefined ? `(${after}` : prefix ? `[${prefix}` : '-';
      const ids = ((await command(idx.ids, ['ZRANGEBYLEX', idx.ids, from, '+', 'LIMIT', '0', String(limit - sessions.length + 1)])) as Reply[]).map(text);
      const wanted = ids.filter((id) => id.startsWith(prefix));
      const reachedEnd = wanted.length < ids.length || ids.length < limit - sessions.length + 1;
      // Each entry on its own: one bad entry does not fail every page. An entry that is no
      // session id is taken out; a session whose metadata is damaged is left out of the page.
      const metas = await Promise.allSettled(wanted.map((id) => (isValidSessionId(id) ? this.peek(id) : Promise.resolve(null))));
      const stale: string[] = [];
      for (let i = 0; i < wanted.length; i++) {
        const peek = metas[i]!;
        if (peek.status === 'rejected') {
          if (isKilnError(peek.reason, 'KILN_ERR_STORAGE_DAMAGED')) continue;
          throw peek.reason;
        }
        const meta = peek.value;
        if (!meta) {
          stale.push(wanted[i]!);
          continue;
        }
        if (sessions.length === limit) {
          more = true;
          break;
        }
        sessions.push(meta);
      }
      if (stale.length > 0) void command(idx.ids, ['ZREM', idx.ids, ...stale]).catch(() => undefined);
      if (more) {
        next = sessions[sessions.length - 1]!.id;
        break;
      }
      if (reachedEnd || wanted.length === 0) break;
      after = wanted[wanted.length - 1];
      // Bounded: an index of many entries whose sessions are gone ends the page short, and the next takes up after them.
      if (round >= LIST_ROUNDS) {
        next = after!;
        break;
      }
    }
    const total = num(await command(idx.ids, ['ZCARD', idx.ids]));
    return { sessions, next, total };
  }

  /** Metadata of one session without its lease (listing, principal index, admin). */
  async peek(sessionId: string): Promise<SessionMeta | null> {
    const flat = (await this.o.runScript(SCRIPTS.peek, sessionId, '', [])) as Reply[];
    return flat.length === 0 ? null : metaFrom(sessionId, flat);
  }

  /** A session's data without taking its lease, for the admin console's inspector only. */
  async snapshotForAdmin(sessionId: string): Promise<SessionSnapshot | null> {
    return snapshotFrom(sessionId, await this.o.runScript(SCRIPTS.peekSnapshot, sessionId, '', []));
  }
}

/** Drops the notes older than NOTE_MAX_AGE_MS from the front of `notes` (kept in time order). */
function dropExpiredNotes(notes: Map<string, number>, now: number): void {
  for (const [note, since] of notes) {
    if (now - since < NOTE_MAX_AGE_MS) return;
    notes.delete(note);
  }
}

/** Redis's cursors are unsigned 64-bit: a larger one is an error there, refused here as bad input. */
const MAX_SCAN_CURSOR = 2n ** 64n - 1n;

/**
 * The `next` of a principal page (SessionStore.principalPage): `<SSCAN cursor>:<id>`,
 * the id empty at a slice's start. Anything else is refused, KILN_ERR_INVALID_ARGUMENT.
 */
export function parsePrincipalPageCursor(next: string): [cursor: string, shownUpTo: string] {
  const colon = next.indexOf(':');
  const cursor = next.slice(0, colon);
  const id = next.slice(colon + 1);
  if (colon < 1 || !/^[0-9]{1,20}$/.test(cursor) || BigInt(cursor) > MAX_SCAN_CURSOR || (id !== '' && !isValidSessionId(id))) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'not a "next" of a principal listing');
  }
  return [cursor, id];
}
