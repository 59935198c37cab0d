import { lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lockHolderPid } from '../server/storage/dir-lock.js';
import { isProcessAlive } from '../util/process-alive.js';

/**
 * The temp directories of `kiln demo` (its kiln server's data, its admin token): named
 * with the demo's pid, so that those of a demo killed by SIGKILL (which removes nothing)
 * are found and removed by the next demo. A data directory can be large: a demo run
 * again and again after kills would otherwise fill the temp dir.
 */
const PATTERN = /^kiln-demo-(?:data|admin)-(\d{1,10})-[A-Za-z0-9]{6}$/;

/** A new temp directory (0700) of this demo: `kind` is 'data' or 'admin'. */
export function makeDemoTempDir(kind: 'data' | 'admin'): string {
  return mkdtempSync(join(tmpdir(), `kiln-demo-${kind}-${process.pid}-`));
}

/**
 * Removes the temp directories left by demos that are gone; returns how many. Only what
 * is surely a dead demo's goes: a directory (not a link) of this user, mode 0700 as
 * mkdtemp makes it, named with a pid that is not running, whose data directory's
 * kiln.lock (if any) names no running process either. Others' files in the shared temp
 * dir are left alone; a failure to remove one is not a failure of the demo.
 */
export function sweepDeadDemoDirs(dir: string = tmpdir()): number {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  let removed = 0;
  for (const name of names) {
    const pid = PATTERN.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid || isProcessAlive(Number(pid))) continue;
    const path = join(dir, name);
    try {
      const info = lstatSync(path);
      if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o077) !== 0) continue;
      const holder = lockHolderPid(join(path, 'kiln.lock'));
      if (holder !== undefined && holder !== process.pid && isProcessAlive(holder)) continue;
      rmSync(path, { recursive: true, force: true });
      removed++;
    } catch {
      // Gone meanwhile, or not ours to remove.
    }
  }
  return removed;
}
