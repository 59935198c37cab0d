import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { childPids, isAlive, spawnDemo, startDemo, type DemoProcess } from '../helpers/demo.js';
import { KILN_BIN, removeDir, sleep, tempDir, waitFor } from '../helpers/processes.js';
import { listen } from '../../src/util/net.js';

const run = promisify(execFile);

/**
 * `kiln demo` starts and stops as a whole whatever stops it: a signal while it is still
 * starting, SIGHUP, a second signal while it stops, SIGKILL; a bad option or a busy port
 * fails before anything starts. Each demo gets its own TMPDIR, so "no temp dir left"
 * means that directory is empty afterwards (its data and admin token directories, every
 * state file).
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

/** Kills, after the test, whichever of these is still running (a failing test leaves none behind, a stopped one included). */
function reapAfter(pids: number[]): number[] {
  after(() => {
    for (const pid of pids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  });
  return pids;
}

/** Waits for every pid to exit; those still there when the time is up are killed (no test leaves one behind), and the test fails. */
async function allGone(pids: number[], withinMs: number): Promise<void> {
  try {
    await waitFor(() => pids.every((pid) => !isAlive(pid)), withinMs, 'the pids to exit');
  } catch {
    const left = pids.filter(isAlive);
    for (const pid of left) process.kill(pid, 'SIGKILL');
    assert.fail(`still running ${withinMs} ms later: ${left.join(', ')} (killed now)`);
  }
}

describe('kiln demo: stopped while it is still starting', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} while an app server starts: every child stopped, no temp dir left, exit 0`, async () => {
      const dirs = demoDirs();
      const demo = spawnDemo([], dirs.env);
      // The kiln server is up and app-1 is on its way: the demo has children and temp dirs.
      await waitFor(() => /starting app-1/.test(demo.output()), 30_000, 'app-1 starting');
      const pids = reapAfter(childPids(demo.child.pid!));
      assert.ok(pids.length >= 1, `the demo has children (${pids.length})`);
      assert.ok(dirs.leftovers().length > 0, 'and temp dirs');
      demo.child.kill(signal);
      const exit = await demo.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, demo.output());
      await allGone(pids, 2000);
      assert.deepEqual(dirs.leftovers(), [], 'no temp dir left');
      assert.match(demo.output(), /nothing left running/);
    });
  }
});

describe('kiln demo: SIGHUP (the terminal went away) after start', () => {
  it('stops every child and leaves no temp dir; a state file it could not write was a warning, not a crash', async () => {
    const dirs = demoDirs();
    // The state file's directory is a regular file: writing the state fails once the cluster is up.
    const notADir = join(dirs.tmp, '..', `${dirs.tmp.split('/').pop()}-file`);
    writeFileSync(notADir, '');
    after(() => removeDir(notADir));
    const demo = await startDemo([], { ...dirs.env, KILN_DEMO_STATE: join(notADir, 'demo.json') });
    assert.match(demo.output(), /kiln demo: warning: the kiln demo state directory \S+ is not a directory/);
    assert.match(demo.output(), /kiln status` needs --admin and --token-file/);
    const pids = reapAfter(tablePids(demo));
    assert.equal(pids.length, 4);
    for (const pid of pids) assert.ok(isAlive(pid));
    const exit = await demo.stop('SIGHUP');
    assert.deepEqual(exit, { code: 0, signal: null }, demo.output());
    await allGone(pids, 2000);
    assert.deepEqual(dirs.leftovers(), []);
  });
});

describe('kiln demo: a second signal while it stops', () => {
  it('kills what is left at once and still removes its temp dirs', async () => {
    const dirs = demoDirs();
    const demo = await startDemo([], dirs.env);
    const pids = reapAfter(tablePids(demo));
    // A frozen app server holds the graceful stop for its whole 5 s grace period.
    process.kill(demo.nodes.get('app-1')!.pid, 'SIGSTOP');
    demo.child.kill('SIGTERM');
    await waitFor(() => /stopping the balancer/.test(demo.output()), 5000, 'stopping');
    const againAt = Date.now();
    demo.child.kill('SIGTERM');
    const exit = await demo.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, demo.output());
    assert.match(demo.output(), /SIGTERM again: killing what is left now/);
    assert.ok(Date.now() - againAt < 4000, `no wait for the grace period (${Date.now() - againAt} ms)`);
    await allGone(pids, 2000);
    assert.deepEqual(dirs.leftovers(), [], 'no temp dir left');
  });
});

describe('kiln demo: crashed (an uncaught exception)', () => {
  it('its exit path kills every child and removes its temp dirs', async () => {
    const dirs = demoDirs();
    const crasher = new URL('../fixtures/crash-on-sigusr2.js', import.meta.url).href;
    const demo = await startDemo([], dirs.env, ['--import', crasher]);
    const pids = reapAfter(tablePids(demo));
    demo.child.kill('SIGUSR2');
    const exit = await demo.exited;
    assert.notEqual(exit.code, 0, 'it crashed');
    assert.match(demo.output(), /crash on SIGUSR2/);
    await allGone(pids, 2000);
    assert.deepEqual(dirs.leftovers(), [], 'no temp dir left');
  });
});

describe('kiln demo: killed by SIGKILL', () => {
  it('its kiln server and app servers exit by themselves within seconds', async () => {
    const dirs = demoDirs();
    const demo = await startDemo([], dirs.env);
    const pids = reapAfter(tablePids(demo));
    assert.equal(pids.length, 4);
    demo.child.kill('SIGKILL');
    await demo.exited;
    const killedAt = Date.now();
    await allGone(pids, 8000);
    console.log(`# children gone ${Date.now() - killedAt} ms after the demo's SIGKILL`);

    // A SIGKILL leaves its temp dirs (its kiln server's data, its admin token): the next demo removes them.
    const deadOnes = readdirSync(dirs.tmp).filter((name) => name.includes(`-${demo.child.pid}-`));
    assert.equal(deadOnes.length, 2, readdirSync(dirs.tmp).join(', '));
    const next = spawnDemo(['--engine', 'memory'], dirs.env);
    try {
      await waitFor(() => /removed 2 temp directories of a demo that was killed/.test(next.output()), 30_000, 'the sweep');
      assert.deepEqual(readdirSync(dirs.tmp).filter((name) => deadOnes.includes(name)), []);
    } finally {
      next.child.kill('SIGTERM');
      await next.exited;
    }
  });
});

describe('kiln demo: options and the balancer port are checked before anything starts', () => {
  let busy: Server;
  after(() => busy?.close());

  it('a busy --port: KILN_ERR_INVALID_OPTION naming --port and --port 0, at once, no child started', async () => {
    busy = createServer();
    const port = await listen(busy, 0, '127.0.0.1');
    const dirs = demoDirs();
    const startedAt = Date.now();
    const err = await run(process.execPath, [KILN_BIN, 'demo', '--port', String(port)], { env: { ...process.env, ...dirs.env }, timeout: 20_000 }).then(
      () => assert.fail('the demo started on a busy port'),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    assert.equal(err.code, 1);
    assert.match(err.stderr, new RegExp(`--port ${port}: 127\\.0\\.0\\.1:${port} is in use .*--port 0 .*\\[KILN_ERR_INVALID_OPTION\\]`));
    assert.doesNotMatch(err.stderr, /EADDRINUSE|\n\s+at /, 'no stack trace');
    assert.doesNotMatch(err.stdout, /starting/, 'nothing was started');
    assert.ok(Date.now() - startedAt < 5000, `fast (${Date.now() - startedAt} ms)`);
    assert.deepEqual(dirs.leftovers(), []);
  });

  it('a bad --affinity or --host, and --data without a kiln server: named, nothing started', async () => {
    for (const [args, flag] of [
      [['--affinity', 'sticky'], '--affinity'],
      [['--host', '192.0.2.1'], '--host'],
      [['--engine', 'memory', '--data', '/tmp/x'], '--data'],
    ] as const) {
      const dirs = demoDirs();
      const err = await run(process.execPath, [KILN_BIN, 'demo', ...args], { env: { ...process.env, ...dirs.env }, timeout: 20_000 }).then(
        () => assert.fail(`${args.join(' ')} accepted`),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
      assert.equal(err.code, 1, err.stderr);
      assert.match(err.stderr, new RegExp(`^kiln demo: ${flag}.*\\[KILN_ERR_INVALID_OPTION\\]`, 'm'));
      assert.doesNotMatch(err.stdout, /starting/, `${args.join(' ')}: nothing was started`);
      assert.deepEqual(dirs.leftovers(), []);
    }
  });

  it('--engine kiln:// needs KILN_TOKEN (unset, or too short): named, nothing started', async () => {
    for (const token of [undefined, '', 'short']) {
      const env: NodeJS.ProcessEnv = { ...process.env, ...demoDirs().env };
      if (token === undefined) delete env['KILN_TOKEN'];
      else env['KILN_TOKEN'] = token;
      const err = await run(process.execPath, [KILN_BIN, 'demo', '--engine', 'kiln://127.0.0.1:9510'], { env, timeout: 20_000 }).then(
        () => assert.fail('started without a token'),
        (e: { code: number; stdout: string; stderr: string }) => e,
      );
      assert.equal(err.code, 1, err.stderr);
      assert.match(err.stderr, /KILN_TOKEN.*\[KILN_ERR_INVALID_OPTION\]/);
      assert.doesNotMatch(err.stdout, /starting/);
    }
  });
});

describe('kiln demo: its own kiln server', () => {
  it('gets a generated client token: a short KILN_TOKEN left in the shell does not stop the demo', async () => {
    const demo = await startDemo(['--nodes', '1'], { ...demoDirs().env, KILN_TOKEN: 'short' });
    try {
      const add = await fetch(`${demo.url}/api/cart`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sku: 'mug' }) });
      assert.equal(add.status, 200);
    } finally {
      await demo.stop();
    }
  });

  it('comes back on its port after a SIGKILL even once its output has pushed its ready line out of the buffer', async () => {
    const demo = await startDemo(['--nodes', '1'], demoDirs().env);
    try {
      const server = demo.nodes.get('server')!;
      const port = Number(new URL(server.url.replace('kiln://', 'http://')).port);
      // Over 64 KiB of warnings (one ~240-byte line per refused connection), from enough
      // loopback addresses that the handshake throttle (20 failures an address) never cuts them.
      for (let address = 2; address < 30; address++) {
        await Promise.all(
          Array.from({ length: 15 }, () => new Promise<void>((resolve) => {
            const socket = connect({ port, host: '127.0.0.1', localAddress: `127.0.0.${address}` }, () => socket.write(Buffer.alloc(16, 0xff)));
            const timer = setTimeout(() => socket.destroy(), 2000);
            socket.on('data', () => socket.destroy());
            socket.on('error', () => undefined);
            socket.on('close', () => {
              clearTimeout(timer);
              resolve();
            });
          })),
        );
      }
      await sleep(200);
      process.kill(server.pid, 'SIGKILL');
      await waitFor(() => /kiln server is back \(pid \d+/.test(demo.output()), 15_000, `the kiln server back:\n${demo.output()}`);
      assert.equal(demo.child.exitCode, null, 'the demo is still running');
      const add = await fetch(`${demo.url}/api/cart`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sku: 'mug' }) });
      assert.equal(add.status, 200, 'the app server found the kiln server on its old port');
    } finally {
      await demo.stop();
    }
  });
});
