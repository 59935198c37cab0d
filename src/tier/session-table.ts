import { KilnError } from '../errors/index.js';
import { checkDeltaLimits, checkDeltaNames, checkPrincipal, firstRepeated, type SessionLimits } from '../session/limits.js';
import { applyPatchInto, attributeBytes, type AttributePatch, type CommitAck, type CommitRequest, type SessionMeta, type SessionSnapshot } from '../session/model.js';
import { beginCommitScratch, commitScratchRegion, packAttributesToBytes, recordPairs } from './packed-attributes.js';
import { PrincipalIndex } from './principal-index.js';
import { SessionArena } from './session-arena.js';
import * as layout from './session-record.js';
import { StoredAttributes } from './stored-attributes.js';
import type { TierRecord } from './tier-record.js';

export { packAttributesToBytes } from './packed-attributes.js';
export type { TierRecord } from './tier-record.js';

/**
 * The sessions the tier stores, with the principal index and the tombstones of
 * destroyed sessions. Pure: no clock, no I/O. Every change is described by a
 * TierRecord, which is both what storage appends and what replay applies, so a
 * restarted server rebuilds exactly the state it acknowledged.
 *
 * The sessions themselves live off the JavaScript heap, one run of bytes each in a
 * SessionArena laid out by session-record: a million sessions of 200 bytes fit in about
 * 350 MB where JavaScript objects took 800. What leaves the table is always a copy.
 */

/** How many recent commit ids a session remembers for idempotent retries. */
export const REMEMBERED_COMMITS = 16;

/**
 * Where the next page of a principal's sessions starts: a session (the last page's last,
 * or where a bounded walk stopped) and a join count; sessions that joined at or after it
 * were met already.
 */
export interface PrincipalCursor {
  id: string;
  join: number;
}

/** A page of a principal's sessions (see SessionTable.principalPage). */
export interface PrincipalPage {
  sessions: SessionMeta[];
  next: PrincipalCursor | null;
  /** How many sessions the principal has now. */
  total: number;
  /** Skipping steps this page took (bounded; see PrincipalIndex.pageOf). */
  steps: number;
}

/** A session's metadata and the size of its attributes. */
export interface StoredMeta extends SessionMeta {
  /** Sum of attribute name lengths and value bytes. */
  bytes: number;
}

export interface DestroyResult {
  meta: SessionMeta;
  record: TierRecord;
}

export class SessionTable {
  private readonly arena = new SessionArena();
  private readonly attributes = new StoredAttributes();
  private readonly tombstones = new Map<string, number>();
  private readonly principals = new PrincipalIndex();
  private totalBytes = 0;
  /** Where a session's next payload is assembled before the arena copies it in. */
  private out = Buffer.allocUnsafeSlow(64 * 1024);
  private cid = Buffer.allocUnsafeSlow(512);

  get size(): number {
    return this.arena.size;
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** Off-heap bytes the sessions hold (the arena's chunks, index and large records). */
  get reservedBytes(): number {
    return this.arena.reservedBytes;
  }

  /** A session's stable handle while it lives (-1: none). A handle kept past the session's end may name another: check isLive and the id. */
  slotOf(id: string): number {
    return this.arena.find(id);
  }

  isLive(slot: number): boolean {
    return this.arena.isLive(slot);
  }

  idOf(slot: number): string {
    return this.arena.keyOf(slot);
  }

  /** When a live session expires (expiryDeadline), read in place. */
  deadlineOf(slot: number, idleGraceMs = 0): number {
    const a = this.arena;
    a.locate(slot);
    return layout.deadlineAt(a.buf, a.at, idleGraceMs);
  }

  /** A copy of a session's metadata and size. */
  get(id: string): StoredMeta | undefined {
    const slot = this.arena.find(id);
    return slot < 0 ? undefined : this.metaAt(slot, id);
  }

  /** A copy of a session's metadata (what leaves the table). */
  meta(id: string): SessionMeta | undefined {
    const slot = this.arena.find(id);
    if (slot < 0) return undefined;
    const a = this.arena;
    a.locate(slot);
    return layout.metaAt(a.buf, a.at, id);
  }

  private metaAt(slot: number, id: string): StoredMeta {
    const a = this.arena;
    a.locate(slot);
    const meta = layout.metaAt(a.buf, a.at, id) as StoredMeta;
    meta.bytes = layout.attributeBytes(a.buf, a.at);
    return meta;
  }

  /** Every session id (new strings, made as the iteration goes). */
  *ids(): Generator<string> {
    for (const slot of this.arena.slots()) yield this.arena.keyOf(slot);
  }

  tombstoneEntries(): IterableIterator<[string, number]> {
    return this.tombstones.entries();
  }

  isTombstoned(id: string, now: number): boolean {
    const until = this.tombstones.get(id);
    return until !== undefined && until > now;
  }

  snapshot(id: string): SessionSnapshot | null {
    const slot = this.arena.find(id);
    if (slot < 0) return null;
    const meta = this.metaAt(slot, id);
    const a = this.arena;
    const attributes = this.attributes.read(a.buf, layout.dataStart(a.buf, a.at), a.end, true);
    const { bytes: _bytes, ...plain } = meta;
    return { meta: plain, attributes };
  }

  /** The version a commit id made, if this session still remembers it (idempotent retries). */
  committedVersion(id: string, commitId: string): number | undefined {
    const slot = this.arena.find(id);
    return slot < 0 ? undefined : this.committedVersionAt(slot, commitId);
  }

  private committedVersionAt(slot: number, commitId: string): number | undefined {
    if (commitId.length * 3 > this.cid.length) this.cid = Buffer.allocUnsafeSlow(commitId.length * 3);
    const length = this.cid.write(commitId, 0, 'utf8');
    const a = this.arena;
    a.locate(slot);
    return layout.findCommit(a.buf, a.at, this.cid, length);
  }

  /** How many sessions name this principal (O(1)). */
  principalCount(principal: string): number {
    return this.principals.count(principal);
  }

  /** Every session of this principal, newest login first (in-process callers; the wire pages: principalPage). */
  principalSessions(principal: string): SessionMeta[] {
    return this.metasAt(this.principals.slotsOf(principal));
  }

  /**
   * One page of this principal's sessions, newest login first, with the cursor of the
   * next page (null after the last) and how many sessions the principal has. The cursor
   * names where the last page ended and a join count (see PrincipalIndex.pageOf); one
   * naming another principal's session, or one gone since, is not followed: the list is
   * walked from its head instead, a bounded number of steps per call.
   */
  principalPage(principal: string, limit: number, after?: PrincipalCursor): PrincipalPage {
    let from: { slot: number; join: number } | undefined;
    if (after !== undefined) {
      const slot = this.arena.find(after.id);
      from = { slot: slot >= 0 && this.namesPrincipal(slot, principal) ? slot : -1, join: after.join };
    }
    const { slots, steps, resume } = this.principals.pageOf(principal, limit, from);
    const next = resume === undefined ? null : { id: this.arena.keyOf(resume.to), join: resume.join };
    return { sessions: this.metasAt(slots), next, total: this.principals.count(principal), steps };
  }

  /** The metadata of the sessions in `slots` (live ones, from the principal index). */
  private metasAt(slots: readonly number[]): SessionMeta[] {
    const a = this.arena;
    return slots.map((slot) => {
      a.locate(slot);
      return layout.metaAt(a.buf, a.at, a.keyOf(slot));
    });
  }

  /** Whether the live session in `slot` names `principal`. */
  private namesPrincipal(slot: number, principal: string): boolean {
    this.arena.locate(slot);
    return layout.principalOf(this.arena.buf, this.arena.at) === principal;
  }

  /** The slots of this principal's sessions: cheap to take for many (no id strings); see sessionInSlot. */
  slotsOf(principal: string): number[] {
    return this.principals.slotsOf(principal);
  }

  /** A mark of the principal index's present, for sessionInSlot. */
  principalMark(): number {
    return this.principals.mark();
  }

  /**
   * The id of the session in `slot` if it names `principal` since `mark` or before, else
   * undefined. A slot taken from slotsOf and read later may hold another session by then
   * (its own ended and a new one took the slot), or the session may have logged out and
   * in again: those joined after the mark and are left alone. A count, not a clock: a
   * clock stepped back would let a session made just before pass for a later one.
   */
  sessionInSlot(slot: number, principal: string, mark: number): string | undefined {
    const a = this.arena;
    if (!a.isLive(slot) || !this.principals.joinedBy(slot, mark) || !this.namesPrincipal(slot, principal)) return undefined;
    return a.keyOf(slot);
  }

  /**
   * Validates a commit against the stored state and limits, then applies it. Throws and
   * changes nothing on any violation. `durable` false (a server without storage) spares
   * the record its packed copy of the values, which only storage reads. `beforeApply`
   * runs once every check has passed and before anything changes: a refusal it throws
   * (the disk behind) changes nothing either, and a commit that is wrong in itself
   * (a conflict, too large) gets its own error first.
   */
  applyCommit(req: CommitRequest, limits: SessionLimits, now: number, durable = true, beforeApply?: (req: CommitRequest) => void): { ack: CommitAck; record?: TierRecord } {
    const slot = this.arena.find(req.sessionId);
    const known = slot < 0 ? undefined : this.committedVersionAt(slot, req.commitId);
    // Not beforeApply's to judge: Tier.commit answers duplicates itself (and refuses them
    // while the disk is behind, details.applied) before it calls this.
    if (known !== undefined) return { ack: { version: known, duplicate: true } };
    checkDeltaNames(req);
    const current = slot < 0 ? undefined : this.metaAt(slot, req.sessionId);
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
    // Views of the stored bytes: read only until storeCommit writes the new record.
    const attributes = current ? this.unpackedForCommit(slot) : new Map<string, Uint8Array>();
    // Patches become whole values here: the limits, the log and every reader see only whole values.
    const set = req.patch?.length ? [...req.set, ...resolvePatches(req.sessionId, attributes, req.patch)] : req.set;
    checkDeltaLimits(attributes, current?.bytes ?? 0, { set, del: req.del }, limits);
    checkPrincipal(req.principal, limits);
    beforeApply?.(req);
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
    // Created at the creating commit's access time (when its request's work began, as the
    // client says, cut to now), not at the commit's arrival: createdAt came out later than
    // lastAccessedAt.
    if (!current) record.ca = record.la;
    if (!current || (req.idleTimeoutMs !== undefined && req.idleTimeoutMs !== current.idleTimeoutMs)) record.it = req.idleTimeoutMs ?? 0;
    if (!current || (req.absoluteExpiresAt !== undefined && req.absoluteExpiresAt !== current.absoluteExpiresAt)) record.ae = req.absoluteExpiresAt ?? 0;
    if (req.principal !== undefined && req.principal !== (current?.principal ?? null)) record.p = req.principal;
    // The attributes are unpacked and the patches resolved already: applying them again
    // from the record would copy a large value three more times (a 20 KB session's commit
    // spent most of its server time in those copies).
    this.storeCommit(record, attributes, set, slot);
    return { ack: { version: record.v, duplicate: false }, record };
  }

  private unpackedForCommit(slot: number): Map<string, Uint8Array> {
    const a = this.arena;
    a.locate(slot);
    return this.attributes.read(a.buf, layout.dataStart(a.buf, a.at), a.end, false);
  }

  /** Access-time update from the lease holder; never moves time backwards or into the future. */
  touch(id: string, at: number, now: number): boolean {
    const slot = this.arena.find(id);
    if (slot < 0) return false;
    return this.touchSlot(slot, Math.min(at, now));
  }

  private touchSlot(slot: number, at: number): boolean {
    const a = this.arena;
    a.locate(slot);
    if (at <= layout.lastAccessedAt(a.buf, a.at)) return false;
    layout.setLastAccessedAt(a.buf, a.at, at);
    return true;
  }

  /** Destroys a session and keeps a tombstone until `until`, so no late commit recreates it. */
  destroy(id: string, until: number): DestroyResult | undefined {
    const s = this.get(id);
    if (!s) return undefined;
    const record: TierRecord = { t: 'd', id, until };
    this.replay(record);
    return { meta: withoutBytes(s), record };
  }

  expire(id: string): DestroyResult | undefined {
    const s = this.get(id);
    if (!s) return undefined;
    const record: TierRecord = { t: 'e', id };
    this.replay(record);
    return { meta: withoutBytes(s), record };
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

  /**
   * Applies a record without validation: the one path both live commits and replay take.
   * Returns the slot of the session a commit or snapshot record stored, else -1.
   */
  replay(record: TierRecord): number {
    switch (record.t) {
      case 'c':
        return this.storeCommit(record);
      case 'd':
      case 'e':
        this.remove(record.id);
        if (record.t === 'd') this.tombstones.set(record.id, record.until);
        return -1;
      case 'a':
        for (const [id, at] of record.items) {
          const slot = this.arena.find(id);
          if (slot >= 0) this.touchSlot(slot, at);
        }
        return -1;
      case 's': {
        this.remove(record.meta.id);
        const m = record.meta;
        const pairs = recordPairs(record.packed, record.attrs);
        const dataLength = this.attributes.maxLength(pairs);
        const bytes = record.pb ?? attributeBytes(pairs);
        // A snapshot written by this table holds at most REMEMBERED_COMMITS; a longer list keeps its newest.
        const commits = record.commits.slice(-REMEMBERED_COMMITS);
        let room = layout.headRoom(m.principal, '') + dataLength;
        for (const [cid] of commits) room += 5 + 3 * cid.length + 8;
        const out = this.outFor(room);
        let i = layout.writeHead(out, { version: m.version, createdAt: m.createdAt, lastAccessedAt: m.lastAccessedAt, absoluteExpiresAt: m.absoluteExpiresAt, idleTimeoutMs: m.idleTimeoutMs, bytes }, m.principal);
        for (const [cid, v] of commits) i = layout.writeCommit(out, i, cid, v);
        layout.setCommitCount(out, commits.length);
        i += this.attributes.write(pairs, out, i);
        const slot = this.arena.put(m.id, out, i, -1); // removed above if it was there
        this.totalBytes += bytes;
        this.indexPrincipal(slot, null, m.principal);
        return slot;
      }
      case 'b':
        this.tombstones.set(record.id, record.until);
        return -1;
    }
  }

  private remove(id: string): void {
    const slot = this.arena.find(id);
    if (slot < 0) return;
    const a = this.arena;
    a.locate(slot);
    this.indexPrincipal(slot, layout.principalOf(a.buf, a.at), null);
    this.totalBytes -= layout.attributeBytes(a.buf, a.at);
    a.remove(slot);
  }

  /**
   * Applies a commit record to its session: assembles the session's new payload from its
   * stored one and the record, then stores it (in place when it keeps its size). A live
   * commit passes the attributes it unpacked (views of the stored bytes, read here before
   * anything is written) and the values it resolved; replay passes only the record.
   */
  private storeCommit(record: Extract<TierRecord, { t: 'c' }>, unpacked?: Map<string, Uint8Array>, pairs?: readonly (readonly [string, Uint8Array])[], known?: number): number {
    const a = this.arena;
    const slot = known ?? a.find(record.id);
    let fields: layout.RecordFields;
    let principal: string | null = null;
    // The stored bytes, read until the new payload is assembled (nothing writes the arena before).
    let stored = a.buf;
    let keptFrom = 0;
    let keptTo = 0;
    let keptCount = 0;
    let dataFrom = 0;
    let dataTo = 0;
    if (slot < 0) {
      fields = { version: 0, createdAt: record.ca ?? record.la, lastAccessedAt: record.la, absoluteExpiresAt: record.ae ?? 0, idleTimeoutMs: record.it ?? 0, bytes: 0 };
      this.tombstones.delete(record.id);
    } else {
      a.locate(slot);
      const buf = (stored = a.buf);
      fields = layout.readFields(buf, a.at);
      principal = layout.principalOf(buf, a.at);
      keptFrom = layout.commitsStart(buf, a.at);
      keptCount = layout.commitCount(buf, a.at);
      dataFrom = keptTo = layout.skipCommits(buf, keptFrom, keptCount);
      dataTo = a.end;
      if (keptCount >= REMEMBERED_COMMITS) {
        // The oldest remembered commit makes room for this one.
        keptFrom = layout.afterCommit(buf, keptFrom);
        keptCount--;
      }
    }
    const oldBytes = fields.bytes;
    const oldPrincipal = principal;
    // The new attributes: the record's own when it creates them all, else the stored ones changed.
    let attributes: Iterable<readonly [string, Uint8Array]> | undefined;
    const changes = record.del.length > 0 || (pairs?.length ?? 0) > 0 || (record.packed?.length ?? 0) > 0 || (record.set?.length ?? 0) > 0;
    const whole = dataTo === dataFrom && record.del.length === 0 && (record.packed || pairs) ? (pairs ?? recordPairs(record.packed, undefined)) : undefined;
    // A record from before commits were refused for naming an attribute twice may hold a
    // name twice (and count it twice in pb): replayed through the Map below, it heals.
    if (whole && (pairs || firstRepeated(whole.length, (i) => whole[i]![0]) === undefined)) {
      attributes = whole;
      fields.bytes = record.pb ?? attributeBytes(whole as [string, Uint8Array][]);
    } else if (changes) {
      const map = unpacked ?? (slot < 0 ? new Map<string, Uint8Array>() : this.attributes.read(stored, dataFrom, dataTo, false));
      for (const name of record.del) {
        const old = map.get(name);
        if (old) {
          fields.bytes -= name.length + old.length;
          map.delete(name);
        }
      }
      for (const [name, value] of pairs ?? recordPairs(record.packed, record.set)) {
        const old = map.get(name);
        fields.bytes += old ? value.length - old.length : name.length + value.length;
        map.set(name, value);
      }
      attributes = map;
    }
    if (record.p !== undefined) principal = record.p;
    if (record.it !== undefined) fields.idleTimeoutMs = record.it;
    if (record.ae !== undefined) fields.absoluteExpiresAt = record.ae;
    fields.version = record.v;
    if (record.la > fields.lastAccessedAt) fields.lastAccessedAt = record.la;
    const dataLength = attributes ? this.attributes.maxLength(attributes) : dataTo - dataFrom;
    const out = this.outFor(layout.headRoom(principal, record.cid) + (keptTo - keptFrom) + dataLength);
    let i = layout.writeHead(out, fields, principal);
    if (keptTo > keptFrom) i += stored.copy(out, i, keptFrom, keptTo);
    i = layout.writeCommit(out, i, record.cid, record.v);
    layout.setCommitCount(out, keptCount + 1);
    if (attributes) i += this.attributes.write(attributes, out, i);
    else if (dataTo > dataFrom) i += stored.copy(out, i, dataFrom, dataTo);
    const storedAt = a.put(record.id, out, i, slot);
    this.totalBytes += fields.bytes - oldBytes;
    this.indexPrincipal(storedAt, oldPrincipal, principal); // a session keeps its slot: storedAt is slot when it existed
    return storedAt;
  }

  private outFor(length: number): Buffer {
    if (this.out.length < length) this.out = Buffer.allocUnsafeSlow(Math.max(length, 2 * this.out.length));
    return this.out;
  }

  /** The whole state as records, for compaction. Each record is a copy, made as the iteration reaches it. */
  *dump(now: number): Generator<TierRecord> {
    const a = this.arena;
    for (const slot of a.slots()) {
      const id = a.keyOf(slot);
      const meta = this.metaAt(slot, id);
      const commits = layout.commitPairs(a.buf, a.at);
      const data = layout.dataStart(a.buf, a.at);
      const packed = packAttributesToBytes(this.attributes.read(a.buf, data, a.end, false));
      const { bytes, ...plain } = meta;
      yield { t: 's', meta: plain, packed, pb: bytes, commits };
    }
    for (const [id, until] of this.tombstones) if (until > now) yield { t: 'b', id, until };
  }

  private indexPrincipal(slot: number, old: string | null, principal: string | null): void {
    if (old === principal) return;
    if (old !== null) this.principals.remove(old, slot);
    if (principal !== null) this.principals.add(principal, slot);
  }
}

function withoutBytes(s: StoredMeta): SessionMeta {
  const { bytes: _bytes, ...meta } = s;
  return meta;
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
