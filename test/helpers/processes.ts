import { execFileSync, spawn, fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Real processes for tests: the kiln server started from the CLI on a free port (the
 * port is read back from its ready line), and client worker processes driven over IPC.
 * Every child is tracked and killed by pid when the test process exits.
 */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const KILN_BIN = join(ROOT, 'bin', 'kiln.js');
export const TEST_TOKEN = 'test-token-0123456789abcdef-0123456789';

const children = new Set<ChildProcess>();
/** Children started in their own process group (daemons that fork workers): killed as a group. */
const groups = new Set<number>();
function killAll(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const pgid of groups) killGroup(pgid, 'SIGKILL');
}
process.on('exit', killAll);
// A test run that is interrupted (Ctrl-C, a timeout) must not leave servers behind either.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

export function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

/** Registers a child to be killed when the test process exits; resolves when it exits. */
export function trackChild(child: ChildProcess, options: { group?: boolean } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  children.add(child);
  if (options.group && child.pid) groups.add(child.pid);
  return new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
}

export function tempDir(prefix = 'kiln-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** A self-signed certificate for 127.0.0.1 and localhost, written into `dir` (PEM files). */
export function selfSignedCertificate(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { cert, key };
}

export interface ServerProcess extends KilnCommandProcess {
  port: number;
  url: string;
  token: string;
}

export interface ServerStartOptions {
  dataDir?: string;
  fsync?: 'always' | 'everysec' | 'never';
  port?: number;
  token?: string;
  args?: string[];
  /** How long to wait for the ready line (default 10 s; a server replaying a large log needs more). */
  readyTimeoutMs?: number;
  /** More environment for the server (a failpoint). */
  env?: Record<string, string>;
}

export async function startKilnServer(options: ServerStartOptions = {}): Promise<ServerProcess> {
  const token = options.token ?? TEST_TOKEN;
  const args = ['server', '--port', String(options.port ?? 0), '--log-level', 'warn'];
  if (options.dataDir) args.push('--data', options.dataDir, '--fsync', options.fsync ?? 'everysec');
  else args.push('--no-data');
  args.push(...(options.args ?? []));
  const started = await startKilnCommand(args, { ...options.env, KILN_TOKEN: token }, /ready on [^\s]+:(\d+)/, 'kiln server', options.readyTimeoutMs);
  const port = Number(started.match[1]);
  return { ...started, port, url: `kiln://127.0.0.1:${port}`, token };
}

/** A kiln server's admin port, from its admin line: the URL, the generated token's file and the token. */
export interface AdminPort {
  url: string;
  tokenFile: string;
  token: string;
  /** GET with the admin token. */
  get(path: string): Promise<Response>;
}

/** The admin port of a server started with `--admin-port` and no `--admin-token-file` (it generates a token and names its file). */
export async function adminPortOf(server: KilnCommandProcess): Promise<AdminPort> {
  const line = await waitFor(() => /kiln admin on (https?:\/\/\S+?) .*admin token in (\S+?)\)$/m.exec(server.output()), 5000, 'the admin line');
  const [url, tokenFile] = [line[1]!, line[2]!];
  const token = readFileSync(tokenFile, 'utf8').trim();
  return { url, tokenFile, token, get: (path) => fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } }) };
}

export interface KilnCommandProcess {
  pid: number;
  child: ChildProcess;
  /** The ready line's match. */
  match: RegExpExecArray;
  output(): string;
  /** Sends a signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `kiln <args>` and resolves once its output matches `ready` (default wait 10 s). */
export async function startKilnCommand(args: string[], env: Record<string, string>, ready: RegExp, what = `kiln ${args[0]}`, readyTimeoutMs = 10_000): Promise<KilnCommandProcess> {
  const child = spawn(process.execPath, [KILN_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${readyTimeoutMs} ms:\n${out}`)), readyTimeoutMs);
    const check = (): void => {
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout!.on('data', check);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`${what} exited before it was ready:\n${out}`));
    });
  });
  return {
    pid: child.pid!,
    child,
    match,
    output: () => out,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A client process (test/fixtures/client-worker) that takes commands over IPC. */
export interface WorkerProcess {
  pid: number;
  child: ChildProcess;
  call<T = unknown>(command: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  kill(): Promise<void>;
  exited: Promise<unknown>;
}

const WORKER = fileURLToPath(new URL('../fixtures/client-worker.js', import.meta.url));

export async function startWorker(env: Record<string, string> = {}): Promise<WorkerProcess> {
  const child = fork(WORKER, [], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  let nextId = 0;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.on('message', (msg: { id: number; ok: boolean; value?: unknown; error?: string }) => {
    const w = waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id);
    if (msg.ok) w.resolve(msg.value);
    else w.reject(new Error(msg.error));
  });
  void exited.then(() => {
    for (const w of waiting.values()) w.reject(new Error('worker exited'));
    waiting.clear();
  });
  return {
    pid: child.pid!,
    child,
    exited,
    call<T>(command: Record<string, unknown>, timeoutMs = 120_000): Promise<T> {
      const id = ++nextId;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker call ${String(command['op'])} timed out`)), timeoutMs);
        waiting.set(id, {
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        child.send({ id, ...command });
      });
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * A daemon that forks (nginx, haproxy) started in its own process group, so its workers
 * cannot outlive a killed master (holding its port and this process's pipes open).
 * `stop()` sends SIGTERM to the group, SIGKILL after 3 s.
 */
export function startProcessGroup(bin: string, args: readonly string[]): { child: ChildProcess; output(): string; stop(): Promise<void> } {
  const child = spawn(bin, [...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = trackChild(child, { group: true });
  return {
    child,
    output: () => out,
    stop: async () => {
      killGroup(child.pid!, 'SIGTERM');
      await Promise.race([exited, sleep(3000)]);
      killGroup(child.pid!, 'SIGKILL');
      await exited;
      child.stdout!.destroy();
      child.stderr!.destroy();
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until fn returns a truthy value or the time is up. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A loopback TCP port nobody listens on right now (for binaries that cannot report the one they took). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}
