import { existsSync, linkSync, copyFileSync, constants, mkdirSync, renameSync, unlinkSync, chmodSync } from 'node:fs';
import { basename, join } from 'node:path';
import { KilnError } from '../../errors/index.js';
import { SessionTable, type TierRecord } from '../../tier/session-table.js';
import { prepareDataDir } from './append-log.js';
import { FRAME_HEADER, FrameReader, findNextFrame, LOG_MAGIC, logPath, logSeqs, SNAPSHOT_MAGIC, SNAPSHOT_NAME, snapshotTempNames, syncDir, writeSnapshot } from './frame-file.js';
import { type DirLock, lockDataDir, lockStillOurs, refreshLockIfDue, unlockDataDir } from './dir-lock.js';
import { type DamagedSpot, MAX_SPOTS, type RepairSummary, writeLastRepair } from './last-repair.js';
import { decodeRecord, isSealed, type Keyring, openRecord, recordPlace, releaseDecodeBuffer } from './record-codec.js';
import { RepairPlanner } from './repair-plan.js';
import { failpoint } from '../../util/failpoint.js';

/**
 * `kiln repair` (and `kiln server --repair`): reads a damaged data directory the way the
 * server's load does, but instead of refusing at the first bad byte it salvages every
 * valid record (resynchronising on the next frame whose length is sane and whose CRC
 * matches), feeds them and the gaps to RepairPlanner (repair-plan.ts), and writes a fresh
 * snapshot of the sessions the plan keeps. The old files are kept byte for byte in
 * `<dataDir>/damaged-<time>/`: a repair never deletes evidence.
 *
 * One pass, one copy: records stream from a reused read buffer into one SessionTable,
 * and the snapshot is written from it in slices, as compaction does.
 */

export interface RepairOptions {
  dir: string;
  /** The keys the server reads the directory with; the new snapshot is sealed with the current one. */
  keyring?: Keyring;
  /** A line per step, for the command's output. */
  progress?: (line: string) => void;
}

const SPOTS_SHOWN = 5;

/** Thrown out of FrameReader.replay to stop at a record that passes its CRC but cannot be opened or decoded. */
class BadRecord {
  constructor(
    readonly offset: number,
    readonly length: number,
    readonly why: string,
  ) {}
}

interface ScanState {
  planner: RepairPlanner;
  table: SessionTable;
  damaged: DamagedSpot[];
  spots: number;
  bytesSkipped: number;
  salvaged: number;
  tornTail: RepairSummary['tornTail'];
  /** Refreshed while the scan holds the event loop (see refreshLockIfDue). */
  lock: DirLock;
}

/** Repairs `options.dir` when it is damaged; a clean directory is left untouched (`repaired: false`). */
export async function repairDataDir(options: RepairOptions): Promise<RepairSummary> {
  const dir = options.dir;
  const say = options.progress ?? (() => undefined);
  if (!existsSync(dir)) throw new KilnError('KILN_ERR_STORAGE', `data directory ${dir} does not exist`, { details: { dir } });
  prepareDataDir(dir);
  const lock = lockDataDir(dir);
  try {
    const state: ScanState = { planner: new RepairPlanner(), table: new SessionTable(), damaged: [], spots: 0, bytesSkipped: 0, salvaged: 0, tornTail: null, lock };
    const filesRead: string[] = [];
    const reader = new FrameReader();
    const seqs = logSeqs(dir);
    const newest = seqs.at(-1);
    const snapshotPath = join(dir, SNAPSHOT_NAME);
    let firstSeq = 0;
    if (existsSync(snapshotPath)) {
      say(`reading ${snapshotPath}`);
      filesRead.push(snapshotPath);
      reader.open(snapshotPath);
      try {
        const header = reader.header(SNAPSHOT_MAGIC.length + 4);
        const seq = header?.readUInt32BE(SNAPSHOT_MAGIC.length) ?? 0;
        if (header?.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC)) {
          firstSeq = seq;
          scanFrames(reader, snapshotPath, SNAPSHOT_MAGIC, firstSeq, header.length, false, options.keyring, state);
        } else {
          // The first log it covers is read from the damaged header only when it is plausible; else every log is replayed after it.
          firstSeq = seq > 0 && seq <= (newest ?? 0) + 1 ? seq : 0;
          const next = resync(reader, snapshotPath, 0, SNAPSHOT_MAGIC.length + 4, 'its header is not a kiln snapshot header', false, state);
          if (next !== undefined) scanFrames(reader, snapshotPath, SNAPSHOT_MAGIC, firstSeq, next, false, options.keyring, state);
        }
      } finally {
        reader.close();
      }
    }
    for (const seq of seqs) {
      if (seq < firstSeq) continue; // covered by the snapshot; moved aside with the rest
      const path = logPath(dir, seq);
      say(`reading ${path}`);
      filesRead.push(path);
      reader.open(path);
      try {
        const header = reader.header(LOG_MAGIC.length);
        if (header?.equals(LOG_MAGIC)) {
          scanFrames(reader, path, LOG_MAGIC, seq, LOG_MAGIC.length, seq === newest, options.keyring, state);
        } else {
          // A header cut short (a crash while a log was being started) holds no record, wherever
          // the log sits: nothing to salvage, and no damage (a start removes it too). Only the
          // newest log's is its torn tail.
          if (reader.headerCutShort(LOG_MAGIC)) {
            if (seq === newest) state.tornTail = { file: path, offset: 0, bytes: reader.size };
          } else {
            const next = resync(reader, path, 0, LOG_MAGIC.length, 'its header is not a kiln log header', false, state);
            if (next !== undefined) scanFrames(reader, path, LOG_MAGIC, seq, next, seq === newest, options.keyring, state);
          }
        }
      } finally {
        reader.close();
      }
    }
    releaseDecodeBuffer();
    const counts = state.planner.counts();
    const summary: RepairSummary = {
      repaired: false,
      at: new Date().toISOString(),
      dataDir: dir,
      filesRead,
      damaged: state.damaged,
      damagedSpots: state.spots,
      recordsSalvaged: state.salvaged,
      recordsSkipped: counts.recordsSkipped,
      bytesSkipped: state.bytesSkipped,
      sessionsKept: counts.sessionsKept,
      sessionsDropped: counts.sessionsDropped,
      dropped: counts.dropped,
      tornTail: state.tornTail,
      movedTo: null,
      movedFiles: [],
    };
    if (state.spots === 0) return summary;
    // A few lines, not one per spot: last-repair.json lists them (up to MAX_SPOTS).
    for (const spot of state.damaged.slice(0, SPOTS_SHOWN)) say(`damaged: ${spot.file} at byte ${spot.offset}, ${spot.bytes} bytes skipped (${spot.why})`);
    if (state.spots > SPOTS_SHOWN) say(`damaged: ${state.spots - SPOTS_SHOWN} more spots (see last-repair.json)`);
    // A long scan may have let a server that cannot see this process take the directory.
    if (lockStillOurs(lock) !== 'ours') throw new KilnError('KILN_ERR_STORAGE', `the lock of ${dir} was taken by another server during the scan: nothing was changed`, { details: { dir } });
    try {
      await replaceFiles(dir, state.table, Math.max(firstSeq, newest ?? 0) + 1, options.keyring, summary, say);
    } catch (err) {
      if (err instanceof KilnError) throw err;
      throw new KilnError('KILN_ERR_REPAIR_FAILED', `repair of ${dir} could not write its result: ${(err as Error).message}. ${summary.movedTo ? `The original files are in ${summary.movedTo}; ` : ''}the data directory still refuses to start until a repair completes`, { cause: err, details: { dir, movedTo: summary.movedTo } });
    }
    summary.repaired = true;
    writeLastRepair(dir, summary);
    return summary;
  } finally {
    unlockDataDir(lock);
  }
}

/**
 * Moves the old files aside and installs the new snapshot. Every old file is linked into
 * the damaged- directory before anything replaces or removes it, and the switch itself is
 * one rename over snapshot.kiln (whose first log comes after every old one, so a crash
 * before the old logs are unlinked leaves them unread, and their copies kept).
 */
async function replaceFiles(dir: string, table: SessionTable, firstSeq: number, keyring: Keyring | undefined, summary: RepairSummary, say: (line: string) => void): Promise<void> {
  const stamp = summary.at.replace(/[:.]/g, '-');
  let aside = join(dir, `damaged-${stamp}`);
  for (let i = 2; existsSync(aside); i++) aside = join(dir, `damaged-${stamp}-${i}`);
  mkdirSync(aside, { mode: 0o700 });
  chmodSync(aside, 0o700);
  summary.movedTo = aside;
  // A crashed compaction's partial snapshots: moved, not linked (never read; kept for whoever looks into the damage).
  for (const name of snapshotTempNames(dir)) {
    try {
      renameSync(join(dir, name), join(aside, name));
      summary.movedFiles.push(name);
    } catch (err) {
      // Removed meanwhile by its writer (a server that lost the lock, abandoning its compaction).
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  failpoint('repair:aside-made');
  const old = [join(dir, SNAPSHOT_NAME), ...logSeqs(dir).map((seq) => logPath(dir, seq))].filter((p) => existsSync(p));
  for (const path of old) {
    keep(path, join(aside, basename(path)));
    summary.movedFiles.push(basename(path));
  }
  syncDir(aside);
  failpoint('repair:old-files-kept');
  say(`old files kept in ${aside}`);
  const now = Date.now();
  await writeSnapshot(dir, table.dump(now), firstSeq, keyring);
  say(`new snapshot written: ${summary.sessionsKept} sessions`);
  failpoint('repair:snapshot-installed');
  for (const path of old) if (basename(path) !== SNAPSHOT_NAME) unlinkSync(path);
  syncDir(dir);
  failpoint('repair:old-logs-removed');
}

/** A second name for the file, byte for byte (a copy where the file system has no hard links). */
function keep(path: string, to: string): void {
  try {
    linkSync(path, to);
  } catch {
    copyFileSync(path, to, constants.COPYFILE_EXCL);
  }
}

/** Reads frames from `from` to the end of the file, salvaging past every bad spot. */
function scanFrames(reader: FrameReader, path: string, magic: Buffer, seq: number, from: number, newestLog: boolean, keyring: Keyring | undefined, state: ScanState): void {
  let at = from;
  for (;;) {
    let bad: BadRecord | undefined;
    let end;
    try {
      end = reader.replay(at, (payload, offset) => {
        refreshLockIfDue(state.lock);
        let record: TierRecord;
        try {
          const plain = isSealed(payload) ? openRecord(payload, keyring, recordPlace(magic, seq, offset), `${path} at byte ${offset}`) : payload;
          record = decodeRecord(plain);
        } catch (err) {
          // A missing or wrong key is no damage: the operator must supply it, as for the server.
          if (err instanceof KilnError && err.code === 'KILN_ERR_ENCRYPTION_KEY') throw err;
          throw new BadRecord(offset, FRAME_HEADER + payload.length, err instanceof KilnError && err.code === 'KILN_ERR_STORAGE_CORRUPT' ? 'a record fails authentication' : 'a record cannot be decoded');
        }
        state.salvaged++;
        const applied = state.planner.record(record);
        if (applied) state.table.replay(applied);
      });
    } catch (err) {
      if (!(err instanceof BadRecord)) throw err;
      bad = err;
    }
    if (bad) {
      gap(state, path, bad.offset, bad.length, bad.why);
      at = bad.offset + bad.length;
      continue;
    }
    if (!end || end.kind === 'clean') return;
    const why = end.kind === 'torn' ? 'a record is cut short' : 'a record fails its checksum';
    const next = resync(reader, path, end.offset, end.offset + 1, why, end.kind === 'torn' && newestLog, state);
    if (next === undefined) return;
    at = next;
  }
}

/**
 * Bad bytes from `badAt`: finds the next valid frame from `searchFrom` on and records the
 * gap up to it. A record cut short at the end of the newest log with nothing valid after
 * it is a torn tail, not damage. Returns where reading goes on, or undefined at the end.
 */
function resync(reader: FrameReader, path: string, badAt: number, searchFrom: number, why: string, tornTail: boolean, state: ScanState): number | undefined {
  const next = findNextFrame(reader, searchFrom);
  if (next === undefined && tornTail) {
    state.tornTail = { file: path, offset: badAt, bytes: reader.size - badAt };
    return undefined;
  }
  gap(state, path, badAt, (next ?? reader.size) - badAt, why);
  return next;
}

function gap(state: ScanState, file: string, offset: number, bytes: number, why: string): void {
  state.spots++;
  if (state.damaged.length < MAX_SPOTS) state.damaged.push({ file, offset, bytes, why });
  state.bytesSkipped += bytes;
  for (const id of state.planner.gap(basename(file) === SNAPSHOT_NAME ? 'snapshot' : 'log')) state.table.replay({ t: 'e', id });
}
