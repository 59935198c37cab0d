/**
 * What the benchmark's Express app and its Fastify app share: the session shapes, the
 * store counters, and the /__bench report (CPU time and store traffic since the last
 * call). Each app keeps only its framework's wiring, so the two measure the same work.
 */
import { cpuUsage } from 'node:process';
import type { Engine } from '../../src/engines/engine.js';

export const SECRET = 'bench-secret-0123456789-0123456789';
/**
 * Kiln's commit mode in the bench apps: 'sync' (the response waits for its commit, what
 * every row measures) unless BENCH_COMMIT_MODE says 'async' (bench/profile.ts
 * --commit-mode, to tell the cost of holding responses from the rest).
 */
export function benchCommitMode(): 'sync' | 'async' {
  const mode = process.env['BENCH_COMMIT_MODE'] ?? 'sync';
  if (mode !== 'sync' && mode !== 'async') throw new Error(`BENCH_COMMIT_MODE is sync or async, not ${mode}`);
  return mode;
}
export const DAY = 24 * 60 * 60 * 1000;

/** A small session (~100 B): a user, a role, a visit counter and a one-line cart. */
export function smallSession(i: number): Record<string, unknown> {
  return { user: `user-${String(i).padStart(5, '0')}`, role: 'member', visits: 0, cart: [{ sku: 'SKU-1001', qty: 1 }] };
}

/** A 20 KB session: an array of 160 small objects (a saved basket, a wizard's state). */
export const BIG_ITEMS = 160;
export function bigSession(i: number): Record<string, unknown> {
  return {
    user: `user-${String(i).padStart(5, '0')}`,
    items: Array.from({ length: BIG_ITEMS }, (_, k) => ({
      sku: `SKU-${String(10_000 + k)}`,
      name: `Catalogue item number ${k} in a long list`,
      qty: 1,
      price: 1250 + k,
      tags: ['seasonal', 'in-stock'],
      addedAt: 1_764_000_000_000 + k,
    })),
  };
}

/** Calls to a store in the process (MemoryStore) or through a client we wrap (connect-redis). */
export const storeTraffic = { calls: 0, bytes: 0 };

/** An express-session style store (MemoryStore) with its calls counted and its writes measured as JSON. */
export function countStoreCalls<T extends object>(store: T): T {
  const s = store as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const method of ['get', 'set', 'touch', 'destroy'] as const) {
    if (typeof s[method] !== 'function') continue; // @fastify/session's MemoryStore has no touch
    const original = s[method].bind(store);
    s[method] = (...args: unknown[]) => {
      storeTraffic.calls++;
      if (method === 'set' || method === 'touch') storeTraffic.bytes += JSON.stringify(args[1]).length;
      return original(...args);
    };
  }
  return store;
}

/** connect-redis's commands, counted (the bytes are read from redis-server itself). */
export function countRedisCommands<T extends object>(client: T): T {
  const commands = new Set(['get', 'set', 'expire', 'del', 'mGet', 'scanIterator']);
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof prop !== 'string' || !commands.has(prop) || typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        storeTraffic.calls++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** A node-redis client for connect-redis, connected, and how to close it. */
export async function connectRedisStore(url: string | undefined): Promise<{ store: object; close(): Promise<void> }> {
  const { createClient } = await import('redis');
  const { RedisStore } = await import('connect-redis');
  const client = createClient({ url });
  await client.connect();
  return { store: new RedisStore({ client: countRedisCommands(client) }), close: async () => void (await client.quit()) };
}

export interface BenchReport {
  cpuMs: number;
  wallMs: number;
  store: { calls: number; bytes: number };
}

/** The body of GET /__bench: what this process did since the last call. */
export function benchReporter(engine: () => Engine | undefined): () => BenchReport {
  let lastCpu = cpuUsage();
  let lastAt = process.hrtime.bigint();
  let lastEngine = { requests: 0, bytes: 0 };
  return () => {
    const cpu = cpuUsage(lastCpu);
    const now = process.hrtime.bigint();
    const e = engine();
    const traffic = e?.traffic?.() ?? { requests: 0, bytes: 0 };
    const report: BenchReport = {
      cpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: Number(now - lastAt) / 1e6,
      store: e ? { calls: traffic.requests - lastEngine.requests, bytes: traffic.bytes - lastEngine.bytes } : { ...storeTraffic },
    };
    lastCpu = cpuUsage();
    lastAt = now;
    lastEngine = traffic;
    storeTraffic.calls = 0;
    storeTraffic.bytes = 0;
    return report;
  };
}

/**
 * SIGUSR2 throws away what a profile has so far and starts it again, then says so on
 * stdout: bench/profile.ts sends it after the warm-up and waits for the line, so the
 * profile covers the measured window only.
 */
function restartOnSignal(restart: () => Promise<unknown>): void {
  process.on('SIGUSR2', () => {
    restart().then(
      () => console.log('profile restarted'),
      (err: unknown) => console.error(`profile restart failed: ${String(err)}`),
    );
  });
}

/**
 * With BENCH_CPU_PROFILE=<file>, profiles the app from start (or its last SIGUSR2) to
 * SIGTERM (as --cpu-prof would, which NODE_OPTIONS does not accept) for bench/profile.ts; with
 * BENCH_HEAP_PROFILE=<file>, samples its allocations instead (every 4 KiB allocated, with
 * the allocating stack), which is what the garbage collector's share comes from; with
 * BENCH_HEAP_SURVIVORS=1 as well, only those that outlived a scavenge. BENCH_TRACE_GC=1
 * prints a line per collection on stdout instead (V8's --trace-gc-nvp, which NODE_OPTIONS
 * does not accept either). Returns the stop.
 */
export async function profileIfAsked(): Promise<() => Promise<void>> {
  if (process.env['BENCH_TRACE_GC'] === '1') {
    const { setFlagsFromString } = await import('node:v8');
    setFlagsFromString('--trace-gc-nvp');
  }
  // `{pid}` in the name keeps apart the profiles of apps started alike (no affinity).
  const cpuFile = process.env['BENCH_CPU_PROFILE']?.replace('{pid}', String(process.pid));
  const heapFile = process.env['BENCH_HEAP_PROFILE']?.replace('{pid}', String(process.pid));
  if (!cpuFile && !heapFile) return async () => undefined;
  const { Session } = await import('node:inspector/promises');
  const { writeFileSync } = await import('node:fs');
  const session = new Session();
  session.connect();
  if (heapFile) {
    await session.post('HeapProfiler.enable');
    // Objects collected since are kept in the profile: it is about what was allocated, not
    // what is alive at the end. Survivors: all but those a scavenge collected, so what
    // the young generation had to copy (what a full collection freed later stays in).
    const survivors = process.env['BENCH_HEAP_SURVIVORS'] === '1';
    const sampling = { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: !survivors };
    await session.post('HeapProfiler.startSampling', sampling);
    restartOnSignal(() => session.post('HeapProfiler.stopSampling').then(() => session.post('HeapProfiler.startSampling', sampling)));
    return async () => {
      const { profile } = await session.post('HeapProfiler.stopSampling');
      writeFileSync(heapFile, JSON.stringify(profile));
    };
  }
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  restartOnSignal(() => session.post('Profiler.stop').then(() => session.post('Profiler.start')));
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(cpuFile!, JSON.stringify(profile));
  };
}
