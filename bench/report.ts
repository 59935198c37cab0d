/**
 * Turns one benchmark run into the markdown of docs/benchmarks.md: the machine and
 * versions, the side-by-side tables, the targets of issue 6 with what was measured,
 * the lost-update check and the server scale figures.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { cellName, plainOf, systemInfo, WRITES_PER_REQUEST, type Cell, type CellResult, type Framework, type LostUpdateResult, type Measurement, type SystemId } from './http/compare.js';
import type { ScaleResult } from './scale.js';
import type { TierVsRedisResult } from './tier-vs-redis.js';
import { fmt, median, table } from './util.js';

export interface RunInfo {
  quick: boolean;
  runs: number;
  durationSec: number;
  connections: number;
  startedAt: Date;
  minutes: number;
}

function version(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(new URL(`../../node_modules/${pkg}/package.json`, import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return '?';
  }
}

function redisVersion(): string {
  try {
    return /v=(\S+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))?.[1] ?? '?';
  } catch {
    return 'not installed';
  }
}

export function machineSection(info: RunInfo): string {
  const cpu = cpus();
  return [
    `Run of ${info.startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC${info.quick ? ' (quick mode: one short run per row, for a smoke test only)' : ''}, ${info.minutes.toFixed(0)} minutes.`,
    '',
    `- Machine: ${cpu.length} × ${cpu[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB; app processes pinned to CPU 0, autocannon, the balancer, redis-server and the kiln server to CPU 1 (\`taskset\`).`,
    `- Node.js ${process.version}; express ${version('express')}, express-session ${version('express-session')}, fastify ${version('fastify')}, @fastify/session ${version('@fastify/session')}, connect-redis ${version('connect-redis')} (redis ${version('redis')}), redis-server ${redisVersion()}, autocannon ${version('autocannon')}; Kiln ${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version} (commit ${commit()}).`,
    `- Each row: ${info.runs} run${info.runs > 1 ? 's' : ''} of ${info.durationSec} s after a warm-up that reaches every session, ${info.connections} connections, a fresh app process per run; systems interleaved within each round; medians shown.`,
  ].join('\n');
}

const label = (id: SystemId) => systemInfo(id).label;

export function resultTables(results: CellResult[]): string {
  const out: string[] = [];
  const cells = new Map<string, CellResult[]>();
  for (const r of results) {
    const key = cellName(r.cell);
    cells.set(key, [...(cells.get(key) ?? []), r]);
  }
  for (const [name, rows] of cells) {
    const plain = rows.find((r) => r.system === plainOf(r.cell.framework))?.median.requestsPerSecond;
    const hot = rows[0]?.cell.workload === 'incr';
    out.push(`#### ${name}`, '');
    out.push(
      table(
        rows.map((r) => ({
          system: label(r.system),
          'req/s': fmt(r.median.requestsPerSecond),
          ...(hot
            ? { 'correct increments/s': fmt(r.median.correctPerSecond), lost: `${fmt(r.median.lostShare * 100)} %` }
            : { '× plain': plain ? (r.median.requestsPerSecond / plain).toFixed(2) : '–' }),
          'p50 ms': fmt(r.median.p50Ms, 1),
          'p99 ms': fmt(r.median.p99Ms, 1),
          'store B/req': fmt(r.median.storeBytesPerRequest),
          'store trips/req': r.median.storeCallsPerRequest.toFixed(2),
          'app CPU µs/req': fmt(r.median.appCpuMicrosPerRequest),
          'store server CPU µs/req': r.median.storeCpuMicrosPerRequest > 0 ? fmt(r.median.storeCpuMicrosPerRequest) : '–',
          'app CPU': `${fmt(r.median.appCpu * 100)} %`,
          failed: String(r.median.failed),
          [hot ? 'runs (correct increments/s)' : 'runs (req/s)']: r.runs.map((m) => fmt(hot ? m.correctPerSecond : m.requestsPerSecond)).join(' '),
        })),
      ),
      '',
    );
  }
  return out.join('\n');
}

/** Per-round figures of `a` against `b` on one row (run r of each is of round r), and their median. */
function perRound(results: CellResult[], cell: Cell, a: SystemId, b: SystemId, f: (x: Measurement, y: Measurement) => number): { median: number; rounds: number[] } | undefined {
  const x = find(results, cell, a);
  const y = find(results, cell, b);
  if (!x || !y) return undefined;
  const rounds = x.runs.slice(0, y.runs.length).map((m, i) => f(m, y.runs[i]!));
  return { median: median(rounds), rounds };
}

/** The systems that stand for Kiln and for its peers, per framework. */
export const ROLES: Record<Framework, { kiln: SystemId[]; redisPeer: SystemId; memoryPeer: SystemId }> = {
  express: { kiln: ['kiln-server', 'kiln-redis'], redisPeer: 'connect-redis', memoryPeer: 'memory-store' },
  fastify: { kiln: ['fastify-kiln-server', 'fastify-kiln-memory'], redisPeer: 'fastify-connect-redis', memoryPeer: 'fastify-memory-store' },
};

/** Issue 26's peer targets: ≥ 1.5× connect-redis on small-session rows, ≥ 8× on 20 KB rows, ahead of MemoryStore (affinity rows); ahead of connect-redis without affinity. */
export function peerMinimum(cell: Cell, versus: 'redis' | 'memory'): number {
  if (versus === 'memory' || cell.apps === 3) return 1;
  return cell.workload === 'big-write' ? 8 : 1.5;
}

const measureOf = (cell: Cell) => (m: Measurement) => (cell.workload === 'incr' ? m.correctPerSecond : m.requestsPerSecond);

/** Kiln ÷ each peer, per row: medians of the per-round ratios, and every round. */
export function peerTable(results: CellResult[], cells: Cell[]): string {
  const rows: Record<string, string>[] = [];
  for (const cell of cells) {
    const roles = ROLES[cell.framework];
    const value = measureOf(cell);
    for (const kiln of roles.kiln) {
      if (!find(results, cell, kiln)) continue;
      const ratio = (versus: SystemId) => perRound(results, cell, kiln, versus, (x, y) => value(x) / value(y));
      const redis = ratio(roles.redisPeer);
      const memory = ratio(roles.memoryPeer);
      const plain = cell.workload === 'incr' ? undefined : ratio(plainOf(cell.framework));
      const show = (r: { median: number } | undefined, min?: number) => (r ? `${r.median.toFixed(2)}×${min !== undefined ? (r.median >= min ? '' : ` **below ${min}×**`) : ''}` : '–');
      rows.push({
        row: cellName(cell),
        Kiln: label(kiln),
        '÷ connect-redis': show(redis, peerMinimum(cell, 'redis')),
        '÷ MemoryStore': show(memory, memory ? peerMinimum(cell, 'memory') : undefined),
        '÷ plain': show(plain),
        'rounds (÷ connect-redis)': redis?.rounds.map((x) => x.toFixed(2)).join(' ') ?? '–',
      });
    }
  }
  return table(rows);
}

/** Issue 26's limit: app CPU µs per request beyond the framework without sessions, same round. */
export function cpuTable(results: CellResult[], cells: Cell[]): string {
  const rows: Record<string, string>[] = [];
  for (const cell of cells.filter((c) => c.apps === 1 && c.workload !== 'incr')) {
    const plain = plainOf(cell.framework);
    const base = find(results, cell, plain);
    if (!base) continue;
    for (const r of results.filter((x) => x.cell === cell && x.system !== plain)) {
      const extra = perRound(results, cell, r.system, plain, (x, y) => x.appCpuMicrosPerRequest - y.appCpuMicrosPerRequest)!;
      const target = cpuTarget(cell);
      const isKiln = ROLES[cell.framework].kiln.includes(r.system);
      const perCommit = r.median.storeCpuMicrosPerRequest / WRITES_PER_REQUEST[cell.workload];
      rows.push({
        row: cellName(cell),
        system: label(r.system),
        'app CPU µs/req': fmt(r.median.appCpuMicrosPerRequest),
        'plain µs/req': fmt(base.median.appCpuMicrosPerRequest),
        'added µs/req': `${fmt(extra.median, 1)}${isKiln && target !== undefined ? (extra.median <= target ? ` (≤ ${target}: met)` : ` (**target ≤ ${target}**)`) : ''}`,
        'store server CPU µs/commit': r.median.storeCpuMicrosPerRequest > 0 ? fmt(perCommit) : '–',
        'rounds (added µs/req)': extra.rounds.map((x) => fmt(x)).join(' '),
      });
    }
  }
  return table(rows);
}

/** The CPU-per-request targets hold on the 1,000-session affinity rows (lease held, near-cache hit). */
export function cpuTarget(cell: Cell): number | undefined {
  if (cell.apps !== 1 || cell.sessions !== 1000) return undefined;
  return cell.workload === 'read-mostly' ? 10 : cell.workload === 'write' ? 20 : undefined;
}

export function lostUpdateTable(lost: LostUpdateResult[]): string {
  return table(
    lost.map((l) => ({
      system: label(l.system),
      'app processes': String(l.apps),
      'increments sent': String(l.sent),
      'counter after': l.counted === null ? '?' : String(l.counted),
      lost: l.counted === null ? '?' : `${l.sent - l.counted} (${Math.round(((l.sent - l.counted) / l.sent) * 100)} %)`,
      'failed requests': String(l.failed),
    })),
  );
}

export function scaleTable(s: ScaleResult): string {
  return table([
    { figure: 'sessions stored', value: fmt(s.sessions) },
    { figure: 'attribute bytes per session', value: fmt(s.bytesPerSession) },
    { figure: 'fill time (one client, 256 in flight)', value: `${s.fillSeconds.toFixed(1)} s` },
    { figure: 'server RSS right after the fill', value: `${fmt(s.rssAfterFillBytes / 2 ** 20)} MiB` },
    { figure: 'server RSS 15 s later', value: `${fmt(s.rssBytes / 2 ** 20)} MiB (${fmt(s.rssBytes / s.sessions)} B per session)` },
    { figure: 'server RSS after restarting with them', value: `${fmt(s.rssAfterRestartBytes / 2 ** 20)} MiB` },
    { figure: 'data directory', value: `${fmt(s.diskBytes / 2 ** 20)} MiB` },
    { figure: 'restart after SIGTERM (spawn to ready)', value: `${s.cleanRestartSeconds.toFixed(2)} s` },
    { figure: 'restart after SIGKILL (spawn to ready)', value: `${s.crashRestartSeconds.toFixed(2)} s` },
    { figure: 'sessions after the restarts', value: fmt(s.sessionsAfterRestart) },
  ]);
}

export interface Target {
  target: string;
  measured: string;
  met: boolean | undefined;
  /** A gating target fails the run when missed; the others are reported only (issue 26). */
  gating: boolean;
}

function find(results: CellResult[], cell: Cell, system: SystemId): CellResult | undefined {
  return results.find((r) => r.system === system && r.cell.framework === cell.framework && r.cell.workload === cell.workload && r.cell.sessions === cell.sessions && r.cell.apps === cell.apps);
}

/** Distinct rows of a run, in the order they ran. */
export function cellsOf(results: CellResult[]): Cell[] {
  return [...new Set(results.map((r) => r.cell))];
}

/**
 * The targets of issues 6 and 26, checked against this run. Kiln = Kiln on the kiln
 * server (kiln/fastify on the kiln server for Fastify); the others are shown beside.
 * Ratios are medians of the per-round ratios.
 */
export function targets(results: CellResult[], lost: LostUpdateResult[], scale: ScaleResult | undefined): Target[] {
  const out: Target[] = [];
  for (const cell of cellsOf(results)) {
    const roles = ROLES[cell.framework];
    const kiln = roles.kiln[0]!;
    if (!find(results, cell, kiln)) continue;
    const value = measureOf(cell);
    const ratio = (a: SystemId, b: SystemId) => perRound(results, cell, a, b, (x, y) => value(x) / value(y))?.median;
    const beside = (b: SystemId) => {
      const other = ratio(roles.kiln[1]!, b);
      return other === undefined ? '' : ` (${label(roles.kiln[1]!)} ${other.toFixed(2)}×)`;
    };
    for (const [versus, kind] of [[roles.redisPeer, 'redis'], [roles.memoryPeer, 'memory']] as const) {
      const r = ratio(kiln, versus);
      if (r === undefined) continue;
      const min = peerMinimum(cell, kind);
      out.push({ target: `${cellName(cell)}: Kiln ≥ ${min}× ${label(versus)}${cell.workload === 'incr' ? ' in correct increments/s' : ''}`, measured: `${r.toFixed(2)}×${beside(versus)}`, met: r >= min, gating: true });
    }
    const cpu = cpuTarget(cell);
    if (cpu !== undefined) {
      const extra = perRound(results, cell, kiln, plainOf(cell.framework), (x, y) => x.appCpuMicrosPerRequest - y.appCpuMicrosPerRequest);
      if (extra) out.push({ target: `${cellName(cell)}: Kiln adds ≤ ${cpu} µs of app CPU per request to ${label(plainOf(cell.framework))}`, measured: `${fmt(extra.median, 1)} µs (rounds: ${extra.rounds.map((x) => fmt(x)).join(', ')})`, met: extra.median <= cpu, gating: true });
    }
    const plainGoal = cell.apps === 1 && cell.workload === 'read-mostly' ? 0.9 : cell.apps === 1 && cell.workload === 'write' ? 0.8 : undefined;
    const toPlain = ratio(kiln, plainOf(cell.framework));
    if (plainGoal !== undefined && toPlain !== undefined) out.push({ target: `${cellName(cell)}: Kiln ≥ ${plainGoal}× ${label(plainOf(cell.framework))} (reported, not gating)`, measured: `${toPlain.toFixed(2)}×${beside(plainOf(cell.framework))}`, met: toPlain >= plainGoal, gating: false });
    if (cell.workload === 'incr') {
      const kilnLost = roles.kiln.map((k) => find(results, cell, k)).filter((r) => r !== undefined).flatMap((r) => r.runs.map((m) => m.lostShare));
      out.push({ target: `${cellName(cell)}: no acknowledged increment lost by Kiln`, measured: `${fmt(Math.max(...kilnLost) * 100, 1)} % lost at worst (${kilnLost.length} runs)`, met: Math.max(...kilnLost) === 0, gating: true });
    }
    if (cell.workload === 'big-write' && cell.apps === 1 && cell.framework === 'express') {
      const bytes = find(results, cell, kiln)?.median.storeBytesPerRequest;
      if (bytes !== undefined) out.push({ target: `20 KB session (${cellName(cell)}): ≤ 300 B sent to the store per request`, measured: `${fmt(bytes)} B (Kiln on Redis ${fmt(find(results, cell, 'kiln-redis')?.median.storeBytesPerRequest ?? NaN)} B, connect-redis ${fmt(find(results, cell, 'connect-redis')?.median.storeBytesPerRequest ?? NaN)} B)`, met: bytes <= 300, gating: true });
    }
  }
  const kilnLost = lost.filter((l) => systemInfo(l.system).store.startsWith('kiln'));
  if (kilnLost.length > 0) {
    const worst = Math.max(...kilnLost.map((l) => (l.counted === null ? l.sent : l.sent - l.counted)));
    out.push({ target: 'lost updates (200 increments, 20 in flight): 0 for Kiln in every case', measured: `${worst} lost at worst (${kilnLost.length} checks)`, met: worst === 0, gating: true });
  }
  if (scale) {
    const worst = Math.max(scale.rssBytes, scale.rssAfterRestartBytes);
    out.push({ target: `kiln server with ${fmt(scale.sessions)} sessions of ~200 B: ≤ 1 GiB RSS`, measured: `${fmt(scale.rssBytes / 2 ** 20)} MiB after the fill, ${fmt(scale.rssAfterRestartBytes / 2 ** 20)} MiB after a restart (${fmt(scale.rssAfterFillBytes / 2 ** 20)} MiB right after the fill)`, met: scale.sessions < 1_000_000 ? undefined : worst <= 2 ** 30, gating: true });
    const restart = Math.max(scale.cleanRestartSeconds, scale.crashRestartSeconds);
    out.push({ target: 'restart with them on disk: ≤ 10 s', measured: `${scale.cleanRestartSeconds.toFixed(1)} s clean, ${scale.crashRestartSeconds.toFixed(1)} s after SIGKILL`, met: scale.sessions < 1_000_000 ? undefined : restart <= 10, gating: true });
  }
  return out;
}

/** Issue 26's goals for the tier: no more memory than Redis holding the sessions as hashes, a restart no slower than Redis loading them. */
export function tierTargets(r: TierVsRedisResult): Target[] {
  const partial = r.sessions < 1_000_000;
  const mib = (b: number) => `${fmt(b / 2 ** 20)} MiB`;
  return [
    { target: `kiln server with ${fmt(r.sessions)} sessions: resident memory ≤ redis-server holding them as plain hashes`, measured: `${mib(r.kiln.rssBytes)} against ${mib(r.redisHashes.rssBytes)} (Kiln's Redis engine: ${mib(r.redisEngine.rssBytes)})`, met: partial ? undefined : r.kiln.rssBytes <= r.redisHashes.rssBytes, gating: true },
    { target: 'kiln server restart ≤ redis-server loading the same sessions (RDB, and AOF as Redis 7 writes it)', measured: `${r.kiln.restartSeconds.toFixed(2)} s against RDB ${r.redisEngine.rdbLoadSeconds.toFixed(2)} s and AOF ${r.redisEngine.aofLoadSeconds.toFixed(2)} s`, met: partial ? undefined : r.kiln.restartSeconds <= Math.min(r.redisEngine.rdbLoadSeconds, r.redisEngine.aofLoadSeconds), gating: true },
  ];
}

export function targetTable(list: Target[]): string {
  return table(list.map((t) => ({ target: t.target, measured: t.measured, met: t.met === undefined ? 'n/a (quick run)' : t.met ? 'yes' : t.gating ? '**no**' : 'no (reported)' })));
}
