import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync, type Stats } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { KilnError } from '../errors/index.js';
import { isProcessAlive } from '../util/process-alive.js';

/**
 * What a running `kiln demo` tells the operator commands (status, sessions, top) of the
 * same user, so that `npx kiln status` right after the demo works with nothing typed:
 * the admin URL, the balancer's URL and the file holding the admin token (never the
 * token itself).
 *
 * The temp dir is shared with every local user, so nothing here trusts a path because of
 * its name:
 * - the default directory ($TMPDIR/kiln-<uid>) must be a real directory (not a symlink),
 *   ours, and mode 0700 (it is created so); a directory named by KILN_DEMO_STATE must be
 *   ours and writable by nobody else;
 * - the file is written to a new temp file in that directory (O_EXCL, O_NOFOLLOW) and
 *   renamed into place, so a symlink planted at its name is replaced, never followed;
 * - it is read through one descriptor opened with O_NOFOLLOW, whose fstat must say: a
 *   regular file, ours, writable by nobody else (no stat-then-read race);
 * - the admin token file it names is read the same way and must be ours and readable by
 *   nobody else, so a planted state cannot send one of our other tokens anywhere;
 * - a state whose demo is gone is ignored; one whose pid is alive (reused) but whose
 *   token file is gone is a clear error.
 * Anything unsafe is a KilnError (KILN_ERR_UNSAFE_PERMISSIONS) naming the path and the fix.
 */
export interface DemoState {
  pid: number;
  adminUrl: string;
  adminTokenFile: string;
  balancerUrl?: string;
  /** Whether the demo restarts a process that dies (false with --no-restart). */
  restarts?: boolean;
}

/** This process's uid, where the platform has one (not on Windows). */
function myUid(): number | undefined {
  return typeof process.getuid === 'function' ? process.getuid() : undefined;
}

function defaultStateDir(): string {
  return join(tmpdir(), `kiln-${myUid() ?? 'user'}`);
}

/** KILN_DEMO_STATE names another file (two demos side by side, or tests). */
export function demoStatePath(): string {
  return process.env['KILN_DEMO_STATE'] || join(defaultStateDir(), 'demo.json');
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8)}`;

function unsafe(message: string, path: string): KilnError {
  return new KilnError('KILN_ERR_UNSAFE_PERMISSIONS', message, { details: { path } });
}

/**
 * The state's directory, checked (and made, 0700, when it is the default one and missing).
 * The default one must be 0700; one the user named only needs to be safe from others.
 */
function checkedStateDir(path: string, create: boolean): string {
  const dir = dirname(path);
  const isDefault = !process.env['KILN_DEMO_STATE'];
  if (create && isDefault) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  const info = lstatSync(dir);
  if (info.isSymbolicLink() || !info.isDirectory()) throw unsafe(`the kiln demo state directory ${dir} is ${info.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}: someone else may have put it there; remove it (or set KILN_DEMO_STATE to a file in a directory of yours)`, dir);
  const uid = myUid();
  if (uid !== undefined && info.uid !== uid) throw unsafe(`the kiln demo state directory ${dir} belongs to uid ${info.uid}, not to you (uid ${uid}): another user may have made it; remove it (or set KILN_DEMO_STATE to a file in a directory of yours)`, dir);
  if (isDefault && (info.mode & 0o077) !== 0) throw unsafe(`the kiln demo state directory ${dir} has mode ${octal(info.mode)}; it must be 0700: chmod 700 ${dir}`, dir);
  if (!isDefault && (info.mode & 0o022) !== 0) throw unsafe(`the directory of KILN_DEMO_STATE, ${dir}, has mode ${octal(info.mode)}: others can replace files in it; chmod go-w ${dir}, or choose another directory`, dir);
  return dir;
}

/**
 * Opens `path` for reading without following a symlink at its last component and checks
 * the open file: regular, ours, and not writable (`private`: not readable either) by others.
 * Returns the descriptor's content.
 */
function readOwnFile(path: string, what: string, privateFile: boolean): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const info: Stats = fstatSync(fd);
    if (!info.isFile()) throw unsafe(`${what} ${path} is not a regular file`, path);
    const uid = myUid();
    if (uid !== undefined && info.uid !== uid) throw unsafe(`${what} ${path} belongs to uid ${info.uid}, not to you (uid ${uid}): another user may have put it there; it is not used (remove it)`, path);
    const forbidden = privateFile ? 0o077 : 0o022;
    if ((info.mode & forbidden) !== 0) throw unsafe(`${what} ${path} has mode ${octal(info.mode)}: ${privateFile ? 'others can read it' : 'others can change it'}; chmod ${privateFile ? '600' : 'go-w'} ${path}`, path);
    // A state or a token is a few hundred bytes: a larger file is not one (a FIFO or a device is not a file at all).
    if (info.size > MAX_OWN_FILE_BYTES) throw unsafe(`${what} ${path} is ${info.size} bytes, more than a kiln demo writes (${MAX_OWN_FILE_BYTES}); it is not used (remove it)`, path);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

const MAX_OWN_FILE_BYTES = 64 * 1024;

/**
 * Writes the state (0600) for the operator commands: to a new file beside it, renamed
 * over it. Throws (a KilnError for an unsafe directory) when it cannot: the caller warns.
 */
export function writeDemoState(state: DemoState): string {
  const path = demoStatePath();
  const dir = checkedStateDir(path, true);
  const temp = join(dir, `.demo-state-${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    try {
      writeSync(fd, `${JSON.stringify(state)}\n`);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, path);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
  return path;
}

/** Removes the file if it is this demo's (a newer demo may have replaced it). Never throws. */
export function clearDemoState(pid = process.pid): void {
  try {
    if (readStateFile(demoStatePath())?.pid === pid) rmSync(demoStatePath(), { force: true });
  } catch {
    // Not ours or unreadable: not ours to remove.
  }
}

/** The file's state if it is well formed (not checked against a running demo). */
function readStateFile(path: string): DemoState | undefined {
  let text: string;
  try {
    text = readOwnFile(path, 'the kiln demo state', false);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw unsafe(`the kiln demo state ${path} is a symbolic link: someone else may have put it there; it is not followed (remove it)`, path);
    throw err;
  }
  let state: Partial<DemoState>;
  try {
    state = JSON.parse(text) as Partial<DemoState>;
  } catch {
    return undefined;
  }
  if (typeof state !== 'object' || state === null) return undefined;
  if (typeof state.pid !== 'number' || typeof state.adminUrl !== 'string' || typeof state.adminTokenFile !== 'string') return undefined;
  if (!/^https?:\/\//.test(state.adminUrl) || (state.balancerUrl !== undefined && (typeof state.balancerUrl !== 'string' || !/^https?:\/\//.test(state.balancerUrl)))) return undefined;
  if (state.restarts !== undefined && typeof state.restarts !== 'boolean') return undefined;
  return state as DemoState;
}

/**
 * The running demo's state, or undefined (no file, damaged, or its demo is gone).
 * Throws KILN_ERR_UNSAFE_PERMISSIONS for a file or directory that is not safely ours.
 */
export function readDemoState(): DemoState | undefined {
  const path = demoStatePath();
  const state = readStateFile(path);
  if (!state || !isProcessAlive(state.pid)) return undefined;
  // Only now: a missing file is no reason to refuse a directory.
  checkedStateDir(path, false);
  return state;
}

/**
 * The admin token of the demo in `state`: its file must be ours and private. A file that
 * is gone while the pid lives means the pid now belongs to another process.
 */
export function readDemoToken(state: DemoState): string {
  try {
    const token = readOwnFile(state.adminTokenFile, 'the kiln demo admin token file', true).trim();
    if (!token) throw new KilnError('KILN_ERR_INVALID_OPTION', `the kiln demo admin token file ${state.adminTokenFile} is empty`, { details: { option: 'KILN_DEMO_STATE' } });
    return token;
  } catch (err) {
    if (err instanceof KilnError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `the kiln demo state ${demoStatePath()} is stale: its admin token file ${state.adminTokenFile} is gone, so its demo (pid ${state.pid}) has stopped and that pid now belongs to another process; start kiln demo again, or pass --admin URL and --token-file F`, { cause: err, details: { option: 'KILN_DEMO_STATE' } });
    }
    if (code === 'ELOOP') throw unsafe(`the kiln demo admin token file ${state.adminTokenFile} is a symbolic link: it is not followed`, state.adminTokenFile);
    throw new KilnError('KILN_ERR_INVALID_OPTION', `the kiln demo admin token file ${state.adminTokenFile} cannot be read (${code ?? (err as Error).message})`, { cause: err, details: { option: 'KILN_DEMO_STATE' } });
  }
}
