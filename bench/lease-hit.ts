import { createSessionClient, type SessionClient } from '../src/client/session-client.js';
import { createMemoryTier } from '../src/engines/memory/memory-engine.js';
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { fmt, median, timed } from './util.js';

/**
 * The lease-hit path: a process that holds a session's lease serves a request from its
 * near cache. Measured: open + read + no-op commit + close (the affinity read path, no
 * network at all), and open + change one field + sync commit + close (one round trip).
 */
export interface LeaseHitResult {
  engine: string;
  case: string;
  opsPerSecond: number;
  microsPerOp: number;
}

async function prepare(kiln: SessionClient): Promise<string> {
  return kiln.withSession(null, (s) => {
    s.set('user', { id: 42, name: 'Ada', roles: ['admin'] });
    s.set('n', 0);
    s.set('items', Array.from({ length: 160 }, (_, i) => ({ sku: `sku-${i}`, qty: 1, title: 'a small object' })));
    return s.id;
  });
}

async function readPath(kiln: SessionClient, id: string, n: number): Promise<number> {
  for (let i = 0; i < n; i++) {
    const s = await kiln.open(id);
    s.get('user');
    await s.commit();
    s.close();
  }
  return n;
}

async function writePath(kiln: SessionClient, id: string, n: number): Promise<number> {
  for (let i = 0; i < n; i++) {
    const s = await kiln.open(id);
    s.set('n', (s.get<number>('n') ?? 0) + 1);
    await s.commit();
    s.close();
  }
  return n;
}

export async function leaseHitBench(options: { serverUrl?: string; token?: string; runs: number; quick: boolean }): Promise<LeaseHitResult[]> {
  const engines: [string, () => SessionClient][] = [['memory', () => createSessionClient({ engine: createMemoryTier().engine() })]];
  if (options.serverUrl) engines.push(['kiln server', () => createSessionClient({ engine: connect(options.serverUrl!, { token: options.token }) })]);
  const results: LeaseHitResult[] = [];
  const n = options.quick ? 2000 : 20_000;
  for (const [name, make] of engines) {
    const kiln = make();
    const id = await prepare(kiln);
    for (const [label, path, count] of [['read (lease hit, no-op commit)', readPath, n], ['write one field (lease hit, sync commit)', writePath, name === 'memory' ? n : n / 4]] as const) {
      await path(kiln, id, Math.min(500, count));
      const samples: number[] = [];
      for (let r = 0; r < options.runs; r++) samples.push((await timed(() => path(kiln, id, count))).perSecond);
      const perSecond = median(samples);
      results.push({ engine: name, case: label, opsPerSecond: Math.round(perSecond), microsPerOp: Number(fmt(1e6 / perSecond, 2).replace(/,/g, '')) });
    }
    const stats = kiln.stats();
    if (stats.counters.acquires !== 1) throw new Error(`lease-hit bench expected 1 acquire, saw ${stats.counters.acquires}`);
    await kiln.close();
  }
  return results;
}
