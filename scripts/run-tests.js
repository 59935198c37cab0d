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

const result = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
