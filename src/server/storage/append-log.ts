import { chmodSync, closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { isKilnError, KilnError } from '../../errors/index.js';
import type { TierRecord } from '../../tier/session-table.js';
import type { TierStorage } from '../../tier/tier.js';
import { decodeRecord, encodeRecord, isSealed, sealedWith, type Keyring, modeString, openRecord, recordPlace, releaseDecodeBuffer } from './record-codec.js';
import { formatBytes, totalLength } from '../../util/bytes.js';
import { doubling } from '../../util/backoff.js';
import { settlesWithin } from '../../util/deadline.js';
import { failpointActive, failpointHold } from '../../util/failpoint.js';
import { FRAME_HEADER, FrameReader, findNextFrame, frameRecords, type FileEnd, LOG_MAGIC, logPath, logSeqs, logSeqsAsync, newSnapshotTempName, SNAPSHOT_MAGIC, SNAPSHOT_TEMP_PATTERN, snapshotTempNames, syncDir, syncDirAsync, writeAt, writeSnapshot } from './frame-file.js';
import { type DirLock, lockDataDir, lockStillOurs, refreshLockIfDue, unlockDataDir } from './dir-lock.js';

/**
 * Durable storage for the kiln server: an append-only log of TierRecords plus a
 * snapshot written by compaction.
 *
 * Layout of the data directory:
 *   kiln.lock            the server using the directory (dir-lock.ts)
 *   snapshot.kiln        state as of some point, and the first log it must be followed by
 *   log-<seq>.kiln       records in order; a new file on every start and every compaction
 *
 * Every record is framed `u32 length | u32 crc32 | record` (record-codec.ts), so a torn
 * write at a crash is detected and replay stops at the last whole record of that file.
 * With a keyring, every record written is sealed (AES-256-GCM, record-codec.ts); plain
 * records already there are still read, and compaction rewrites them sealed.
 *
 * The directory is 0700 and every file in it 0600 whatever the umask (modes are set
 * explicitly after creating), and a directory others could write to, or owned by another
 * user, is refused: whoever can replace a log can plant sessions.
 *
 * Appends are group-committed: every record appended in one turn of the event loop is
 * written with one write() (a batch past 4 MiB in pieces that end on record boundaries),
 * and (fsync "always") made durable with one fdatasync() per piece before any of their
 * promises resolve. "everysec" fdatasyncs once a second; "never" leaves it to the OS.
 *
 * Compaction is a fuzzy snapshot plus redo: it switches appends to a new log file,
 * then writes every live session; replaying the snapshot and then the newer logs ends in
 * the current state whatever changed while the snapshot was being written, because each
 * record fully determines the attributes it touches.
 */
export type FsyncPolicy = 'always' | 'everysec' | 'never';

export interface AppendLogOptions {
  dir: string;
  fsync: FsyncPolicy;
  /** Compact once the logs exceed this many bytes and twice the live data. Default 64 MiB. */
  compactMinBytes?: number;
  /** Live data size, for the compaction rule. */
  liveBytes?: () => number;
  /** Every record of the current state, for compaction. */
  dump?: () => Iterable<TierRecord>;
  onError?: (err: Error) => void;
  /** The log is written again after failures (for the server's log). */
  onRecovered?: (message: string) => void;
  /** Encrypt records at rest with the keyring's current key; read with any of its keys. */
  keyring?: Keyring;
  /**
   * Bytes appended but not yet written (and, fsync "always", synced) at which commits are
   * refused (`refusal()`); access-time records are no longer logged from half of it.
   * Default 64 MiB.
   */
  maxBacklogBytes?: number;
  /** A write or sync outstanding this long counts as a stalled disk: commits are refused. Default 5000 ms. */
  stallMs?: number;
  /** @internal The size of a batch's pieces (WRITE_PIECE_BYTES); smaller for tests. */
  writePieceBytes?: number;
}

export const DEFAULT_MAX_LOG_BACKLOG_BYTES = 64 * 1024 * 1024;
export const DEFAULT_LOG_STALL_MS = 5000;
/** How often a stop looks whether the log's last write still moves (see drainAtStop). */
const STOP_LOOK_MS = 100;
/** How fast the disk of the `log:write-slow` failpoint writes (a 4 MiB piece in 300 ms). */
const SLOW_DISK_BYTES_PER_MS = 14_000;
/** A batch is written (and, fsync "always", synced) in pieces of about this size; the stall is timed per piece. */
export const WRITE_PIECE_BYTES = 4 * 1024 * 1024;

/**
 * Where the piece of framed `data` that starts at `at` ends: at the first frame end at
 * least `size` bytes on (or the end). Pieces end on whole records, so a crash between two
 * of them leaves the log ending in a whole record, which a start reads as such whether
 * or not this log is the newest (a compaction may have begun the next one meanwhile).
 */
export function pieceEnd(data: Buffer, at: number, size: number): number {
  if (data.length - at <= size) return data.length;
  let end = at;
  // At least one whole record, whatever `size` is.
  do end += FRAME_HEADER + data.readUInt32BE(end);
  while (end - at < size && end + FRAME_HEADER <= data.length);
  return Math.min(end, data.length);
}

/** How a stop ended: clean when everything acknowledged is known to be on disk. */
export interface StopOutcome {
  clean: boolean;
}

/** How far the log is behind its disk, for stats and the refusal's message. */
export interface LogBacklog {
  /** Bytes appended and not yet written (fsync "always": not yet synced). */
  bytes: number;
  /** How long the oldest write or sync now outstanding has taken; 0 when none is. */
  stalledMs: number;
  /**
   * How long the compaction now running has taken; 0 when none is. A snapshot waits on its
   * disk without holding the server, so a hung one shows here rather than in a stall.
   */
  compactingMs: number;
}

export interface LoadReport {
  records: number;
  files: number;
  bytes: number;
  tornTails: number;
  /** The incomplete last record of the newest log, cut off at load; null when there was none. */
  tornTail: TornTail | null;
  /** Logs cut short inside their header (a crash while one was being started): they held no record, and were removed. */
  emptyLogsRemoved: number;
  ms: number;
}

export interface TornTail {
  file: string;
  offset: number;
  bytes: number;
}


interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class AppendLog implements TierStorage {
  private readonly dir: string;
  private readonly policy: FsyncPolicy;
  private readonly compactMinBytes: number;
  private file: FileHandle | undefined;
  private seq = 0;
  /** Encoded records waiting for the next write; sealed and framed then, once their place in the file is known. */
  private batch: Uint8Array[] = [];
  /**
   * What a slow disk leaves in memory: the batch's bytes and those of the write under way.
   * Every append adds to it and every write's end takes its bytes off, so the bound holds
   * whether the disk is slow, stalled, or failing (a write the disk refuses is tried again
   * until it is taken; see writeUntilDone).
   */
  private backlogBytes = 0;
  private readonly maxBacklogBytes: number;
  private readonly stallMs: number;
  private readonly writePieceBytes: number;
  /** Date.now() when the write (flush) or the sync (everysec) now outstanding began; 0 when none is. */
  private writeSince = 0;
  /**
   * When the write under way last showed life: its start, each try (a failing disk that
   * is tried again is not hung), each piece taken. What a stop times (drainAtStop).
   */
  private writeMovedAt = 0;
  private syncSince = 0;
  /** The stop under way, for a second close() to wait on (two stops must not both give the lock back). */
  private closingDone: Promise<StopOutcome> | undefined;
  /** What the stop gave up on or could not make sure of (stopProblem). */
  private stopProblems = 0;
  /** The write being tried again (see writeUntilDone): when it first failed, and how it last did. */
  private writeFailure: { since: number; message: string } | undefined;
  /**
   * Why the last sync (everysec) failed, until a snapshot has made the whole state durable
   * again: after a failed fdatasync the kernel may have dropped written pages, so the
   * records of the last second cannot be trusted to be on disk, and syncing again proves
   * nothing. The next sync tick compacts instead.
   */
  private syncFailure: string | undefined;
  /** Why the data directory's lock is no longer ours (another server took it over): nothing more is committed. */
  private lockLost: string | undefined;
  /** close() has begun: a failing write gives up instead of trying forever. */
  private closing = false;
  /** A write was given up while closing: nothing more is written after the hole it would leave. */
  private gaveUp = false;
  /** No compaction (of the size rule, or to recover from a failed sync) before this time: backoff while they keep failing. */
  private compactAfter = 0;
  private compactFailures = 0;
  private fileSeq = 0;
  private fileOffset = 0;
  private batchWaiters: Waiter[] = [];
  /** The waiters of the batch being written now (settled() joins them). */
  private writingWaiters: Waiter[] | undefined;
  private flushing: Promise<void> | undefined;
  private flushScheduled = false;
  private dirty = false;
  private logBytes = 0;
  private compacting: Promise<void> | undefined;
  /** A rotation under way: flushes wait for it (see rotate). */
  private rotating: Promise<void> | undefined;
  /** Date.now() when the rotation under way began; 0 when none is. */
  private rotateSince = 0;
  /** The rotation under way has made (or is making) the next log file. */
  private rotateOpened = false;
  /** close() stopped waiting for the compaction (its disk hung): its snapshot must not be renamed in. */
  private abandonSnapshot = false;
  /** Date.now() when the compaction now running began; 0 when none is. */
  private compactingSince = 0;
  private syncTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Records loaded that are plain or sealed with an older key: open() compacts them away. */
  private staleRecords = 0;
  /** This instance's hold on kiln.lock (lockDataDir): it gives up only its own. */
  private lockToken: DirLock | undefined;
  /** The name this instance writes its snapshots under before renaming them in: its own (SNAPSHOT_TEMP_PATTERN). */
  readonly snapshotTempName = newSnapshotTempName();
  /**
   * `accessTimesDropped`: access-time records not logged because the backlog was full (see
   * append); `writeFailures`, `syncFailures`: writes and everysec syncs the disk refused.
   */
  readonly counters = { appends: 0, writes: 0, syncs: 0, compactions: 0, bytesWritten: 0, accessTimesDropped: 0, writeFailures: 0, syncFailures: 0 };

  constructor(private readonly options: AppendLogOptions) {
    this.dir = options.dir;
    this.policy = options.fsync;
    this.compactMinBytes = options.compactMinBytes ?? 64 * 1024 * 1024;
    this.maxBacklogBytes = options.maxBacklogBytes ?? DEFAULT_MAX_LOG_BACKLOG_BYTES;
    this.writePieceBytes = options.writePieceBytes ?? WRITE_PIECE_BYTES;
    this.stallMs = options.stallMs ?? DEFAULT_LOG_STALL_MS;
  }

  /** Takes the directory lock and replays what is stored into `apply`. */
  load(apply: (record: TierRecord) => void): LoadReport {
    prepareDataDir(this.dir);
    this.lock();
    try {
      return this.replayDirectory(apply);
    } catch (err) {
      // A start refused (damage): the directory is not this instance's to hold.
      unlockDataDir(this.lockToken);
      throw err;
    }
  }

  private replayDirectory(apply: (record: TierRecord) => void): LoadReport {
    const started = Date.now();
    this.tightenFileModes();
    const report: LoadReport = { records: 0, files: 0, bytes: 0, tornTails: 0, tornTail: null, emptyLogsRemoved: 0, ms: 0 };
    // Removed once the whole directory has been read: a start refused for damage further on changes no file.
    const removals: string[] = [];
    let firstSeq = 0;
    const snapshotPath = join(this.dir, 'snapshot.kiln');
    // One read buffer for every file: a log is read in pieces, not whole, so a restart
    // neither faults in nor leaves behind hundreds of megabytes of file contents.
    const reader = new FrameReader();
    const keyring = this.options.keyring;
    let magic = SNAPSHOT_MAGIC;
    let fileSeq = 0;
    let path = snapshotPath;
    const count = (payload: Buffer, offset: number): void => {
      const sealed = isSealed(payload);
      const plain = sealed ? openRecord(payload, keyring, recordPlace(magic, fileSeq, offset), `${path} at byte ${offset}`) : payload;
      if (keyring && !(sealed && sealedWith(payload, keyring.current))) this.staleRecords++;
      apply(decodeRecord(plain));
      // A long replay holds the event loop: the lock is refreshed from here meanwhile.
      if ((++report.records & 4095) === 0) refreshLockIfDue(this.lockToken);
    };
    if (existsSync(snapshotPath)) {
      reader.open(snapshotPath);
      try {
        const header = reader.header(SNAPSHOT_MAGIC.length + 4);
        if (!header?.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC)) {
          throw damaged(snapshotPath, 0, 'its header is not a kiln snapshot header', this.dir);
        }
        firstSeq = header.readUInt32BE(SNAPSHOT_MAGIC.length);
        fileSeq = firstSeq;
        const end = reader.replay(header.length, count);
        if (end.kind !== 'clean') throw damaged(snapshotPath, end.offset, `${end.kind === 'torn' ? 'its last record is cut short' : 'a record fails its checksum'}; it is only ever replaced whole, so this is disk corruption`, this.dir);
        report.files++;
        report.bytes += reader.size;
      } finally {
        reader.close();
      }
    }
    // New logs must sort after the snapshot's first log even if every older one is gone.
    this.seq = Math.max(this.seq, firstSeq);
    const seqs = this.logSeqs();
    const newest = seqs[seqs.length - 1];
    for (const seq of seqs) {
      this.seq = Math.max(this.seq, seq);
      if (seq < firstSeq) {
        // Covered by the snapshot, left by a crash between its rename and the deletes: it
        // would be read never and deleted only at the next compaction, keeping plain or
        // old-key records on disk through an encryption switch or a rotation.
        removals.push(this.logPath(seq));
        continue;
      }
      magic = LOG_MAGIC;
      fileSeq = seq;
      path = this.logPath(seq);
      reader.open(path);
      const size = reader.size;
      let end: FileEnd;
      let why = 'a record fails its checksum';
      try {
        const header = reader.header(LOG_MAGIC.length);
        if (!header?.equals(LOG_MAGIC)) {
          if (!reader.headerCutShort(LOG_MAGIC)) throw damaged(path, 0, 'its header is not a kiln log header', this.dir);
          end = { kind: 'torn', offset: 0 };
        } else {
          end = reader.replay(header.length, count);
          // A length field damaged into a huge value also reads as "cut short": only if no
          // valid frame follows is it really a crash mid-write, else cutting would drop them.
          if (end.kind === 'torn' && findNextFrame(reader, end.offset + 1) !== undefined) {
            end = { kind: 'damaged', offset: end.offset };
            why = 'a record\'s length runs past the end of the file, yet valid records follow it';
          }
        }
      } finally {
        reader.close();
      }
      if (end.kind === 'damaged') throw damaged(path, end.offset, why, this.dir);
      if (end.kind === 'torn' && end.offset === 0) {
        // Cut short inside its header (a crash while a switch made it): it holds no record,
        // wherever it sits. Removed, not cut to nothing: an empty log would be "cut short,
        // not the newest" once this start opens the next one.
        report.emptyLogsRemoved++;
        removals.push(path);
        continue;
      }
      report.files++;
      report.bytes += size;
      if (end.kind === 'torn') {
        // Only the newest log can end in a write a crash interrupted: every older one was
        // synced and closed before the next was opened, so a short record there is damage.
        if (seq !== newest) throw damaged(path, end.offset, 'its last record is cut short, but it is not the newest log', this.dir);
        // Synced: a cut that a machine crash undid would leave the torn record in a log
        // that is no longer the newest once this start opens the next one.
        const fd = openSync(path, 'r+');
        try {
          ftruncateSync(fd, end.offset);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        report.tornTails++;
        report.tornTail = { file: path, offset: end.offset, bytes: size - end.offset };
      }
      this.logBytes += end.kind === 'torn' ? end.offset : size;
    }
    for (const file of removals) unlinkSync(file);
    if (removals.length > 0) syncDir(this.dir);
    // A crashed (or abandoned) compaction's partial snapshot: never read, and it may hold
    // what a rotation removes. Any writer of one has lost the lock this start holds, and its
    // rename of a removed name fails.
    // (Its writer, noticing the loss, may remove it first: gone already is fine.)
    for (const name of snapshotTempNames(this.dir)) rmSync(join(this.dir, name), { force: true });
    // The read buffer (up to the largest frame) must not stay pinned by the decoder.
    releaseDecodeBuffer();
    report.ms = Date.now() - started;
    return report;
  }

  /**
   * Opens a fresh log file for this run's appends. When encrypting, and the load met plain
   * records or records sealed with an older key, it compacts first: a start with a new
   * current key rewrites everything with it (after which the old key can go), and a start
   * that turns encryption on leaves no plain record behind.
   */
  async open(): Promise<void> {
    await this.rotate();
    if (this.staleRecords > 0 && this.options.dump) {
      await this.compact();
      this.staleRecords = 0;
    }
    if (this.policy === 'everysec') {
      this.syncTimer = setInterval(() => void this.syncIfDirty(), 1000);
      this.syncTimer.unref();
    }
  }

  /**
   * Queues a record for the next write. Past half the backlog limit, an access-time
   * record (a touch) is not logged: its time is applied in memory already, the session's
   * next touch or commit logs a later one, and only a restart before that would bring
   * back the earlier time (the session expiring that much sooner). Touches need no
   * answer, so nothing else bounds how many a client sends while the disk is stalled;
   * stopping at half leaves the other half to commits, which touches would otherwise
   * starve. Every other record is logged: commits are refused before they are applied
   * (`refusal()`), and destroys and expiries are at most one a session.
   */
  append(record: TierRecord): Promise<void> {
    // A log that gave up (a stop, on a disk that hung or failed) writes nothing more.
    if (this.closed || this.gaveUp) return Promise.reject(new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed'));
    // Another server holds the directory now: nothing more of ours goes into it.
    if (this.lockLost !== undefined) return Promise.reject(new KilnError('KILN_ERR_STORAGE', this.lockLost));
    if (record.t === 'a' && this.backlogBytes >= this.maxBacklogBytes / 2) {
      this.counters.accessTimesDropped++;
      return Promise.resolve();
    }
    const encoded = encodeRecord(record);
    this.batch.push(encoded);
    this.backlogBytes += encoded.length;
    this.counters.appends++;
    const done = new Promise<void>((resolve, reject) => this.batchWaiters.push({ resolve, reject }));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => void this.flush());
    }
    return done;
  }

  /**
   * The batch appended so far, and a new one begun. Its size is summed here, not in the
   * async flush(): what a suspended async function has read stays reachable until it
   * resumes, and a record kept so would live beside its framed copy for the whole write.
   */
  private takeBatch(): { payloads: Uint8Array[]; waiters: Waiter[]; bytes: number } {
    const taken = { payloads: this.batch, waiters: this.batchWaiters, bytes: totalLength(this.batch) };
    this.batch = [];
    this.batchWaiters = [];
    return taken;
  }

  /** Writes (and per policy syncs) everything appended so far. */
  async flush(): Promise<void> {
    this.flushScheduled = false;
    // A rotation abandoned at stop switches no file: the last batches go to the current one
    // (or, once it has made the next file, nowhere: see below).
    while (this.flushing || (this.rotating && !this.abandonSnapshot)) await (this.flushing ?? this.rotating);
    if (this.batch.length === 0) return;
    const { payloads, waiters, bytes } = this.takeBatch();
    this.writingWaiters = waiters;
    // Set before anything can throw: a flushing promise that settled before it was
    // assigned would never be cleared, and `while (this.flushing) await this.flushing`
    // would spin.
    let finished!: () => void;
    this.flushing = new Promise<void>((resolve) => (finished = resolve));
    this.writeSince = Date.now();
    try {
      const file = this.file;
      // A log that gave up on a write (closing on a failing disk) writes nothing after
      // it: a record past the hole would make the log damaged at the next start.
      if (!file || this.gaveUp) throw new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed');
      // Records queued before the lock was lost (a disk that hung 30 s, then answered) go
      // nowhere: the directory is another server's now.
      await this.ownershipSettled();
      // An abandoned switch that has made the next log: a batch written to this one now,
      // torn by a crash, would be a torn record in a log that is not the newest.
      if (this.rotating && this.rotateOpened) throw new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed: the log was being switched when the stop gave up on its disk');
      // Framed here, not in append(): a sealed record authenticates its offset in the
      // file, known only now (a compaction may have switched files since the append).
      const start = this.fileOffset;
      const data = this.frames(payloads, LOG_MAGIC, this.fileSeq, start);
      // Framed, the batch is held once: its records as encoded go now, not when the
      // write ends (on a stalled disk, the backlog's memory was twice its limit).
      payloads.length = 0;
      // Counted as the log's from here, as its place is (a compaction meanwhile counts the new log's size).
      this.fileOffset += data.length;
      this.logBytes += data.length;
      try {
        await this.writeUntilDone(file, data, start);
      } catch (err) {
        // Given up (closing): the file is cut back to the batch's start, and so is the offset.
        this.gaveUp = true;
        if (this.file === file) {
          this.fileOffset = start;
          this.logBytes -= data.length;
        }
        throw err;
      }
      this.counters.writes++;
      this.counters.bytesWritten += data.length;
      if (this.policy !== 'always') this.dirty = true;
      for (const w of waiters) w.resolve();
    } catch (err) {
      const error = isKilnError(err) ? err : new KilnError('KILN_ERR_STORAGE', `could not write the log: ${(err as Error).message}`, { cause: err });
      for (const w of waiters) w.reject(error);
      if (error.code !== 'KILN_ERR_SERVER_SHUTTING_DOWN') this.options.onError?.(error);
    } finally {
      this.flushing = undefined;
      this.writingWaiters = undefined;
      this.writeSince = 0;
      this.backlogBytes -= bytes;
      finished();
    }
    this.maybeCompact();
  }

  /**
   * Writes one batch at its place in the file (and, fsync "always", syncs it), trying
   * again until it is done. A write the disk refused (ENOSPC, EIO) may have left part of
   * a record behind, and a failed fdatasync may have dropped the batch's pages while
   * marking them clean (Linux does): either way the batch is written again whole, at the
   * same offset, after cutting the file back to where it began, so the log never holds a
   * partial record followed by whole ones (which a restart would call damage), and
   * nothing after the batch is written before it. Until then the batch's commits stay
   * unacknowledged, later records wait behind it, and `refusal()` turns new commits away.
   * Only a closing log gives up (at its third failure since close() began): its waiters
   * are rejected, and the log writes nothing more (`gaveUp`).
   */
  private async writeUntilDone(file: FileHandle, data: Buffer, start: number): Promise<void> {
    let triesWhileClosing = 0;
    for (let attempt = 0; ; attempt++) {
      this.writeMovedAt = Date.now();
      try {
        const held = failpointHold('log:write');
        if (held) await held;
        // In pieces, each (fsync "always") synced: a slow disk that keeps taking them is
        // behind (the byte limit), not stalled. Timed whole, a batch of the backlog's
        // 64 MiB at 13 MB/s took past the 5 s of a stall on a disk that never stopped.
        for (let at = 0, end = 0; at < data.length; at = end) {
          end = pieceEnd(data, at, this.writePieceBytes);
          // The fault tests' slow disk: about 14 MB/s, never stuck.
          if (failpointActive('log:write-slow')) await sleep(Math.ceil((end - at) / SLOW_DISK_BYTES_PER_MS));
          // The fault tests' disk that fills up partway through a batch fails its later pieces.
          await writeAt(file, at === 0 && end === data.length ? data : data.subarray(at, end), start + at, at > 0 ? 'log:later-piece-fails' : undefined);
          if (this.policy === 'always') {
            await file.datasync();
            this.counters.syncs++;
          }
          this.writeSince = Date.now();
          this.writeMovedAt = this.writeSince;
        }
        if (this.writeFailure) {
          this.options.onRecovered?.(`the log is written again after ${((Date.now() - this.writeFailure.since) / 1000).toFixed(1)} s of failures`);
          this.writeFailure = undefined;
        }
        return;
      } catch (err) {
        const message = (err as Error).message;
        this.counters.writeFailures++;
        if (!this.writeFailure) {
          this.writeFailure = { since: Date.now(), message };
          this.options.onError?.(new KilnError('KILN_ERR_STORAGE', `could not write the log (${message}); commits are refused and the write is tried again until the disk takes it`, { cause: err }));
        } else {
          this.writeFailure.message = message;
        }
        // Best effort: a retry writes the same bytes at the same offset either way, and a
        // log that gives up leaves no part of the batch behind if it can.
        await file.truncate(start).catch(() => undefined);
        // A stop that gave up on this write (drainAtStop) wants no more tries.
        if (this.closing && (this.gaveUp || ++triesWhileClosing >= 3)) throw err;
        const pause = doubling(attempt + 1, 50, 1000);
        // The pause before the next try is the write moving, not hung (a stop times it).
        this.writeMovedAt = Date.now() + pause;
        await sleep(pause);
      }
    }
  }

  get bytesOnDisk(): number {
    return this.logBytes;
  }

  /**
   * Resolves once everything appended so far is as durable as the policy promises (or
   * rejects as its write did): for an answer that must not run ahead of the disk without
   * appending anything itself, like the acknowledgement of a retried commit.
   */
  settled(): Promise<void> {
    const waiters = this.batch.length > 0 ? this.batchWaiters : this.writingWaiters;
    if (!waiters) return Promise.resolve();
    return new Promise<void>((resolve, reject) => waiters.push({ resolve, reject }));
  }

  /** How far the log is behind its disk now. */
  backlog(now = Date.now()): LogBacklog {
    const since = this.oldestIoStart();
    return {
      bytes: this.backlogBytes,
      stalledMs: since === 0 ? 0 : Math.max(0, now - since),
      compactingMs: this.compactingSince === 0 ? 0 : Math.max(0, now - this.compactingSince),
    };
  }

  /**
   * Why no commit should be applied now, or undefined: a write the disk refused is being
   * tried again, a failed sync is not yet made good by a snapshot, the backlog is at its
   * limit, or a write or sync has been outstanding `stallMs`. A commit is refused before
   * it changes anything (Tier.commit), so a slow or stalled disk costs its clients a
   * retryable error (KILN_ERR_STORAGE_BEHIND) instead of the server's memory, and them a
   * wait for an acknowledgement that may never come. Asked on every commit: it allocates
   * nothing, and reads the clock only while a write or sync is outstanding.
   */
  refusal(now?: number): string | undefined {
    if (this.lockLost !== undefined) return this.lockLost;
    if (this.writeFailure) {
      const at = now ?? Date.now();
      return `the server's log cannot be written (${this.writeFailure.message}) for ${((at - this.writeFailure.since) / 1000).toFixed(1)} s`;
    }
    if (this.syncFailure) return `the server's log could not be synced (${this.syncFailure}); a snapshot is being written to make it durable again`;
    if (this.backlogBytes >= this.maxBacklogBytes) return `the server's log is ${formatBytes(this.backlogBytes)} behind its disk (limit ${formatBytes(this.maxBacklogBytes)})`;
    const since = this.oldestIoStart();
    if (since === 0) return undefined;
    const stalledMs = (now ?? Date.now()) - since;
    if (stalledMs >= this.stallMs) return `a write to the server's log has been waiting on its disk for ${(stalledMs / 1000).toFixed(1)} s`;
    return undefined;
  }

  /** When the oldest write or sync now outstanding began (Date.now()); 0 when none is. */
  private oldestIoStart(): number {
    let oldest = this.writeSince;
    if (this.syncSince !== 0 && (oldest === 0 || this.syncSince < oldest)) oldest = this.syncSince;
    if (this.rotateSince !== 0 && (oldest === 0 || this.rotateSince < oldest)) oldest = this.rotateSince;
    return oldest;
  }

  /** Writes a snapshot of the current state and drops the logs it covers. */
  compact(): Promise<void> {
    if (this.lockLost !== undefined) return Promise.reject(new KilnError('KILN_ERR_STORAGE', this.lockLost));
    if (!this.compacting) {
      this.compactingSince = Date.now();
      this.compacting = this.doCompact().then(
        () => {
          this.compactFailures = 0;
          this.compactAfter = 0;
        },
        (err: unknown) => {
          // Each try starts a log and writes the whole state: while they fail, after 1 s, doubling to 30 s.
          this.compactFailures++;
          this.compactAfter = Date.now() + doubling(this.compactFailures, 1000, 30_000);
          throw err;
        },
      ).finally(() => {
        this.compacting = undefined;
        this.compactingSince = 0;
      });
    }
    return this.compacting;
  }

  /**
   * Stops the log: what was appended is written and synced, as long as the disk moves
   * (stallMs). Resolves `{ clean: false }` when the stop left something unsure (a write
   * or sync given up on, a failed sync not made good); onError was told why.
   */
  close(): Promise<StopOutcome> {
    // One stop, whoever asks and when: a second close() waits for the first to end.
    // A write given up (gaveUp: only ever at a stop) left commits refused at the end.
    this.closingDone ??= this.stop().then(() => ({ clean: this.stopProblems === 0 && !this.gaveUp }));
    return this.closingDone;
  }

  /** Says what the stop left unsure (onError) and marks the stop unclean. */
  private stopProblem(err: KilnError): void {
    this.stopProblems++;
    this.options.onError?.(err);
  }

  private async stop(): Promise<void> {
    this.closing = true;
    // A compaction first (at most stallMs): one hung in its rotation would hold the flush below.
    await this.awaitCompactionAtStop();
    let drained = await this.drainAtStop();
    // A failed sync is made good before a clean stop (within stallMs, as any compaction
    // at stop), or said not to be.
    if (drained && this.syncFailure !== undefined && !this.gaveUp && !this.abandonSnapshot) {
      const recovery = this.resnapshot(true);
      await this.awaitCompactionAtStop();
      if (!this.abandonSnapshot) await recovery;
    }
    if (this.syncFailure !== undefined) {
      this.stopProblem(new KilnError('KILN_ERR_STORAGE', `the log's failed sync (${this.syncFailure}) was not made good before stop: the last second of changes before it may not be on disk`));
    }
    // Anything appended meanwhile, and a flush the timer began: none writes after the file is closed.
    if (drained) drained = await this.drainAtStop();
    // A write still waiting on its disk cannot be cancelled: the file is synced and closed
    // once it returns, and nothing is written after it (gaveUp).
    const writeStillWaiting = drained ? undefined : this.flushing;
    const switchStillWaiting = drained ? undefined : this.rotating;
    this.closed = true;
    if (this.syncTimer) clearInterval(this.syncTimer);
    // What may still touch the directory after the stop returns keeps it locked until it ends.
    const stillBusy: Promise<unknown>[] = this.compacting ? [this.compacting.catch(() => undefined)] : [];
    // (A switch given up on is open()'s own, stopped at once: it may still make or remove a file.)
    if (switchStillWaiting) stillBusy.push(switchStillWaiting);
    const file = this.file;
    this.file = undefined;
    if (file) {
      const last = (writeStillWaiting ?? Promise.resolve())
        .then(() => file.datasync())
        .catch((err: Error) => this.stopProblem(new KilnError('KILN_ERR_STORAGE', `could not sync the log at stop (${err.message}): ${this.policy === 'everysec' ? 'the last second of changes may not be on disk' : 'what the OS had not written yet may not be on disk'}`, { cause: err })))
        .then(() => file.close())
        .catch(() => undefined);
      // A write given up on (said already) is not waited for again.
      if (writeStillWaiting) stillBusy.push(last);
      else if (!(await settlesWithin(last, this.stallMs))) {
        this.stopProblem(new KilnError('KILN_ERR_STORAGE', `the log's last sync still waited on its disk after ${this.stallMs} ms at stop: what it had not written may not be on disk (the data directory stays locked until the disk answers)`));
        stillBusy.push(last);
      }
    }
    const lock = this.lockToken;
    if (stillBusy.length > 0) void Promise.all(stillBusy).finally(() => unlockDataDir(lock));
    else unlockDataDir(lock);
  }

  /**
   * Writes what was appended, as long as the disk keeps taking it: a slow disk that takes
   * piece after piece is waited for, but a write (or sync) that has not moved for stallMs
   * must not hold the stop for good. Then (false) the log gives up: the batches not yet
   * written are refused (their commits were never acknowledged), nothing more is written
   * after the write that waits, and the caller leaves the file to it.
   */
  private async drainAtStop(): Promise<boolean> {
    const drain = async (): Promise<void> => {
      while (this.flushing || this.batch.length > 0) {
        if (this.flushing) await this.flushing;
        else await this.flush();
      }
    };
    const drained = drain();
    const look = Math.min(this.stallMs, STOP_LOOK_MS);
    for (let quietSince = Date.now(); ; ) {
      if (await settlesWithin(drained, look)) return true;
      const now = Date.now();
      // What the drain waits on: the write under way (timed from its last sign of life),
      // or a switch to the next log no stop has abandoned. Not the sync timer's fdatasync,
      // which the drain does not wait for (the last sync below is bounded on its own).
      const since = this.flushing ? this.writeMovedAt : this.rotating && !this.abandonSnapshot ? this.rotateSince : 0;
      if (since !== 0) quietSince = now;
      // Stalled: it has not moved for stallMs (or, oddly, nothing is under way and nothing ends).
      if ((since !== 0 && now - since >= this.stallMs) || (since === 0 && now - quietSince >= this.stallMs)) break;
    }
    this.gaveUp = true;
    const { waiters, bytes } = this.takeBatch();
    this.backlogBytes -= bytes;
    const refused = new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed: the log\'s last write still waits on its disk');
    for (const w of waiters) w.reject(refused);
    this.stopProblem(new KilnError('KILN_ERR_STORAGE', `the log's last write still waited on its disk after ${this.stallMs} ms at stop: the commits it holds were not acknowledged, and may or may not be on disk (the data directory stays locked until the disk answers)`));
    return false;
  }

  /**
   * A snapshot waiting on a hung disk must not hold the stop for good: past stallMs it is
   * abandoned. It stops at its next step and is not renamed in (unless it was renaming
   * already, past every check), so the logs it would have replaced are kept; the
   * directory stays locked until it has stopped (close()).
   */
  private async awaitCompactionAtStop(): Promise<void> {
    if (!this.compacting) return;
    if (!(await settlesWithin(this.compacting.catch(() => undefined), this.stallMs))) {
      this.abandonSnapshot = true;
      // (The logs it would have replaced are kept: nothing acknowledged is at stake.)
      this.options.onError?.(new KilnError('KILN_ERR_STORAGE', `a compaction still waited on its disk after ${this.stallMs} ms at stop: abandoned, it replaces nothing unless it had begun to already (the data directory stays locked until the disk lets it stop)`));
    }
  }

  private maybeCompact(): void {
    if (this.compacting || this.closing || this.closed || !this.options.dump || Date.now() < this.compactAfter) return;
    // A disk that is behind would only fall further behind, and a snapshot would only
    // add to what waits on it.
    if (this.backlogBytes > this.maxBacklogBytes / 2 || this.refusal() !== undefined) return;
    const live = this.options.liveBytes?.() ?? 0;
    if (this.logBytes > this.compactMinBytes && this.logBytes > 2 * live) {
      void this.compact().catch((err: Error) => this.options.onError?.(err));
    }
  }

  private async doCompact(): Promise<void> {
    const dump = this.options.dump;
    if (!dump) return;
    while (this.flushing) await this.flushing;
    // After a write given up, nothing may follow the hole: no new log, no snapshot.
    if (this.gaveUp) throw new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed');
    await this.rotate();
    const nextSeq = this.seq;
    await writeSnapshot(this.dir, dump(), nextSeq, this.options.keyring, {
      proceed: () => this.stopIfAbandoned(),
      beforeRename: () => this.snapshotMayReplace(),
      tempName: this.snapshotTempName,
    });
    for (const seq of await logSeqsAsync(this.dir)) {
      if (seq >= nextSeq) continue;
      this.stopIfAbandoned();
      await unlink(this.logPath(seq));
    }
    // What the log the compaction started holds stays (commits taken while the snapshot was written).
    this.logBytes = this.fileOffset;
    this.counters.compactions++;
  }

  /** A compaction goes no further once a write was given up or a stop abandoned it. */
  private stopIfAbandoned(): void {
    if (this.gaveUp || this.abandonSnapshot) throw new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed: the snapshot is abandoned');
    this.checkOwnership();
  }

  /**
   * Throws once the data directory's lock is another server's (found by the lock's
   * timer, or asked now if its last check is old): before every write and every step
   * of a compaction, which may have begun before the loss.
   */
  private checkOwnership(): void {
    const state = this.lockLost === undefined ? lockStillOurs(this.lockToken) : 'lost';
    if (state === 'ours') return;
    // Unsure while the lock's own touch hangs on the disk: a compaction step waits for
    // nothing and is tried again later.
    if (state === 'unsure') throw new KilnError('KILN_ERR_STORAGE_BEHIND', "the data directory's lock could not be confirmed (its disk does not answer)");
    throw new KilnError('KILN_ERR_STORAGE', this.lockLost ?? "the data directory's lock is no longer this server's");
  }

  /**
   * checkOwnership for a batch of the log, whose records are applied in memory already:
   * while unsure (the lock's touch hangs on the disk, as the write would) it waits for
   * the answer instead of dropping them; the wait shows as a stalled write (commits
   * refused after --log-stall-ms, and a stop gives up on it as on a hung write).
   */
  private async ownershipSettled(): Promise<void> {
    for (let waiting = false; ; waiting = true) {
      try {
        this.checkOwnership();
        return;
      } catch (err) {
        if (!isKilnError(err, 'KILN_ERR_STORAGE_BEHIND')) throw err;
      }
      // The wait is this write's stall, timed from its start (a stop gives up on it after
      // stallMs, not at once on the last write's time); a stop that gave up ends it.
      if (!waiting) this.writeMovedAt = Date.now();
      if (this.gaveUp) throw new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'storage is closed');
      await sleep(100);
    }
  }

  /**
   * Whether a snapshot just written may replace the old one (throws if not). The snapshot
   * is fuzzy: it may hold changes made while it was written, whose records are in the log
   * the compaction started. Those records must be on disk first. Else a crash, or a write
   * given up at stop, would leave the snapshot holding a change no log has: a commit its
   * client was told failed, or, replayed under an older record of the new log, a session
   * half undone.
   */
  private async snapshotMayReplace(): Promise<void> {
    this.stopIfAbandoned();
    await this.settled();
    this.stopIfAbandoned();
    // "always" synced every batch with its write; otherwise the sync is made here.
    if (this.policy !== 'always' && this.file) await this.syncLog(this.file);
    this.stopIfAbandoned();
  }

  /**
   * Starts the next log file. No batch is written meanwhile, and the previous log is whole
   * and synced before the next one exists: a crash then never leaves a torn record in a
   * log that is not the newest, which a start would refuse as damage.
   */
  private async rotate(): Promise<void> {
    let switched!: () => void;
    this.rotating = new Promise<void>((resolve) => (switched = resolve));
    // Timed as a stall, except the sync of a "never" log: it may have much to write, all of it taken already.
    if (this.policy !== 'never') this.rotateSince = Date.now();
    try {
      while (this.flushing) await this.flushing;
      const held = failpointHold('log:rotate');
      if (held) await held;
      this.stopIfAbandoned();
      const previous = this.file;
      if (previous && this.policy !== 'always') {
        try {
          await this.syncLog(previous);
        } catch (err) {
          this.stopIfAbandoned(); // the stop closed that file meanwhile
          throw err;
        }
      }
      this.rotateSince ||= Date.now();
      const synced = failpointHold('log:rotate-synced');
      if (synced) await synced;
      this.stopIfAbandoned();
      this.seq++;
      const path = this.logPath(this.seq);
      this.rotateOpened = true;
      const file = await open(path, 'wx', 0o600);
      try {
        const made = failpointHold('log:rotate-opened');
        if (made) await made;
        await file.chmod(0o600);
        await writeAt(file, LOG_MAGIC, 0);
        await file.datasync();
        await syncDirAsync(this.dir);
        this.stopIfAbandoned();
      } catch (err) {
        // A full disk fails here too: no handle kept, and no empty log left to become a
        // "cut short, not the newest" log once a later rotation succeeds.
        await file.close().catch(() => undefined);
        // Gone already, or the disk refuses even this: left, it is a short log that the next
        // start removes (it holds no record).
        await unlink(path).catch(() => undefined);
        await syncDirAsync(this.dir);
        throw err;
      }
      this.file = file;
      this.fileSeq = this.seq;
      this.fileOffset = LOG_MAGIC.length;
      await previous?.close().catch(() => undefined);
    } finally {
      this.rotating = undefined;
      this.rotateOpened = false;
      this.rotateSince = 0;
      switched();
    }
  }

  private async syncIfDirty(): Promise<void> {
    if (this.syncFailure !== undefined) {
      await this.resnapshot();
      return;
    }
    // One sync at a time: a stuck fdatasync must keep its start time (the stall), not
    // have the next tick's sync overwrite it.
    if (!this.dirty || !this.file || this.closed || this.syncSince) return;
    this.dirty = false;
    this.syncSince = Date.now();
    try {
      await this.syncLog(this.file);
    } catch {
      // noted by syncLog: commits are refused until a snapshot succeeds
    } finally {
      this.syncSince = 0;
    }
  }

  /**
   * fdatasync of a log outside its batches' writes (the everysec tick, the log a switch
   * leaves, the log a snapshot's changes are in). Linux reports a failed fdatasync once,
   * and may have dropped the pages it failed on: a later sync would "succeed" over them.
   * So with everysec a failure is the log's failed sync (noteSyncFailure), made good by a
   * snapshot, unless a stop abandoned the work meanwhile (and may have closed the file).
   */
  private async syncLog(file: FileHandle): Promise<void> {
    try {
      if (failpointActive('log:sync-fails')) throw new Error('EIO: i/o error, fdatasync (failpoint log:sync-fails)');
      await file.datasync();
      this.counters.syncs++;
    } catch (err) {
      if (this.policy === 'everysec' && !this.abandonSnapshot) this.noteSyncFailure(err);
      throw err;
    }
  }

  /**
   * After a failed sync: a snapshot of the whole state, synced, is what is known to be on
   * disk again. While it keeps failing it is tried again after 1 s, doubling to 30 s (each
   * try starts a log file and writes the whole state).
   */
  private async resnapshot(force = false): Promise<void> {
    if (this.compacting || this.closed || this.gaveUp || !this.options.dump) return;
    // Once a stop has begun, only the stop's own try (force): one the sync timer started
    // then would go on after the stop without being waited for or abandoned.
    if (!force && (this.closing || Date.now() < this.compactAfter)) return;
    try {
      await this.compact();
      this.options.onRecovered?.(`a snapshot of every session is on disk again after the failed sync (${this.syncFailure})`);
      this.syncFailure = undefined;
    } catch (err) {
      this.options.onError?.(err as Error);
    }
  }

  /** An everysec sync failed: commits are refused until a snapshot of every session is on disk (resnapshot). */
  private noteSyncFailure(err: unknown): void {
    this.counters.syncFailures++;
    this.syncFailure = (err as Error).message;
    this.options.onError?.(new KilnError('KILN_ERR_STORAGE', `could not sync the log (${this.syncFailure}); commits are refused until a snapshot of every session is on disk`, { cause: err }));
  }

  private logSeqs(): number[] {
    return logSeqs(this.dir);
  }

  private logPath(seq: number): string {
    return logPath(this.dir, seq);
  }

  private lock(): void {
    this.lockToken = lockDataDir(this.dir, {
      onLost: (why) => {
        this.lockLost = why;
        this.options.onError?.(new KilnError('KILN_ERR_STORAGE', `${why}; commits are refused from now on: stop this server`));
      },
    });
  }

  /** Files an older Kiln created 0644: they hold session data, so only the owner reads them now. */
  private tightenFileModes(): void {
    if (process.platform === 'win32') return;
    for (const name of readdirSync(this.dir)) {
      if (!/^(kiln\.lock|snapshot\.kiln|log-\d+\.kiln)$/.test(name) && !SNAPSHOT_TEMP_PATTERN.test(name)) continue;
      const path = join(this.dir, name);
      try {
        if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
      } catch (err) {
        // A temporary snapshot its writer (one that lost the lock) removed meanwhile.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !SNAPSHOT_TEMP_PATTERN.test(name)) throw err;
      }
    }
  }

  private frames(payloads: Uint8Array[], magic: Buffer, seq: number, offset: number): Buffer {
    return frameRecords(payloads, magic, seq, offset, this.options.keyring);
  }
}

/**
 * Creates the data directory 0700, or checks an existing one: one that group or others
 * can write to, or that another user owns, is refused, since whoever can replace its
 * files can plant or alter sessions (and a root server in another user's directory
 * would follow links that user plants). Root gets no exception: it should own its data.
 * An existing directory others can only read is left as it is (its files are 0600).
 */
export function prepareDataDir(dir: string): void {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // The umask narrows mkdir's mode (umask 0277 would leave the server unable to write).
    chmodSync(dir, 0o700);
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new KilnError('KILN_ERR_STORAGE', `data directory ${dir} is not a directory`);
  if (process.platform === 'win32') return;
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new KilnError('KILN_ERR_UNSAFE_PERMISSIONS', `data directory ${dir} is owned by uid ${st.uid}, not by the user the server runs as (uid ${uid}): that user could replace its files. Fix: chown -R ${uid} ${dir} && chmod 700 ${dir}`, { details: { path: dir, owner: st.uid, uid } });
  }
  if ((st.mode & 0o022) !== 0) {
    throw new KilnError('KILN_ERR_UNSAFE_PERMISSIONS', `data directory ${dir} has mode ${modeString(st.mode)}: group or others can write to it and so replace its files. Fix: chmod 700 ${dir}`, { details: { path: dir, mode: modeString(st.mode) } });
  }
}

/** Refusal to start on a damaged file: it names the file and offset, leaves every file as it is, and says how to repair. */
function damaged(file: string, offset: number, why: string, dir: string): KilnError {
  return new KilnError(
    'KILN_ERR_STORAGE_DAMAGED',
    `${file} is damaged at byte ${offset}: ${why}. No file was changed; the server will not replay past damage into a state that never existed. See docs/operations.md, "A damaged data directory": \`kiln repair --data-dir ${dir}\` keeps every session that can be trusted and moves the damaged files aside (or start the server with --repair).`,
    { details: { file, offset } },
  );
}
