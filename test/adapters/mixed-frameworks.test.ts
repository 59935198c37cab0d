import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { KilnBalancer } from '../../src/balancer/balancer.js';
import { silentLogger } from '../../src/util/log.js';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { Browser } from '../helpers/browser.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';

/**
 * An Express app and a Fastify app share one session (same cookie name and secret,
 * same kiln server) behind kiln balancer, round-robin.
 */
describe('one session across Express and Fastify behind the balancer', () => {
  let server: ServerProcess;
  let apps: AppProcess[];
  let lb: KilnBalancer;

  before(async () => {
    server = await startKilnServer();
    const env = { KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRETS: 'shared-secret' };
    apps = await Promise.all([startApp('express-app', { ...env, NODE_NAME: 'express' }), startApp('fastify-app', { ...env, NODE_NAME: 'fastify' })]);
    lb = new KilnBalancer({ port: 0, affinity: 'none', nodes: [{ name: 'express', url: apps[0]!.url }, { name: 'fastify', url: apps[1]!.url }], logger: silentLogger });
    await lb.start();
  });
  after(async () => {
    await lb.stop(100);
    await Promise.all(apps.map((a) => a.kill()));
    await server.kill();
  });

  it('a cart written by one is read and changed by the other', async () => {
    const b = new Browser(lb.url);
    const nodes: string[] = [];
    for (const sku of ['a', 'b', 'c', 'd']) nodes.push((await b.post<{ node: string }>('/api/cart', { sku })).body.node);
    assert.deepEqual(new Set(nodes), new Set(['express', 'fastify']));
    const cart = (await b.get<{ data: { cart: { sku: string }[] } }>('/api/session')).body.data.cart;
    assert.deepEqual(cart.map((l) => l.sku), ['a', 'b', 'c', 'd']);
  });

  it('no lost update under concurrent requests: 100 increments, 20 in flight, spread over both frameworks', async () => {
    const b = new Browser(lb.url);
    await b.post('/api/set', { key: 'n', value: 0 });
    const served = new Map<string, number>();
    let sent = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (sent < 100) {
          sent++;
          const r = await b.post<{ node: string }>('/api/incr');
          assert.equal(r.status, 200);
          served.set(r.body.node, (served.get(r.body.node) ?? 0) + 1);
        }
      }),
    );
    assert.equal((await b.get<{ data: { n: number } }>('/api/session')).body.data.n, 100);
    assert.ok((served.get('express') ?? 0) > 10 && (served.get('fastify') ?? 0) > 10, JSON.stringify([...served]));
  });
});
