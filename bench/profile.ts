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
 * --apps=3 runs the row without affinity: three apps behind the balancer, sharing one core,
 * their profiles summed, each sample weighed at its profile's median interval (see selfTimes).
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

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export type Group = 'kiln' | 'framework' | 'packages' | 'node' | 'gc' | 'idle' | 'other';

export function groupOf(url: string, name: string): Group {
  if (name === '(garbage collector)') return 'gc';
  if (name === '(idle)') return 'idle';
  if (/\/dist\/src\//.test(url)) return 'kiln';
  if (/node_modules\/(fastify|@fastify|express|router|find-my-way|light-my-request|avvio|body-parser|send|finalhandler)\//.test(url)) return 'framework';
  if (/node_modules\//.test(url)) return 'packages';
  if (url.startsWith('node:') || name === '(program)' || url === '') return 'node';
  return 'other';
}

/** How a function is named in every table: name, file below dist/ or node_modules/, line. */
function frameKey({ functionName, url, lineNumber }: CallFrame): string {
  return `${functionName || '(anonymous)'} ${url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${lineNumber + 1}`;
}

/**
 * Self time per function (µs) of .cpuprofiles, summed. A sample's weight is the time
 * since the one before it; with `bySamples`, every sample of a profile weighs its median
 * interval instead. The sampler ticks on wall time, so when apps share a core the time
 * an app spent descheduled lands on whatever it was running when it got the core back:
 * counting samples spreads only the time it ran.
 */
export function selfTimes(profiles: Profile[], bySamples = false): Map<string, { micros: number; group: Group }> {
  const out = new Map<string, { micros: number; group: Group }>();
  for (const profile of profiles) {
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const interval = bySamples ? median(profile.timeDeltas) : 0;
    for (let i = 0; i < profile.samples.length; i++) {
      const node = byId.get(profile.samples[i]!)!;
      const key = frameKey(node.callFrame);
      const entry = out.get(key) ?? { micros: 0, group: groupOf(node.callFrame.url, node.callFrame.functionName) };
      entry.micros += bySamples ? interval : (profile.timeDeltas[i] ?? 0);
      out.set(key, entry);
    }
  }
  return out;
}

interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

/** Bytes allocated per function (self) of sampling heap profiles, summed. */
export function allocatedBytes(heads: HeapNode[]): Map<string, { bytes: number; group: Group }> {
  const out = new Map<string, { bytes: number; group: Group }>();
  const stack = [...heads];
  while (stack.length > 0) {
    const node = stack.pop()!;
    stack.push(...node.children);
    if (node.selfSize === 0) continue;
    const key = frameKey(node.callFrame);
    const entry = out.get(key) ?? { bytes: 0, group: groupOf(node.callFrame.url, node.callFrame.functionName) };
    entry.bytes += node.selfSize;
    out.set(key, entry);
  }
  return out;
}

/** The concern of a Kiln function, for the per-request budget (docs/benchmarks.md). */
export type Concern = 'cookie' | 'lookup and lease' | 'session object' | 'delta and encoding' | 'commit and wire' | 'adapter glue' | 'tier (in process)' | 'other Kiln';

export function concernOf(key: string): Concern {
  const [name = '', file = ''] = key.split(' ');
  if (/src\/adapters\/core\/(cookies|session-cookie)\.js|src\/session\/id\.js/.test(file) || /^(sessionIdFrom|signedValue|signedCookie|newCookie|setCookieHeader)$/.test(name)) return 'cookie';
  if (/src\/client\/(session-client|lease-keeper|keyed-queue|near-cache|access-touches|request-time)\.js|src\/util\/deadline\.js/.test(file)) return 'lookup and lease';
  if (/src\/adapters\/core\/session-object\.js|src\/client\/session-handle\.js|src\/session\/live-value\.js/.test(file) || (/src\/session\/delta\.js/.test(file) && /^(get|set|has|keys|delete)$/.test(name))) return 'session object';
  if (/src\/session\//.test(file)) return 'delta and encoding';
  if (/src\/client\/(commit-pipeline|commit-sender|committed-state|write-behind)\.js|src\/engines\/|src\/protocol\/|src\/util\/(net|binary)\.js/.test(file)) return 'commit and wire';
  if (/src\/adapters\//.test(file)) return 'adapter glue';
  if (/src\/tier\//.test(file)) return 'tier (in process)';
  return 'other Kiln';
}

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const system = arg('system', 'fastify-kiln-server') as SystemId;
const workload = arg('workload', 'read-mostly') as Workload;
const sessions = Number(arg('sessions', '1000'));
const seconds = Number(arg('seconds', '10'));
const top = Number(arg('top', '30'));
const allocations = args.includes('--allocations');

const against = arg('against', '') as SystemId | '';
const apps = Number(arg('apps', '1'));
if (apps !== 1 && apps !== 3) throw new Error('--apps is 1 (affinity) or 3 (no affinity, behind the balancer)');
for (const which of [system, against]) {
  if (apps === 3 && which && !systemInfo(which).shared) throw new Error(`--apps=3: ${which} keeps its sessions in each app, so three apps do not share them`);
}
const rounds = Number(arg('rounds', '3'));

const stores: Stores = { redis: (await startStandalone()) as Stores['redis'], kiln: undefined };
pin(stores.redis.node.pid, LOAD_CPU);
const dir = mkdtempSync(join(tmpdir(), 'kiln-profile-'));
try {
  if (against) {
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
    else printTimes(selfTimes(run.profiles as Profile[], apps > 1), run.perRequest);
  }
} finally {
  await stores.kiln?.kill();
  await stores.redis.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);

/** One profiled run of a system on the row asked for: each app's profile, and how to turn totals into per-request figures. */
async function profileRun(which: SystemId, round: number): Promise<{ profiles: unknown[]; perRequest: (total: number) => number }> {
  const { env } = await freshStore(stores, which);
  const file = join(dir, `${which}-${round}-{pid}.${allocations ? 'heapprofile' : 'cpuprofile'}`);
  const deployment = await deploy({ ...env, ...(allocations ? { BENCH_HEAP_PROFILE: file } : { BENCH_CPU_PROFILE: file }) }, apps as 1 | 3, systemInfo(which).framework);
  let requests = 0;
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
    const result = await load({ url: deployment.target, workload, cookies, connections: 20, durationSec: seconds, warmupSec: 1 }, restartProfile);
    requests = result.requests;
    if (result.non2xx > 0 || result.errors > 0) throw new Error(`${which}: ${result.non2xx} non-2xx answers and ${result.errors} errors under load: the profile would not be of the row asked for`);
    console.log(`${which}, ${workload}, ${sessions} sessions: ${fmt(result.requestsPerSecond)} req/s over ${seconds} s (profiled after the set-up and warm-up)`);
  } finally {
    await deployment.stop();
  }
  const profiles = deployment.apps.map((app) => {
    const appFile = file.replace('{pid}', String(app.pid));
    if (!existsSync(appFile)) throw new Error(`${which} (pid ${app.pid}) wrote no profile`);
    const profile = JSON.parse(readFileSync(appFile, 'utf8')) as unknown;
    rmSync(appFile);
    return profile;
  });
  return { profiles, perRequest: (total: number) => total / requests };
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

function printAllocations(bytes: Map<string, { bytes: number; group: Group }>, perRequest: (bytes: number) => number): void {
  const groups = new Map<Group, number>();
  for (const { bytes: b, group } of bytes.values()) groups.set(group, (groups.get(group) ?? 0) + b);
  const total = [...groups.values()].reduce((sum, b) => sum + b, 0);
  console.log(`\nbytes allocated per request by group (sampled every 4 KiB, after the set-up and warm-up):\n`);
  console.log(table([...groups].sort((a, b) => b[1] - a[1]).map(([g, b]) => ({ group: g, 'B/req': fmt(perRequest(b)), share: `${fmt((b / total) * 100)} %` }))));
  console.log(`\ntop ${top} functions by bytes allocated:\n`);
  const rows = [...bytes].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, top);
  console.log(table(rows.map(([k, t]) => ({ function: k.slice(0, 110), group: t.group, 'B/req': fmt(perRequest(t.bytes)) }))));
  const kiln = [...bytes].filter(([, t]) => t.group === 'kiln').sort((a, b) => b[1].bytes - a[1].bytes);
  console.log(`\nKiln's functions (${kiln.length}), B/req:\n`);
  console.log(kiln.slice(0, 40).map(([k, t]) => `  ${fmt(perRequest(t.bytes)).padStart(6)}  ${k}`).join('\n'));
}
