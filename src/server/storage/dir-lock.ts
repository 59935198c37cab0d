import { closeSync, constants, fchmodSync, fstatSync, futimes, futimesSync, linkSync, openSync, readSync, realpathSync, renameSync, rmSync, stat, statSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { KilnError } from '../../errors/index.js';
import { bootedAt, isProcessAlive, ownIdentity, startTicksOf, UNKNOWN, type ProcessIdentity } from '../../util/process-alive.js';

/**
 * `<dir>/kiln.lock`: one server per data directory.
 *
 * The file is `<pid> <boot id> <pid namespace> <start ticks> <host>` (every Kiln reads
 * the first word; '-' for what this system does not say). Whether its holder lives is
 * decided by what this process can check (judgeHolder):
 * - in the same boot and pid namespace, both known (or a file holding the pid alone, an
 *   older Kiln's), the pid is looked up, and its start time, so that a pid reused by
 *   another process holds nothing;
 * - a lock of an earlier boot of this machine, last touched before this boot began, is
 *   stale;
 * - otherwise (another container on the same volume, another machine on a shared file
 *   system, a system without /proc) the pid means nothing here: the holder refreshes
 *   the file's modification time every LOCK_REFRESH_MS, and a lock not refreshed for
 *   LOCK_STALE_AFTER_MS is stale. A second container started on a live server's volume
 *   is refused; one started after a crash waits out that time (the refusal says how long).
 * A holder checks that the path still holds its file (lockStillOurs) before it writes:
 * taken over while it looked dead, it reports the loss and writes nothing more there.
 */
export const LOCK_REFRESH_MS = 5_000;
export const LOCK_STALE_AFTER_MS = 30_000;
/** A lock file is read no further than this (its five words fit well within). */
const LOCK_READ_BYTES = 256;

/** A data directory's lock, as this process holds it (lockDataDir, unlockDataDir). */
export interface DirLock {
  /** The directory's real path. */
  readonly dir: string;
}

/**
 * The data directories this process has locked, by real path (not by inode: a directory
 * removed and made again may get the inode of another still listed), with the timer that
 * refreshes each lock.
 */
interface HeldLock {
  lock: DirLock;
  /** `<dir>/kiln.lock`. */
  path: string;
  refresh: NodeJS.Timeout;
  dev: number;
  ino: number;
  /** The lock file, open from the moment it was placed: refreshed through it, and compared with what the path holds. */
  fd: number;
  /** The lock file's inode: the path must still hold it. */
  fileIno: number;
  refreshedAt: number;
  /** A touch is under way (the timer's, asynchronous): the descriptor stays open until it ends. */
  touching: boolean;
  /** When the path was last seen holding our file (Date.now()). */
  confirmedAt: number;
  lost: boolean;
  onLost: ((why: string) => void) | undefined;
}
const locksHere = new Map<string, HeldLock>();

/** What a lock file says of its holder; words an older Kiln did not write are undefined. */
export interface LockRecord {
  readonly pid: number;
  /** The file holds the pid alone (an older Kiln's lock); a server without /proc writes '-' for what it cannot know. */
  readonly pidOnly: boolean;
  readonly boot: string | undefined;
  readonly pidNamespace: string | undefined;
  readonly started: string | undefined;
  readonly host: string | undefined;
}

/** Why a lock is held: its holder was seen, or it was refreshed too lately to be called stale. */
export type HolderVerdict = { held: false } | { held: true; seen: true } | { held: true; seen: false; refreshedMsAgo: number };

/** This process as a lock names it. */
function ownRecordLine(): string {
  const me = ownIdentity();
  return `${me.pid} ${me.boot} ${me.pidNamespace} ${me.started} ${hostWord()}\n`;
}

/** The host name as one word of at most 64 printable characters ('-' for none). */
function hostWord(): string {
  const word = hostname().replace(/[^\x21-\x7e]/g, '').slice(0, 64);
  return word === '' ? UNKNOWN : word;
}

/** Parses a lock file's head (see the module's comment); a first word that is no pid gives NaN. */
export function parseLockRecord(text: string): LockRecord {
  const words = text.trim().split(/\s+/);
  const known = (word: string | undefined) => (word === undefined || word === UNKNOWN ? undefined : word);
  return { pid: /^\d{1,10}$/.test(words[0] ?? '') ? Number(words[0]) : Number.NaN, pidOnly: words.length === 1, boot: known(words[1]), pidNamespace: known(words[2]), started: known(words[3]), host: known(words[4]) };
}

/** What this process can see of another: whether a pid lives, and its start time. */
export interface ProcessProbe {
  alive(pid: number): boolean;
  startedOf(pid: number): string | undefined;
}

const localProbe: ProcessProbe = { alive: isProcessAlive, startedOf: startTicksOf };

/** This process as judgeHolder sees it: its identity, its host name, and when its machine booted (ms; undefined where unknown). */
export type Judge = ProcessIdentity & { host: string; bootedAt: number | undefined };

/**
 * Whether the lock's holder may live (pure: `me`, the clock and the probe are given).
 * - The pid rule (the pid lives, with the start time written) only where the pid means
 *   the same thing to both: same boot and pid namespace, both known (or a lock of an
 *   older Kiln naming only a pid). A lock naming this very process's pid there is not
 *   held: a dead holder's pid may be ours (a container restarted), and this process's
 *   own locks are in locksHere.
 * - An earlier boot of this machine (same host name) holds nothing, once the lock was
 *   last refreshed before this boot began and not for two refresh periods: a machine of
 *   the same name refreshing it since is another machine.
 * - Otherwise the lock's refreshes decide: held until not refreshed for
 *   LOCK_STALE_AFTER_MS (a time ahead of this clock counts as just refreshed).
 */
export function judgeHolder(record: LockRecord, refreshedAt: number, now: number, me: Judge, probe: ProcessProbe): HolderVerdict {
  if (!Number.isInteger(record.pid) || record.pid <= 0) return { held: false };
  const same = (theirs: string | undefined, ours: string) => theirs !== undefined && ours !== UNKNOWN && theirs === ours;
  if (record.pidOnly || (same(record.boot, me.boot) && same(record.pidNamespace, me.pidNamespace))) {
    if (record.pid === me.pid || !probe.alive(record.pid)) return { held: false };
    const started = probe.startedOf(record.pid);
    if (record.started !== undefined && started !== undefined && started !== record.started) return { held: false };
    return { held: true, seen: true };
  }
  const refreshedMsAgo = now - refreshedAt;
  const earlierBoot = record.boot !== undefined && me.boot !== UNKNOWN && record.boot !== me.boot && same(record.host, me.host);
  if (earlierBoot && me.bootedAt !== undefined && refreshedAt < me.bootedAt && refreshedMsAgo > 2 * LOCK_REFRESH_MS) return { held: false };
  return refreshedMsAgo > LOCK_STALE_AFTER_MS ? { held: false } : { held: true, seen: false, refreshedMsAgo };
}

/** The verdict on the lock at `path` as this process sees it now; undefined when the file is gone. */
function holderOf(path: string): { record: LockRecord; ino: number; head: string; verdict: HolderVerdict } | undefined {
  const lock = readLock(path);
  if (lock === undefined) return undefined;
  const record = parseLockRecord(lock.head);
  return { record, ino: lock.ino, head: lock.head, verdict: judgeHolder(record, lock.refreshedAt, Date.now(), { ...ownIdentity(), host: hostWord(), bootedAt: bootedAt() }, localProbe) };
}

/** The pid a lock file names; undefined when there is none, or it cannot be read as a lock. */
export function lockHolderPid(path: string): number | undefined {
  try {
    const lock = readLock(path);
    const pid = lock === undefined ? Number.NaN : parseLockRecord(lock.head).pid;
    return Number.isInteger(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** A lock file's head and the time it was last refreshed; undefined when it is gone. */
function readLock(path: string): { head: string; refreshedAt: number; ino: number } | undefined {
  let fd: number;
  try {
    // Not followed if a link, not waited on if a FIFO: a lock file is ours to write, so
    // anything else there is damage, and said so.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw notALockFile(path, 'a symbolic link');
    throw err;
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw notALockFile(path, 'not a regular file');
    const buffer = Buffer.alloc(LOCK_READ_BYTES);
    const head = buffer.toString('latin1', 0, readSync(fd, buffer, 0, buffer.length, 0));
    return { head, refreshedAt: info.mtimeMs, ino: info.ino };
  } finally {
    closeSync(fd);
  }
}

function notALockFile(path: string, what: string): KilnError {
  return new KilnError('KILN_ERR_STORAGE', `${path} is ${what}; a lock file is a regular file. Remove it once sure no server runs on the directory`, { details: { path } });
}

/**
 * Puts this process's record at `path` whole and only if nothing is there: written to a
 * file of its own first and then linked in (an empty lock file seen while being written
 * would look like no holder). False when a lock is there already. A file system without
 * hard links gets an exclusive create instead.
 */
function placeLockFile(path: string): boolean {
  const own = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeRecordFile(own);
  try {
    linkSync(own, path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
    try {
      writeRecordFile(path);
      return true;
    } catch (err2) {
      if ((err2 as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err2;
    }
  } finally {
    rmSync(own, { force: true });
  }
}

/** This process's record in a new file at `path` (0600), refused when one is there (EEXIST). */
function writeRecordFile(path: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, ownRecordLine());
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes a stale lock, false when another start is taking it over or it turned out held.
 * Takeovers go one at a time, through `kiln.lock.takeover` (placed as the lock is): only
 * its holder removes a lock, after reading it again. So a fresh lock another server
 * placed a moment ago is never removed as stale, and of servers starting at once on a
 * stale lock one takes it. A takeover file left by a dead process is removed.
 */
function removeStaleLock(path: string): boolean {
  const takeover = `${path}.takeover`;
  if (!placeLockFile(takeover)) {
    const other = holderOf(takeover);
    if (other !== undefined && (other.verdict.held || !removeIfStill(takeover, other))) return false;
    if (!placeLockFile(takeover)) return false;
  }
  const ours = inodeOf(takeover);
  try {
    // Read again under the takeover: a lock gone since may be placed anew at any moment
    // (and must then stay); one still here is still the stale one, removed only if it
    // is still that very file.
    const holder = holderOf(path);
    if (holder === undefined) return true;
    if (holder.verdict.held) return false;
    return removeIfStill(path, holder) || holderOf(path) === undefined;
  } finally {
    // Only our own takeover file: in a race past removeIfStill's, another's may be there.
    if (ours !== undefined && inodeOf(takeover) === ours) rmSync(takeover, { force: true });
  }
}

function inodeOf(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/**
 * Removes `path` if it is still the file judged stale (inode and record), and only then: moved aside
 * first (one step), so a starter that judged the same stale file a moment earlier and
 * already placed its own there does not lose it to us; ours goes back if it was that.
 */
function removeIfStill(path: string, judged: { ino: number; head: string }): boolean {
  const aside = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  try {
    renameSync(path, aside);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
  try {
    // The inode and the words: a file system may give a freed inode number to the next
    // file at once, and a new lock of another process is then told by its record.
    let now: { ino: number; head: string } | undefined;
    try {
      now = readLock(aside);
    } catch {
      now = undefined; // unreadable now: not known to be the file judged, so it goes back
    }
    if (now !== undefined && now.ino === judged.ino && now.head === judged.head) return true;
    try {
      linkSync(aside, path);
    } catch {
      // A third start placed one meanwhile: it holds the place now.
    }
    return false;
  } finally {
    rmSync(aside, { force: true });
  }
}

function inUse(dir: string, holder: { record: LockRecord; verdict: HolderVerdict } | undefined): KilnError {
  const pid = holder?.record.pid;
  const verdict = holder?.verdict;
  if (verdict?.held === true && !verdict.seen) {
    const seconds = Math.ceil((LOCK_STALE_AFTER_MS - verdict.refreshedMsAgo) / 1000);
    const when =
      verdict.refreshedMsAgo < -2_000
        ? `its lock's time is ${Math.round(-verdict.refreshedMsAgo / 1000)} s ahead of this machine's clock (a clock ahead, or a file touched by hand): remove kiln.lock once sure no server runs on the directory`
        : `its lock was refreshed ${Math.round(Math.max(0, verdict.refreshedMsAgo) / 1000)} s ago, and is taken over once not refreshed for ${LOCK_STALE_AFTER_MS / 1000} s (in ${seconds} s or more)`;
    return new KilnError('KILN_ERR_STORAGE', `data directory ${dir} is in use by process ${pid} of another pid namespace, boot or machine (a container on the same volume?): ${when}`, {
      details: { dir, pid, refreshedMsAgo: Math.round(verdict.refreshedMsAgo) },
    });
  }
  return new KilnError('KILN_ERR_STORAGE', `data directory ${dir} is in use by process ${pid ?? 'starting'}`, { details: { dir, pid } });
}

/**
 * Takes `<dir>/kiln.lock`; refused while another live process holds it, or another
 * storage of this process (a second server on the directory, or one restarted in place
 * while the old one's abandoned compaction still runs: see AppendLog.close). A stale
 * lock (see the module's comment) is taken over. The lock is refreshed until
 * unlockDataDir.
 */
export function lockDataDir(dir: string, options: { onLost?: (why: string) => void } = {}): DirLock {
  const real = realpathSync(dir);
  const { dev, ino } = statSync(real);
  if (locksHere.has(real)) throw inUseHere(dir, undefined);
  const path = join(real, 'kiln.lock');
  for (let attempt = 0; !placeLockFile(path); attempt++) {
    const holder = holderOf(path);
    if (holder === undefined && attempt < 3) continue; // gone meanwhile: try again
    // Our own lock under another path (a bind mount: two real paths, one directory).
    // Only then is the inode compared: one of a directory removed under a running server
    // may have been given to another since, but that one holds no lock of ours.
    if (holder !== undefined && isOwnRecord(holder.record)) {
      const other = [...locksHere.entries()].find(([, held]) => held.dev === dev && held.ino === ino);
      if (other !== undefined) throw inUseHere(dir, other[0]);
    }
    if (holder === undefined || attempt >= 3 || holder.verdict.held || !removeStaleLock(path)) throw inUse(dir, holder);
  }
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  const lock: DirLock = { dir: real };
  const held: HeldLock = { lock, path, refresh: undefined as unknown as NodeJS.Timeout, dev, ino, fd, fileIno: fstatSync(fd).ino, refreshedAt: Date.now(), touching: false, confirmedAt: Date.now(), lost: false, onLost: options.onLost };
  held.refresh = refreshEvery(held);
  locksHere.set(real, held);
  return lock;
}

/**
 * Refreshes the lock now if it is due: for the synchronous work that follows taking it
 * (a start's replay of the logs, a repair's scan), which keeps the timer from running.
 * A holder that looked dead for LOCK_STALE_AFTER_MS would be taken over by a server that
 * cannot see its pid. Cheap enough to call per record: a clock read until due.
 */
export function refreshLockIfDue(lock: DirLock | undefined): void {
  const held = heldOf(lock);
  if (held === undefined) return;
  const now = Date.now();
  if (now - held.refreshedAt < LOCK_REFRESH_MS) return;
  held.refreshedAt = now;
  try {
    futimesSync(held.fd, new Date(now), new Date(now));
    // Synchronous work already: the path is looked at too, so writes after it need not.
    judgeOwnership(held, statSync(held.path).ino);
  } catch {
    // The timer's next check says what became of the file.
  }
}

/** A lock this very process placed: its pid, and (where known) its boot, namespace and start time. */
function isOwnRecord(record: LockRecord): boolean {
  const me = parseLockRecord(ownRecordLine());
  return record.pid === me.pid && record.boot === me.boot && record.pidNamespace === me.pidNamespace && record.started === me.started;
}

function inUseHere(dir: string, otherPath: string | undefined): KilnError {
  const where = otherPath === undefined ? '' : ` under another path (${otherPath})`;
  return new KilnError('KILN_ERR_STORAGE', `data directory ${dir} is in use by this process${where} (a storage not stopped yet, or a compaction abandoned at stop that still waits on its disk)`, { details: { dir, pid: process.pid } });
}

/**
 * Touches the lock file now and then, so a server that cannot see this process (another
 * pid namespace or machine) knows it lives, and checks that the path still holds our
 * file: one replaced or removed (taken over while this process looked dead: stopped,
 * paused, its disk hung) is reported once through `onLost`, and never touched again.
 * Asynchronous and never two at once: a disk that hangs holds one touch, not the event
 * loop; the lock then goes stale for those servers, as it should for a server that
 * cannot write.
 */
function refreshEvery(held: HeldLock): NodeJS.Timeout {
  const timer = setInterval(() => {
    if (held.touching) return;
    held.touching = true;
    const now = new Date();
    held.refreshedAt = now.getTime();
    futimes(held.fd, now, now, () => {
      stat(held.path, (err, info) => {
        held.touching = false;
        if (locksHere.get(held.lock.dir) !== held) {
          // Unlocked meanwhile: the descriptor was left open for this touch (closed, its
          // number could have gone to another file, and the touch to that file).
          closeSync(held.fd);
          return;
        }
        // Only a file gone or another in its place is a loss; any other error (a
        // network file system's passing ESTALE, EIO) says nothing, and the touch that
        // answered stands for a confirmation (else every batch would wait on it for good).
        if (err && err.code !== 'ENOENT') {
          held.confirmedAt = Date.now();
          return;
        }
        judgeOwnership(held, err ? undefined : info.ino);
      });
    });
  }, LOCK_REFRESH_MS);
  timer.unref();
  return timer;
}

/** This process's hold on `lock`, while it is still the one taken (not a later one of the same directory). */
function heldOf(lock: DirLock | undefined): HeldLock | undefined {
  const held = lock === undefined ? undefined : locksHere.get(lock.dir);
  return held?.lock === lock ? held : undefined;
}

/** What the path holds now (`ino`, undefined: nothing) says of our lock; a loss is reported once. */
function judgeOwnership(held: HeldLock, ino: number | undefined): boolean {
  if (ino === held.fileIno) {
    held.confirmedAt = Date.now();
    return true;
  }
  if (!held.lost) {
    held.lost = true;
    clearInterval(held.refresh);
    held.onLost?.(`the data directory's lock ${held.path} is no longer this server's: ${ino === undefined ? 'it is gone' : 'another file is in its place: another server took the directory over'}`);
  }
  return false;
}

/**
 * Whether `lock` is still this process's, before writing into its directory: 'ours'
 * from the last touch's check when it is recent; else, when no touch is under way (the
 * event loop was held), asked now, synchronously; 'unsure' while a touch has hung
 * (its disk hangs: a synchronous look would hold the event loop on it, and no write
 * lands meanwhile anyway); 'lost' once another file holds the place (reported as the
 * timer reports it).
 */
export function lockStillOurs(lock: DirLock | undefined): 'ours' | 'unsure' | 'lost' {
  if (lock === undefined) return 'ours';
  const held = heldOf(lock);
  if (held === undefined || held.lost) return 'lost';
  if (Date.now() - held.confirmedAt < 2 * LOCK_REFRESH_MS) return 'ours';
  if (held.touching) return 'unsure';
  let ino: number | undefined;
  try {
    ino = statSync(held.path).ino;
  } catch (err) {
    // Only a file gone is a loss; a network file system's passing error says nothing.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return 'ours';
  }
  return judgeOwnership(held, ino) ? 'ours' : 'lost';
}

/**
 * Gives up `lock` (a second call, or none, does nothing). The file goes only while it
 * still names this process: one deleted under a running server may since hold another's.
 */
export function unlockDataDir(lock: DirLock | undefined): void {
  const held = heldOf(lock);
  if (held === undefined) return;
  locksHere.delete(held.lock.dir);
  clearInterval(held.refresh);
  try {
    // Ours only if the path still holds the very file we placed (not merely our record).
    if (statSync(held.path).ino === held.fileIno && readLock(held.path)?.head === ownRecordLine()) unlinkSync(held.path);
  } catch {
    // Already gone.
  }
  if (!held.touching) closeSync(held.fd);
}
