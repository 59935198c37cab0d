import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isAlive, startDemo, type DemoProcess } from '../helpers/demo.js';
import { KILN_BIN, removeDir, tempDir, waitFor } from '../helpers/processes.js';

const run = promisify(execFile);

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `kiln <args>` against the demo its state file names; never rejects (the exit code is in the outcome). */
async function kiln(stateFile: string, ...args: string[]): Promise<Outcome> {
  const startedAt = Date.now();
  const env = { ...process.env, KILN_DEMO_STATE: stateFile, KILN_ADMIN_URL: '', KILN_ADMIN_TOKEN: '' };
  try {
    const { stdout, stderr } = await run(process.execPath, [KILN_BIN, ...args], { env, timeout: 30_000 });
    return { code: 0, stdout, stderr, ms: Date.now() - startedAt };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr, ms: Date.now() - startedAt };
  }
}

interface TopFrame {
  overview: { sessions: { count: number } } | null;
  balancer?: { nodes: { name: string; healthy: boolean }[] };
  errors?: { server?: { code: string; message: string } };
}

const frames = (stdout: string): TopFrame[] => stdout.trim().split('\n').map((l) => JSON.parse(l) as TopFrame);

describe('kiln status and kiln top on a demo: the kiln server and the balancer, each on its own', () => {
  let demo: DemoProcess;
  const stateDir = tempDir('kiln-demo-state-');
  const stateFile = join(stateDir, 'demo.json');
  before(async () => {
    demo = await startDemo(['--no-restart'], { KILN_DEMO_STATE: stateFile });
  });
  after(async () => {
    await demo?.stop();
    removeDir(stateDir);
  });

  it('the demo prints where the admin token is, never the token', () => {
    assert.ok(demo.adminToken.length >= 32);
    assert.ok(!demo.output().includes(demo.adminToken), 'the token is not in the output');
    assert.ok(!demo.output().includes(encodeURIComponent(demo.adminToken)), 'nor in a #token= link');
    assert.doesNotMatch(demo.output(), /#token=/);
    assert.match(demo.output(), new RegExp(`Console: http://127\\.0\\.0\\.1:\\d+/ .*${demo.adminTokenFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  });

  it('kiln status shows the kiln server and the balancer with each app server', async () => {
    const status = await kiln(stateFile, 'status');
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^kiln server 127\.0\.0\.1:\d+ /m);
    assert.match(status.stdout, new RegExp(`^balancer +${demo.url.replace(/\./g, '\\.')} +affinity route`, 'm'));
    assert.match(status.stdout, /^nodes +3 of 3 in rotation/m);
    for (const name of ['app-1', 'app-2', 'app-3']) assert.match(status.stdout, new RegExp(`^${name} +http://127\\.0\\.0\\.1:\\d+ +up `, 'm'));
  });

  it('with its kiln server killed: kiln status answers within its deadline, the server UNREACHABLE and the balancer shown (exit 1)', async () => {
    const server = demo.nodes.get('server')!;
    process.kill(server.pid, 'SIGKILL');
    await waitFor(() => !isAlive(server.pid), 5000, 'the kiln server gone');
    const status = await kiln(stateFile, 'status');
    assert.equal(status.code, 1, `${status.stdout}${status.stderr}`);
    assert.ok(status.ms < 8000, `answered in ${status.ms} ms`);
    assert.match(status.stdout, /^kiln server +http:\/\/127\.0\.0\.1:\d+ +UNREACHABLE: connect ECONNREFUSED/m);
    assert.match(status.stdout, /the kiln server of your kiln demo \(pid \d+\) is down; the demo runs with --no-restart: it stays down/);
    assert.doesNotMatch(status.stdout + status.stderr, /--admin-port <n>/, 'not the hint for a server started without an admin port');
    assert.match(status.stdout, /^balancer +http:\/\/127\.0\.0\.1:\d+ +affinity route/m);
    for (const name of ['app-1', 'app-2', 'app-3']) assert.match(status.stdout, new RegExp(`^${name} +http://`, 'm'));

    const json = await kiln(stateFile, 'status', '--json');
    assert.equal(json.code, 1);
    const parsed = JSON.parse(json.stdout) as { errors: { server: { code: string } }; balancer: { nodes: { name: string }[] } };
    assert.equal(parsed.errors.server.code, 'KILN_ERR_ENGINE_UNAVAILABLE');
    assert.deepEqual(parsed.balancer.nodes.map((n) => n.name), ['app-1', 'app-2', 'app-3']);
  });

  it('kiln top keeps polling while the kiln server is down, showing why in each frame', async () => {
    const top = await kiln(stateFile, 'top', '--json', '--iterations', '3', '--interval-ms', '200');
    // Every frame is shown; the last could not reach the server, so (as kiln status) exit 1.
    assert.equal(top.code, 1, top.stderr);
    const shown = frames(top.stdout);
    assert.equal(shown.length, 3);
    for (const f of shown) {
      assert.equal(f.overview, null);
      assert.equal(f.errors?.server?.code, 'KILN_ERR_ENGINE_UNAVAILABLE');
      assert.equal(f.balancer?.nodes.length, 3);
    }
  });
});

describe('kiln top on a demo that restarts its kiln server', () => {
  let demo: DemoProcess;
  const stateDir = tempDir('kiln-demo-state-');
  const stateFile = join(stateDir, 'demo.json');
  before(async () => {
    demo = await startDemo(['--nodes', '1'], { KILN_DEMO_STATE: stateFile });
  });
  after(async () => {
    await demo?.stop();
    removeDir(stateDir);
  });

  it('shows the kiln server unreachable, then back, without quitting', async () => {
    process.kill(demo.nodes.get('server')!.pid, 'SIGKILL');
    const top = await kiln(stateFile, 'top', '--json', '--iterations', '15', '--interval-ms', '400');
    const shown = frames(top.stdout);
    // Exit 0 once the last frame reached every part (1 if the restart outlasted the 15 frames).
    assert.equal(top.code, Object.keys(shown.at(-1)?.errors ?? {}).length === 0 ? 0 : 1, top.stderr);
    const down = shown.findIndex((f) => f.errors?.server);
    assert.ok(down >= 0, 'a frame shows the server down');
    assert.ok(shown.slice(down).some((f) => f.overview !== null), `and a later one shows it back:\n${demo.output()}`);
  });
});
