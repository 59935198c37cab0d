/**
 * The lease-hit rows of two builds of Kiln, side by side in one run, rounds interleaved
 * (before, after, before, after…) so the machine's drift hits both alike: the check
 * that a refactoring did not slow the path most requests take.
 *
 *   npm run build && node dist/bench/compare-builds.js --before ../other-checkout/dist [--rounds 5] [--quick]
 *
 * Each round runs each build's own bench/lease-hit.js in a fresh process (one run of
 * each case, memory engine and a kiln server this build starts), so neither build warms
 * the other's JIT. Prints every round, the medians and after ÷ before (µs per op: lower
 * is faster, a ratio under 1 means the new build is faster).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { argValue, fmt, median, table } from './util.js';

const args = process.argv.slice(2);
const arg = (name: string): string | undefined => argValue(args, name);
const before = arg('--before');
const rounds = Number(arg('--rounds') ?? 5);
const quick = args.includes('--quick');
const after = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (!before || !existsSync(join(before, 'bench', 'lease-hit.js'))) {
  console.error('usage: node dist/bench/compare-builds.js --before <other build\'s dist folder> [--rounds 5] [--quick]');
  process.exit(2);
}

interface Row {
  engine: string;
  case: string;
  microsPerOp: number;
}

/** One run of a build's lease-hit bench in a fresh process, with a kiln server of its own. */
function runOnce(dist: string): Row[] {
  const script = `
    const { leaseHitBench } = await import(${JSON.stringify(join(dist, 'bench', 'lease-hit.js'))});
    const { startKilnServer } = await import(${JSON.stringify(join(dist, 'test', 'helpers', 'processes.js'))});
    const server = await startKilnServer();
    try {
      const rows = await leaseHitBench({ serverUrl: server.url, token: server.token, runs: 1, quick: ${quick} });
      process.stdout.write(JSON.stringify(rows));
    } finally {
      await server.kill();
    }`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: resolve(dist, '..'), maxBuffer: 1 << 20 });
  return (JSON.parse(out) as Row[]).map((r) => ({ engine: r.engine, case: r.case, microsPerOp: r.microsPerOp }));
}

const samples = new Map<string, { before: number[]; after: number[] }>();
for (let round = 1; round <= rounds; round++) {
  for (const [which, dist] of [['before', resolve(before)], ['after', after]] as const) {
    for (const row of runOnce(dist)) {
      const key = `${row.engine} · ${row.case}`;
      if (!samples.has(key)) samples.set(key, { before: [], after: [] });
      samples.get(key)![which].push(row.microsPerOp);
    }
  }
  console.log(`round ${round}/${rounds} done`);
}

console.log(`\nLease-hit path, µs per op (medians of ${rounds} interleaved rounds; before = ${before}):\n`);
console.log(
  table(
    [...samples].map(([key, s]) => ({
      case: key,
      'before µs': fmt(median(s.before), 2),
      'after µs': fmt(median(s.after), 2),
      'after ÷ before': fmt(median(s.after) / median(s.before), 2),
      'before runs': s.before.map((x) => fmt(x, 1)).join(' '),
      'after runs': s.after.map((x) => fmt(x, 1)).join(' '),
    })),
  ),
);
