/**
 * `npm run bench` runs every benchmark and writes the results into docs/benchmarks.md
 * (between its results markers; the analysis around them is written by hand).
 * `npm run bench -- --quick` is a smoke run: one short run per row, 100,000 sessions for
 * the scale test, results written to a file in the temp directory instead.
 *
 * Parts (each can be chosen with --only=http,scale,micro,stall):
 *   http   the side-by-side comparison of issue 6 (bench/http)
 *   scale  a kiln server with 1,000,000 sessions: memory, restart time
 *   tier   the kiln server against redis-server for the same 1,000,000 sessions: memory,
 *          restart against RDB and AOF loads, commit throughput and CPU (bench/tier-vs-redis.ts)
 *   micro  the lease-hit path and the kiln server's commit throughput
 *   stall  a probe's commit latency while 100,000 sessions expire at once, while a
 *          principal's 100,000 sessions are destroyed, and while the leases of a killed
 *          client holding 200,000 move on (bench/stall.ts)
 * The HTTP part can be narrowed while working on one row: --workloads=read-mostly,write,
 * big-write,incr, --apps=1,3, --frameworks=express,fastify, --systems=plain,kiln-server,…,
 * --runs=N, --seconds=N (results go to the temp file).
 * The machine is noisy: compare ratios within one run, not across runs.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeDir, startKilnServer, tempDir } from '../test/helpers/processes.js';
import { compareSystems, SYSTEMS, type Cell, type CellResult, type Framework, type LostUpdateResult } from './http/compare.js';
import { leaseHitBench } from './lease-hit.js';
import { cellsOf, cpuTable, lostUpdateTable, machineSection, peerTable, resultTables, scaleTable, targets, targetTable, tierTargets, type RunInfo, type Target } from './report.js';
import { serverScale, type ScaleResult } from './scale.js';
import { commitThroughput } from './server-throughput.js';
import { stallRun, type StallFigures } from './stall.js';
import { tierVsRedis, tierVsRedisTable, type TierVsRedisResult } from './tier-vs-redis.js';
import { fmt, table } from './util.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const listArg = (name: string): string[] | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3).split(',');
const ALL_PARTS = ['http', 'scale', 'tier', 'micro', 'stall'];
const only = new Set(listArg('only') ?? ALL_PARTS);
const workloads = listArg('workloads');
const appCounts = listArg('apps')?.map(Number);
const systems = listArg('systems');
const runsArg = listArg('runs')?.map(Number)[0];
const secondsArg = listArg('seconds')?.map(Number)[0];
const frameworks = (listArg('frameworks') ?? ['express', 'fastify']) as Framework[];
const narrowed = workloads !== undefined || appCounts !== undefined || systems !== undefined || listArg('frameworks') !== undefined || runsArg !== undefined || secondsArg !== undefined;
const ROOT = new URL('../../', import.meta.url);
const DOC = new URL('docs/benchmarks.md', ROOT);
const BEGIN = '<!-- results:begin (written by npm run bench) -->';
const END = '<!-- results:end -->';

const info: RunInfo = { quick, runs: runsArg ?? (quick ? 1 : 5), durationSec: secondsArg ?? (quick ? 2 : 4), connections: 20, startedAt: new Date(), minutes: 0 };
const progress = (line: string): void => console.log(line);
console.log(`kiln benchmarks${quick ? ' (quick)' : ''}: ${[...only].join(', ')}`);

// Express: every workload with and without affinity; Fastify: the affinity rows (issue
// 26 compares the session layers' cost, which a balancer would only blur). The hot
// session (all connections on one cookie, increments) closes each framework's rows.
const CELLS: Cell[] = [];
for (const framework of frameworks) {
  for (const apps of framework === 'express' ? ([1, 3] as const) : ([1] as const)) {
    if (appCounts && !appCounts.includes(apps)) continue;
    for (const workload of ['read-mostly', 'write', 'big-write'] as const) {
      if (workloads && !workloads.includes(workload)) continue;
      for (const sessions of [1, 1000]) CELLS.push({ framework, workload, sessions, apps });
    }
  }
  if ((!workloads || workloads.includes('incr')) && (!appCounts || appCounts.includes(1))) CELLS.push({ framework, workload: 'incr', sessions: 1, apps: 1 });
}
const SYSTEM_IDS = SYSTEMS.map((s) => s.id).filter((id) => !systems || systems.includes(id));

/** A part that fails is reported and the run goes on: an hour's results are not lost to one part. */
const failedParts: string[] = [];
async function part(name: string, run: () => Promise<void>): Promise<void> {
  if (!only.has(name)) return;
  try {
    await run();
  } catch (err) {
    failedParts.push(`${name}: ${(err as Error).stack ?? String(err)}`);
    console.error(`\npart ${name} failed: ${(err as Error).stack ?? String(err)}`);
  }
}

let http: { cells: CellResult[]; lost: LostUpdateResult[] } | undefined;
await part('http', async () => {
  console.log(`\nHTTP comparison: ${CELLS.length} rows × ${SYSTEM_IDS.length} systems × ${info.runs} run(s) of ${info.durationSec} s`);
  http = await compareSystems({ cells: CELLS, systems: SYSTEM_IDS, runs: info.runs, durationSec: info.durationSec, warmupSec: quick ? 0.5 : 1, connections: info.connections, progress });
});

let scale: ScaleResult | undefined;
await part('scale', async () => {
  console.log('\nkiln server scale');
  scale = await serverScale(quick ? 100_000 : 1_000_000, progress);
  console.log(scaleTable(scale));
});

let tier: TierVsRedisResult | undefined;
await part('tier', async () => {
  const count = quick ? 100_000 : 1_000_000;
  console.log(`\nkiln server against redis-server, ${count.toLocaleString('en-US')} sessions`);
  tier = await tierVsRedis(count, quick, progress);
  console.log(tierVsRedisTable(tier));
});

let micro = '';
await part('micro', async () => {
  const runs = quick ? 3 : 5;
  console.log('\nlease-hit path (one process holds the lease; sequential requests)');
  const server = await startKilnServer();
  try {
    const hits = await leaseHitBench({ serverUrl: server.url, token: server.token, runs, quick });
    micro += `Lease-hit path (one process holds the lease; sequential requests unless said; medians of ${runs}; client CPU includes the memory engine's tier, which runs in the client):\n\n`;
    micro += `${table(hits.map((r) => ({ engine: r.engine, case: r.case, 'ops/s': fmt(r.opsPerSecond), 'µs/op': r.microsPerOp, 'client CPU µs/op': r.cpuMicrosPerOp })))}\n\n`;
  } finally {
    await server.kill();
  }
  console.log('kiln server commit throughput (1 client process, 1,000 sessions, 64 in flight, one field per commit)');
  const rows: Record<string, string>[] = [];
  for (const fsync of ['none (memory only)', 'never', 'everysec', 'always'] as const) {
    const dataDir = fsync === 'none (memory only)' ? undefined : tempDir('kiln-bench-');
    const s = await startKilnServer(dataDir ? { dataDir, fsync: fsync as 'never' | 'everysec' | 'always' } : {});
    try {
      const r = await commitThroughput(s.url, s.token, { sessions: 1000, commits: quick ? 5000 : 40_000, inFlight: 64, runs });
      rows.push({ storage: fsync, 'commits/s': fmt(r.commitsPerSecond), samples: r.samples.map((x) => fmt(x)).join(' ') });
    } finally {
      await s.kill();
      if (dataDir) removeDir(dataDir);
    }
  }
  micro += `kiln server commit throughput (1 client process, 1,000 sessions, 64 in flight, one field per commit):\n\n${table(rows)}\n`;
  console.log(micro);
});

let stall = '';
await part('stall', async () => {
  const count = quick ? 20_000 : 100_000;
  console.log(`\nstall: a probe commits every 100 ms while ${fmt(count)} sessions expire at once, then while a principal's ${fmt(count)} sessions are destroyed, then while the leases of a killed client holding ${fmt(2 * count)} move on`);
  const r = await stallRun(count, progress);
  const row = (what: string, f: StallFigures) => ({ 'bulk work': what, 'took ms': fmt(f.bulkMs), probes: String(f.probes), 'probe p50 ms': f.p50Ms.toFixed(1), 'probe p99 ms': f.p99Ms.toFixed(1), 'probe max ms': f.maxMs.toFixed(1) });
  stall = `A probe client commits to its own session every 100 ms (target: p99 under 50 ms):\n\n${table([row(`${fmt(count)} sessions expire together (leases held)`, r.expiry), row(`destroy by principal, ${fmt(count)} sessions`, r.destroyByPrincipal), row(`the first listing of ${fmt(count)} sessions (probe every 10 ms)`, r.firstListing), row(`a client holding ${fmt(r.deadHolderLeases)} leases killed`, r.deadHolder)])}\n`;
  console.log(stall);
});

info.minutes = (Date.now() - info.startedAt.getTime()) / 60_000;
const sections = [machineSection(info), ''];
const checked: Target[] = [...(http || scale ? targets(http?.cells ?? [], http?.lost ?? [], scale) : []), ...(tier ? tierTargets(tier) : [])];
if (checked.length > 0) sections.push('### Targets', '', targetTable(checked), '');
if (http) {
  const cells = cellsOf(http.cells);
  const express = cells.filter((c) => c.framework === 'express');
  const fastify = cells.filter((c) => c.framework === 'fastify');
  sections.push(`### Kiln against its peers (medians of ${info.runs} rounds of per-round ratios)`, '', peerTable(http.cells, cells), '');
  sections.push('### App CPU per request beyond the framework without sessions', '', 'Per round: the app\'s CPU µs per request minus plain Express\'s (plain Fastify\'s) in the same round; medians, and every round. The store server\'s CPU (kiln server or redis-server) per session write beside it.', '', cpuTable(http.cells, cells), '');
  sections.push('### Side by side: Express', '', resultTables(http.cells.filter((r) => express.includes(r.cell))));
  if (fastify.length > 0) sections.push('### Side by side: Fastify', '', resultTables(http.cells.filter((r) => fastify.includes(r.cell))));
  sections.push('### Lost updates (200 increments of one session, 20 in flight)', '', lostUpdateTable(http.lost), '');
}
if (scale) sections.push('### kiln server scale', '', scaleTable(scale), '');
if (tier) sections.push('### The kiln server against redis-server', '', tierVsRedisTable(tier), '');
if (micro) sections.push('### Micro-benchmarks', '', micro);
if (stall) sections.push('### Bulk work and other clients (stall)', '', stall);
if (failedParts.length > 0) sections.push('### Parts that failed', '', ...failedParts.map((f) => `- ${f.split('\n')[0]}`), '');
const results = sections.join('\n');
console.log(`\n${results}`);

if (quick || only.size < ALL_PARTS.length || narrowed || failedParts.length > 0) {
  const out = join(tmpdir(), `kiln-bench-${quick ? 'quick' : 'partial'}.md`);
  writeFileSync(out, results);
  console.log(`\nresults written to ${out} (docs/benchmarks.md is only rewritten by a full run)`);
} else {
  const doc = existsSync(DOC) ? readFileSync(DOC, 'utf8') : `# Benchmarks\n\n${BEGIN}\n${END}\n`;
  const begin = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`docs/benchmarks.md lacks the markers ${BEGIN} … ${END}`);
  writeFileSync(DOC, `${doc.slice(0, begin + BEGIN.length)}\n${results}\n${doc.slice(end)}`);
  console.log('\nresults written to docs/benchmarks.md');
}
const missed = checked.filter((t) => t.gating && t.met === false);
if (failedParts.length > 0) console.error(`\nPARTS FAILED: ${failedParts.map((f) => f.split(':')[0]).join(', ')} (results written to the temp file, not docs/benchmarks.md)`);
if (missed.length > 0 || failedParts.length > 0) {
  console.error(`\nTARGETS MISSED (${missed.length}):`);
  for (const t of missed) console.error(`  ✗ ${t.target}: ${t.measured}`);
  process.exit(1);
}
process.exit(0);
