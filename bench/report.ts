/**
 * Turns one benchmark run into the markdown of docs/benchmarks.md: the machine and
 * versions, the side-by-side tables, the targets of issue 6 with what was measured,
 * the lost-update check and the server scale figures.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { cellName, SYSTEMS, type Cell, type CellResult, type LostUpdateResult, type SystemId } from './http/compare.js';
import type { ScaleResult } from './scale.js';
import { fmt, table } from './util.js';

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
    `- Node.js ${process.version}; express ${version('express')}, express-session ${version('express-session')}, connect-redis ${version('connect-redis')} (redis ${version('redis')}), redis-server ${redisVersion()}, autocannon ${version('autocannon')}; Kiln ${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version} (commit ${commit()}).`,
    `- Each row: ${info.runs} run${info.runs > 1 ? 's' : ''} of ${info.durationSec} s after a warm-up, ${info.connections} connections, a fresh app process per run; systems interleaved within each round; medians shown.`,
  ].join('\n');
}

const label = (id: SystemId) => SYSTEMS.find((s) => s.id === id)!.label;

export function resultTables(results: CellResult[]): string {
  const out: string[] = [];
  const cells = new Map<string, CellResult[]>();
  for (const r of results) {
    const key = cellName(r.cell);
    cells.set(key, [...(cells.get(key) ?? []), r]);
  }
  for (const [name, rows] of cells) {
    const plain = rows.find((r) => r.system === 'plain')?.median.requestsPerSecond;
    out.push(`#### ${name}`, '');
    out.push(
      table(
        rows.map((r) => ({
          system: label(r.system),
          'req/s': fmt(r.median.requestsPerSecond),
          '× plain': plain ? (r.median.requestsPerSecond / plain).toFixed(2) : '–',
          'p50 ms': fmt(r.median.p50Ms, 1),
          'p99 ms': fmt(r.median.p99Ms, 1),
          'store B/req': fmt(r.median.storeBytesPerRequest),
          'store trips/req': r.median.storeCallsPerRequest.toFixed(2),
          'app CPU µs/req': fmt(r.median.appCpuMicrosPerRequest),
          'app CPU': `${fmt(r.median.appCpu * 100)} %`,
          'failed': String(r.median.failed),
          'runs (req/s)': r.runs.map((m) => fmt(m.requestsPerSecond)).join(' '),
        })),
      ),
      '',
    );
  }
  return out.join('\n');
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

interface Target {
  target: string;
  measured: string;
  met: boolean | undefined;
}

function find(results: CellResult[], cell: Cell, system: SystemId): CellResult | undefined {
  return results.find((r) => r.system === system && r.cell.workload === cell.workload && r.cell.sessions === cell.sessions && r.cell.apps === cell.apps);
}

/** The targets of issue 6, checked against this run (Kiln = Kiln on the kiln server; Kiln on Redis shown beside). */
export function targets(results: CellResult[], lost: LostUpdateResult[], scale: ScaleResult | undefined): Target[] {
  const out: Target[] = [];
  const ratio = (cell: Cell, system: SystemId, versus: SystemId): number | undefined => {
    const a = find(results, cell, system)?.median.requestsPerSecond;
    const b = find(results, cell, versus)?.median.requestsPerSecond;
    return a !== undefined && b ? a / b : undefined;
  };
  const ratioTarget = (what: string, cells: Cell[], versus: SystemId, min: number): void => {
    for (const cell of cells) {
      const kiln = ratio(cell, 'kiln-server', versus);
      const redis = ratio(cell, 'kiln-redis', versus);
      if (kiln === undefined) continue;
      out.push({
        target: `${what} (${cellName(cell)}): Kiln ≥ ${min.toFixed(2)}× ${versus === 'plain' ? 'plain' : label(versus)}`,
        measured: `${kiln.toFixed(2)}× (Kiln on Redis ${redis?.toFixed(2) ?? '–'}×)`,
        met: kiln >= min,
      });
    }
  };
  ratioTarget('small session, read-mostly', [{ workload: 'read-mostly', sessions: 1, apps: 1 }, { workload: 'read-mostly', sessions: 1000, apps: 1 }], 'plain', 0.9);
  ratioTarget('small session, write every request', [{ workload: 'write', sessions: 1, apps: 1 }, { workload: 'write', sessions: 1000, apps: 1 }], 'plain', 0.8);
  ratioTarget('20 KB session, one field changed', [{ workload: 'big-write', sessions: 1, apps: 1 }, { workload: 'big-write', sessions: 1000, apps: 1 }], 'plain', 0.6);
  for (const sessions of [1, 1000]) {
    const cell: Cell = { workload: 'big-write', sessions, apps: 1 };
    const bytes = find(results, cell, 'kiln-server')?.median.storeBytesPerRequest;
    if (bytes !== undefined) out.push({ target: `20 KB session (${cellName(cell)}): ≤ 300 B sent to the store per request`, measured: `${fmt(bytes)} B (Kiln on Redis ${fmt(find(results, cell, 'kiln-redis')?.median.storeBytesPerRequest ?? NaN)} B, connect-redis ${fmt(find(results, cell, 'connect-redis')?.median.storeBytesPerRequest ?? NaN)} B)`, met: bytes <= 300 });
  }
  ratioTarget('no affinity, 1,000 sessions', (['read-mostly', 'write', 'big-write'] as const).map((workload) => ({ workload, sessions: 1000, apps: 3 })), 'connect-redis', 1);
  ratioTarget('no affinity, 1 shared session', (['read-mostly', 'write', 'big-write'] as const).map((workload) => ({ workload, sessions: 1, apps: 3 })), 'connect-redis', 0.5);
  const kilnLost = lost.filter((l) => l.system.startsWith('kiln'));
  if (kilnLost.length > 0) {
    const worst = Math.max(...kilnLost.map((l) => (l.counted === null ? l.sent : l.sent - l.counted)));
    out.push({ target: 'lost updates: 0 for Kiln in every case', measured: `${worst} lost at worst (${kilnLost.length} checks)`, met: worst === 0 });
  }
  if (scale) {
    const worst = Math.max(scale.rssBytes, scale.rssAfterRestartBytes);
    out.push({ target: `kiln server with ${fmt(scale.sessions)} sessions of ~200 B: ≤ 1 GiB RSS`, measured: `${fmt(scale.rssBytes / 2 ** 20)} MiB after the fill, ${fmt(scale.rssAfterRestartBytes / 2 ** 20)} MiB after a restart (${fmt(scale.rssAfterFillBytes / 2 ** 20)} MiB right after the fill)`, met: scale.sessions < 1_000_000 ? undefined : worst <= 2 ** 30 });
    const restart = Math.max(scale.cleanRestartSeconds, scale.crashRestartSeconds);
    out.push({ target: 'restart with them on disk: ≤ 10 s', measured: `${scale.cleanRestartSeconds.toFixed(1)} s clean, ${scale.crashRestartSeconds.toFixed(1)} s after SIGKILL`, met: scale.sessions < 1_000_000 ? undefined : restart <= 10 });
  }
  return out;
}

export function targetTable(list: Target[]): string {
  return table(list.map((t) => ({ target: t.target, measured: t.measured, met: t.met === undefined ? 'n/a (quick run)' : t.met ? 'yes' : '**no**' })));
}
