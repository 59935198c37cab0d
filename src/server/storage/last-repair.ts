import { closeSync, fchmodSync, fsyncSync, lstatSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `<dataDir>/last-repair.json`: what the last `kiln repair` did, written by the repair and
 * read at every start for the ready line and the admin overview. The file sits in a
 * directory an operator (or an attacker with its permissions) can edit, so reading it is
 * defensive: size capped, shape checked, anything else ignored with a warning.
 */

export const LAST_REPAIR_FILE = 'last-repair.json';
/** A summary is a few KiB (damaged spots are capped); a larger file is not one Kiln wrote. */
const MAX_BYTES = 64 * 1024;

export interface DamagedSpot {
  file: string;
  offset: number;
  /** Bytes skipped from `offset` up to the next valid record (or the end of the file). */
  bytes: number;
  why: string;
}

export interface RepairSummary {
  /** False when the directory had nothing to repair (nothing was written). */
  repaired: boolean;
  /** When the repair ran (ISO 8601). */
  at: string;
  dataDir: string;
  filesRead: string[];
  /** The first damaged spots (at most MAX_SPOTS); `damagedSpots` counts them all. */
  damaged: DamagedSpot[];
  damagedSpots: number;
  recordsSalvaged: number;
  recordsSkipped: number;
  bytesSkipped: number;
  sessionsKept: number;
  sessionsDropped: number;
  dropped: { liveAtGap: number; noCreation: number };
  /** An incomplete last record of the newest log: not damage, left for the server to cut. */
  tornTail: { file: string; offset: number; bytes: number } | null;
  /** Where the replaced and damaged files were moved; null when nothing was moved. */
  movedTo: string | null;
  movedFiles: string[];
}

export const MAX_SPOTS = 100;

export function writeLastRepair(dir: string, summary: RepairSummary): void {
  const path = join(dir, LAST_REPAIR_FILE);
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, `${JSON.stringify(summary, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** The last repair's summary, or null when there is none or the file is not one Kiln wrote (`warn` says why). */
export function readLastRepair(dir: string, warn: (message: string, fields: Record<string, unknown>) => void): RepairSummary | null {
  const path = join(dir, LAST_REPAIR_FILE);
  let text: string;
  try {
    const st = lstatSync(path);
    // A link could point the server at any file it can read.
    if (!st.isFile()) return ignored(warn, path, 'not a regular file');
    if (st.size > MAX_BYTES) return ignored(warn, path, `${st.size} bytes, more than ${MAX_BYTES}`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return ignored(warn, path, (err as Error).message);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return ignored(warn, path, 'not JSON');
  }
  return isSummary(value) ? value : ignored(warn, path, 'not a repair summary');
}

function ignored(warn: (message: string, fields: Record<string, unknown>) => void, file: string, why: string): null {
  warn('storage: last-repair.json ignored', { file, why });
  return null;
}

function isSummary(v: unknown): v is RepairSummary {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  const count = (x: unknown): boolean => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  const dropped = s['dropped'] as Record<string, unknown> | null;
  return (
    typeof s['repaired'] === 'boolean' &&
    typeof s['at'] === 'string' &&
    !Number.isNaN(Date.parse(s['at'])) &&
    typeof s['dataDir'] === 'string' &&
    Array.isArray(s['filesRead']) &&
    Array.isArray(s['damaged']) &&
    Array.isArray(s['movedFiles']) &&
    ['damagedSpots', 'recordsSalvaged', 'recordsSkipped', 'bytesSkipped', 'sessionsKept', 'sessionsDropped'].every((k) => count(s[k])) &&
    typeof dropped === 'object' &&
    dropped !== null &&
    count(dropped['liveAtGap']) &&
    count(dropped['noCreation']) &&
    (s['movedTo'] === null || typeof s['movedTo'] === 'string')
  );
}
