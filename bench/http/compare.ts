/**
 * The side-by-side HTTP benchmark of issues 6 and 26: the same Express app
 * (bench/http/app.ts) with no session, express-session + MemoryStore, express-session +
 * connect-redis, Kiln on the kiln server and Kiln on Redis; the same Fastify app
 * (bench/http/fastify-app.ts) with no session, @fastify/session with its default store
 * and with connect-redis, kiln/fastify on the memory engine and on the kiln server. In
 * one run, interleaved (A B C D E, A B C D E …) so that the machine's drift hits every
 * system alike; medians of the runs, and every run kept (rounds pair up: run r of every
 * system of a row is of round r).
 *
 * Placement as in the reference measurement: app processes pinned to CPU 0; autocannon
 * (its own process), the balancer, redis-server and the kiln server pinned to CPU 1. A
 * fresh app process for every run.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startAppScript, type AppProcess } from '../../test/helpers/apps.js';
import { KILN_BIN, startKilnServer, trackChild, waitFor, type ServerProcess } from '../../test/helpers/processes.js';
import { redisCli, startStandalone, type RedisDeployment } from '../../test/helpers/redis.js';
import { pin, processCpuMs } from '../proc.js';
import { median } from '../util.js';
import type { LoadResult, LoadSpec, Workload } from './loadgen.js';

const APPS = { express: fileURLToPath(new URL('./app.js', import.meta.url)), fastify: fileURLToPath(new URL('./fastify-app.js', import.meta.url)) };
const LOADGEN = fileURLToPath(new URL('./loadgen.js', import.meta.url));
export const APP_CPU = 0;
export const LOAD_CPU = 1;

export type Framework = 'express' | 'fastify';
export type SystemId =
  | 'plain' | 'memory-store' | 'connect-redis' | 'kiln-server' | 'kiln-redis'
  | 'fastify-plain' | 'fastify-memory-store' | 'fastify-connect-redis' | 'fastify-kiln-memory' | 'fastify-kiln-server';
export type StoreKind = 'none' | 'memory-store' | 'connect-redis' | 'kiln-memory' | 'kiln-server' | 'kiln-redis';
export interface SystemInfo {
  id: SystemId;
  label: string;
  framework: Framework;
  store: StoreKind;
  /** Shares sessions between app processes (runs on the no-affinity rows). */
  shared: boolean;
}
export const SYSTEMS: SystemInfo[] = [
  { id: 'plain', label: 'plain Express (no session)', framework: 'express', store: 'none', shared: true },
  { id: 'memory-store', label: 'express-session + MemoryStore', framework: 'express', store: 'memory-store', shared: false },
  { id: 'connect-redis', label: 'express-session + connect-redis', framework: 'express', store: 'connect-redis', shared: true },
  { id: 'kiln-server', label: 'Kiln on the kiln server', framework: 'express', store: 'kiln-server', shared: true },
  { id: 'kiln-redis', label: 'Kiln on Redis', framework: 'express', store: 'kiln-redis', shared: true },
  { id: 'fastify-plain', label: 'plain Fastify (no session)', framework: 'fastify', store: 'none', shared: true },
  { id: 'fastify-memory-store', label: '@fastify/session (default MemoryStore)', framework: 'fastify', store: 'memory-store', shared: false },
  { id: 'fastify-connect-redis', label: '@fastify/session + connect-redis', framework: 'fastify', store: 'connect-redis', shared: true },
  { id: 'fastify-kiln-memory', label: 'kiln/fastify, memory engine', framework: 'fastify', store: 'kiln-memory', shared: false },
  { id: 'fastify-kiln-server', label: 'kiln/fastify on the kiln server', framework: 'fastify', store: 'kiln-server', shared: true },
];
export const systemInfo = (id: SystemId): SystemInfo => SYSTEMS.find((s) => s.id === id)!;
/** The framework's row without sessions, which every other system of the framework is compared with. */
export const plainOf = (framework: Framework): SystemId => (framework === 'express' ? 'plain' : 'fastify-plain');

export interface Cell {
  framework: Framework;
  /** 'incr' is the hot-session row: every connection increments one session's counter. */
  workload: Workload;
  sessions: number;
  /** 1 = affinity (one app process); 3 = three behind `kiln balancer --affinity none`. */
  apps: 1 | 3;
}

/** Session writes per request of a workload (for the store's CPU per commit). */
export const WRITES_PER_REQUEST: Record<Workload, number> = { 'read-mostly': 0.1, write: 1, 'big-write': 1, incr: 1 };

export interface Measurement {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Bytes sent to the store per request (on the wire for Redis and the kiln server; JSON handed to MemoryStore). */
  storeBytesPerRequest: number;
  storeCallsPerRequest: number;
  /** App CPU as a share of one core (summed over the app processes). */
  appCpu: number;
  appCpuMicrosPerRequest: number;
  /** CPU of the store's server process (redis-server or the kiln server) per request; 0 for none. */
  storeCpuMicrosPerRequest: number;
  /** Hot-session row: increments that reached the counter, per second of the measured window. */
  correctPerSecond: number;
  /** Hot-session row: acknowledged increments the counter does not hold. */
  lostShare: number;
  failed: number;
}

export interface CellResult {
  cell: Cell;
  system: SystemId;
  runs: Measurement[];
  median: Measurement;
}

export interface LostUpdateResult {
  system: SystemId;
  apps: 1 | 3;
  sent: number;
  counted: number | null;
  failed: number;
}

export interface Stores {
  redis: RedisDeployment & { node: { port: number; pid: number } };
  kiln: ServerProcess | undefined;
}

export async function freshStore(stores: Stores, system: SystemId): Promise<{ env: Record<string, string>; serverPid: number | undefined }> {
  const { store } = systemInfo(system);
  if (store === 'connect-redis' || store === 'kiln-redis') {
    await redisCli(stores.redis.node.port, 'FLUSHALL');
    const env: Record<string, string> = store === 'connect-redis' ? { BENCH_SYSTEM: 'connect-redis', BENCH_REDIS: stores.redis.url } : { BENCH_SYSTEM: 'kiln', BENCH_ENGINE: stores.redis.url };
    return { env, serverPid: stores.redis.node.pid };
  }
  if (store === 'kiln-server') {
    // A new server per run: every run starts from the same empty tier.
    await stores.kiln?.kill();
    stores.kiln = await startKilnServer();
    pin(stores.kiln.pid, LOAD_CPU);
    return { env: { BENCH_SYSTEM: 'kiln', BENCH_ENGINE: stores.kiln.url, KILN_TOKEN: stores.kiln.token }, serverPid: stores.kiln.pid };
  }
  if (store === 'kiln-memory') return { env: { BENCH_SYSTEM: 'kiln', BENCH_ENGINE: 'memory' }, serverPid: undefined };
  return { env: { BENCH_SYSTEM: store === 'none' ? 'plain' : 'memory-store' }, serverPid: undefined };
}

interface Deployment {
  target: string;
  apps: AppProcess[];
  stop(): Promise<void>;
}

export async function deploy(env: Record<string, string>, count: 1 | 3, framework: Framework): Promise<Deployment> {
  const apps = await Promise.all(
    Array.from({ length: count }, (_, i) => startAppScript(APPS[framework], { ...env, NODE_ENV: 'production', ...(count > 1 ? { NODE_NAME: `app-${i + 1}` } : {}) })),
  );
  for (const app of apps) pin(app.pid, APP_CPU);
  if (count === 1) return { target: apps[0]!.url, apps, stop: async () => void (await Promise.all(apps.map((a) => a.stop()))) };
  const child = spawn(process.execPath, [KILN_BIN, 'balancer', '--port', '0', '--affinity', 'none', '--log-level', 'warn', ...apps.flatMap((a, i) => ['--node', `app-${i + 1}=${a.url}`])], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = trackChild(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const target = await waitFor(() => /ready on (http:\/\/\S+)/.exec(out)?.[1], 10_000, `balancer ready:\n${out}`);
  pin(child.pid!, LOAD_CPU);
  const tokenFile = await waitFor(() => /admin token in (\S+)\)/.exec(out)?.[1], 10_000, `balancer admin token file:\n${out}`);
  const auth = { authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` };
  // Every node must pass its health check before the load starts, or the balancer sheds it.
  await waitFor(async () => {
    const status = (await (await fetch(`${target}/_kiln/balancer`, { headers: auth })).json()) as { nodes: { healthy: boolean }[] };
    return status.nodes.every((n) => n.healthy);
  }, 10_000, 'balancer nodes healthy');
  return {
    target,
    apps,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await Promise.all(apps.map((a) => a.stop()));
    },
  };
}

/** Creates `count` sessions through the app (as logins would) and returns their cookies. */
export async function createSessions(target: string, count: number, shape: 'small' | 'big'): Promise<string[]> {
  const cookies: string[] = new Array<string>(count);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const res = await fetch(`${target}/setup?i=${i}&shape=${shape}`, { method: 'POST' });
      await res.arrayBuffer();
      const setCookie = res.headers.get('set-cookie');
      if (!res.ok || !setCookie) throw new Error(`setup of session ${i} failed: ${res.status} ${setCookie ?? 'no cookie'}`);
      cookies[i] = setCookie.split(';')[0]!;
    }
  };
  await Promise.all(Array.from({ length: Math.min(20, count) }, lane));
  return cookies;
}

interface AppReport {
  cpuMs: number;
  wallMs: number;
  store: { calls: number; bytes: number };
}

async function appReports(apps: AppProcess[]): Promise<AppReport[]> {
  return Promise.all(apps.map(async (a) => (await (await fetch(`${a.url}/__bench`)).json()) as AppReport));
}

/** `INFO stats` as redis-cli sends it: *2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n. */
const INFO_STATS_BYTES = 25;

async function redisTraffic(port: number): Promise<{ bytes: number }> {
  const info = await redisCli(port, 'INFO', 'stats');
  const field = (name: string) => Number(new RegExp(`${name}:(\\d+)`).exec(info)?.[1] ?? 0);
  return { bytes: field('total_net_input_bytes') };
}

/** Runs the load generator in its own pinned process; `between` runs after its warm-up. */
export function load(spec: LoadSpec, between: () => Promise<void>): Promise<LoadResult> {
  const child = spawn('taskset', ['-c', String(LOAD_CPU), process.execPath, LOADGEN, JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = trackChild(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise<LoadResult>((resolve, reject) => {
    let started = false;
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && out.includes('ready\n')) {
        started = true;
        between().then(() => child.stdin!.write('go\n'), reject);
      }
    });
    void exited.then(({ code }) => {
      const line = out.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as LoadResult);
      else reject(new Error(`load generator failed (exit ${code}):\n${out}\n${err}`));
    });
  });
}

export interface CompareOptions {
  cells: Cell[];
  systems: SystemId[];
  runs: number;
  durationSec: number;
  warmupSec: number;
  connections: number;
  progress(line: string): void;
}

async function measure(stores: Stores, system: SystemId, cell: Cell, options: CompareOptions): Promise<Measurement> {
  const { env, serverPid } = await freshStore(stores, system);
  const deployment = await deploy(env, cell.apps, cell.framework);
  const plain = systemInfo(system).store === 'none';
  try {
    const cookies = plain ? [] : await createSessions(deployment.target, cell.sessions, cell.workload === 'big-write' ? 'big' : 'small');
    const usesRedis = systemInfo(system).store === 'connect-redis' || systemInfo(system).store === 'kiln-redis';
    let redisBefore = { bytes: 0 };
    let serverCpuBefore = 0;
    let countBefore = 0;
    const result = await load(
      { url: deployment.target, workload: cell.workload, cookies, connections: options.connections, durationSec: options.durationSec, warmupSec: options.warmupSec },
      async () => {
        if (cell.workload === 'incr' && !plain) countBefore = await counter(deployment.target, cookies[0]!);
        await appReports(deployment.apps); // resets the apps' counters
        if (usesRedis) redisBefore = await redisTraffic(stores.redis.node.port);
        if (serverPid !== undefined) serverCpuBefore = processCpuMs(serverPid);
      },
    );
    const reports = await appReports(deployment.apps);
    const serverCpuMs = serverPid !== undefined ? processCpuMs(serverPid) - serverCpuBefore : 0;
    let store = reports.reduce((sum, r) => ({ calls: sum.calls + r.store.calls, bytes: sum.bytes + r.store.bytes }), { calls: 0, bytes: 0 });
    if (usesRedis) {
      const after = await redisTraffic(stores.redis.node.port);
      // Bytes as redis-server received them, minus the INFO command of the first reading;
      // round trips as the app counted them (Redis counts a script's commands as commands too).
      store = { calls: store.calls, bytes: after.bytes - redisBefore.bytes - INFO_STATS_BYTES };
    }
    const cpuMs = reports.reduce((sum, r) => sum + r.cpuMs, 0);
    const wallMs = Math.max(...reports.map((r) => r.wallMs));
    const requests = Math.max(1, result.requests);
    let correctPerSecond = 0;
    let lostShare = 0;
    if (cell.workload === 'incr' && !plain) {
      const counted = (await counter(deployment.target, cookies[0]!)) - countBefore;
      const acknowledged = result.requests - result.non2xx;
      correctPerSecond = counted / options.durationSec;
      lostShare = acknowledged > 0 ? Math.max(0, acknowledged - counted) / acknowledged : 0;
    }
    return {
      requestsPerSecond: result.requestsPerSecond,
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      storeBytesPerRequest: Math.max(0, store.bytes) / requests,
      storeCallsPerRequest: Math.max(0, store.calls) / requests,
      appCpu: cpuMs / wallMs,
      appCpuMicrosPerRequest: (cpuMs * 1000) / requests,
      storeCpuMicrosPerRequest: (serverCpuMs * 1000) / requests,
      correctPerSecond,
      lostShare,
      failed: result.non2xx + result.errors,
    };
  } finally {
    await deployment.stop();
  }
}

/** The hot session's counter as the app reads it. */
async function counter(target: string, cookie: string): Promise<number> {
  const res = await fetch(`${target}/count`, { headers: { cookie } });
  const body = (await res.json()) as { n: number | null };
  if (!res.ok || typeof body.n !== 'number') throw new Error(`reading the counter failed: ${res.status} ${JSON.stringify(body)}`);
  return body.n;
}

function medianOf(runs: Measurement[]): Measurement {
  const pick = (k: keyof Measurement) => median(runs.map((r) => r[k]));
  return {
    requestsPerSecond: pick('requestsPerSecond'),
    p50Ms: pick('p50Ms'),
    p99Ms: pick('p99Ms'),
    storeBytesPerRequest: pick('storeBytesPerRequest'),
    storeCallsPerRequest: pick('storeCallsPerRequest'),
    appCpu: pick('appCpu'),
    appCpuMicrosPerRequest: pick('appCpuMicrosPerRequest'),
    storeCpuMicrosPerRequest: pick('storeCpuMicrosPerRequest'),
    correctPerSecond: pick('correctPerSecond'),
    lostShare: pick('lostShare'),
    failed: runs.reduce((s, r) => s + r.failed, 0),
  };
}

export function workloadName(workload: Workload): string {
  return workload === 'read-mostly' ? 'read-mostly' : workload === 'write' ? 'write every request' : workload === 'big-write' ? '20 KB session, one field' : 'one hot session, increments';
}

export function cellName(cell: Cell): string {
  const where = `${cell.sessions === 1 ? '1 shared session' : `${cell.sessions.toLocaleString('en-US')} sessions`}, ${cell.apps === 1 ? 'affinity (1 app)' : 'no affinity (3 apps)'}`;
  return `${cell.framework === 'fastify' ? 'Fastify: ' : ''}${workloadName(cell.workload)}, ${where}`;
}

/** The lost-update check: 200 increments of one session, 20 in flight. */
async function lostUpdates(stores: Stores, system: SystemId, apps: 1 | 3): Promise<LostUpdateResult> {
  const { env } = await freshStore(stores, system);
  const deployment = await deploy(env, apps, systemInfo(system).framework);
  try {
    const [cookie] = await createSessions(deployment.target, 1, 'small');
    const result = await load({ url: deployment.target, workload: 'incr', cookies: [cookie!], connections: 20, amount: 200 }, async () => undefined);
    const res = await fetch(`${deployment.target}/count`, { headers: { cookie: cookie! } });
    const body = (await res.json()) as { n: number | null };
    return { system, apps, sent: 200, counted: body.n, failed: result.non2xx + result.errors };
  } finally {
    await deployment.stop();
  }
}

export async function compareSystems(options: CompareOptions): Promise<{ cells: CellResult[]; lost: LostUpdateResult[] }> {
  const stores: Stores = { redis: (await startStandalone()) as Stores['redis'], kiln: undefined };
  pin(stores.redis.node.pid, LOAD_CPU);
  try {
    const results: CellResult[] = [];
    for (const cell of options.cells) {
      const systems = options.systems.filter((id) => {
        const info = systemInfo(id);
        return info.framework === cell.framework && (cell.apps === 1 || info.shared) && !(cell.workload === 'incr' && info.store === 'none');
      });
      const runs = new Map<SystemId, Measurement[]>(systems.map((s) => [s, []]));
      for (let r = 0; r < options.runs; r++) {
        for (const system of systems) {
          const m = await measure(stores, system, cell, options);
          runs.get(system)!.push(m);
          options.progress(`  ${cellName(cell)} · run ${r + 1}/${options.runs} · ${system}: ${Math.round(m.requestsPerSecond)} req/s, p99 ${m.p99Ms} ms`);
        }
      }
      for (const system of systems) results.push({ cell, system, runs: runs.get(system)!, median: medianOf(runs.get(system)!) });
    }
    const lost: LostUpdateResult[] = [];
    for (const apps of [1, 3] as const) {
      for (const system of options.systems.filter((s) => systemInfo(s).framework === 'express' && systemInfo(s).store !== 'none')) {
        if (apps === 3 && !systemInfo(system).shared) continue;
        const r = await lostUpdates(stores, system, apps);
        lost.push(r);
        options.progress(`  lost-update check · ${apps} app${apps > 1 ? 's' : ''} · ${system}: ${r.counted ?? '?'} of ${r.sent}`);
      }
    }
    return { cells: results, lost };
  } finally {
    await stores.kiln?.kill();
    await stores.redis.stop();
  }
}
