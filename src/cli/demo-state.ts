import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isProcessAlive } from '../util/process-alive.js';

/**
 * What a running `kiln demo` tells the operator commands (status, sessions, top) of the
 * same user, so that `npx kiln status` right after the demo works with nothing typed:
 * the admin URL and the file holding the admin token (never the token itself).
 *
 * The file lives in a per-user directory (mode 0700) under the temp dir; it is trusted
 * only while the demo that wrote it is alive and only if this user owns it, so a stale
 * file or one planted by another user is ignored.
 */
export interface DemoState {
  pid: number;
  adminUrl: string;
  adminTokenFile: string;
  balancerUrl?: string;
}

function stateDir(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return join(tmpdir(), `kiln-${uid}`);
}

/** KILN_DEMO_STATE names another file (two demos side by side, or tests). */
export function demoStatePath(): string {
  return process.env['KILN_DEMO_STATE'] || join(stateDir(), 'demo.json');
}

export function writeDemoState(state: DemoState): string {
  const path = demoStatePath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(state)}\n`, { mode: 0o600 });
  return path;
}

/** Removes the file if it is this demo's (a newer demo may have replaced it). */
export function clearDemoState(pid = process.pid): void {
  if (readDemoState()?.pid === pid) rmSync(demoStatePath(), { force: true });
}

/** The running demo's state, or undefined (no file, not ours, damaged, or its demo is gone). */
export function readDemoState(): DemoState | undefined {
  const path = demoStatePath();
  try {
    const info = statSync(path);
    if (typeof process.getuid === 'function' && info.uid !== process.getuid()) return undefined;
    const state = JSON.parse(readFileSync(path, 'utf8')) as Partial<DemoState>;
    if (typeof state.pid !== 'number' || typeof state.adminUrl !== 'string' || typeof state.adminTokenFile !== 'string') return undefined;
    if (!/^https?:\/\//.test(state.adminUrl) || !isProcessAlive(state.pid)) return undefined;
    return state as DemoState;
  } catch {
    return undefined;
  }
}

