import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isAlive, startDemo, type DemoProcess } from '../helpers/demo.js';
import { removeDir, tempDir, waitFor } from '../helpers/processes.js';

/**
 * `kiln demo` starts and stops as a whole whatever stops it. Each demo gets its own
 * TMPDIR, so "no temp dir left" means that directory is empty afterwards (its data and
 * admin token directories, every state file).
 */

/** A TMPDIR of its own for one demo, and its state file elsewhere (so it is not counted). */
function demoDirs(): { tmp: string; env: Record<string, string>; leftovers(): string[] } {
  const tmp = tempDir('kiln-demo-tmp-');
  const stateDir = tempDir('kiln-demo-state-');
  after(() => {
    removeDir(tmp);
    removeDir(stateDir);
  });
  return { tmp, env: { TMPDIR: tmp, KILN_DEMO_STATE: join(stateDir, 'demo.json') }, leftovers: () => [...readdirSync(tmp), ...readdirSync(stateDir)] };
}

/** The demo's children from its table (the console is the kiln server's admin port: one pid for both). */
function tablePids(demo: DemoProcess): number[] {
  return [...new Set([...demo.nodes.values()].map((n) => n.pid))].filter((pid) => pid !== demo.child.pid);
}

async function allGone(pids: number[], withinMs: number): Promise<void> {
  await waitFor(() => pids.every((pid) => !isAlive(pid)), withinMs, `pids ${pids.filter(isAlive).join(', ')} to exit`);
}

describe('kiln demo: killed by SIGKILL', () => {
  it('its kiln server and app servers exit by themselves within seconds', async () => {
    const dirs = demoDirs();
    const demo = await startDemo([], dirs.env);
    const pids = tablePids(demo);
    assert.equal(pids.length, 4);
    demo.child.kill('SIGKILL');
    await demo.exited;
    const killedAt = Date.now();
    await allGone(pids, 8000);
    console.log(`# children gone ${Date.now() - killedAt} ms after the demo's SIGKILL`);
  });
});

