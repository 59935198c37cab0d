import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Child processes a command runs (kiln demo): started, waited for until they print a
 * ready line, restarted when they die (if asked), and stopped (SIGTERM, then SIGKILL
 * after a grace period) so nothing is left behind.
 */
export interface Supervised {
  name: string;
  /** The running process (a new one after each restart). */
  child: ChildProcess;
  match: RegExpMatchArray;
  output(): string;
  restarts: number;
}

/**
 * How a dead child comes back: the command line of the restart (the first run's port,
 * say, so whoever points at it finds it again), after a delay that doubles while it
 * keeps dying young (a crash loop), up to maxDelayMs.
 */
export interface RestartPolicy {
  again(first: Supervised): { args: string[]; env: NodeJS.ProcessEnv };
  delayMs?: number;
  maxDelayMs?: number;
  /** What happens, for the command's output: "restarting in 1 s", "back", "failed". */
  onEvent?(line: string): void;
}

/** A child that lived this long was healthy: its next restart waits the base delay again. */
const HEALTHY_RUN_MS = 10_000;

export class Supervisor {
  private readonly children: Supervised[] = [];

  constructor(private readonly onUnexpectedExit: (name: string, code: number | null, signal: NodeJS.Signals | null) => void) {}

  async start(name: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp, timeoutMs = 20_000, restart?: RestartPolicy): Promise<Supervised> {
    const { child, match, output } = await this.spawnReady(name, args, env, ready, timeoutMs);
    const entry: Supervised = { name, child, match, output, restarts: 0 };
    this.children.push(entry);
    this.watch(entry, ready, timeoutMs, restart, restart?.delayMs ?? 1000);
    return entry;
  }

  private watch(entry: Supervised, ready: RegExp, timeoutMs: number, restart: RestartPolicy | undefined, nextDelayMs: number): void {
    const startedAt = Date.now();
    entry.child.once('exit', (code, signal) => {
      if (this.stopping) return;
      this.onUnexpectedExit(entry.name, code, signal);
      if (!restart) return;
      const delay = Date.now() - startedAt >= HEALTHY_RUN_MS ? (restart.delayMs ?? 1000) : nextDelayMs;
      this.scheduleRestart(entry, ready, timeoutMs, restart, delay);
    });
  }

  private scheduleRestart(entry: Supervised, ready: RegExp, timeoutMs: number, restart: RestartPolicy, delayMs: number): void {
    const longer = Math.min(delayMs * 2, restart.maxDelayMs ?? 30_000);
    restart.onEvent?.(`${entry.name} restarting in ${(delayMs / 1000).toFixed(1)} s`);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (this.stopping) return;
      const { args, env } = restart.again(entry);
      this.spawnReady(entry.name, args, env, ready, timeoutMs).then(
        (next) => {
          if (this.stopping) {
            next.child.kill('SIGTERM');
            return;
          }
          entry.child = next.child;
          entry.output = next.output;
          entry.restarts++;
          restart.onEvent?.(`${entry.name} is back (pid ${next.child.pid}, restart ${entry.restarts})`);
          this.watch(entry, ready, timeoutMs, restart, longer);
        },
        (err: Error) => {
          restart.onEvent?.(`${entry.name} did not come back: ${err.message.split('\n')[0]}`);
          this.scheduleRestart(entry, ready, timeoutMs, restart, longer);
        },
      );
    }, delayMs);
    timer.unref();
    this.timers.add(timer);
  }

  private readonly timers = new Set<NodeJS.Timeout>();

  private async spawnReady(name: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp, timeoutMs: number): Promise<{ child: ChildProcess; match: RegExpMatchArray; output: () => string }> {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    // Tracked from birth: a restart still starting when the command stops is stopped too.
    this.starting.add(child);
    child.once('exit', () => this.starting.delete(child));
    let out = '';
    const collect = (d: Buffer): void => {
      out += d.toString();
      if (out.length > 64 * 1024) out = out.slice(-32 * 1024);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${name} did not become ready within ${timeoutMs} ms:\n${out}`));
      }, timeoutMs);
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
    this.starting.delete(child);
    return { child, match, output: () => out };
  }

  private readonly starting = new Set<ChildProcess>();

  private stopping = false;

  /** SIGTERM to every child (last started first), SIGKILL to those still running after graceMs. */
  async stopAll(graceMs = 5000): Promise<void> {
    this.stopping = true;
    for (const timer of this.timers) clearTimeout(timer);
    for (const child of this.starting) child.kill('SIGTERM');
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
    for (const child of this.starting) child.kill('SIGKILL');
    for (const c of this.children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  }
}

