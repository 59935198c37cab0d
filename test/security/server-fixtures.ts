import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Engine } from '../../src/engines/engine.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { generateSessionId } from '../../src/session/id.js';
import type { CommitRequest } from '../../src/session/model.js';
import { commitOf } from '../conformance/engine-suite.js';
import { KILN_BIN } from '../helpers/processes.js';

export { commitOf };

/** What the kiln server's security tests share: engines, sessions made through them, the server's memory. */

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export async function engineFor(url: string, token: string): Promise<Engine> {
  const engine = connect(url, { token, operationTimeoutMs: 5000 });
  await engine.connect();
  return engine;
}

/** Creates a session through `engine` and keeps its lease; resolves with its id and lease token. */
export async function createSession(engine: Engine, values: Record<string, unknown> = {}, extra: Partial<CommitRequest> = {}, id = generateSessionId()): Promise<{ id: string; token: number }> {
  const grant = await engine.acquire(id);
  await engine.commit(commitOf(id, grant.token, 0, values, extra));
  return { id, token: grant.token };
}

/** Resident memory of a process in MiB, from /proc. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** Runs `kiln <args>` expecting it to refuse to start: its exit code and output. */
export function kilnRefuses(args: string[], env: Record<string, string> = {}, timeoutMs = 10_000): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [KILN_BIN, ...args], { env: { ...process.env, KILN_TOKEN: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kiln ${args.join(' ')} did not exit within ${timeoutMs} ms (it started?):\n${output}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
