import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { KILN_BIN, trackChild } from './processes.js';

/** `kiln demo` as a user runs it, its table read back (role, name, url, pid). */
export interface DemoProcess {
  url: string;
  child: ChildProcess;
  nodes: Map<string, { url: string; pid: number; role: string }>;
  /** The admin token the demo's balancer and admin port take (read from the file it names; never printed). */
  adminToken: string;
  /** The file holding it. */
  adminTokenFile: string;
  /** The console's URL with the token in its fragment, as a user who pasted it gets it (undefined with --engine memory). */
  consoleLink(): string;
  output(): string;
  /** SIGTERM (Ctrl-C's twin) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pids whose parent is `pid` now (Linux: /proc). */
export function childPids(pid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      // pid (comm) state ppid …: comm may hold spaces and parentheses, so read after the last ')'.
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) pids.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

/** `kiln demo` started, not waited for (`nodeArgs`: for node itself, before the script, such as a preload). */
export function spawnDemo(args: string[] = [], env: Record<string, string> = {}, nodeArgs: string[] = []): { child: ChildProcess; output(): string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const child = spawn(process.execPath, [...nodeArgs, KILN_BIN, 'demo', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = trackChild(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out, exited };
}

export async function startDemo(args: string[] = [], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<DemoProcess> {
  const { child, output, exited } = spawnDemo(args, env, nodeArgs);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kiln demo did not start:\n${output()}`)), 30_000);
    child.stdout!.on('data', () => {
      if (/Ctrl-C stops everything/.test(output())) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`kiln demo exited:\n${output()}`));
    });
  });
  const out = output();
  const nodes = new Map<string, { url: string; pid: number; role: string }>();
  for (const m of out.matchAll(/^ {2}(balancer|kiln server|console|app server)\s+(\S+)\s+(\S+)\s+(\d+)\s*$/gm)) {
    nodes.set(m[2]!, { role: m[1]!, url: m[3]!, pid: Number(m[4]) });
  }
  const url = /Point a browser at (http:\/\/\S+?)\/?$/m.exec(out)![1]!;
  const adminTokenFile = /admin token in (\S+?)>/.exec(out)![1]!;
  const adminToken = readFileSync(adminTokenFile, 'utf8').trim();
  return {
    url,
    child,
    nodes,
    adminToken,
    adminTokenFile,
    consoleLink: () => `${nodes.get('console')!.url.replace(/\/?$/, '/')}#token=${encodeURIComponent(adminToken)}`,
    output,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
