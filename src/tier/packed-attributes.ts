import { copyBytes } from '../util/bytes.js';

/**
 * The packed form a stored session keeps its attributes in, and the scratch buffers that
 * packing and a commit's unpacking reuse. Rule kept: a million sessions fit in a
 * gigabyte (one latin1 string per small session, a Buffer of its own per large one), and
 * packed bytes never leave the table uncopied. Pure: no clock, no I/O.
 */

/**
 * A session's packed attributes. Small sessions (nearly all) are a latin1 string: the
 * most compact form V8 has, which is what fits a million sessions in a gigabyte. From
 * LARGE_SESSION_BYTES on they are a Buffer of their own, outside the JavaScript heap: a
 * string there was a new 20 KB heap object per commit, kept for as long as the session
 * lives, so the collector copied and marked megabytes a second under a load of large
 * sessions. A Buffer is rewritten in place when a commit keeps its size (one changed
 * field of a list). It never leaves the table: readers get copies.
 */
export type PackedData = string | Buffer;

/** Packed size from which a session's data is a Buffer rather than a string (see PackedData). */
export const LARGE_SESSION_BYTES = 4096;

let scratch = Buffer.allocUnsafeSlow(64 * 1024);

/** Packs attributes into the compact form StoredSession keeps. */
export function packAttributes(attributes: Iterable<readonly [string, Uint8Array]> | ReadonlyMap<string, Uint8Array>, previous?: PackedData): PackedData {
  const size = packInto(attributes); // may replace `scratch` with a larger one
  return storedForm(scratch, size, previous);
}

/**
 * The first `size` bytes of `bytes` as a session's data: a string when small, else a
 * Buffer, `previous` itself rewritten when it is a Buffer of that size (nothing else
 * holds it: see PackedData).
 */
function storedForm(bytes: Buffer, size: number, previous?: PackedData): PackedData {
  if (size === 0) return '';
  if (size < LARGE_SESSION_BYTES) return bytes.toString('latin1', 0, size);
  const out = typeof previous === 'object' && previous.length === size ? previous : Buffer.allocUnsafeSlow(size);
  bytes.copy(out, 0, 0, size);
  return out;
}

/** A record's packed attributes as a session's data (copied: the record's bytes may be a view of a whole log read). */
export function storedFromRecord(packed: Uint8Array): PackedData {
  return storedForm(asBuffer(packed), packed.length);
}

/** The same bytes as a Buffer (records decoded by msgpackr carry plain Uint8Arrays), without a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The same packed form as bytes of their own: what records carry, so that replaying a
 * log or snapshot turns each session into one string without decoding its attributes.
 */
export function packAttributesToBytes(attributes: Iterable<readonly [string, Uint8Array]> | ReadonlyMap<string, Uint8Array>): Uint8Array {
  const size = packInto(attributes);
  return copyBytes(scratch, 0, size);
}

/** Writes the packed form into the scratch buffer; returns its length. */
function packInto(attributes: Iterable<readonly [string, Uint8Array]> | ReadonlyMap<string, Uint8Array>): number {
  let size = 0;
  for (const [name, value] of attributes) size += 6 + Buffer.byteLength(name, 'utf8') + value.length;
  if (size === 0) return 0;
  // One scratch buffer for every pack: a Buffer per session would churn the malloc heap.
  if (scratch.length < size) scratch = Buffer.allocUnsafeSlow(Math.max(size, 2 * scratch.length));
  const out = scratch;
  let at = 0;
  for (const [name, value] of attributes) {
    const nameLength = out.write(name, at + 2, 'utf8');
    out.writeUInt16BE(nameLength, at);
    at += 2 + nameLength;
    out.writeUInt32BE(value.length, at);
    out.set(value, at + 4);
    at += 4 + value.length;
  }
  return size;
}

/** The pairs of a record that carries packed attributes, or its older `set`/`attrs` form. */
export function recordPairs(packed: Uint8Array | undefined, pairs: [string, Uint8Array][] | undefined): [string, Uint8Array][] {
  // Views of the record's bytes: storing them packs (copies) them.
  return packed ? [...unpackInto(asBuffer(packed))] : (pairs ?? []);
}

/** The attributes of packed data; the values are views of one fresh copy. */
export function unpackAttributes(data: PackedData): Map<string, Uint8Array> {
  return unpackInto(packedCopy(data));
}

/** Packed data as bytes of their own, free to leave the table. */
export function packedCopy(data: PackedData): Buffer {
  if (data.length === 0) return EMPTY;
  return typeof data === 'string' ? Buffer.from(data, 'latin1') : Buffer.from(data);
}

const EMPTY = Buffer.alloc(0);
/** What a commit unpacks and the values its patches make: read while it is applied, never kept. */
let commitScratch = Buffer.allocUnsafeSlow(64 * 1024);
let commitScratchUsed = 0;

/** Starts a commit: nothing of the previous commit's scratch regions is still read. */
export function beginCommitScratch(): void {
  commitScratchUsed = 0;
}

/**
 * unpackAttributes for a commit being applied: the values are views of a buffer reused
 * by the next commit (or of a large session's own Buffer), so they must not outlive this
 * one; packing copies them before anything is rewritten. A commit of a 20 KB session
 * allocated that buffer, and another for its patched value, each time.
 */
export function unpackForCommit(data: PackedData): Map<string, Uint8Array> {
  if (data.length === 0) return new Map();
  if (typeof data === 'object') return unpackInto(data);
  const bytes = commitScratchRegion(data.length);
  bytes.write(data, 'latin1');
  return unpackInto(bytes);
}

/** The next `length` bytes of the commit scratch; earlier regions of this commit stay valid. */
export function commitScratchRegion(length: number): Buffer {
  if (commitScratchUsed + length > commitScratch.length) {
    // Regions handed out earlier in this commit keep the old buffer alive until it ends.
    commitScratch = Buffer.allocUnsafeSlow(Math.max(2 * commitScratch.length, length));
    commitScratchUsed = 0;
  }
  const region = commitScratch.subarray(commitScratchUsed, commitScratchUsed + length);
  commitScratchUsed += length;
  return region;
}

function unpackInto(bytes: Buffer): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  let at = 0;
  while (at < bytes.length) {
    const nameLength = bytes.readUInt16BE(at);
    const name = bytes.toString('utf8', at + 2, at + 2 + nameLength);
    at += 2 + nameLength;
    const valueLength = bytes.readUInt32BE(at);
    out.set(name, bytes.subarray(at + 4, at + 4 + valueLength));
    at += 4 + valueLength;
  }
  return out;
}
