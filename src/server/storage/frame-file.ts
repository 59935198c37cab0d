import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, openSync, readdirSync, readSync } from 'node:fs';
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { BINARY_MARK } from '../../util/binary.js';
import type { TierRecord } from '../../tier/session-table.js';
import { failpoint, failpointActive, failpointHold } from '../../util/failpoint.js';
import { encodeRecord, type Keyring, recordPlace, sealRecord } from './record-codec.js';

/**
 * The files of a kiln data directory, below the records: their magic headers, frames
 * (`u32 length | u32 crc32 | record`), reading frames back, writing a whole snapshot,
 * and the directory lock. Shared by AppendLog (the server) and repair.ts (`kiln repair`),
 * so both read, write and lock a directory exactly alike.
 */
export const LOG_MAGIC = Buffer.from('KILNLOG1');
export const SNAPSHOT_MAGIC = Buffer.from('KILNSNP1');
export const FRAME_HEADER = 8;
export const SNAPSHOT_NAME = 'snapshot.kiln';

/**
 * A snapshot is written under a temporary name of its writer's own, `snapshot.kiln.<12
 * hex>.tmp`, never a name another writer could be using: a server whose lock was taken
 * over (paused, its disk hung) may still be inside a compaction when the new holder
 * starts one, and with one shared name the old writer's open would truncate, and its
 * clean-up remove, the new holder's half-written snapshot. Older Kilns used
 * `snapshot.kiln.tmp`; a start removes both kinds, `kiln repair` moves both aside.
 */
export const SNAPSHOT_TEMP_PATTERN = /^snapshot\.kiln(\.[0-9a-f]{12})?\.tmp$/;

/** A temporary snapshot name no other writer uses (see SNAPSHOT_TEMP_PATTERN). */
export function newSnapshotTempName(): string {
  return `${SNAPSHOT_NAME}.${randomBytes(6).toString('hex')}.tmp`;
}

/** The temporary snapshots in `dir` (a crashed or abandoned compaction's, or one being written). */
export function snapshotTempNames(dir: string): string[] {
  return readdirSync(dir).filter((name) => SNAPSHOT_TEMP_PATTERN.test(name));
}

/** Frames encoded records (sealing them with the keyring's current key) to be written at `offset` of the file `magic`/`seq`. */
export function frameRecords(payloads: Uint8Array[], magic: Buffer, seq: number, offset: number, keyring: Keyring | undefined): Buffer {
  if (keyring) {
    let at = offset;
    payloads = payloads.map((payload) => {
      const sealed = sealRecord(payload, keyring.current, recordPlace(magic, seq, at));
      at += FRAME_HEADER + sealed.length;
      return sealed;
    });
  }
  let size = 0;
  for (const p of payloads) size += FRAME_HEADER + p.length;
  const data = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of payloads) {
    data.writeUInt32BE(p.length, at);
    data.writeUInt32BE(crc32(p), at + 4);
    data.set(p, at + FRAME_HEADER);
    at += FRAME_HEADER + p.length;
  }
  return data;
}

/**
 * Writes every record of `records` as `<dir>/<tempName>` (see SNAPSHOT_TEMP_PATTERN),
 * synced, then renames it over snapshot.kiln: a crash leaves either the old snapshot or
 * the new one, whole.
 * `firstSeq` is the first log the snapshot must be followed by. `proceed` is asked before
 * each write and the sync, `beforeRename` once the snapshot is on disk and before it
 * replaces the old one: what either throws abandons the snapshot (the temp file is removed).
 *
 * Every file operation is asynchronous: on a disk that hangs, the snapshot waits and the
 * server goes on answering (its commits go to the log the compaction started, and are
 * refused once that log falls behind too). Writing synchronously, a compaction begun just
 * before the hang held the event loop until the disk answered.
 */
export async function writeSnapshot(dir: string, records: Iterable<TierRecord>, firstSeq: number, keyring: Keyring | undefined, hooks: { proceed?: () => void; beforeRename?: () => Promise<void>; tempName?: string } = {}): Promise<void> {
  const tmp = join(dir, hooks.tempName ?? newSnapshotTempName());
  const file = await open(tmp, 'w', 0o600);
  try {
    // A temp file left by a crash keeps its old mode through 'w'; the umask may have narrowed a new one.
    await file.chmod(0o600);
    const header = Buffer.alloc(SNAPSHOT_MAGIC.length + 4);
    SNAPSHOT_MAGIC.copy(header);
    header.writeUInt32BE(firstSeq, SNAPSHOT_MAGIC.length);
    await writeAt(file, header, 0);
    let offset = header.length;
    let chunk: Uint8Array[] = [];
    let chunkBytes = 0;
    let sinceYield = 0;
    const flushChunk = async (): Promise<void> => {
      const data = frameRecords(chunk, SNAPSHOT_MAGIC, firstSeq, offset, keyring);
      chunk = [];
      chunkBytes = 0;
      const held = failpointHold('snapshot:write');
      if (held) await held;
      hooks.proceed?.();
      await writeAt(file, data, offset);
      offset += data.length;
    };
    for (const record of records) {
      const payload = encodeRecord(record);
      chunk.push(payload);
      chunkBytes += payload.length;
      if (chunkBytes > 1 << 20) {
        await flushChunk();
        sinceYield = 0;
      }
      // Let requests run between slices of a large snapshot (encoding is CPU, not disk).
      if (++sinceYield >= 5000) {
        sinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    if (chunk.length > 0) await flushChunk();
    hooks.proceed?.();
    await file.sync();
    await file.close();
    if (hooks.beforeRename) await hooks.beforeRename();
  } catch (err) {
    await file.close().catch(() => undefined);
    // A snapshot that could not be written whole (or was abandoned) holds space a full
    // disk needs, and is never read.
    await unlink(tmp).catch(() => undefined); // else the next start removes it (its name is this writer's alone)
    throw err;
  }
  failpoint('snapshot:before-rename');
  await rename(tmp, join(dir, SNAPSHOT_NAME));
  await syncDirAsync(dir);
}

/** The sequence numbers of the logs in `dir`, oldest first. */
export function logSeqs(dir: string): number[] {
  return seqsOfLogs(readdirSync(dir));
}

/** logSeqs without holding the event loop (the running server's compaction). */
export async function logSeqsAsync(dir: string): Promise<number[]> {
  return seqsOfLogs(await readdir(dir));
}

function seqsOfLogs(names: string[]): number[] {
  return names
    .map((name) => /^log-(\d+)\.kiln$/.exec(name)?.[1])
    .filter((s): s is string => s !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

export function logPath(dir: string, seq: number): string {
  return join(dir, `log-${String(seq).padStart(8, '0')}.kiln`);
}

/** Size of the piece a stored file is read in; a frame larger than this gets a buffer of its own. */
const READ_PIECE_BYTES = 4 * 1024 * 1024;

/**
 * Reads a stored file's frames in order, a piece at a time into one reused buffer.
 * Records decoded from it hold views of that buffer (record-codec.ts), which the next
 * piece overwrites: `apply` must copy what it keeps, as SessionTable does.
 */
export class FrameReader {
  private buffer = Buffer.allocUnsafeSlow(READ_PIECE_BYTES);
  fd = -1;
  size = 0;

  open(path: string): void {
    this.fd = openSync(path, 'r');
    this.size = fstatSync(this.fd).size;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  /**
   * Whether the file is shorter than `magic` and begins as it does: a file cut short inside
   * its header (a crash while it was being started), which holds no record.
   */
  headerCutShort(magic: Buffer): boolean {
    if (this.size >= magic.length) return false;
    const prefix = Buffer.alloc(this.size);
    readSync(this.fd, prefix, 0, prefix.length, 0);
    return prefix.equals(magic.subarray(0, prefix.length));
  }

  /** The file's first `length` bytes, or undefined when it is shorter. */
  header(length: number): Buffer | undefined {
    if (this.size < length) return undefined;
    const header = Buffer.alloc(length);
    return readSync(this.fd, header, 0, length, 0) === length ? header : undefined;
  }

  /**
   * Applies every frame from byte `from` on, and says how the file ends: cleanly, torn
   * (a last frame cut short by the end of the file: the header or the length it announces
   * runs past EOF) or damaged (a frame whose CRC does not match), with the byte offset of
   * the first frame not applied.
   */
  replay(from: number, apply: (payload: Buffer, offset: number) => void): FileEnd {
    let buf = this.buffer;
    let filled = 0; // bytes of the file in buf
    let at = 0; // where the next frame starts in buf
    let position = from; // where the next read starts in the file
    for (;;) {
      while (filled - at >= FRAME_HEADER) {
        const end = at + FRAME_HEADER + buf.readUInt32BE(at);
        if (end > filled) break;
        const payload = buf.subarray(at + FRAME_HEADER, end);
        if (crc32(payload) !== buf.readUInt32BE(at + 4)) return { kind: 'damaged', offset: position - filled + at };
        apply(payload, position - filled + at);
        at = end;
      }
      const partial = filled - at;
      const offset = position - filled + at;
      if (position >= this.size) return partial > 0 ? { kind: 'torn', offset } : { kind: 'clean', offset };
      const needed = partial >= FRAME_HEADER ? FRAME_HEADER + buf.readUInt32BE(at) : FRAME_HEADER;
      // A length that runs past the end of the file is a torn write (or damage), not a reason to allocate it.
      if (needed > partial + (this.size - position)) return { kind: 'torn', offset };
      if (needed > buf.length) {
        const larger = Buffer.allocUnsafeSlow(needed);
        buf.copy(larger, 0, at, filled);
        buf = larger;
      } else {
        buf.copyWithin(0, at, filled);
      }
      at = 0;
      filled = partial;
      while (filled < buf.length && position < this.size) {
        const read = readSync(this.fd, buf, filled, Math.min(buf.length - filled, this.size - position), position);
        if (read === 0) {
          this.size = position; // the file shrank under us: what is there is all there is
          break;
        }
        filled += read;
        position += read;
      }
    }
  }
}

/** How a stored file's frames ended; `offset` is where the first frame not applied starts. */
export interface FileEnd {
  kind: 'clean' | 'torn' | 'damaged';
  offset: number;
}

/** Makes a rename or a new file in `dir` durable (fsync of the directory), synchronously: for `kiln repair` and the start. */
export function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  }
}

/** syncDir without holding the event loop: for the running server, whose disk may hang. */
export async function syncDirAsync(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on directories; the rename is still atomic.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** A resynchronised frame longer than this is taken for noise: scanning must not CRC gigabytes per skipped byte. */
const MAX_RESYNC_RECORD_BYTES = 64 * 1024 * 1024;
const SCAN_WINDOW = 1 << 20;

/**
 * The first offset from `from` on where a frame with a sane length and a matching CRC
 * starts, scanning byte by byte. A payload must also begin as a record can (the binary
 * mark, or a MessagePack map): most offsets are rejected before any CRC is computed.
 */
export function findNextFrame(reader: FrameReader, from: number): number | undefined {
  const size = reader.size;
  const window = Buffer.allocUnsafe(SCAN_WINDOW + FRAME_HEADER + 1);
  for (let base = from; base + FRAME_HEADER < size; base += SCAN_WINDOW) {
    const filled = readSync(reader.fd, window, 0, Math.min(window.length, size - base), base);
    for (let i = 0; i < SCAN_WINDOW && i + FRAME_HEADER < filled; i++) {
      const length = window.readUInt32BE(i);
      const at = base + i;
      if (length === 0 || length > MAX_RESYNC_RECORD_BYTES || at + FRAME_HEADER + length > size) continue;
      if (!mayStartRecord(window[i + FRAME_HEADER]!)) continue;
      let payload: Buffer;
      if (i + FRAME_HEADER + length <= filled) {
        payload = window.subarray(i + FRAME_HEADER, i + FRAME_HEADER + length);
      } else {
        payload = Buffer.allocUnsafe(length);
        readSync(reader.fd, payload, 0, length, at + FRAME_HEADER);
      }
      if (crc32(payload) === window.readUInt32BE(i + 4)) return at;
    }
  }
  return undefined;
}

function mayStartRecord(byte: number): boolean {
  return byte === BINARY_MARK || (byte >= 0x80 && byte <= 0x8f) || byte === 0xde || byte === 0xdf;
}

/**
 * Writes all of `data` at `position`: a write may take only part of it (a disk filling
 * up). The fault tests' full disk writes half of it, then fails with ENOSPC: while
 * `log:write-fails` is on, or `alsoFailingWhen` (another failpoint) is.
 */
export async function writeAt(file: FileHandle, data: Buffer, position: number, alsoFailingWhen?: string): Promise<void> {
  const fault = failpointActive('log:write-fails') ? 'log:write-fails' : alsoFailingWhen !== undefined && failpointActive(alsoFailingWhen) ? alsoFailingWhen : undefined;
  if (fault !== undefined) {
    await file.write(data, 0, data.length >> 1, position);
    throw Object.assign(new Error(`ENOSPC: no space left on device, write (failpoint ${fault})`), { code: 'ENOSPC' });
  }
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await file.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) throw new Error(`the disk took none of ${data.length - done} bytes`);
    done += bytesWritten;
  }
}
