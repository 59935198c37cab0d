import { KilnError } from '../errors/index.js';
import { checkDeltaLimits, checkPrincipal, type SessionLimits } from '../session/limits.js';
import { applyPatch, attributeBytes, type AttributePatch, type CommitAck, type CommitRequest, type SessionMeta, type SessionSnapshot } from '../session/model.js';

/**
 * The sessions the tier stores, with the principal index and the tombstones of
 * destroyed sessions. Pure: no clock, no I/O. Every change is described by a
 * TierRecord, which is both what storage appends and what replay applies, so a
 * restarted server rebuilds exactly the state it acknowledged.
 */

/** How many recent commit ids a session remembers for idempotent retries. */
export const REMEMBERED_COMMITS = 16;

export interface StoredSession {
  meta: SessionMeta;
  attributes: Map<string, Uint8Array>;
  /** Sum of attribute name lengths and value bytes. */
  bytes: number;
  /** Recent [commitId, resulting version], oldest first. */
  commits: [string, number][];
}

export type TierRecord =
  | {
      t: 'c';
      id: string;
      v: number;
      cid: string;
      la: number;
      set: [string, Uint8Array][];
      del: string[];
      /** createdAt: present on create only. */
      ca?: number;
      /** Idle timeout and absolute expiry: present on create and when they change. */
      it?: number;
      ae?: number;
      /** undefined = unchanged. */
      p?: string | null;
    }
  | { t: 'd'; id: string; until: number }
  | { t: 'e'; id: string }
  | { t: 'a'; items: [string, number][] }
  /** Snapshot forms, written by compaction. */
  | { t: 's'; meta: SessionMeta; attrs: [string, Uint8Array][]; commits: [string, number][] }
  | { t: 'b'; id: string; until: number };

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
    return s ? { meta: { ...s.meta }, attributes: new Map(s.attributes) } : null;
  }

  sessionsOf(principal: string): string[] {
    return [...(this.principals.get(principal) ?? [])];
  }

  /** Validates a commit against the stored state and limits, then applies it. Throws and changes nothing on any violation. */
  applyCommit(req: CommitRequest, limits: SessionLimits, now: number): { ack: CommitAck; record?: TierRecord } {
    const current = this.sessions.get(req.sessionId);
    if (current) {
      for (const [cid, version] of current.commits) {
        if (cid === req.commitId) return { ack: { version, duplicate: true } };
      }
    }
    if (req.baseVersion === 0) {
      if (current) throw new KilnError('KILN_ERR_SESSION_EXISTS', 'a session with this id exists already', { details: { sessionId: req.sessionId } });
      if (this.isTombstoned(req.sessionId, now)) throw destroyed(req.sessionId);
    } else if (!current) {
      if (this.tombstones.has(req.sessionId)) throw destroyed(req.sessionId);
      throw new KilnError('KILN_ERR_SESSION_NOT_FOUND', 'the session does not exist (expired or never created)', { details: { sessionId: req.sessionId } });
    } else if (current.meta.version !== req.baseVersion) {
      throw new KilnError('KILN_ERR_CONFLICT', `commit computed from version ${req.baseVersion}, session is at ${current.meta.version}`, {
        details: { sessionId: req.sessionId, baseVersion: req.baseVersion, version: current.meta.version },
      });
    }
    // Patches become whole values here: the limits, the log and every reader see only whole values.
    const set = req.patch?.length ? [...req.set, ...resolvePatches(req.sessionId, current?.attributes, req.patch)] : req.set;
    checkDeltaLimits(current?.attributes ?? new Map(), current?.bytes ?? 0, { set, del: req.del }, limits);
    checkPrincipal(req.principal, limits);
    const record: TierRecord = {
      t: 'c',
      id: req.sessionId,
      v: req.baseVersion + 1,
      cid: req.commitId,
      la: Math.min(Math.max(req.lastAccessedAt, current?.meta.lastAccessedAt ?? 0), now),
      set,
      del: req.del,
    };
    if (!current) record.ca = now;
    if (!current || (req.idleTimeoutMs !== undefined && req.idleTimeoutMs !== current.meta.idleTimeoutMs)) record.it = req.idleTimeoutMs ?? 0;
    if (!current || (req.absoluteExpiresAt !== undefined && req.absoluteExpiresAt !== current.meta.absoluteExpiresAt)) record.ae = req.absoluteExpiresAt ?? 0;
    if (req.principal !== undefined && req.principal !== (current?.meta.principal ?? null)) record.p = req.principal;
    this.replay(record);
    return { ack: { version: record.v, duplicate: false }, record };
  }

  /** Access-time update from the lease holder; never moves time backwards or into the future. */
  touch(id: string, at: number, now: number): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    const clamped = Math.min(at, now);
    if (clamped <= s.meta.lastAccessedAt) return false;
    s.meta.lastAccessedAt = clamped;
    return true;
  }

  /** Destroys a session and keeps a tombstone until `until`, so no late commit recreates it. */
  destroy(id: string, until: number): DestroyResult | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const record: TierRecord = { t: 'd', id, until };
    const meta = { ...s.meta };
    this.replay(record);
    return { meta, record };
  }

  expire(id: string): DestroyResult | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    const record: TierRecord = { t: 'e', id };
    const meta = { ...s.meta };
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
      case 'c': {
        let s = this.sessions.get(record.id);
        if (!s) {
          s = {
            meta: { id: record.id, createdAt: record.ca ?? record.la, lastAccessedAt: record.la, idleTimeoutMs: record.it ?? 0, absoluteExpiresAt: record.ae ?? 0, principal: null, version: 0 },
            attributes: new Map(),
            bytes: 0,
            commits: [],
          };
          this.sessions.set(record.id, s);
          this.tombstones.delete(record.id);
        }
        for (const name of record.del) {
          const old = s.attributes.get(name);
          if (old) {
            s.bytes -= name.length + old.length;
            this.totalBytes -= name.length + old.length;
            s.attributes.delete(name);
          }
        }
        for (const [name, value] of record.set) {
          const old = s.attributes.get(name);
          const delta = old ? value.length - old.length : name.length + value.length;
          s.bytes += delta;
          this.totalBytes += delta;
          s.attributes.set(name, value);
        }
        if (record.p !== undefined) this.setPrincipal(s, record.p);
        if (record.it !== undefined) s.meta.idleTimeoutMs = record.it;
        if (record.ae !== undefined) s.meta.absoluteExpiresAt = record.ae;
        s.meta.version = record.v;
        if (record.la > s.meta.lastAccessedAt) s.meta.lastAccessedAt = record.la;
        s.commits.push([record.cid, record.v]);
        if (s.commits.length > REMEMBERED_COMMITS) s.commits.shift();
        return;
      }
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
          if (s && at > s.meta.lastAccessedAt) s.meta.lastAccessedAt = at;
        }
        return;
      case 's': {
        const old = this.sessions.get(record.meta.id);
        if (old) this.replay({ t: 'e', id: old.meta.id });
        const attributes = new Map(record.attrs);
        const bytes = attributeBytes(record.attrs);
        const s: StoredSession = { meta: { ...record.meta, principal: null }, attributes, bytes, commits: record.commits };
        this.sessions.set(record.meta.id, s);
        this.totalBytes += bytes;
        this.setPrincipal(s, record.meta.principal);
        return;
      }
      case 'b':
        this.tombstones.set(record.id, record.until);
        return;
    }
  }

  /** The whole state as records, for compaction. */
  *dump(now: number): Generator<TierRecord> {
    for (const s of this.sessions.values()) yield { t: 's', meta: s.meta, attrs: [...s.attributes], commits: s.commits };
    for (const [id, until] of this.tombstones) if (until > now) yield { t: 'b', id, until };
  }

  private setPrincipal(s: StoredSession, principal: string | null): void {
    const old = s.meta.principal;
    if (old === principal) return;
    if (old !== null) {
      const set = this.principals.get(old);
      set?.delete(s.meta.id);
      if (set?.size === 0) this.principals.delete(old);
    }
    s.meta.principal = principal;
    if (principal !== null) {
      let set = this.principals.get(principal);
      if (!set) this.principals.set(principal, (set = new Set()));
      set.add(s.meta.id);
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
    return [p.name, applyPatch(base, p)];
  });
}
