import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { trackChild } from './processes.js';

/**
 * Fixture app servers (test/fixtures/apps/*) as real processes on free ports; they print
 * "listening on <port>" when ready.
 */
export interface AppProcess {
  url: string;
  port: number;
  pid: number;
  child: ChildProcess;
  output(): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export function startApp(fixture: string, env: Record<string, string | undefined> = {}): Promise<AppProcess> {
  return startAppScript(fileURLToPath(new URL(`../fixtures/apps/${fixture}.js`, import.meta.url)), env);
}

/** Any script that prints "listening on <port>" (the benchmark's app, for one). */
export async function startAppScript(script: string, env: Record<string, string | undefined> = {}): Promise<AppProcess> {
  const fixture = script.replace(/^.*\//, '');
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) clean[k] = v;
  const child = spawn(process.execPath, [script], { env: clean, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = trackChild(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${fixture} did not start:\n${out}`)), 15_000);
    child.stdout!.on('data', () => {
      const m = /listening on (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${fixture} exited before listening:\n${out}`));
    });
  });
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    child,
    output: () => out,
    async kill() {
      if (alive()) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (alive()) child.kill('SIGTERM');
      await exited;
    },
  };
}
