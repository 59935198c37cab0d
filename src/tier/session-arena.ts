import { sameBytes } from '../util/bytes.js';
import { KeyedHash } from '../util/keyed-hash.js';
import { PagedArray } from '../util/paged-array.js';

/**
 * Byte records keyed by string, stored off the JavaScript heap: what lets a server hold a
 * million sessions of 200 bytes in under 400 MB. Pure: no clock, no I/O.
 *
 * Why this shape. A session kept as JavaScript objects paid for a Map entry, an id
 * string, an object with its fields, a heap number per timestamp and an array of commit
 * ids: about 550 bytes of headers and pointers around 250 bytes of data. Here a session
 * is one run of bytes in a large Buffer (its key, then the payload its owner lays out),
 * with no JavaScript object of its own (the listing order, once something has listed
 * the sessions, still holds id strings):
 *
 * - an open-addressing index (linear probing, backward-shift deletion, load at most one
 *   half) maps a key's hash to a *slot*, 4 bytes an entry. It doubles incrementally:
 *   the old index stays beside the new one and each new key or removal moves
 *   MIGRATE_BUCKETS of its positions over, so no put re-reads every key (one pass took 0.67 s at a million keys,
 *   1.7 s at two million, and a server held everyone up meanwhile);
 * - a slot is a session's stable handle while it lives: `where[slot]` (4 bytes) says where
 *   its bytes are, so they may move when a commit changes their size while whoever holds
 *   the slot (the expiry deadlines) keeps it;
 * - records up to SMALL_RECORD_BYTES live in chunks of CHUNK_BYTES, in size classes of
 *   8 bytes, each class with a free list threaded through its free blocks; larger ones
 *   get a Buffer of their own with room to spare, rewritten in place while they fit.
 *   Places in the chunks are counted in units of a size class (8 bytes), so a u32 reaches
 *   32 GiB of them.
 *
 * Memory freed by a removal is reused by later records of its class; chunks are never
 * given back to the system (as with malloc). Keys are compared as UTF-8 bytes.
 */

/** Records up to this many bytes (key and payload) live in the shared chunks. */
export const SMALL_RECORD_BYTES = 2048;
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Records of their own get buffers in steps of this many bytes. */
const OUTSIDE_STEP = 512;
const CLASS_BYTES = 8;
const CLASSES = SMALL_RECORD_BYTES / CLASS_BYTES;
const CHUNK_UNITS = CHUNK_BYTES / CLASS_BYTES;
const MAX_CHUNKS = Math.floor(0xfffffff0 / CHUNK_UNITS);
/** `where` of a free slot, and of one whose bytes are a Buffer of their own. */
const FREE = 0xffffffff;
const OUTSIDE = 0xfffffffe;
/**
 * A record: `u32 total length | u16 key field | key | payload`. The key field is the
 * key's byte length, with BINARY_KEY set when the key is a 43-character base64url id
 * (what Kiln generates) kept as its 32 bytes rather than 43 characters.
 */
const HEAD = 6;
const BINARY_KEY = 0x8000;
const MAX_KEY_BYTES = BINARY_KEY - 1;
const GENERATED_ID = /^[A-Za-z0-9_-]{43}$/;
/**
 * Old index positions moved to the new one per new key while the index doubles: about
 * 32 keys re-hashed (tens of microseconds). The old index has 2^k positions and the new
 * one fills up after 2^(k-1) more keys, so the move always ends before the next doubling.
 */
export const MIGRATE_BUCKETS = 64;
/** An old-index position whose entry moved or was removed: probes go on past it. */
const MOVED = 0xffffffff;
/** The base64url characters whose value has its two low bits clear: a 43-character id ending in one of them is the one encoding of its 32 bytes. */
const CANONICAL_LAST = new Set('AEIMQUYcgkosw048'.split('').map((c) => c.charCodeAt(0)));

export class SessionArena {
  private index = new Uint32Array(1024);
  private indexMask = 1023;
  /** While the index doubles: the old one, whose positions below `migrateAt` have moved. */
  private oldIndex: Uint32Array | undefined;
  private migrateAt = 0;
  private count = 0;
  /** Per slot: the place of its record in units of CLASS_BYTES from the first chunk's start, or FREE, or OUTSIDE. */
  private readonly where = new PagedArray(Uint32Array, FREE);
  /** One past the highest slot ever used. */
  private slotsUsed = 0;
  private readonly freeSlots: number[] = [];
  private readonly outside = new Map<number, Buffer>();
  private outsideBytes = 0;
  private readonly chunks: Buffer[] = [];
  private bumpChunk = -1;
  /** The next free unit of the last chunk. */
  private bumpAt = CHUNK_UNITS;
  /** The place of the first free block of each size class, -1 when none; each free block holds the next place as a f64. */
  private readonly freeHeads = new Float64Array(CLASSES + 1).fill(-1);
  private keyScratch = Buffer.allocUnsafeSlow(1024);
  private keyLength = 0;
  /** The loaded key's field: its length, and BINARY_KEY when it is kept as bytes. */
  private keyField = 0;
  private keyHash = 0;

  /**
   * `hasher`: keyed with a random key by default, since ids are chosen by clients, who must
   * not be able to make them collide; tests pass one of their own.
   */
  constructor(private readonly hasher: Pick<KeyedHash, 'hash'> = new KeyedHash()) {}

  /** Where the last `locate` found a record: its Buffer, its first byte, its payload's first byte and end. */
  buf: Buffer = Buffer.alloc(0);
  start = 0;
  at = 0;
  end = 0;

  get size(): number {
    return this.count;
  }

  /** Whether the index is doubling (the old one not yet moved over). */
  get indexMoving(): boolean {
    return this.oldIndex !== undefined;
  }

  /** The slot holding `key`, or -1. */
  find(key: string): number {
    this.loadKey(key);
    return this.findLoaded();
  }

  /** Points buf/at/end at the payload of a live slot (valid until the next change). */
  locate(slot: number): void {
    const unit = this.where.get(slot);
    let buf: Buffer;
    let start: number;
    if (unit === OUTSIDE) {
      buf = this.outside.get(slot)!;
      start = 0;
    } else {
      buf = this.chunks[Math.floor(unit / CHUNK_UNITS)]!;
      start = (unit % CHUNK_UNITS) * CLASS_BYTES;
    }
    this.buf = buf;
    this.start = start;
    this.at = start + HEAD + (buf.readUInt16LE(start + 4) & MAX_KEY_BYTES);
    this.end = start + buf.readUInt32LE(start);
  }

  /** The key of a live slot (a new string). */
  keyOf(slot: number): string {
    this.locate(slot);
    const binary = (this.buf.readUInt16LE(this.start + 4) & BINARY_KEY) !== 0;
    return this.buf.toString(binary ? 'base64url' : 'utf8', this.start + HEAD, this.at);
  }

  /**
   * Stores `payload[0, length)` as the record of `key`, in its slot when it has one
   * (where it is rewritten in place when it keeps its size class), else in a new one.
   * Returns the slot. The payload must not be a view of this arena. `known`, when given,
   * must be what find(key) returned, with no change to the arena since.
   */
  put(key: string, payload: Buffer, length: number, known?: number): number {
    this.loadKey(key);
    // A caller that has just found the key passes its slot (or -1) and spares a second search.
    const slot = known ?? this.findLoaded();
    const total = HEAD + this.keyLength + length;
    // Whatever may throw (a full arena, no memory) runs before anything a reader sees changes
    // (a step of the index's move, or its doubling, leaves every key where lookups find it).
    if (slot >= 0) {
      if (!this.fitsInPlace(slot, total)) {
        const oldUnit = this.where.get(slot);
        const oldOwn = oldUnit === OUTSIDE ? this.outside.get(slot) : undefined;
        this.placeNew(slot, total);
        this.releasePlace(slot, oldUnit, oldOwn);
      }
      this.writeAt(slot, total, payload, length);
      return slot;
    }
    if (this.oldIndex) this.migrate(MIGRATE_BUCKETS);
    if ((this.count + 1) * 2 > this.index.length) this.growIndex();
    const fresh = this.newSlot();
    try {
      this.placeNew(fresh, total);
    } catch (err) {
      this.where.set(fresh, FREE);
      this.freeSlots.push(fresh);
      throw err;
    }
    this.insertIndex(fresh, this.keyHash);
    this.count++;
    this.writeAt(fresh, total, payload, length);
    return fresh;
  }

  /** Forgets a slot's record and key; the slot may be reused by a later put. */
  remove(slot: number): void {
    // Removals move the old index on too: a table that stops growing still finishes (expiry churns).
    if (this.oldIndex) this.migrate(MIGRATE_BUCKETS);
    this.deleteIndex(slot, this.hashOfSlot(slot));
    this.freeBytes(slot);
    this.where.set(slot, FREE);
    this.freeSlots.push(slot);
    this.count--;
  }

  /** Whether a slot holds a record now (a slot kept elsewhere may have been removed, then reused). */
  isLive(slot: number): boolean {
    return slot >= 0 && slot < this.slotsUsed && this.where.get(slot) !== FREE;
  }

  /** Every live slot, in slot order. */
  *slots(): Generator<number> {
    for (let slot = 0; slot < this.slotsUsed; slot++) if (this.where.get(slot) !== FREE) yield slot;
  }

  /** Bytes the arena has taken from the system (chunks and records of their own). */
  get reservedBytes(): number {
    return this.chunks.length * CHUNK_BYTES + this.index.byteLength + (this.oldIndex?.byteLength ?? 0) + this.where.byteLength + this.outsideBytes;
  }

  // ---- keys and the index ----

  private loadKey(key: string): void {
    if (key.length * 3 > this.keyScratch.length) this.keyScratch = Buffer.allocUnsafeSlow(key.length * 3);
    if (key.length === 43 && CANONICAL_LAST.has(key.charCodeAt(42)) && GENERATED_ID.test(key)) {
      this.keyLength = this.keyScratch.write(key, 0, 'base64url');
      this.keyField = this.keyLength | BINARY_KEY;
    } else {
      this.keyLength = this.keyScratch.write(key, 0, 'utf8');
      if (this.keyLength > MAX_KEY_BYTES) throw new RangeError(`key longer than ${MAX_KEY_BYTES} bytes`);
      this.keyField = this.keyLength;
    }
    this.keyHash = this.hasher.hash(this.keyScratch, 0, this.keyLength);
  }

  private findLoaded(): number {
    const mask = this.indexMask;
    for (let i = this.keyHash & mask; ; i = (i + 1) & mask) {
      const entry = this.index[i]!;
      if (entry === 0) return this.oldIndex ? this.findLoadedInOld(this.oldIndex) : -1;
      if (this.keyMatches(entry - 1)) return entry - 1;
    }
  }

  private findLoadedInOld(old: Uint32Array): number {
    const mask = old.length - 1;
    for (let i = this.keyHash & mask; ; i = (i + 1) & mask) {
      const entry = old[i]!;
      if (entry === 0) return -1;
      if (entry !== MOVED && this.keyMatches(entry - 1)) return entry - 1;
    }
  }

  private keyMatches(slot: number): boolean {
    this.locate(slot);
    if (this.buf.readUInt16LE(this.start + 4) !== this.keyField) return false;
    return sameBytes(this.buf, this.start + HEAD, this.keyScratch, 0, this.keyLength);
  }

  private insertIndex(slot: number, hash: number): void {
    const mask = this.indexMask;
    let i = hash & mask;
    while (this.index[i] !== 0) i = (i + 1) & mask;
    this.index[i] = slot + 1;
  }

  private deleteIndex(slot: number, hash: number): void {
    const mask = this.indexMask;
    let i = hash & mask;
    while (this.index[i] !== slot + 1) {
      if (this.index[i] === 0) return this.deleteFromOld(this.oldIndex!, slot, hash);
      i = (i + 1) & mask;
    }
    // Backward shift: pull later entries of the probe run into the hole, so no marker is left.
    for (let j = (i + 1) & mask; this.index[j] !== 0; j = (j + 1) & mask) {
      const home = this.hashOfSlot(this.index[j]! - 1) & mask;
      // Move j into i unless its home lies cyclically within (i, j].
      const inRange = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!inRange) {
        this.index[i] = this.index[j]!;
        i = j;
      }
    }
    this.index[i] = 0;
  }

  /** The old index is dropped once moved: a removal there leaves a marker, not a backward shift, which could carry an entry below the move's cursor. */
  private deleteFromOld(old: Uint32Array, slot: number, hash: number): void {
    const mask = old.length - 1;
    let i = hash & mask;
    while (old[i] !== slot + 1) i = (i + 1) & mask;
    old[i] = MOVED;
  }

  private hashOfSlot(slot: number): number {
    this.locate(slot);
    return this.hasher.hash(this.buf, this.start + HEAD, this.at);
  }

  private growIndex(): void {
    // Not reached while a move runs (it ends first, see MIGRATE_BUCKETS); finished here if it were.
    if (this.oldIndex) this.migrate(this.oldIndex.length);
    this.oldIndex = this.index;
    this.migrateAt = 0;
    this.index = new Uint32Array(this.oldIndex.length * 2);
    this.indexMask = this.index.length - 1;
  }

  /** Moves up to `buckets` positions of the old index into the new one; drops the old one at its end. */
  private migrate(buckets: number): void {
    const old = this.oldIndex!;
    const end = Math.min(old.length, this.migrateAt + buckets);
    for (let i = this.migrateAt; i < end; i++) {
      const entry = old[i]!;
      if (entry === 0 || entry === MOVED) continue;
      this.insertIndex(entry - 1, this.hashOfSlot(entry - 1));
      // A marker, not 0: entries further along this probe run, not moved yet, must stay reachable.
      old[i] = MOVED;
    }
    this.migrateAt = end;
    if (end === old.length) this.oldIndex = undefined;
  }

  // ---- slots and bytes ----

  private newSlot(): number {
    const reused = this.freeSlots.pop();
    if (reused !== undefined) return reused;
    this.where.ensure(this.slotsUsed);
    return this.slotsUsed++;
  }

  private fitsInPlace(slot: number, total: number): boolean {
    const unit = this.where.get(slot);
    if (unit === OUTSIDE) {
      // A buffer of its own has room to spare (outsideCapacity): a commit that grows or
      // shrinks the record a little (a longer commit id, a digit more) stays where it is.
      const capacity = this.outside.get(slot)!.length;
      return total > SMALL_RECORD_BYTES && total <= capacity && capacity - total < 2 * OUTSIDE_STEP;
    }
    const used = this.chunks[Math.floor(unit / CHUNK_UNITS)]!.readUInt32LE((unit % CHUNK_UNITS) * CLASS_BYTES);
    return total <= SMALL_RECORD_BYTES && classOf(used) === classOf(total);
  }

  private placeNew(slot: number, total: number): void {
    if (total > SMALL_RECORD_BYTES) {
      const own = Buffer.allocUnsafeSlow(outsideCapacity(total));
      this.outside.set(slot, own);
      this.outsideBytes += own.length;
      this.where.set(slot, OUTSIDE);
      return;
    }
    const cls = classOf(total);
    const head = this.freeHeads[cls]!;
    if (head >= 0) {
      this.freeHeads[cls] = this.chunks[Math.floor(head / CHUNK_UNITS)]!.readDoubleLE((head % CHUNK_UNITS) * CLASS_BYTES);
      this.where.set(slot, head);
      return;
    }
    if (this.bumpAt + cls > CHUNK_UNITS) {
      // The tail of the last chunk (under SMALL_RECORD_BYTES) is left unused.
      if (this.chunks.length >= MAX_CHUNKS) throw new RangeError(`the session arena is full (${MAX_CHUNKS} chunks of ${CHUNK_BYTES} bytes)`);
      this.chunks.push(Buffer.allocUnsafeSlow(CHUNK_BYTES));
      this.bumpChunk = this.chunks.length - 1;
      this.bumpAt = 0;
    }
    this.where.set(slot, this.bumpChunk * CHUNK_UNITS + this.bumpAt);
    this.bumpAt += cls;
  }

  private freeBytes(slot: number): void {
    const unit = this.where.get(slot);
    if (unit === OUTSIDE) {
      this.outsideBytes -= this.outside.get(slot)!.length;
      this.outside.delete(slot);
      return;
    }
    this.releasePlace(slot, unit, undefined);
  }

  /** Gives back the place `unit` a slot's record moved out of: a block to its class's free list, or the slot's own buffer `own`. */
  private releasePlace(slot: number, unit: number, own: Buffer | undefined): void {
    if (unit === OUTSIDE) {
      this.outsideBytes -= own!.length;
      // Moved into the chunks: the old buffer goes (moved into a new buffer: that one replaced it already).
      if (this.where.get(slot) !== OUTSIDE) this.outside.delete(slot);
      return;
    }
    const chunk = this.chunks[Math.floor(unit / CHUNK_UNITS)]!;
    const offset = (unit % CHUNK_UNITS) * CLASS_BYTES;
    const cls = classOf(chunk.readUInt32LE(offset));
    chunk.writeDoubleLE(this.freeHeads[cls]!, offset);
    this.freeHeads[cls] = unit;
  }

  private writeAt(slot: number, total: number, payload: Buffer, length: number): void {
    const unit = this.where.get(slot);
    const buf = unit === OUTSIDE ? this.outside.get(slot)! : this.chunks[Math.floor(unit / CHUNK_UNITS)]!;
    const start = unit === OUTSIDE ? 0 : (unit % CHUNK_UNITS) * CLASS_BYTES;
    buf.writeUInt32LE(total, start);
    buf.writeUInt16LE(this.keyField, start + 4);
    this.keyScratch.copy(buf, start + HEAD, 0, this.keyLength);
    payload.copy(buf, start + HEAD + this.keyLength, 0, length);
  }
}

/** The size of a record's own buffer: its length rounded up to OUTSIDE_STEP (at most 2.5 % more for 20 KB). */
function outsideCapacity(total: number): number {
  return Math.ceil(total / OUTSIDE_STEP) * OUTSIDE_STEP;
}

function classOf(total: number): number {
  return Math.ceil(total / CLASS_BYTES);
}

