import { readFileSync, readlinkSync } from 'node:fs';

/** Whether a process with this pid exists (EPERM: it does, but belongs to another user). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What tells a process from any other that has or had its pid, on Linux: the kernel's
 * boot, the pid namespace its pid means something in, and its start time in clock ticks
 * since boot. '-' where the system does not say (then only the pid is known).
 */
export interface ProcessIdentity {
  readonly pid: number;
  readonly boot: string;
  readonly pidNamespace: string;
  readonly started: string;
}

let own: ProcessIdentity | undefined;

/** This process's identity (read once). */
export function ownIdentity(): ProcessIdentity {
  own ??= { pid: process.pid, boot: bootId(), pidNamespace: pidNamespace(), started: startTicksOf(process.pid) ?? UNKNOWN };
  return own;
}

export const UNKNOWN = '-';

function bootId(): string {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
    return /^[0-9a-f-]{8,64}$/.test(id) ? id : UNKNOWN;
  } catch {
    return UNKNOWN;
  }
}

function pidNamespace(): string {
  try {
    return /^pid:\[(\d{1,20})\]$/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? UNKNOWN;
  } catch {
    return UNKNOWN;
  }
}

/**
 * A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), as
 * seen from this pid namespace; undefined when there is no such process or no /proc.
 */
export function startTicksOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const started = fields[19];
    return started !== undefined && /^\d{1,20}$/.test(started) ? started : undefined;
  } catch {
    return undefined;
  }
}

let booted: number | undefined | null = null;

/** When this machine booted (ms since the epoch, from /proc/stat's btime); undefined where unknown. */
export function bootedAt(): number | undefined {
  if (booted === null) {
    try {
      const seconds = /^btime (\d{1,12})$/m.exec(readFileSync('/proc/stat', 'latin1'))?.[1];
      booted = seconds === undefined ? undefined : Number(seconds) * 1000;
    } catch {
      booted = undefined;
    }
  }
  return booted;
}
