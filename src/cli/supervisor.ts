import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Child processes a command runs (kiln demo): started, waited for until they print a
 * ready line, and stopped (SIGTERM, then SIGKILL after a grace period) so nothing is
 * left behind.
 */
export interface Supervised {
  name: string;
  child: ChildProcess;
  match: RegExpMatchArray;
  output(): string;
}

export class Supervisor {
  private readonly children: Supervised[] = [];

  constructor(private readonly onUnexpectedExit: (name: string, code: number | null, signal: NodeJS.Signals | null) => void) {}

  async start(name: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp, timeoutMs = 20_000): Promise<Supervised> {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const collect = (d: Buffer): void => {
      out += d.toString();
      if (out.length > 64 * 1024) out = out.slice(-32 * 1024);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not become ready within ${timeoutMs} ms:\n${out}`)), timeoutMs);
      const check = (): void => {
        const m = ready.exec(out);
        if (m) {
          clearTimeout(timer);
          child.stdout!.off('data', check);
          resolve(m);
        }
      };
      child.stdout!.on('data', check);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (code ${code}) before it was ready:\n${out}`));
      });
    });
    const entry: Supervised = { name, child, match, output: () => out };
    this.children.push(entry);
    child.once('exit', (code, signal) => {
      if (!this.stopping) this.onUnexpectedExit(name, code, signal);
    });
    return entry;
  }

  private stopping = false;

  /** SIGTERM to every child (last started first), SIGKILL to those still running after graceMs. */
  async stopAll(graceMs = 5000): Promise<void> {
    this.stopping = true;
    const running = this.children.filter((c) => c.child.exitCode === null && c.child.signalCode === null).reverse();
    await Promise.all(
      running.map(
        (c) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => c.child.kill('SIGKILL'), graceMs);
            c.child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            c.child.kill('SIGTERM');
          }),
      ),
    );
  }

  /** Last resort when this process itself is exiting. */
  killAll(): void {
    for (const c of this.children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  }
}
