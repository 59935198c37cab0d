import { copyBytes } from '../util/bytes.js';

/**
 * The packed form records carry a session's attributes in (`u16 name length | name
 * (UTF-8) | u32 value length | value`, one after another, big-endian), and the scratch
 * buffer a commit's patches reuse. Replaying a log or snapshot reads the pairs straight
 * from a record's bytes. The session table keeps attributes in a smaller form of its own
 * (stored-attributes); this one is what storage writes and has always written. Pure: no
 * clock, no I/O.
 */

type Attributes = Iterable<readonly [string, Uint8Array]> | ReadonlyMap<string, Uint8Array>;

let scratch = Buffer.allocUnsafeSlow(64 * 1024);

/** The packed form as bytes of their own: what records carry. */
export function packAttributesToBytes(attributes: Attributes): Uint8Array {
  let size = 0;
  for (const [name, value] of attributes) size += 6 + Buffer.byteLength(name, 'utf8') + value.length;
  if (size === 0) return new Uint8Array(0);
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
  return copyBytes(scratch, 0, size);
}

/**
 * The pairs of a record that carries packed attributes, or its older `set`/`attrs` form.
 * The values are views of the record's bytes: storing them copies them.
 */
export function recordPairs(packed: Uint8Array | undefined, pairs: [string, Uint8Array][] | undefined): [string, Uint8Array][] {
  if (!packed) return pairs ?? [];
  // Records decoded by msgpackr carry plain Uint8Arrays: the same bytes as a Buffer, no copy.
  const bytes = Buffer.isBuffer(packed) ? packed : Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
  const out: [string, Uint8Array][] = [];
  let at = 0;
  while (at < bytes.length) {
    const nameLength = bytes.readUInt16BE(at);
    const name = bytes.toString('utf8', at + 2, at + 2 + nameLength);
    at += 2 + nameLength;
    const valueLength = bytes.readUInt32BE(at);
    out.push([name, bytes.subarray(at + 4, at + 4 + valueLength)]);
    at += 4 + valueLength;
  }
  return out;
}

/** The values a commit's patches make: read while it is applied, never kept. */
let commitScratch = Buffer.allocUnsafeSlow(64 * 1024);
let commitScratchUsed = 0;

/** Starts a commit: nothing of the previous commit's scratch regions is still read. */
export function beginCommitScratch(): void {
  commitScratchUsed = 0;
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
