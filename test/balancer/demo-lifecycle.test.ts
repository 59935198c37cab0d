import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isAlive, startDemo, type DemoProcess } from '../helpers/demo.js';
import { KILN_BIN, removeDir, sleep, tempDir, waitFor } from '../helpers/processes.js';
import { listen } from '../../src/util/net.js';

const run = promisify(execFile);

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

describe('kiln demo: the client token', () => {
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
});
