/**
 * Where an app's CPU goes on one row of the HTTP benchmark: runs one system under load
 * with `--cpu-prof` and prints each function's self time per request, grouped as Kiln,
 * the framework, other packages, Node.js, and the garbage collector. This is how the
 * per-request budget in docs/benchmarks.md is attributed.
 *
 *   npm run build && node dist/bench/profile.js --system=fastify-kiln-server --workload=read-mostly --sessions=1000 --seconds=10
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStandalone } from '../test/helpers/redis.js';
import { createSessions, deploy, freshStore, load, LOAD_CPU, systemInfo, type Stores, type SystemId } from './http/compare.js';
import { pin } from './proc.js';
import type { Workload } from './http/loadgen.js';
import { fmt, table } from './util.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
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

/** Self time per function (µs) of a .cpuprofile. */
export function selfTimes(profile: Profile): Map<string, { micros: number; group: Group }> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const out = new Map<string, { micros: number; group: Group }>();
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!)!;
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'} ${url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${lineNumber + 1}`;
    const entry = out.get(key) ?? { micros: 0, group: groupOf(url, functionName) };
    entry.micros += profile.timeDeltas[i] ?? 0;
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

const stores: Stores = { redis: (await startStandalone()) as Stores['redis'], kiln: undefined };
pin(stores.redis.node.pid, LOAD_CPU);
const dir = mkdtempSync(join(tmpdir(), 'kiln-profile-'));
try {
  const { env } = await freshStore(stores, system);
  const deployment = await deploy({ ...env, BENCH_CPU_PROFILE: join(dir, 'app.cpuprofile') }, 1, systemInfo(system).framework);
  let requests = 0;
  try {
    const cookies = systemInfo(system).store === 'none' ? [] : await createSessions(deployment.target, sessions, workload === 'big-write' ? 'big' : 'small');
    const result = await load({ url: deployment.target, workload, cookies, connections: 20, durationSec: seconds, warmupSec: 1 }, async () => undefined);
    requests = result.requests;
    console.log(`${system}, ${workload}, ${sessions} sessions: ${fmt(result.requestsPerSecond)} req/s over ${seconds} s (profile includes the set-up and warm-up)`);
  } finally {
    await deployment.stop();
  }
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('the app wrote no profile');
  const times = selfTimes(JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile);
  // Requests over the whole profile: the measured ones plus about one second of warm-up at the same rate.
  const perRequest = (micros: number) => micros / (requests * (1 + 1 / seconds));
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
} finally {
  await stores.kiln?.kill();
  await stores.redis.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
