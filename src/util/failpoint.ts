/**
 * Named crash points for the fault tests. When the environment variable KILN_FAILPOINT
 * names the point a process reaches, the process kills itself there with SIGKILL, as a
 * crash would: no handler runs, no buffer is flushed by Node, no file is closed. The
 * tests use it to stop a multi-step file operation (repair's swap of a data directory,
 * a snapshot's rename) between two steps and check what a restart makes of it.
 *
 * Unset (always, outside those tests) a point costs one environment lookup; the points
 * sit on paths that run a few times per process, never per request.
 *
 * @example
 * failpoint('repair:old-files-kept'); // KILN_FAILPOINT=repair:old-files-kept kiln repair …
 */
export function failpoint(name: string): void {
  if (process.env['KILN_FAILPOINT'] === name) process.kill(process.pid, 'SIGKILL');
}
