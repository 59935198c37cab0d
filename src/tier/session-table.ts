import { KilnError } from '../errors/index.js';
import { checkDeltaLimits, checkPrincipal, type SessionLimits } from '../session/limits.js';
import { applyPatchInto, attributeBytes, type AttributePatch, type CommitAck, type CommitRequest, type SessionMeta, type SessionSnapshot } from '../session/model.js';
import { beginCommitScratch, commitScratchRegion, packAttributes, packAttributesToBytes, packedCopy, recordPairs, storedFromRecord, unpackAttributes, unpackForCommit, type PackedData } from './packed-attributes.js';
import type { TierRecord } from './tier-record.js';

export { LARGE_SESSION_BYTES, packAttributes, packAttributesToBytes, unpackAttributes, type PackedData } from './packed-attributes.js';
export type { TierRecord } from './tier-record.js';

/**
 * The sessions the tier stores, with the principal index and the tombstones of
 * destroyed sessions. Pure: no clock, no I/O. Every change is described by a
 * TierRecord, which is both what storage appends and what replay applies, so a
 * restarted server rebuilds exactly the state it acknowledged.
 */

/** How many recent commit ids a session remembers for idempotent retries. */
export const REMEMBERED_COMMITS = 16;

/**
 * One stored session. Built for a million of them in a gigabyte: the metadata fields sit
 * on this object itself and the attributes live in one packed string (see
 * packAttributes), rather than a metadata object and a Map of byte arrays, which cost
 * about three times as much per session in object headers.
 */
export interface StoredSession extends SessionMeta {
  /** Every attribute, packed: `u16 name length | name (UTF-8) | u32 value length | value` (see PackedData). */
  data: PackedData;
  /** Sum of attribute name lengths and value bytes. */
  bytes: number;
  /** Recent commit ids and the versions they made, flat and oldest first: [cid, v, cid, v, …]. */
  commits: (string | number)[];
}

/** A copy of the metadata alone (what leaves the table). */
export function metaOf(s: StoredSession): SessionMeta {
  return { id: s.id, createdAt: s.createdAt, lastAccessedAt: s.lastAccessedAt, idleTimeoutMs: s.idleTimeoutMs, absoluteExpiresAt: s.absoluteExpiresAt, principal: s.principal, version: s.version };
}

/** The remembered commits as [commitId, version] pairs. */
function commitPairs(s: StoredSession): [string, number][] {
  const out: [string, number][] = [];
  for (let i = 0; i + 1 < s.commits.length; i += 2) out.push([s.commits[i] as string, s.commits[i + 1] as number]);
  return out;
}

export interface DestroyResult {
  meta: SessionMeta;
  record: TierRecord;
}

export class SessionTable {
  private readonly sessions = new Map<string, StoredSession>();
  private readonly tombstones = new Map<string, number>();
  private readonly principals = new Map<string, Set<string>>();
  private totalBytes = 0;

  get size(): number {
    return this.sessions.size;
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  get(id: string): StoredSession | undefined {
    return this.sessions.get(id);
  }

  ids(): IterableIterator<string> {
    return this.sessions.keys();
  }

  values(): IterableIterator<StoredSession> {
    return this.sessions.values();
  }

  tombstoneEntries(): IterableIterator<[string, number]> {
    return this.tombstones.entries();
  }

  isTombstoned(id: string, now: number): boolean {
    const until = this.tombstones.get(id);
    return until !== undefined && until > now;
  }

  snapshot(id: string): SessionSnapshot | null {
    const s = this.sessions.get(id);
    return s ? { meta: metaOf(s), attributes: unpackAttributes(s.data) } : null;
  }

  /** The version a commit id made, if this session still remembers it (idempotent retries). */
  committedVersion(id: string, commitId: string): number | undefined {
    const commits = this.sessions.get(id)?.commits;
    if (!commits) return undefined;
    for (let i = 0; i + 1 < commits.length; i += 2) if (commits[i] === commitId) return commits[i + 1] as number;
    return undefined;
  }

  /** How many sessions name this principal (O(1): the index's size). */
  principalCount(principal: string): number {
    return this.principals.get(principal)?.size ?? 0;
  }

  sessionsOf(principal: string): string[] {
    return [...(this.principals.get(principal) ?? [])];
  }

  /**
   * Validates a commit against the stored state and limits, then applies it. Throws and
   * changes nothing on any violation. `durable` false (a server without storage) spares
   * the record its packed copy of the values, which only storage reads.
   */
  applyCommit(req: CommitRequest, limits: SessionLimits, now: number, durable = true): { ack: CommitAck; record?: TierRecord } {
    const current = this.sessions.get(req.sessionId);
    const known = this.committedVersion(req.sessionId, req.commitId);
    if (known !== undefined) return { ack: { version: known, duplicate: true } };
    if (req.baseVersion === 0) {
      if (current) throw new KilnError('KILN_ERR_SESSION_EXISTS', 'a session with this id exists already', { details: { sessionId: req.sessionId } });
      if (this.isTombstoned(req.sessionId, now)) throw destroyed(req.sessionId);
    } else if (!current) {
      if (this.tombstones.has(req.sessionId)) throw destroyed(req.sessionId);
      throw new KilnError('KILN_ERR_SESSION_NOT_FOUND', 'the session does not exist (expired or never created)', { details: { sessionId: req.sessionId } });
    } else if (current.version !== req.baseVersion) {
      throw new KilnError('KILN_ERR_CONFLICT', `commit computed from version ${req.baseVersion}, session is at ${current.version}`, {
        details: { sessionId: req.sessionId, baseVersion: req.baseVersion, version: current.version },
      });
    }
    beginCommitScratch(); // nothing of the previous commit is still read
    const attributes = current ? unpackForCommit(current.data) : new Map<string, Uint8Array>();
    // Patches become whole values here: the limits, the log and every reader see only whole values.
    const set = req.patch?.length ? [...req.set, ...resolvePatches(req.sessionId, attributes, req.patch)] : req.set;
    checkDeltaLimits(attributes, current?.bytes ?? 0, { set, del: req.del }, limits);
    checkPrincipal(req.principal, limits);
    const record: TierRecord = {
      t: 'c',
      id: req.sessionId,
      v: req.baseVersion + 1,
      cid: req.commitId,
      la: Math.min(Math.max(req.lastAccessedAt, current?.lastAccessedAt ?? 0), now),
      pb: attributeBytes(set),
      del: req.del,
    };
    if (durable) record.packed = packAttributesToBytes(set);
    if (!current) record.ca = now;
    if (!current || (req.idleTimeoutMs !== undefined && req.idleTimeoutMs !== current.idleTimeoutMs)) record.it = req.idleTimeoutMs ?? 0;
    if (!current || (req.absoluteExpiresAt !== undefined && req.absoluteExpiresAt !== current.absoluteExpiresAt)) record.ae = req.absoluteExpiresAt ?? 0;
    if (req.principal !== undefined && req.principal !== (current?.principal ?? null)) record.p = req.principal;
    // The attributes are unpacked and the patches resolved already: applying them again
    // from the record would copy a large value three more times (a 20 KB session's commit
    // spent most of its server time in those copies).
    this.storeCommit(record, attributes, set);
    return { ack: { version: record.v, duplicate: false }, record };
  }

  /** Access-time update from the lease holder; never moves time backwards or into the future. */
  touch(id: string, at: number, now: number): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    const clamped = Math.min(at, now);
    if (clamped <= s.lastAccessedAt) return false;
    s.lastAccessedAt = clamped;
    return true;
  }

  /** Destroys a session and keeps a tombstone until `until`, so no late commit recreates it. */
  destroy(id: string, until: number): DestroyResult | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const record: TierRecord = { t: 'd', id, until };
    const meta = metaOf(s);
    this.replay(record);
    return { meta, record };
  }

  expire(id: string): DestroyResult | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const record: TierRecord = { t: 'e', id };
    const meta = metaOf(s);
    this.replay(record);
    return { meta, record };
  }

  /** Forgets tombstones whose time is up; returns how many. */
  sweepTombstones(now: number, ids: Iterable<string>): number {
    let n = 0;
    for (const id of ids) {
      const until = this.tombstones.get(id);
      if (until !== undefined && until <= now) {
        this.tombstones.delete(id);
        n++;
      }
    }
    return n;
  }

  /** Applies a record without validation: the one path both live commits and replay take. */
  replay(record: TierRecord): void {
    switch (record.t) {
      case 'c':
        this.storeCommit(record);
        return;
      case 'd':
      case 'e': {
        const s = this.sessions.get(record.id);
        if (s) {
          this.setPrincipal(s, null);
          this.totalBytes -= s.bytes;
          this.sessions.delete(record.id);
        }
        if (record.t === 'd') this.tombstones.set(record.id, record.until);
        return;
      }
      case 'a':
        for (const [id, at] of record.items) {
          const s = this.sessions.get(id);
          if (s && at > s.lastAccessedAt) s.lastAccessedAt = at;
        }
        return;
      case 's': {
        const old = this.sessions.get(record.meta.id);
        if (old) this.replay({ t: 'e', id: old.id });
        const data = record.packed ? storedFromRecord(record.packed) : packAttributes(record.attrs ?? []);
        const bytes = record.pb ?? attributeBytes(unpackAttributes(data));
        const m = record.meta;
        const s: StoredSession = { id: m.id, createdAt: m.createdAt, lastAccessedAt: m.lastAccessedAt, idleTimeoutMs: m.idleTimeoutMs, absoluteExpiresAt: m.absoluteExpiresAt, principal: null, version: m.version, data, bytes, commits: ([] as (string | number)[]).concat(...record.commits) };
        this.sessions.set(s.id, s);
        this.totalBytes += bytes;
        this.setPrincipal(s, record.meta.principal);
        return;
      }
      case 'b':
        this.tombstones.set(record.id, record.until);
        return;
    }
  }

  /**
   * Applies a commit record to its session. A live commit passes the session's attributes
   * it unpacked (a fresh Map it no longer needs) and the values it resolved; replay
   * passes only the record.
   */
  private storeCommit(record: Extract<TierRecord, { t: 'c' }>, unpacked?: Map<string, Uint8Array>, pairs?: readonly (readonly [string, Uint8Array])[]): void {
    let s = this.sessions.get(record.id);
    if (!s) {
      s = {
        id: record.id,
        createdAt: record.ca ?? record.la,
        lastAccessedAt: record.la,
        idleTimeoutMs: record.it ?? 0,
        absoluteExpiresAt: record.ae ?? 0,
        principal: null,
        version: 0,
        data: '',
        bytes: 0,
        commits: [],
      };
      this.sessions.set(s.id, s);
      this.tombstones.delete(record.id);
    }
    if (s.data === '' && record.del.length === 0 && (record.packed || pairs)) {
      // A create (the common record of a log): its packed attributes are the session's.
      const bytes = record.pb ?? attributeBytes(recordPairs(record.packed, undefined));
      s.bytes = bytes;
      this.totalBytes += bytes;
      s.data = record.packed ? storedFromRecord(record.packed) : packAttributes(pairs!);
    } else if (record.del.length > 0 || pairs?.length || record.packed?.length || record.set?.length) {
      const attributes = unpacked ?? unpackAttributes(s.data);
      for (const name of record.del) {
        const old = attributes.get(name);
        if (old) {
          s.bytes -= name.length + old.length;
          this.totalBytes -= name.length + old.length;
          attributes.delete(name);
        }
      }
      for (const [name, value] of pairs ?? recordPairs(record.packed, record.set)) {
        const old = attributes.get(name);
        const delta = old ? value.length - old.length : name.length + value.length;
        s.bytes += delta;
        this.totalBytes += delta;
        attributes.set(name, value);
      }
      s.data = packAttributes(attributes, s.data);
    }
    if (record.p !== undefined) this.setPrincipal(s, record.p);
    if (record.it !== undefined) s.idleTimeoutMs = record.it;
    if (record.ae !== undefined) s.absoluteExpiresAt = record.ae;
    s.version = record.v;
    if (record.la > s.lastAccessedAt) s.lastAccessedAt = record.la;
    // A new array of exactly the right length: push() would grow the backing store to
    // 17 slots, 140 bytes a session for the usual single commit.
    const kept = s.commits.length >= 2 * REMEMBERED_COMMITS ? s.commits.slice(2) : s.commits;
    s.commits = kept.length === 0 ? [record.cid, record.v] : kept.concat(record.cid, record.v);
  }

  /** The whole state as records, for compaction. */
  *dump(now: number): Generator<TierRecord> {
    for (const s of this.sessions.values()) yield { t: 's', meta: metaOf(s), packed: packedCopy(s.data), pb: s.bytes, commits: commitPairs(s) };
    for (const [id, until] of this.tombstones) if (until > now) yield { t: 'b', id, until };
  }

  private setPrincipal(s: StoredSession, principal: string | null): void {
    const old = s.principal;
    if (old === principal) return;
    if (old !== null) {
      const set = this.principals.get(old);
      set?.delete(s.id);
      if (set?.size === 0) this.principals.delete(old);
    }
    s.principal = principal;
    if (principal !== null) {
      let set = this.principals.get(principal);
      if (!set) this.principals.set(principal, (set = new Set()));
      set.add(s.id);
    }
  }
}

function destroyed(sessionId: string): KilnError {
  return new KilnError('KILN_ERR_SESSION_DESTROYED', 'the session was destroyed; it cannot be written again', { details: { sessionId } });
}

/**
 * The whole values of a commit's patches, each checked against the value it was computed
 * from: a missing attribute or another length means the client's base is not the stored
 * one (KILN_ERR_CONFLICT); offsets outside it are a malformed request.
 */
function resolvePatches(sessionId: string, attributes: ReadonlyMap<string, Uint8Array> | undefined, patches: readonly AttributePatch[]): [string, Uint8Array][] {
  return patches.map((p) => {
    const base = attributes?.get(p.name);
    if (!base || base.length !== p.baseLength) {
      throw new KilnError('KILN_ERR_CONFLICT', `patch of attribute "${p.name}" was computed from a value the session does not hold`, { details: { sessionId, attribute: p.name } });
    }
    if (p.at + p.cut > base.length) {
      throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `patch of attribute "${p.name}" reaches past its end`, { details: { sessionId, attribute: p.name } });
    }
    // The patched value lives in the commit scratch: packing the session copies it.
    return [p.name, applyPatchInto(base, p, commitScratchRegion(base.length - p.cut + p.bytes.length))];
  });
}
