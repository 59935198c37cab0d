import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { PhaseResult } from '../../bench/chaos.js';
import { ROOT } from '../helpers/processes.js';

const run = promisify(execFile);

/**
 * The short version of `npm run chaos`: a kiln-server cluster and a Redis Sentinel
 * cluster, each under load while app servers and the tier are killed, frozen and failed
 * over. Not one acknowledged add may be missing or applied twice.
 */
describe('npm run chaos, short', () => {
  it('kills, freezes and fails over under load: every acknowledged add is in its cart exactly once', async (t) => {
    const { stdout } = await run(process.execPath, [join(ROOT, 'dist', 'bench', 'chaos.js'), '--duration', '30', '--shoppers', '10', '--seed', '11', '--json'], { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).catch((err: { stdout: string; stderr: string }) => {
      throw new Error(`chaos failed:\n${err.stdout}\n${err.stderr.slice(-4000)}`);
    });
    const report = JSON.parse(stdout.trim().split('\n').pop()!) as { failed: boolean; results: PhaseResult[] };
    for (const r of report.results) {
      t.diagnostic(`${r.phase}: ${r.acknowledged} acknowledged, ${r.missing} missing, ${r.duplicated} duplicated, ${r.invented} invented, errors ${JSON.stringify(r.errors)}, longest outage ${r.longestOutageMs} ms, chaos ${JSON.stringify(r.chaos)}`);
      assert.equal(r.missing, 0, `${r.phase}: ${r.examples.join('; ')}`);
      assert.equal(r.duplicated, 0, `${r.phase}: ${r.examples.join('; ')}`);
      assert.equal(r.invented, 0, `${r.phase}: ${r.examples.join('; ')}`);
      assert.ok(r.acknowledged > 100, `${r.phase}: only ${r.acknowledged} adds acknowledged`);
      assert.ok((r.chaos['app SIGKILL'] ?? 0) >= 1, `${r.phase}: an app server was killed`);
      assert.ok((r.chaos['races of 50'] ?? 0) >= 1, `${r.phase}: 50 adds raced on one cart`);
    }
    const kiln = report.results.find((r) => r.phase === 'kiln')!;
    const redis = report.results.find((r) => r.phase === 'redis')!;
    assert.ok((kiln.chaos['kiln server SIGKILL'] ?? 0) >= 1, 'the kiln server was killed');
    assert.ok((redis.chaos['sentinel failover'] ?? 0) >= 1, 'Sentinel failed over');
    assert.equal(report.failed, false);
  });
});
