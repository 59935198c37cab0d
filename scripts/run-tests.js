// Runs every compiled test file with node's built-in runner (Node 20 has no glob for
// --test). Unit tests first (fast feedback), then conformance and integration suites
// that start real processes. Extra arguments narrow the run: `npm test -- unit`.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = 'dist/test';
const filter = process.argv.slice(2);

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return find(path);
    return name.endsWith('.test.js') ? [path] : [];
  });
}

const order = ['unit', 'conformance', 'integration', 'adapters', 'compat', 'security', 'deploy', 'browser'];
const files = find(root)
  .filter((f) => filter.length === 0 || filter.some((part) => f.includes(part)))
  .sort((a, b) => {
    const rank = (f) => {
      const i = order.findIndex((part) => f.includes(`/${part}/`));
      return i < 0 ? order.length : i;
    };
    return rank(a) - rank(b) || a.localeCompare(b);
  });

if (files.length === 0) {
  console.error(`no test files under ${root} match ${filter.join(' ')}`);
  process.exit(1);
}

// Suites that measure the machine's own latency (a probe's p99 while 100,000 sessions
// expire; an app's commit p99 while the inspector previews a 1 MiB session) run last and
// alone: beside another suite's failover they measure that suite.
const alone = files.filter((f) => /\/integration\/stall\.test\.js$|\/security\/admin-preview\.test\.js$/.test(f));
const together = files.filter((f) => !alone.includes(f));
let status = 0;
const totals = {};
for (const [group, concurrency] of [[together, 2], [alone, 1]]) {
  if (group.length === 0) continue;
  const result = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...group], { stdio: ['inherit', 'pipe', 'inherit'], maxBuffer: 1 << 30 });
  process.stdout.write(result.stdout);
  for (const m of result.stdout.toString().matchAll(/^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) ([\d.]+)$/gm)) totals[m[1]] = (totals[m[1]] ?? 0) + Number(m[2]);
  if (result.status !== 0) status = result.status ?? 1;
}
// One summary for the whole run, after the groups' own.
if (alone.length > 0 && together.length > 0) for (const [key, value] of Object.entries(totals)) console.log(`# ${key} ${key === 'duration_ms' ? value.toFixed(0) : value}`);
process.exit(status);
