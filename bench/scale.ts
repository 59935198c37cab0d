/**
 * Server scale: a kiln server filled with `sessions` sessions of about 200 bytes, its
 * resident memory, and how long it takes to start again with them on disk — after a
 * clean stop (SIGTERM) and after a crash (SIGKILL: the log is replayed).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Engine } from '../src/engines/engine.js';
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { encodeAttribute } from '../src/session/codec.js';
import { generateSessionId } from '../src/session/id.js';
import { removeDir, startKilnServer, tempDir, type ServerProcess } from '../test/helpers/processes.js';

export interface ScaleResult {
  sessions: number;
  bytesPerSession: number;
  fillSeconds: number;
  /** Right after the fill, and 15 s later (V8 shrinks its heap once the process is idle). */
  rssAfterFillBytes: number;
  rssBytes: number;
  /** After the restarts: the sessions as loaded from disk. */
  rssAfterRestartBytes: number;
  diskBytes: number;
  cleanRestartSeconds: number;
  crashRestartSeconds: number;
  sessionsAfterRestart: number;
}

export function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb ?? 0) * 1024;
}

/** A typical small session: who, a little state, a cart line (about 200 bytes encoded). */
export function sessionAttributes(i: number): [string, Uint8Array][] {
  const values: Record<string, unknown> = {
    user: `user-${String(i).padStart(7, '0')}`,
    role: 'member',
    locale: 'en-GB',
    csrf: 'c0ffee'.repeat(6),
    cart: [{ sku: `SKU-${i % 10_000}`, qty: 1 + (i % 3), price: 1999 }],
    lastPage: '/catalogue/garden/tools?page=2',
    returnTo: '/account/orders/2026',
    theme: 'dark',
  };
  return Object.entries(values).map(([k, v]) => [k, encodeAttribute(k, v)]);
}

export async function fill(server: ServerProcess, count: number, progress: (line: string) => void): Promise<number> {
  return fillEngine(connect(server.url, { token: server.token, name: 'scale-fill' }), count, progress);
}

/**
 * Creates `count` sessions through any engine (the kiln server's or Redis's), 256 at a
 * time, each with one acquire and one commit that also gives the lease back; closes the
 * engine. Returns the encoded size of one session's attributes (names and values).
 */
export async function fillEngine(engine: Engine, count: number, progress: (line: string) => void): Promise<number> {
  await engine.connect();
  let next = 0;
  let bytes = 0;
  const started = Date.now();
  let reported = started;
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      const set = sessionAttributes(i);
      if (i === 0) bytes = set.reduce((sum, [k, v]) => sum + k.length + v.length, 0);
      // Create and give the lease back in one round trip: the server holds data, not leases.
      await engine.commit({ sessionId: id, token: grant.token, commitId: `fill-${i}`, baseVersion: 0, lastAccessedAt: Date.now(), set, del: [], idleTimeoutMs: 24 * 3600_000, absoluteExpiresAt: 0, release: true });
      if (Date.now() - reported > 5000) {
        reported = Date.now();
        progress(`    ${next.toLocaleString('en-US')} sessions stored (${Math.round(next / ((reported - started) / 1000)).toLocaleString('en-US')}/s)`);
      }
    }
  };
  await Promise.all(Array.from({ length: 256 }, lane));
  await engine.close();
  return bytes;
}

export async function timeToReady(dataDir: string): Promise<{ server: ServerProcess; seconds: number }> {
  const started = process.hrtime.bigint();
  const server = await startKilnServer({ dataDir, fsync: 'everysec', readyTimeoutMs: 120_000 });
  return { server, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

export async function sessionCount(server: ServerProcess): Promise<number> {
  const engine = connect(server.url, { token: server.token, name: 'scale-check' });
  await engine.connect();
  const stats = await engine.stats();
  await engine.close();
  return stats.sessions;
}

export async function serverScale(count: number, progress: (line: string) => void): Promise<ScaleResult> {
  const dataDir = tempDir('kiln-scale-');
  let server = await startKilnServer({ dataDir, fsync: 'everysec' });
  try {
    const started = Date.now();
    progress(`  filling a kiln server with ${count.toLocaleString('en-US')} sessions`);
    const bytesPerSession = await fill(server, count, progress);
    const fillSeconds = (Date.now() - started) / 1000;
    const rssAfterFillBytes = rssOf(server.pid);
    // Let the log flush and the heap settle before reading memory again.
    await new Promise((r) => setTimeout(r, 15_000));
    const rssBytes = rssOf(server.pid);
    const diskBytes = Number(/(\d+)/.exec(execFileSync('du', ['-sb', dataDir], { encoding: 'utf8' }))?.[1] ?? 0);
    progress(`  ${count.toLocaleString('en-US')} sessions: RSS ${(rssBytes / 2 ** 20).toFixed(0)} MiB, ${(diskBytes / 2 ** 20).toFixed(0)} MiB on disk; restarting`);
    await server.stop('SIGTERM');
    let restarted = await timeToReady(dataDir);
    server = restarted.server;
    const cleanRestartSeconds = restarted.seconds;
    await server.kill();
    restarted = await timeToReady(dataDir);
    server = restarted.server;
    const crashRestartSeconds = restarted.seconds;
    const sessionsAfterRestart = await sessionCount(server);
    await new Promise((r) => setTimeout(r, 15_000));
    const rssAfterRestartBytes = rssOf(server.pid);
    return { sessions: count, bytesPerSession, fillSeconds, rssAfterFillBytes, rssBytes, rssAfterRestartBytes, diskBytes, cleanRestartSeconds, crashRestartSeconds, sessionsAfterRestart };
  } finally {
    await server.kill();
    removeDir(dataDir);
  }
}
