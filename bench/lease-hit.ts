import { createSessionClient, type SessionClient } from '../src/client/session-client.js';
import { createMemoryTier } from '../src/engines/memory/memory-engine.js';
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { BIG_ITEMS, bigSession } from './http/app-common.js';
import { median, timed } from './util.js';

/**
 * The lease-hit path: a process that holds a session's lease serves a request from its
 * near cache. Measured: open + read + no-op commit + close (the affinity read path, no
 * network at all), and open + change one field + sync commit + close (one round trip).
 * Then the 20 KB row of the HTTP benchmark without HTTP: 1,000 sessions of a 160-item
 * list, 20 requests in flight, each changing one item's quantity (what the near cache's
 * copies of large values cost, see applyDelta's overwrites).
 */
export interface LeaseHitResult {
  engine: string;
  case: string;
  opsPerSecond: number;
  microsPerOp: number;
  /** The client process's CPU per operation (the engine's too, for the in-process memory engine). */
  cpuMicrosPerOp: number;
}

const LIST_SESSIONS = 1000;
const LIST_LANES = 20;

/** 1,000 sessions of the HTTP benchmark's 20 KB session, created through the client. */
async function prepareLists(kiln: SessionClient): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < LIST_SESSIONS; i++) {
    ids.push(
      await kiln.withSession(null, (s) => {
        for (const [name, value] of Object.entries(bigSession(i))) s.set(name, value);
        return s.id;
      }),
    );
  }
  return ids;
}

/** `n` requests over the sessions, 20 at a time, each adding one to one item's quantity. */
async function listWrites(kiln: SessionClient, ids: string[], n: number): Promise<number> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const id = ids[i % ids.length]!;
      const s = kiln.openCached(id) ?? (await kiln.open(id));
      (s.get<{ qty: number }[]>('items')!)[i % BIG_ITEMS]!.qty++;
      await s.commit({ final: true });
      s.close();
    }
  };
  await Promise.all(Array.from({ length: LIST_LANES }, lane));
  return n;
}

/** Runs `path` `runs` times: medians of its rate and of the process's CPU per operation. */
async function measure(runs: number, path: () => Promise<number>): Promise<{ perSecond: number; cpuMicros: number }> {
  const rates: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < runs; r++) {
    const before = process.cpuUsage();
    const run = await timed(path);
    const used = process.cpuUsage(before);
    rates.push(run.perSecond);
    cpu.push((used.user + used.system) / run.ops);
  }
  return { perSecond: median(rates), cpuMicros: median(cpu) };
}

function result(engine: string, label: string, m: { perSecond: number; cpuMicros: number }): LeaseHitResult {
  const twoPlaces = (x: number) => Math.round(x * 100) / 100;
  return { engine, case: label, opsPerSecond: Math.round(m.perSecond), microsPerOp: twoPlaces(1e6 / m.perSecond), cpuMicrosPerOp: twoPlaces(m.cpuMicros) };
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
      results.push(result(name, label, await measure(options.runs, () => path(kiln, id, count))));
    }
    const stats = kiln.stats();
    if (stats.counters.acquires !== 1) throw new Error(`lease-hit bench expected 1 acquire, saw ${stats.counters.acquires}`);
    await kiln.close();
  }
  for (const [name, make] of engines) {
    const kiln = make();
    try {
      const ids = await prepareLists(kiln);
      await listWrites(kiln, ids, 2 * LIST_SESSIONS); // every session's first change copies what the tier gave
      results.push(result(name, 'write one item of a 20 KB list (1,000 sessions, 20 in flight)', await measure(options.runs, () => listWrites(kiln, ids, options.quick ? 5000 : 40_000))));
    } finally {
      await kiln.close();
    }
  }
  return results;
}
