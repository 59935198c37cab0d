/**
 * How one stored session is laid out as bytes in the SessionArena (the payload after its
 * key). Pure: no clock, no I/O. Little-endian:
 *
 * ```
 *  0 f64 lastAccessedAt        (first: the one field written in place, by touches)
 *  8 u8  flags                 (which numbers below live in the wide area instead)
 *  9 u48 version              15 u48 createdAt           21 u48 idleTimeoutMs
 * 27 u32 attribute bytes      31 u16 principal length (NO_PRINCIPAL: none; LONG_PRINCIPAL:
 *        a u32 length comes first in its place)
 * 33 u8  remembered commits
 * 34 the wide area: f64 createdAt if WIDE_CREATED, f64 idleTimeoutMs if WIDE_IDLE,
 *    f64 absoluteExpiresAt if HAS_ABSOLUTE (0, "none", takes no bytes)
 *    principal (UTF-8)
 *    each commit, oldest first: varint id length | id (UTF-8) | varint version
 *    the attributes (stored-attributes), to the end
 * ```
 *
 * Numbers are 6 bytes when they are whole and under 2^48 (every time and timeout a
 * server makes, and any version a session reaches), else 8 in the wide area, so no
 * value a client sends is ever changed by being stored.
 */
import { expiryDeadline, type SessionMeta } from '../session/model.js';
import { sameBytes } from '../util/bytes.js';
import { readVarint, varintEnd, writeVarint, writeVarintPrefixedUtf8 } from '../util/varint.js';

const LAST_ACCESSED_AT = 0;
const FLAGS = 8;
const VERSION = 9;
const CREATED_AT = 15;
const IDLE_TIMEOUT_MS = 21;
const ATTRIBUTE_BYTES = 27;
const PRINCIPAL_LENGTH = 31;
const COMMIT_COUNT = 33;
const FIXED = 34;
const NO_PRINCIPAL = 0xffff;
const LONG_PRINCIPAL = 0xfffe;
const WIDE_CREATED = 1;
const WIDE_IDLE = 2;
const HAS_ABSOLUTE = 4;
const U48 = 2 ** 48;

/** The numbers of a session, as a commit or replay sets them. */
export interface RecordFields {
  version: number;
  createdAt: number;
  lastAccessedAt: number;
  absoluteExpiresAt: number;
  idleTimeoutMs: number;
  bytes: number;
}

function fitsU48(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n < U48;
}

function wideBytes(flags: number): number {
  return ((flags & WIDE_CREATED) !== 0 ? 8 : 0) + ((flags & WIDE_IDLE) !== 0 ? 8 : 0) + ((flags & HAS_ABSOLUTE) !== 0 ? 8 : 0);
}

export function readFields(buf: Buffer, at: number): RecordFields {
  const flags = buf[at + FLAGS]!;
  let wide = at + FIXED;
  let createdAt: number;
  let idleTimeoutMs: number;
  let absoluteExpiresAt = 0;
  if ((flags & WIDE_CREATED) !== 0) {
    createdAt = buf.readDoubleLE(wide);
    wide += 8;
  } else {
    createdAt = buf.readUIntLE(at + CREATED_AT, 6);
  }
  if ((flags & WIDE_IDLE) !== 0) {
    idleTimeoutMs = buf.readDoubleLE(wide);
    wide += 8;
  } else {
    idleTimeoutMs = buf.readUIntLE(at + IDLE_TIMEOUT_MS, 6);
  }
  if ((flags & HAS_ABSOLUTE) !== 0) absoluteExpiresAt = buf.readDoubleLE(wide);
  return {
    version: buf.readUIntLE(at + VERSION, 6),
    createdAt,
    lastAccessedAt: buf.readDoubleLE(at + LAST_ACCESSED_AT),
    absoluteExpiresAt,
    idleTimeoutMs,
    bytes: buf.readUInt32LE(at + ATTRIBUTE_BYTES),
  };
}

export function lastAccessedAt(buf: Buffer, at: number): number {
  return buf.readDoubleLE(at + LAST_ACCESSED_AT);
}

/** Touches write the access time where it is: no other field moves. */
export function setLastAccessedAt(buf: Buffer, at: number, time: number): void {
  buf.writeDoubleLE(time, at + LAST_ACCESSED_AT);
}

export function attributeBytes(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at + ATTRIBUTE_BYTES);
}

/** When the session expires (expiryDeadline), read in place. */
export function deadlineAt(buf: Buffer, at: number, idleGraceMs: number): number {
  return expiryDeadline(readFields(buf, at), idleGraceMs);
}

function principalStart(buf: Buffer, at: number): number {
  return at + FIXED + wideBytes(buf[at + FLAGS]!);
}

export function principalOf(buf: Buffer, at: number): string | null {
  const p = buf.readUInt16LE(at + PRINCIPAL_LENGTH);
  if (p === NO_PRINCIPAL) return null;
  const start = principalStart(buf, at);
  if (p === LONG_PRINCIPAL) return buf.toString('utf8', start + 4, start + 4 + buf.readUInt32LE(start));
  return buf.toString('utf8', start, start + p);
}

/** Where the remembered commits begin. */
export function commitsStart(buf: Buffer, at: number): number {
  const p = buf.readUInt16LE(at + PRINCIPAL_LENGTH);
  const start = principalStart(buf, at);
  if (p === NO_PRINCIPAL) return start;
  return p === LONG_PRINCIPAL ? start + 4 + buf.readUInt32LE(start) : start + p;
}

export function commitCount(buf: Buffer, at: number): number {
  return buf[at + COMMIT_COUNT]!;
}

/** The first byte after `count` commits from `from`: the next commit, or the attributes. */
export function skipCommits(buf: Buffer, from: number, count: number): number {
  let i = from;
  for (let n = 0; n < count; n++) {
    const idLength = readVarint(buf, i);
    readVarint(buf, varintEnd + idLength); // the version
    i = varintEnd;
  }
  return i;
}

/** Where the attributes begin. */
export function dataStart(buf: Buffer, at: number): number {
  return skipCommits(buf, commitsStart(buf, at), commitCount(buf, at));
}

export function metaAt(buf: Buffer, at: number, id: string): SessionMeta {
  const f = readFields(buf, at);
  return { id, createdAt: f.createdAt, lastAccessedAt: f.lastAccessedAt, idleTimeoutMs: f.idleTimeoutMs, absoluteExpiresAt: f.absoluteExpiresAt, principal: principalOf(buf, at), version: f.version };
}

/** The version a remembered commit id made, or undefined. `cid` is the id's UTF-8 bytes in `cid[0, cidLength)`. */
export function findCommit(buf: Buffer, at: number, cid: Buffer, cidLength: number): number | undefined {
  let i = commitsStart(buf, at);
  for (let n = commitCount(buf, at); n > 0; n--) {
    const length = readVarint(buf, i);
    const start = varintEnd;
    const version = readVarint(buf, start + length);
    if (length === cidLength && sameBytes(buf, start, cid, 0, length)) return version;
    i = varintEnd;
  }
  return undefined;
}

/** The remembered commits as [commitId, version] pairs, oldest first. */
export function commitPairs(buf: Buffer, at: number): [string, number][] {
  const out: [string, number][] = [];
  let i = commitsStart(buf, at);
  for (let n = commitCount(buf, at); n > 0; n--) {
    const length = readVarint(buf, i);
    const start = varintEnd;
    out.push([buf.toString('utf8', start, start + length), readVarint(buf, start + length)]);
    i = varintEnd;
  }
  return out;
}

/** The first byte after the oldest remembered commit at `from` (it makes room for a new one). */
export function afterCommit(buf: Buffer, from: number): number {
  return skipCommits(buf, from, 1);
}

/**
 * Writes a payload's fixed fields, wide area and principal at `out[0]`; returns where
 * its commits go. The caller writes the commits (writeCommit, or a copy of an earlier
 * run of them), sets their count with setCommitCount, then writes the attributes.
 */
export function writeHead(out: Buffer, fields: RecordFields, principal: string | null): number {
  if (!fitsU48(fields.version)) throw new RangeError(`session version ${fields.version} is past what a session stores`);
  let flags = (fitsU48(fields.createdAt) ? 0 : WIDE_CREATED) | (fitsU48(fields.idleTimeoutMs) ? 0 : WIDE_IDLE);
  out.writeDoubleLE(fields.lastAccessedAt, LAST_ACCESSED_AT);
  out.writeUIntLE(fields.version, VERSION, 6);
  let wide = writeNumber(out, fields.createdAt, CREATED_AT, FIXED);
  wide = writeNumber(out, fields.idleTimeoutMs, IDLE_TIMEOUT_MS, wide);
  if (fields.absoluteExpiresAt !== 0) {
    flags |= HAS_ABSOLUTE;
    wide = out.writeDoubleLE(fields.absoluteExpiresAt, wide);
  }
  out[FLAGS] = flags;
  out.writeUInt32LE(fields.bytes, ATTRIBUTE_BYTES);
  if (principal === null) {
    out.writeUInt16LE(NO_PRINCIPAL, PRINCIPAL_LENGTH);
    return wide;
  }
  const length = out.write(principal, wide, 'utf8');
  if (length < LONG_PRINCIPAL) {
    out.writeUInt16LE(length, PRINCIPAL_LENGTH);
    return wide + length;
  }
  // A limit set past 21,844 characters: the length goes first, as a u32.
  out.copyWithin(wide + 4, wide, wide + length);
  out.writeUInt32LE(length, wide);
  out.writeUInt16LE(LONG_PRINCIPAL, PRINCIPAL_LENGTH);
  return wide + 4 + length;
}

/** A number in its 6-byte field, or (the field left 0) as a f64 at `wide` when it does not fit; returns the wide area's new end. */
function writeNumber(out: Buffer, value: number, field: number, wide: number): number {
  if (fitsU48(value)) {
    out.writeUIntLE(value, field, 6);
    return wide;
  }
  out.writeUIntLE(0, field, 6);
  return out.writeDoubleLE(value, wide);
}

export function setCommitCount(out: Buffer, count: number): void {
  out[COMMIT_COUNT] = count;
}

/** Writes one remembered commit at `out[i]`; returns the first byte after it. */
export function writeCommit(out: Buffer, i: number, commitId: string, version: number): number {
  return writeVarint(out, writeVarintPrefixedUtf8(out, i, commitId), version);
}

/** Most bytes a payload's head and one new commit can take beyond the attributes and the kept commits. */
export function headRoom(principal: string | null, commitId: string): number {
  return FIXED + 24 + (principal === null ? 0 : 4 + 3 * principal.length) + 5 + 3 * commitId.length + 8;
}
