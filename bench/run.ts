/**
 * `npm run bench` (add `-- --quick` for a smoke run). Runs the micro-benchmarks of the
 * core: the lease-hit path and the kiln server's commit throughput under each fsync
 * policy. Prints medians; the machine is noisy, so compare ratios within one run.
 */
import { cpus } from 'node:os';
import { removeDir, startKilnServer, tempDir } from '../test/helpers/processes.js';
import { leaseHitBench } from './lease-hit.js';
import { commitThroughput } from './server-throughput.js';
import { fmt, table } from './util.js';

const quick = process.argv.includes('--quick');
const runs = quick ? 3 : 5;
console.log(`kiln benchmarks ${quick ? '(quick)' : ''}: node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${runs} runs each, medians`);

const server = await startKilnServer();
try {
  console.log('\nlease-hit path (one process holds the lease; sequential requests)');
  const hits = await leaseHitBench({ serverUrl: server.url, token: server.token, runs, quick });
  console.log(table(hits.map((r) => ({ engine: r.engine, case: r.case, 'ops/s': fmt(r.opsPerSecond), 'µs/op': r.microsPerOp }))));
} finally {
  await server.kill();
}

console.log('\nkiln server commit throughput (1 client process, 1,000 sessions, 64 in flight, one field per commit)');
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
console.log(table(rows));
