/**
 * Where an app's CPU goes on one row of the HTTP benchmark: runs one system under load
 * with the inspector's sampling profiler (what --cpu-prof does) and prints each
 * function's self time per request, grouped as Kiln, the framework, other packages,
 * Node.js, and the garbage collector. This is how the
 * per-request budget in docs/benchmarks.md is attributed. With --allocations it samples
 * what the app allocates instead and prints bytes per request by group and by function:
 * the collector's share of a request is paid for where these are made.
 *
 *   npm run build && node dist/bench/profile.js --system=fastify-kiln-server --workload=read-mostly --sessions=1000 --seconds=10
 *   node dist/bench/profile.js --system=kiln-server --workload=write --allocations
 *   node dist/bench/profile.js --system=fastify-kiln-server --against=fastify-plain --workload=write --rounds=3
 *
 * --survivors samples only what outlives a scavenge (what the young generation promotes,
 * and so what each scavenge copies): bytes per request by function.
 *
 * --gc profiles nothing: the apps run with V8's --trace-gc-nvp and it prints, per request,
 * the scavenges' pause and the bytes they promoted, and the full collections' time. With
 * --against, what the system adds to each.
 *
 *   node dist/bench/profile.js --system=kiln-server --against=plain --workload=big-write --gc
 *   node dist/bench/profile.js --system=fastify-kiln-server --workload=write --survivors
 *
 * --commit-mode=async runs Kiln's apps with responses that do not wait for their commit
 * (the bench measures 'sync'): what holding a response costs, apart.
 *
 * --apps=3 runs the row without affinity: three apps behind the balancer, sharing one core,
 * their profiles summed, each sample weighed at its profile's median interval (see selfTimes).
 *
 * --callers=<name> adds, for the functions whose name contains it, where their self time
 * is spent from: µs per request by chain of callers (Node's writev, say, put on the Kiln
 * code that reached it), --depth=<n> callers deep (4).
 *
 *   node dist/bench/profile.js --system=fastify-kiln-server --workload=read-mostly --callers=writev
 *
 * --against=<baseline> profiles both, rounds interleaved, and prints what the system adds
 * to a request over the baseline, by group and by function: where each µs of the
 * CPU-per-request figure goes, Node's and the collector's included.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStandalone } from '../test/helpers/redis.js';
import { createSessions, deploy, freshStore, load, LOAD_CPU, systemInfo, type Stores, type SystemId } from './http/compare.js';
import { pin } from './proc.js';
import { waitFor } from '../test/helpers/processes.js';
import type { Workload } from './http/loadgen.js';
import { fmt, median, table } from './util.js';
import { allocatedBytes, callerTimes, concernOf, selfTimes, summarizeGcTrace, type Concern, type GcSummary, type Group, type HeapNode, type Profile } from './profile-analysis.js';

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const system = arg('system', 'fastify-kiln-server') as SystemId;
const workload = arg('workload', 'read-mostly') as Workload;
const sessions = Number(arg('sessions', '1000'));
const seconds = Number(arg('seconds', '10'));
const top = Number(arg('top', '30'));
const callers = arg('callers', '');
const callerDepth = Number(arg('depth', '4'));
const survivors = args.includes('--survivors');
const allocations = args.includes('--allocations') || survivors;
const gc = args.includes('--gc');
const commitMode = arg('commit-mode', 'sync');
if (commitMode !== 'sync' && commitMode !== 'async') throw new Error(`--commit-mode is sync or async, not ${commitMode}`);
if (gc && allocations) throw new Error('--gc traces the collector of an app run without a profiler: not with --allocations or --survivors');

const against = arg('against', '') as SystemId | '';
const apps = Number(arg('apps', '1'));
if (apps !== 1 && apps !== 3) throw new Error('--apps is 1 (affinity) or 3 (no affinity, behind the balancer)');
for (const which of [system, against]) {
  if (apps === 3 && which && !systemInfo(which).shared) throw new Error(`--apps=3: ${which} keeps its sessions in each app, so three apps do not share them`);
}
const rounds = Number(arg('rounds', '3'));
if (callers && (against || gc || allocations)) throw new Error('--callers reads the CPU profile of one system: not with --against, --gc, --allocations or --survivors');

const stores: Stores = { redis: (await startStandalone()) as Stores['redis'], kiln: undefined };
pin(stores.redis.node.pid, LOAD_CPU);
const dir = mkdtempSync(join(tmpdir(), 'kiln-profile-'));
try {
  if (gc) {
    const perRound: Record<'baseline' | 'system', GcPerRequest[]> = { baseline: [], system: [] };
    for (let round = 0; round < rounds; round++) {
      for (const [role, which] of (against ? [['baseline', against], ['system', system]] : [['system', system]]) as ['baseline' | 'system', SystemId][]) {
        const run = await profileRun(which, round);
        perRound[role].push(gcPerRequest(run.gc!, run.perRequest));
      }
    }
    printGc(perRound.system, against ? perRound.baseline : undefined);
  } else if (against) {
    // Rounds interleaved (baseline, system, baseline, …) so the machine's drift hits both alike.
    const perRound: Record<'baseline' | 'system', Map<string, { micros: number; group: Group }>[]> = { baseline: [], system: [] };
    for (let round = 0; round < rounds; round++) {
      for (const [role, which] of [['baseline', against], ['system', system]] as const) {
        const run = await profileRun(which, round);
        perRound[role].push(new Map([...selfTimes(run.profiles as Profile[], apps > 1)].map(([k, t]) => [k, { micros: run.perRequest(t.micros), group: t.group }])));
      }
    }
    printDifference(against, perRound.baseline, perRound.system);
  } else {
    const run = await profileRun(system, 0);
    if (allocations) printAllocations(allocatedBytes((run.profiles as { head: HeapNode }[]).map((p) => p.head)), run.perRequest);
    else {
      printTimes(selfTimes(run.profiles as Profile[], apps > 1), run.perRequest);
      if (callers) printCallers(callerTimes(run.profiles as Profile[], callers, callerDepth, apps > 1), run.perRequest);
    }
  }
} finally {
  await stores.kiln?.kill();
  await stores.redis.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);

/**
 * One profiled run of a system on the row asked for: each app's profile (or, with --gc,
 * what its collector did in the measured window), and how to turn totals into
 * per-request figures.
 */
async function profileRun(which: SystemId, round: number): Promise<{ profiles: unknown[]; gc?: GcSummary; perRequest: (total: number) => number }> {
  const { env } = await freshStore(stores, which);
  const file = join(dir, `${which}-${round}-{pid}.${allocations ? 'heapprofile' : 'cpuprofile'}`);
  const profiling: Record<string, string> = gc ? { BENCH_TRACE_GC: '1' } : allocations ? { BENCH_HEAP_PROFILE: file, ...(survivors ? { BENCH_HEAP_SURVIVORS: '1' } : {}) } : { BENCH_CPU_PROFILE: file };
  const deployment = await deploy({ ...env, ...profiling, BENCH_COMMIT_MODE: commitMode }, apps as 1 | 3, systemInfo(which).framework);
  let requests = 0;
  // Where each app's output stood when the measured window began and ended (--gc).
  let marks: number[] = [];
  let ends: number[] = [];
  try {
    const cookies = systemInfo(which).store === 'none' ? [] : await createSessions(deployment.target, sessions, workload === 'big-write' ? 'big' : 'small');
    // The profile starts again after the warm-up, so it covers the window the bench's CPU
    // figure does: creating 1,000 sessions of 20 KB, and each one's first decode in the
    // warm-up, cost more than the requests measured.
    const restartProfile = async () => {
      const restarts = (out: string) => out.split('profile restarted').length - 1;
      const before = deployment.apps.map((app) => restarts(app.output()));
      for (const app of deployment.apps) process.kill(app.pid, 'SIGUSR2');
      await Promise.all(deployment.apps.map((app, i) => waitFor(() => restarts(app.output()) > before[i]! || undefined, 10_000, `app ${app.pid} restarting its profile:\n${app.output()}`)));
    };
    const markOutput = async () => void (marks = deployment.apps.map((app) => app.output().length));
    const result = await load({ url: deployment.target, workload, cookies, connections: 20, durationSec: seconds, warmupSec: 1 }, gc ? markOutput : restartProfile);
    requests = result.requests;
    // What the apps print while they stop is not of the window.
    ends = deployment.apps.map((app) => app.output().length);
    if (result.non2xx > 0 || result.errors > 0) throw new Error(`${which}: ${result.non2xx} non-2xx answers and ${result.errors} errors under load: the profile would not be of the row asked for`);
    console.log(`${which}, ${workload}, ${sessions} sessions: ${fmt(result.requestsPerSecond)} req/s over ${seconds} s (${gc ? 'collections traced' : 'profiled'} after the set-up and warm-up)`);
  } finally {
    await deployment.stop();
  }
  const perRequest = (total: number) => total / requests;
  if (gc) {
    // The window's whole lines: a trace line may have been half written at either mark.
    const windows = deployment.apps.map((app, i) => {
      const out = app.output();
      const start = marks[i]!;
      const from = start === 0 || out[start - 1] === '\n' ? start : out.indexOf('\n', start) + 1 || out.length;
      return out.slice(from, Math.max(from, out.lastIndexOf('\n', ends[i]! - 1) + 1));
    });
    return { profiles: [], gc: summarizeGcTrace(windows.join('\n')), perRequest };
  }
  const profiles = deployment.apps.map((app) => {
    const appFile = file.replace('{pid}', String(app.pid));
    if (!existsSync(appFile)) throw new Error(`${which} (pid ${app.pid}) wrote no profile`);
    const profile = JSON.parse(readFileSync(appFile, 'utf8')) as unknown;
    rmSync(appFile);
    return profile;
  });
  return { profiles, perRequest };
}

interface GcPerRequest {
  scavengeMicros: number;
  promotedBytes: number;
  survivedBytes: number;
  majorMicros: number;
  requestsPerScavenge: number;
}

function gcPerRequest(summary: GcSummary, perRequest: (total: number) => number): GcPerRequest {
  return {
    scavengeMicros: perRequest(summary.scavengeMs * 1000),
    promotedBytes: perRequest(summary.promotedBytes),
    survivedBytes: perRequest(summary.survivedBytes),
    majorMicros: perRequest(summary.majorMs * 1000),
    requestsPerScavenge: summary.scavenges === 0 ? Infinity : 1 / perRequest(summary.scavenges),
  };
}

/** The collector per request, medians over rounds; with a baseline, beside it and what the system adds. */
function printGc(mine: GcPerRequest[], baseline?: GcPerRequest[]): void {
  const rows: [string, keyof GcPerRequest, number][] = [
    ['scavenge pause, µs/req', 'scavengeMicros', 1],
    ['promoted by scavenges, B/req', 'promotedBytes', 0],
    ['outlived a scavenge, B/req', 'survivedBytes', 0],
    ['full collections (pause and incremental marking), µs/req', 'majorMicros', 1],
    ['requests per scavenge', 'requestsPerScavenge', 0],
  ];
  const perRound = (runs: GcPerRequest[], key: keyof GcPerRequest, digits: number) => `${fmt(median(runs.map((r) => r[key])), digits)} (${runs.map((r) => fmt(r[key], digits)).join(', ')})`;
  console.log(`\nthe collector per request, ${workload}, ${sessions} sessions, medians of ${mine.length} round(s) (every round in brackets):\n`);
  console.log(
    table(
      rows.map(([label, key, digits]) => ({
        '': label,
        ...(baseline ? { [against]: perRound(baseline, key, digits) } : {}),
        [system]: perRound(mine, key, digits),
        ...(baseline ? { added: fmt(median(mine.map((r, i) => r[key] - baseline[i]![key])), digits) } : {}),
      })),
    ),
  );
}

/**
 * Where the CPU a system adds to a request goes: its self time per request minus the
 * baseline's (plain Express or Fastify on the same row), by group and by function,
 * medians over the interleaved rounds. Node's and the collector's rows are the part of
 * the added cost that Kiln causes but does not run itself (a round trip's socket work,
 * longer-lived requests).
 */
function printDifference(baselineName: string, baseline: Map<string, { micros: number; group: Group }>[], mine: Map<string, { micros: number; group: Group }>[]): void {
  const byGroup = (runs: Map<string, { micros: number; group: Group }>[]) =>
    runs.map((run) => {
      const groups = new Map<Group, number>();
      for (const { micros, group } of run.values()) if (group !== 'idle') groups.set(group, (groups.get(group) ?? 0) + micros);
      return groups;
    });
  const baseGroups = byGroup(baseline);
  const myGroups = byGroup(mine);
  const groupNames = [...new Set([...baseGroups, ...myGroups].flatMap((g) => [...g.keys()]))];
  const rows = groupNames.map((g) => {
    const b = median(baseGroups.map((x) => x.get(g) ?? 0));
    const m = median(myGroups.map((x) => x.get(g) ?? 0));
    return { group: g, baseline: b, system: m, added: median(myGroups.map((x, i) => (x.get(g) ?? 0) - (baseGroups[i]!.get(g) ?? 0))) };
  });
  const totals = (groups: Map<Group, number>[]) => groups.map((g) => [...g.values()].reduce((sum, v) => sum + v, 0));
  const added = median(totals(myGroups).map((t, i) => t - totals(baseGroups)[i]!));
  console.log(`\nbusy CPU per request (µs), ${system} against ${baselineName}, medians of ${mine.length} interleaved rounds (per round: ${totals(myGroups).map((t, i) => fmt(t - totals(baseGroups)[i]!, 1)).join(', ')}):\n`);
  rows.sort((a, b) => b.added - a.added);
  console.log(table([...rows.map((r) => ({ group: r.group, [baselineName]: fmt(r.baseline, 1), [system]: fmt(r.system, 1), added: fmt(r.added, 1) })), { group: 'total', [baselineName]: fmt(median(totals(baseGroups)), 1), [system]: fmt(median(totals(myGroups)), 1), added: fmt(added, 1) }]));
  const names = new Set([...baseline, ...mine].flatMap((run) => [...run.keys()]));
  const diffs = [...names]
    .map((k) => {
      const group = mine.find((run) => run.has(k))?.get(k)?.group ?? baseline.find((run) => run.has(k))!.get(k)!.group;
      return { k, group, added: median(mine.map((run, i) => (run.get(k)?.micros ?? 0) - (baseline[i]!.get(k)?.micros ?? 0))) };
    })
    .filter((d) => d.group !== 'idle');
  console.log(`\nfunctions adding the most (µs/req, median of the per-round differences):\n`);
  console.log(table(diffs.sort((a, b) => b.added - a.added).slice(0, top).map((d) => ({ function: d.k.slice(0, 110), group: d.group, added: fmt(d.added, 2) }))));
  const concerns = new Map<Concern, number[]>();
  mine.forEach((run, i) => {
    for (const [k, t] of run) {
      if (t.group !== 'kiln') continue;
      const list = concerns.get(concernOf(k)) ?? [];
      list[i] = (list[i] ?? 0) + t.micros;
      concerns.set(concernOf(k), list);
    }
  });
  console.log(`\nKiln's own self time per request by concern (µs, median):\n`);
  console.log(table([...concerns].map(([c, list]) => ({ concern: c, 'µs/req': median(Array.from({ length: mine.length }, (_, i) => list[i] ?? 0)) })).sort((a, b) => b['µs/req'] - a['µs/req']).map((r) => ({ concern: r.concern, 'µs/req': fmt(r['µs/req'], 1) }))));
}

function printTimes(times: Map<string, { micros: number; group: Group }>, perRequest: (micros: number) => number): void {
  const groups = new Map<Group, number>();
  for (const { micros, group } of times.values()) groups.set(group, (groups.get(group) ?? 0) + micros);
  console.log(`\nself time per request by group (µs; idle excluded from the total):\n`);
  const busy = [...groups].filter(([g]) => g !== 'idle').reduce((s, [, m]) => s + m, 0);
  console.log(table([...groups].sort((a, b) => b[1] - a[1]).map(([g, m]) => ({ group: g, 'µs/req': fmt(perRequest(m), 1), share: g === 'idle' ? '–' : `${fmt((m / busy) * 100)} %` }))));
  console.log(`\ntop ${top} functions by self time:\n`);
  const rows = [...times].filter(([, t]) => t.group !== 'idle').sort((a, b) => b[1].micros - a[1].micros).slice(0, top);
  console.log(table(rows.map(([k, t]) => ({ function: k.slice(0, 110), group: t.group, 'µs/req': fmt(perRequest(t.micros), 2) }))));
  const kiln = [...times].filter(([, t]) => t.group === 'kiln').sort((a, b) => b[1].micros - a[1].micros);
  const concerns = new Map<Concern, number>();
  for (const [k, t] of kiln) concerns.set(concernOf(k), (concerns.get(concernOf(k)) ?? 0) + t.micros);
  console.log(`\nKiln's self time per request by concern (µs):\n`);
  console.log(table([...concerns].sort((a, b) => b[1] - a[1]).map(([c, m]) => ({ concern: c, 'µs/req': fmt(perRequest(m), 1) }))));
  console.log(`\nKiln's functions (${kiln.length}), µs/req:\n`);
  console.log(kiln.slice(0, 40).map(([k, t]) => `  ${fmt(perRequest(t.micros), 2).padStart(6)}  ${k}`).join('\n'));
}

function printCallers(times: Map<string, number>, perRequest: (micros: number) => number): void {
  console.log(`\nwhere the self time of functions named like '${callers}' is spent from (µs/req, innermost first):\n`);
  const rows = [...times].sort((a, b) => b[1] - a[1]).slice(0, top);
  console.log(rows.map(([path, micros]) => `  ${fmt(perRequest(micros), 2).padStart(6)}  ${path}`).join('\n'));
}

function printAllocations(bytes: Map<string, { bytes: number; group: Group }>, perRequest: (bytes: number) => number): void {
  const groups = new Map<Group, number>();
  for (const { bytes: b, group } of bytes.values()) groups.set(group, (groups.get(group) ?? 0) + b);
  const total = [...groups.values()].reduce((sum, b) => sum + b, 0);
  const what = survivors ? 'that outlived a scavenge' : 'allocated';
  console.log(`\nbytes ${what} per request by group (sampled every 4 KiB, after the set-up and warm-up):\n`);
  console.log(table([...groups].sort((a, b) => b[1] - a[1]).map(([g, b]) => ({ group: g, 'B/req': fmt(perRequest(b)), share: `${fmt((b / total) * 100)} %` }))));
  console.log(`\ntop ${top} functions by bytes ${what}:\n`);
  const rows = [...bytes].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top);
  console.log(table(rows.map(([k, t]) => ({ function: k.slice(0, 110), group: t.group, 'B/req': fmt(perRequest(t.bytes)) }))));
  const kiln = [...bytes].filter(([, t]) => t.group === 'kiln').sort((a, b) => b[1].bytes - a[1].bytes);
  console.log(`\nKiln's functions (${kiln.length}), B/req:\n`);
  console.log(kiln.slice(0, 40).map(([k, t]) => `  ${fmt(perRequest(t.bytes)).padStart(6)}  ${k}`).join('\n'));
}
