import { createCipheriv, createDecipheriv, createHmac, randomFillSync } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { Packr } from 'msgpackr';
import { KilnError } from '../../errors/index.js';
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

/**
 * Encryption at rest: a whole record payload sealed with AES-256-GCM, so attribute
 * values, attribute names, session ids and principals are all ciphertext. What stays
 * plain is what the framing needs: the frame's length and CRC, the key id, the nonce, and
 * each file's header (magic and sequence number); an observer of the files still learns
 * how many records there are, their sizes, and (from file times) when they were written.
 *
 * Sealed layout:  c1 65 idLength:u8 id check:4 nonce:12 | ciphertext tag:16
 *
 * `check` is the first 4 bytes of HMAC-SHA256(key, "kiln key check"): it tells a wrong
 * key for an id (refuse to start, naming the id) from altered bytes (corruption).
 *
 * Nonces are 96 random bits per record rather than a counter: nothing has to be stored or
 * recovered after a crash, and a copied data directory or two servers started on
 * restored backups cannot reuse a counter's nonces. The cost is the birthday bound:
 * keep one key under 2^32 records (rotate before four billion commits).
 *
 * The additional authenticated data is where the record sits (the file's magic and
 * sequence number, the frame's byte offset) plus the header above, so a record moved to
 * another place, within or between files, or given another key id, fails authentication.
 */
const KIND_SEALED = 0x65; // 'e'
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const CHECK_BYTES = 4;

export interface RecordKey {
  id: string;
  key: Buffer;
  check: Buffer;
}

/** The keys a data directory is read with; the first is the one records are written with. */
export class Keyring {
  readonly current: RecordKey;
  private readonly byId = new Map<string, RecordKey>();

  constructor(keys: readonly { id: string; key: Uint8Array }[]) {
    if (keys.length === 0) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', 'encryption needs at least one key');
    for (const { id, key } of keys) {
      if (typeof id !== 'string' || !(key instanceof Uint8Array)) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', 'each encryption key must be { id: string, key: Uint8Array }');
      if (!KEY_ID.test(id)) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `key id ${JSON.stringify(id.slice(0, 80))} must be 1-64 of A-Z a-z 0-9 . _ -`);
      if (key.length !== 32) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `key "${id}" must be 32 bytes (AES-256), got ${key.length}`);
      if (this.byId.has(id)) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `key id "${id}" appears twice`);
      const copy = Buffer.from(key);
      this.byId.set(id, { id, key: copy, check: keyCheck(copy) });
    }
    this.current = this.byId.get(keys[0]!.id)!;
  }

  get(id: string): RecordKey | undefined {
    return this.byId.get(id);
  }

  get ids(): string[] {
    return [...this.byId.keys()];
  }
}

const KEY_ID = /^[A-Za-z0-9._-]{1,64}$/;

function keyCheck(key: Buffer): Buffer {
  return createHmac('sha256', key).update('kiln key check').digest().subarray(0, CHECK_BYTES);
}

/**
 * Reads a key file: one key a line, `id:base64-of-32-bytes`, the first line the current
 * key; blank lines and lines starting with # are skipped. A file group or others can read
 * is refused (the key would be as exposed as the data it protects). Messages name line
 * numbers and ids, never key material.
 */
export function readKeyFile(path: string): Keyring {
  let text: string;
  try {
    const st = statSync(path);
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new KilnError('KILN_ERR_UNSAFE_PERMISSIONS', `encryption key file ${path} has mode ${modeString(st.mode)}: group or others can read or change it. Fix: chmod 600 ${path}`, { details: { path, mode: modeString(st.mode) } });
    }
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `cannot read encryption key file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const keys: { id: string; key: Buffer }[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const id = colon > 0 ? line.slice(0, colon) : '';
    const b64 = line.slice(colon + 1).trim();
    const key = Buffer.from(b64, 'base64');
    if (!KEY_ID.test(id) || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || key.length !== 32) {
      throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `encryption key file ${path}, line ${i + 1}: expected "id:base64" with an id of 1-64 of A-Z a-z 0-9 . _ - and exactly 32 bytes of key (make one with: openssl rand -base64 32)`);
    }
    keys.push({ id, key });
  }
  if (keys.length === 0) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `encryption key file ${path} holds no key (one a line: id:base64-of-32-bytes)`);
  return new Keyring(keys);
}

export function modeString(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}

/** Where a record sits, authenticated with it: file magic (8 bytes), file sequence number, frame offset. */
export function recordPlace(magic: Buffer, seq: number, offset: number): Buffer {
  const place = Buffer.allocUnsafe(magic.length + 12);
  magic.copy(place);
  place.writeUInt32BE(seq, magic.length);
  place.writeUIntBE(Math.floor(offset / 2 ** 32), magic.length + 4, 4);
  place.writeUInt32BE(offset % 2 ** 32, magic.length + 8);
  return place;
}

export function isSealed(payload: Uint8Array): boolean {
  return payload[0] === BINARY_MARK && payload[1] === KIND_SEALED;
}

/**
 * Nonces come from a pool filled from the CSPRNG 512 at a time: one randomFillSync call
 * per record cost about 6 us, a fifth of sealing a small record.
 */
const noncePool = Buffer.allocUnsafe(NONCE_BYTES * 512);
let noncePoolAt = noncePool.length;

function nextNonce(): Buffer {
  if (noncePoolAt === noncePool.length) {
    randomFillSync(noncePool);
    noncePoolAt = 0;
  }
  noncePoolAt += NONCE_BYTES;
  return noncePool.subarray(noncePoolAt - NONCE_BYTES, noncePoolAt);
}

export function sealRecord(payload: Uint8Array, key: RecordKey, place: Buffer): Buffer {
  const idLength = Buffer.byteLength(key.id);
  const headerLength = 3 + idLength + CHECK_BYTES + NONCE_BYTES;
  const out = Buffer.allocUnsafe(headerLength + payload.length + TAG_BYTES);
  out[0] = BINARY_MARK;
  out[1] = KIND_SEALED;
  out[2] = idLength;
  out.write(key.id, 3, 'latin1');
  key.check.copy(out, 3 + idLength);
  nextNonce().copy(out, 3 + idLength + CHECK_BYTES);
  const header = out.subarray(0, headerLength);
  const cipher = createCipheriv('aes-256-gcm', key.key, out.subarray(headerLength - NONCE_BYTES, headerLength));
  cipher.setAAD(Buffer.concat([place, header]));
  const written = cipher.update(payload).copy(out, headerLength);
  cipher.final();
  cipher.getAuthTag().copy(out, headerLength + written);
  return out;
}

/** Whether a sealed payload was sealed with `key` (its id and check match). */
export function sealedWith(payload: Buffer, key: RecordKey): boolean {
  const idLength = Buffer.byteLength(key.id);
  return payload[2] === idLength && payload.toString('latin1', 3, 3 + idLength) === key.id && key.check.equals(payload.subarray(3 + idLength, 3 + idLength + CHECK_BYTES));
}

/** The key id a sealed payload names (for messages), or undefined when it is too short to name one. */
function sealedKeyId(payload: Buffer): string | undefined {
  const idLength = payload[2];
  if (idLength === undefined || payload.length < 3 + idLength) return undefined;
  return payload.toString('latin1', 3, 3 + idLength);
}

/**
 * Opens a sealed payload. A key id missing from the keyring, or one holding a different
 * key, is KILN_ERR_ENCRYPTION_KEY; anything that fails authentication with the right key
 * is KILN_ERR_STORAGE_CORRUPT. Never a record dropped in silence.
 */
export function openRecord(payload: Buffer, keyring: Keyring | undefined, place: Buffer, where: string): Buffer {
  const id = sealedKeyId(payload);
  if (id === undefined) throw new KilnError('KILN_ERR_STORAGE_CORRUPT', `${where}: an encrypted record is too short to name its key`);
  const headerLength = 3 + id.length + CHECK_BYTES + NONCE_BYTES;
  if (payload.length < headerLength + TAG_BYTES) throw new KilnError('KILN_ERR_STORAGE_CORRUPT', `${where}: an encrypted record (key id "${id}") is too short`);
  if (!keyring) {
    throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `${where} holds records encrypted with key id "${id}" and the server has no encryption key: start it with --encryption-key-file holding key "${id}"`, { details: { keyId: id } });
  }
  const key = keyring.get(id);
  if (!key) throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `${where} holds records encrypted with key id "${id}", which the key file lacks (it has ${keyring.ids.map((k) => `"${k}"`).join(', ')}): add that key back until a compaction has rewritten them`, { details: { keyId: id } });
  if (!key.check.equals(payload.subarray(3 + id.length, 3 + id.length + CHECK_BYTES))) {
    throw new KilnError('KILN_ERR_ENCRYPTION_KEY', `${where}: key id "${id}" in the key file is not the key these records were encrypted with`, { details: { keyId: id } });
  }
  const decipher = createDecipheriv('aes-256-gcm', key.key, payload.subarray(headerLength - NONCE_BYTES, headerLength));
  decipher.setAAD(Buffer.concat([place, payload.subarray(0, headerLength)]));
  decipher.setAuthTag(payload.subarray(payload.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(payload.subarray(headerLength, payload.length - TAG_BYTES)), decipher.final()]);
  } catch (err) {
    throw new KilnError('KILN_ERR_STORAGE_CORRUPT', `${where}: an encrypted record (key id "${id}") fails authentication: the file was altered or the record moved; restore the data directory from a backup`, { cause: err, details: { keyId: id } });
  }
}
