import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Loaded into every child before its own code: the child stops when its stdin pipe from
 * this process ends, i.e. when this process is gone, even by SIGKILL (exit-with-parent.ts).
 */
const EXIT_WITH_PARENT = new URL('./exit-with-parent.js', import.meta.url).href;

/**
 * Child processes a command runs (kiln demo): started, waited for until they print a
 * ready line, restarted when they die (if asked), and stopped (SIGTERM, then SIGKILL
 * after a grace period) so nothing is left behind. Each child also stops by itself when
 * this process dies without stopping it (its stdin is a pipe from us that it watches:
 * exit-with-parent.ts), and once stopAll() has begun no child is started any more.
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
      let again: { args: string[]; env: NodeJS.ProcessEnv };
      try {
        again = restart.again(entry);
      } catch (err) {
        // A command line that cannot be made is this child's failure, not the command's crash.
        restart.onEvent?.(`${entry.name} cannot be restarted: ${(err as Error).message.split('\n')[0]}`);
        return;
      }
      const { args, env } = again;
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
    if (this.stopping) throw new Error(`${name} not started: stopping`);
    // stdin: a pipe we never write to, whose end tells the child we are gone. Detached (its
    // own session): a Ctrl-C or a hang-up of the terminal reaches this process alone, which
    // stops the children in order (a second Ctrl-C would otherwise kill a kiln server in
    // the middle of its graceful stop).
    const child = spawn(process.execPath, ['--import', EXIT_WITH_PARENT, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
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

  /**
   * SIGTERM to every child (last started first, those still starting too), SIGKILL to
   * those still running after graceMs; resolves when all have exited. Starts nothing
   * afterwards (a pending restart is dropped; start() refuses).
   */
  async stopAll(graceMs = 5000): Promise<void> {
    this.stopping = true;
    for (const timer of this.timers) clearTimeout(timer);
    const running = [...this.children.map((c) => c.child).reverse(), ...this.starting].filter((child) => child.exitCode === null && child.signalCode === null);
    await Promise.all(
      running.map(
        (child) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
            child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
  }

  /** Last resort when this process itself is exiting (or told twice to stop): SIGKILL to every child now. */
  killAll(): void {
    this.stopping = true;
    for (const timer of this.timers) clearTimeout(timer);
    for (const child of this.starting) child.kill('SIGKILL');
    for (const c of this.children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  }
}

