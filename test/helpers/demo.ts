import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { KILN_BIN, trackChild } from './processes.js';

/** `kiln demo` as a user runs it, its table read back (role, name, url, pid). */
export interface DemoProcess {
  url: string;
  child: ChildProcess;
  nodes: Map<string, { url: string; pid: number; role: string }>;
  /** The admin token the demo's balancer and admin port take (read from the file it names). */
  adminToken: string;
  output(): string;
  /** SIGTERM (Ctrl-C's twin) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function startDemo(args: string[] = [], env: Record<string, string> = {}): Promise<DemoProcess> {
  const child = spawn(process.execPath, [KILN_BIN, 'demo', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = trackChild(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kiln demo did not start:\n${out}`)), 30_000);
    child.stdout!.on('data', () => {
      if (/Ctrl-C stops everything/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`kiln demo exited:\n${out}`));
    });
  });
  const nodes = new Map<string, { url: string; pid: number; role: string }>();
  for (const m of out.matchAll(/^ {2}(balancer|kiln server|console|app server)\s+(\S+)\s+(\S+)\s+(\d+)\s*$/gm)) {
    nodes.set(m[2]!, { role: m[1]!, url: m[3]!, pid: Number(m[4]) });
  }
  const url = /Point a browser at (http:\/\/\S+?)\/?$/m.exec(out)![1]!;
  const adminToken = readFileSync(/admin token in (\S+?)>/.exec(out)![1]!, 'utf8').trim();
  return {
    url,
    child,
    nodes,
    adminToken,
    output: () => out,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
