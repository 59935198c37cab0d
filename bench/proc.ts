/**
 * What the benchmarks read of and do to other processes through Linux: pinning to CPUs,
 * the CPUs a process may use, and its CPU time so far.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Pins a process and all its threads to a CPU or a CPU list ("0,1"). */
export function pin(pid: number, cpus: number | string): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpus), String(pid)], { stdio: 'ignore' });
}

/** The CPUs a process may run on, as /proc lists them ("1", "0-1"). */
export function cpusAllowed(pid: number): string {
  return /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '';
}

let clockTicks = 0;
/** utime + stime of a whole process (every thread) so far, in ms. */
export function processCpuMs(pid: number): number {
  clockTicks ||= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields 14 and 15 of proc(5); the list after the command's ')' starts at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
}
