import { Packr } from 'msgpackr';
import type { SessionMeta } from '../../session/model.js';
import type { TierRecord } from '../../tier/session-table.js';
import { BINARY_MARK, ByteReader, ByteWriter, stringSize } from '../../util/binary.js';

/**
 * How a TierRecord is written inside a log or snapshot frame.
 *
 * Two kinds make nearly every record of a data directory: a commit that sets packed
 * attributes and deletes none ('c', every create) and the snapshot of one session
 * ('s'). They have a fixed binary layout, read with a handful of buffer reads: loading
 * a million sessions spent a quarter of its time decoding them as MessagePack maps. Every
 * other record (and a 'c' that deletes, or an older form) stays MessagePack.
 *
 * A binary record starts with 0xc1, the one byte MessagePack never uses, so every log
 * and snapshot written before this layout existed still reads.
 *
 * Layout (numbers big-endian; strings are u16 length + UTF-8; bytes are u32 length + data):
 *   'c':  c1 63 flags  v:f64 la:f64 [ca:f64] [it:f64] [ae:f64] [pb:u32] id cid [p] packed
 *   's':  c1 73 flags  createdAt lastAccessedAt idleTimeoutMs absoluteExpiresAt version (f64)
 *                      [pb:u32] id [principal] packed  commits:u16 × (cid version:f64)
 * flags: 1 ca, 2 it, 4 ae, 8 a principal string follows, 16 principal set to null, 32 pb.
 */
const KIND_COMMIT = 0x63; // 'c'
const KIND_SNAPSHOT = 0x73; // 's'
const HAS_CA = 1;
const HAS_IT = 2;
const HAS_AE = 4;
const HAS_PRINCIPAL = 8;
const PRINCIPAL_NULL = 16;
const HAS_PB = 32;

const packr = new Packr({ useRecords: false, copyBuffers: true, variableMapSize: true });
/**
 * Replay decodes without copying byte strings: the tier packs every value into its own
 * storage as the record is applied and keeps no reference to the record (a view kept
 * would pin the whole file in memory).
 */
const loadPackr = new Packr({ useRecords: false, copyBuffers: false, variableMapSize: true });
const EMPTY_MAP = Buffer.from([0x80]);
const NO_DELETES: string[] = [];

export function encodeRecord(record: TierRecord): Uint8Array {
  if (record.t === 'c' && record.packed && record.del.length === 0 && !record.set?.length) return encodeCommit(record);
  if (record.t === 's' && record.packed && !record.attrs) return encodeSnapshot(record);
  return packr.pack(record);
}

/**
 * Reads a record. Byte fields are views into `payload` (see loadPackr): the caller must
 * not keep them past applying the record.
 */
export function decodeRecord(payload: Buffer): TierRecord {
  if (payload[0] !== BINARY_MARK) return loadPackr.unpack(payload) as TierRecord;
  const reader = new ByteReader(payload, 1);
  const kind = reader.u8();
  if (kind === KIND_COMMIT) return decodeCommit(reader);
  if (kind === KIND_SNAPSHOT) return decodeSnapshot(reader);
  throw new RangeError(`unknown binary record kind 0x${kind.toString(16)}`);
}

/** msgpackr keeps the last buffer it decoded: decoding one byte more lets a loaded file be freed. */
export function releaseDecodeBuffer(): void {
  loadPackr.unpack(EMPTY_MAP);
}

type CommitRecord = Extract<TierRecord, { t: 'c' }>;
type SnapshotRecord = Extract<TierRecord, { t: 's' }>;

function principalFlags(p: string | null | undefined): number {
  return p === null ? PRINCIPAL_NULL : p === undefined ? 0 : HAS_PRINCIPAL;
}

function encodeCommit(r: CommitRecord): Uint8Array {
  const packed = r.packed!;
  const flags = (r.ca !== undefined ? HAS_CA : 0) | (r.it !== undefined ? HAS_IT : 0) | (r.ae !== undefined ? HAS_AE : 0) | principalFlags(r.p) | (r.pb !== undefined ? HAS_PB : 0);
  const size = 3 + 16 + (flags & HAS_CA ? 8 : 0) + (flags & HAS_IT ? 8 : 0) + (flags & HAS_AE ? 8 : 0) + (flags & HAS_PB ? 4 : 0) + stringSize(r.id) + stringSize(r.cid) + (flags & HAS_PRINCIPAL ? stringSize(r.p!) : 0) + 4 + packed.length;
  // A string longer than a layout carries makes the size infinite: the record goes as MessagePack.
  if (size === Infinity) return packr.pack(r);
  const w = new ByteWriter(size);
  w.u8(BINARY_MARK).u8(KIND_COMMIT).u8(flags).f64(r.v).f64(r.la);
  if (r.ca !== undefined) w.f64(r.ca);
  if (r.it !== undefined) w.f64(r.it);
  if (r.ae !== undefined) w.f64(r.ae);
  if (r.pb !== undefined) w.u32(r.pb);
  w.string(r.id).string(r.cid);
  if (flags & HAS_PRINCIPAL) w.string(r.p!);
  return w.bytes(packed).done();
}

function decodeCommit(r: ByteReader): CommitRecord {
  const flags = r.u8();
  const v = r.f64();
  const la = r.f64();
  const ca = flags & HAS_CA ? r.f64() : undefined;
  const it = flags & HAS_IT ? r.f64() : undefined;
  const ae = flags & HAS_AE ? r.f64() : undefined;
  const pb = flags & HAS_PB ? r.u32() : undefined;
  const id = r.string();
  const cid = r.string();
  const p = flags & HAS_PRINCIPAL ? r.string() : flags & PRINCIPAL_NULL ? null : undefined;
  const packed = r.bytes();
  r.end();
  return { t: 'c', id, v, cid, la, packed, pb, del: NO_DELETES, ca, it, ae, p };
}

function encodeSnapshot(r: SnapshotRecord): Uint8Array {
  const m = r.meta;
  if (r.commits.length > 0xffff) return packr.pack(r);
  const packed = r.packed!;
  const flags = principalFlags(m.principal) | (r.pb !== undefined ? HAS_PB : 0);
  let size = 3 + 40 + (flags & HAS_PB ? 4 : 0) + stringSize(m.id) + (flags & HAS_PRINCIPAL ? stringSize(m.principal!) : 0) + 4 + packed.length + 2;
  for (const [cid] of r.commits) size += stringSize(cid) + 8;
  if (size === Infinity) return packr.pack(r);
  const w = new ByteWriter(size);
  w.u8(BINARY_MARK).u8(KIND_SNAPSHOT).u8(flags).f64(m.createdAt).f64(m.lastAccessedAt).f64(m.idleTimeoutMs).f64(m.absoluteExpiresAt).f64(m.version);
  if (r.pb !== undefined) w.u32(r.pb);
  w.string(m.id);
  if (flags & HAS_PRINCIPAL) w.string(m.principal!);
  w.bytes(packed).u16(r.commits.length);
  for (const [cid, version] of r.commits) w.string(cid).f64(version);
  return w.done();
}

function decodeSnapshot(r: ByteReader): SnapshotRecord {
  const flags = r.u8();
  const createdAt = r.f64();
  const lastAccessedAt = r.f64();
  const idleTimeoutMs = r.f64();
  const absoluteExpiresAt = r.f64();
  const version = r.f64();
  const pb = flags & HAS_PB ? r.u32() : undefined;
  const id = r.string();
  const principal = flags & HAS_PRINCIPAL ? r.string() : null;
  const packed = r.bytes();
  const count = r.u16();
  const commits: [string, number][] = [];
  for (let i = 0; i < count; i++) commits.push([r.string(), r.f64()]);
  r.end();
  const meta: SessionMeta = { id, createdAt, lastAccessedAt, idleTimeoutMs, absoluteExpiresAt, principal, version };
  return { t: 's', meta, packed, pb, commits };
}
