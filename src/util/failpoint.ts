import { existsSync } from 'node:fs';

/**
 * Named crash points for the fault tests. When the environment variable KILN_FAILPOINT
 * names the point a process reaches, the process kills itself there with SIGKILL, as a
 * crash would: no handler runs, no buffer is flushed by Node, no file is closed. The
 * tests use it to stop a multi-step file operation (repair's swap of a data directory,
 * a snapshot's rename) between two steps and check what a restart makes of it.
 *
 * Unset (always, outside those tests) a point costs one environment lookup; the points
 * sit on paths that run a few times per process, or (failpointHold's `log:write`) once
 * per write of the log, never per request.
 *
 * @example
 * failpoint('repair:old-files-kept'); // KILN_FAILPOINT=repair:old-files-kept kiln repair …
 */
export function failpoint(name: string): void {
  if (holdFileOf(name) !== undefined) process.kill(process.pid, 'SIGKILL');
}

/**
 * The hold file of a point KILN_FAILPOINT names, '' for a point named without one and no
 * KILN_FAILPOINT_HOLD, undefined for a point it does not name. KILN_FAILPOINT is a
 * comma-separated list of `name` or `name=<hold file>` (a fault test may hold a
 * snapshot's writes and fail the log's at once); a name without its own file uses
 * KILN_FAILPOINT_HOLD.
 */
function holdFileOf(name: string): string | undefined {
  const list = process.env['KILN_FAILPOINT'];
  if (list === undefined || list === '') return undefined;
  for (const entry of list.split(',')) {
    const eq = entry.indexOf('=');
    if ((eq < 0 ? entry : entry.slice(0, eq)) === name) return eq < 0 ? (process.env['KILN_FAILPOINT_HOLD'] ?? '') : entry.slice(eq + 1);
  }
  return undefined;
}

/**
 * A named stall for the fault tests: when KILN_FAILPOINT names the point and the file
 * that KILN_FAILPOINT_HOLD names exists, the returned promise waits until that file is
 * removed, as an operation waits on a stalled disk; otherwise undefined (no wait, no
 * promise). The log's writes use it (`log:write`), a compaction's snapshot writes
 * (`snapshot:write`) and its switch to the next log (`log:rotate` before the previous log's sync,
 * `log:rotate-synced` after it and before the next file exists, `log:rotate-opened` after): a test can hold a
 * real server's disk and let it go.
 *
 * @example
 * const held = failpointHold('log:write'); // KILN_FAILPOINT=log:write KILN_FAILPOINT_HOLD=/tmp/hold
 * if (held) await held;
 */
export function failpointHold(name: string): Promise<void> | undefined {
  if (!failpointActive(name)) return undefined;
  const file = holdFileOf(name)!;
  return new Promise((resolve) => {
    const check = (): void => {
      if (existsSync(file)) setTimeout(check, 20);
      else resolve();
    };
    check();
  });
}

/**
 * Whether a named fault is on now: KILN_FAILPOINT names it and its hold file exists. The
 * log's writes fail while `log:write-fails` is (a disk gone full: half of each write
 * reaches the file, then ENOSPC; a compaction's snapshot writes too), its everysec syncs
 * while `log:sync-fails` is, and its writes go at about 14 MB/s while `log:write-slow`
 * is (a slow disk that never stops). `log:later-piece-fails` fails a batch's second
 * piece and every later one, half written (a disk that fills up partway through).
 */
export function failpointActive(name: string): boolean {
  const file = holdFileOf(name);
  return file !== undefined && file !== '' && existsSync(file);
}
