import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Browser } from '../helpers/browser.js';
import { isAlive, startDemo, type DemoProcess } from '../helpers/demo.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { KILN_BIN, removeDir, sleep, tempDir, waitFor } from '../helpers/processes.js';

const run = promisify(execFile);

interface Cart {
  node: string;
  items: { sku: string; qty: number }[];
}

describe('kiln demo: the whole cluster on one machine', () => {
  let demo: DemoProcess;
  // Its own state file: other tests run demos beside this one.
  const stateDir = tempDir('kiln-demo-state-');
  const stateFile = join(stateDir, 'demo.json');
  before(async () => {
    demo = await startDemo([], { KILN_DEMO_STATE: stateFile });
  });
  after(async () => {
    await demo.stop();
    removeDir(stateDir);
  });

  it('prints the table: balancer, kiln server, three app servers, with pids', () => {
    assert.equal(demo.nodes.get('balancer')?.role, 'balancer');
    assert.equal(demo.nodes.get('server')?.role, 'kiln server');
    for (const name of ['app-1', 'app-2', 'app-3']) assert.ok(isAlive(demo.nodes.get(name)!.pid), name);
  });

  it('SIGKILL the node that served a cart: the next request is served by another node with the whole cart', async () => {
    const b = new Browser(demo.url);
    let served = '';
    for (const sku of ['teapot', 'mug', 'glove', 'mug']) served = (await b.post<Cart>('/api/cart', { sku, qty: 1 })).body.node;
    const login = await b.post<{ data: { user: string } }>('/api/login', { user: 'jo' });
    assert.equal(login.status, 200);
    const again = await b.get<Cart>('/api/cart');
    assert.equal(again.body.node, served, 'affinity: every request on the node that made the session');
    process.kill(demo.nodes.get(served)!.pid, 'SIGKILL');
    await waitFor(() => !isAlive(demo.nodes.get(served)!.pid), 5000, 'node gone');
    const after = await b.get<Cart>('/api/cart');
    assert.equal(after.status, 200, 'no error to the client');
    assert.notEqual(after.body.node, served);
    assert.deepEqual(after.body.items, [{ sku: 'teapot', qty: 1 }, { sku: 'mug', qty: 2 }, { sku: 'glove', qty: 1 }]);
    const session = await b.get<{ data: { user: string } }>('/api/session');
    assert.equal(session.body.data.user, 'jo', 'no forced logout');
    assert.equal((await b.get('/_kiln/balancer')).status, 401, 'the status JSON is not public');
    const status = async (): Promise<{ nodes: { name: string; healthy: boolean }[] }> => {
      const res = await fetch(`${demo.url}/_kiln/balancer`, { headers: { authorization: `Bearer ${demo.adminToken}` } });
      assert.equal(res.status, 200);
      return (await res.json()) as { nodes: { name: string; healthy: boolean }[] };
    };
    await waitFor(async () => (await status()).nodes.find((n) => n.name === served)?.healthy === false || new RegExp(`${served} restarting`).test(demo.output()), 3000, 'node marked down');

    // Supervision: the killed node comes back on its port, and the balancer takes it back in.
    await waitFor(() => new RegExp(`${served} is back \\(pid \\d+`).test(demo.output()), 10_000, `${served} restarted`);
    assert.match(demo.output(), new RegExp(`${served} exited \\(SIGKILL\\)`));
    await waitFor(async () => (await status()).nodes.find((n) => n.name === served)?.healthy === true, 5000, 'node healthy again');
    const nodeUrl = demo.nodes.get(served)!.url;
    assert.equal((await fetch(`${nodeUrl}/healthz`)).status, 200, 'back on the same port');
    const fresh = new Browser(demo.url);
    const landed = new Set<string>();
    for (let i = 0; i < 12 && !landed.has(served); i++) landed.add((await new Browser(demo.url).post<Cart>('/api/cart', { sku: 'mug', qty: 1 })).body.node);
    assert.ok(landed.has(served), `new sessions reach ${served} again (landed on ${[...landed].join(', ')})`);
    assert.equal((await fresh.get<Cart>('/api/cart')).status, 200);
  });

  it('kiln status works right after the demo with nothing typed (empty KILN_ADMIN_URL / KILN_ADMIN_TOKEN do not block it)', async () => {
    const { stdout } = await run(process.execPath, [KILN_BIN, 'status'], { env: { ...process.env, KILN_DEMO_STATE: stateFile, KILN_ADMIN_URL: '', KILN_ADMIN_TOKEN: '' } });
    assert.match(stdout, /kiln server /);
    for (const name of ['app-1', 'app-2', 'app-3']) assert.match(stdout, new RegExp(name));
    assert.match(demo.output(), /npx kiln status/);
  });

  it('stops on SIGTERM leaving no process behind', async () => {
    const pids = [...demo.nodes.values()].map((n) => n.pid);
    for (const m of demo.output().matchAll(/is back \(pid (\d+)/g)) pids.push(Number(m[1]));
    const exit = await demo.stop('SIGTERM');
    assert.equal(exit.code, 0);
    await sleep(100);
    for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still running`);
    assert.match(demo.output(), /nothing left running/);
    assert.equal(existsSync(stateFile), false, 'the state file went with the demo');
  });
});

describe('kiln demo --affinity none: round-robin, the worst case', () => {
  let demo: DemoProcess;
  before(async () => {
    demo = await startDemo(['--affinity', 'none']);
  });
  after(async () => {
    await demo.stop();
  });

  it('50 clients each adding 20 items to their own cart concurrently: every cart exact', async () => {
    const clients = Array.from({ length: 50 }, () => new Browser(demo.url));
    const nodesSeen = new Set<string>();
    await Promise.all(
      clients.map(async (b, c) => {
        for (let i = 0; i < 20; i++) {
          const r = await b.post<Cart>('/api/cart', { sku: `c${c}-item${i % 5}`, qty: 1 });
          assert.equal(r.status, 200);
          nodesSeen.add(r.body.node);
        }
      }),
    );
    assert.equal(nodesSeen.size, 3);
    for (const [c, b] of clients.entries()) {
      const cart = (await b.get<Cart>('/api/cart')).body.items;
      assert.equal(cart.reduce((n, l) => n + l.qty, 0), 20, `client ${c}`);
      assert.equal(cart.length, 5);
    }
  });

  it('100 concurrent adds to one shared cart: exactly 100', async () => {
    const owner = new Browser(demo.url);
    await owner.post('/api/cart', { sku: 'shared', qty: 1 });
    await owner.request('DELETE', '/api/cart');
    await owner.post('/api/cart', { sku: 'warmup', qty: 1 });
    const results = await Promise.all(Array.from({ length: 100 }, () => owner.clone().post<Cart>('/api/cart', { sku: 'shared', qty: 1 })));
    assert.ok(results.every((r) => r.status === 200), JSON.stringify(results.filter((r) => r.status !== 200).map((r) => [r.status, r.body])));
    const cart = (await owner.get<Cart>('/api/cart')).body.items;
    assert.equal(cart.find((l) => l.sku === 'shared')?.qty, 100);
  });
});
