import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { Browser } from '../helpers/browser.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';

/**
 * Three Express processes share one kiln server; every request goes to the next
 * process in turn (no affinity at all: the worst case for a session system).
 */
describe('Express behind round-robin: 3 processes, one kiln server', () => {
  let server: ServerProcess;
  let apps: AppProcess[];
  let turn = 0;
  const next = () => apps[turn++ % apps.length]!.url;

  before(async () => {
    server = await startKilnServer();
    apps = await Promise.all([1, 2, 3].map((i) => startApp('express-app', { KILN_ENGINE: server.url, KILN_TOKEN: server.token, NODE_NAME: `app-${i}`, SESSION_SECRETS: 'cluster-secret' })));
  });
  after(async () => {
    await Promise.all(apps.map((a) => a.kill()));
    await server.kill();
  });

  const call = <T = Record<string, unknown>>(b: Browser, method: string, path: string, body?: unknown) => b.request<T>(method, path, body, {}, next());

  it('login flow: after logout the old cookie finds no session on any process; "log out everywhere" ends every session of the user everywhere', async () => {
    const b = new Browser(apps[0]!.url);
    await call(b, 'POST', '/api/cart', { sku: 'book' });
    const anonymous = b.clone();
    const login = await call<{ sessionId: string }>(b, 'POST', '/api/login', { user: 'frank' });
    const nodes = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const page = await call<{ node: string; principal: string; data: { cart: unknown[] } }>(b, 'GET', '/api/session');
      nodes.add(page.body.node);
      assert.equal(page.body.principal, 'frank');
      assert.equal(page.body.data.cart.length, 1);
    }
    assert.equal(nodes.size, 3, 'served by all three processes');
    for (const app of apps) {
      const replay = await anonymous.request<{ data: Record<string, unknown> }>('GET', '/api/session', undefined, {}, app.url);
      assert.equal(replay.body.data['cart'], undefined, 'the pre-login session is gone everywhere');
    }
    const loggedIn = b.clone();
    await call(b, 'POST', '/api/logout');
    for (const app of apps) {
      const replay = await loggedIn.request<{ principal: string | null; sessionId: string }>('GET', '/api/session', undefined, {}, app.url);
      assert.equal(replay.body.principal, null, `no session on ${app.url} after logout`);
      assert.notEqual(replay.body.sessionId, login.body.sessionId);
    }

    const devices = [new Browser(apps[0]!.url), new Browser(apps[1]!.url), new Browser(apps[2]!.url)];
    for (const d of devices) await call(d, 'POST', '/api/login', { user: 'grace' });
    const bystander = new Browser(apps[0]!.url);
    await call(bystander, 'POST', '/api/login', { user: 'heidi' });
    const out = await call<{ count: number }>(devices[0]!, 'POST', '/api/logout-everywhere');
    assert.equal(out.body.count, 3);
    for (const d of devices) {
      for (const app of apps) {
        const r = await d.request<{ principal: string | null }>('GET', '/api/session', undefined, {}, app.url);
        assert.equal(r.body.principal, null);
      }
    }
    assert.equal((await call<{ principal: string }>(bystander, 'GET', '/api/session')).body.principal, 'heidi');
  });

  it('200 concurrent increments of one session through 3 processes, 20 in flight -> exactly 200', async () => {
    const b = new Browser(apps[0]!.url);
    await call(b, 'POST', '/api/set', { key: 'n', value: 0 });
    let sent = 0;
    const failures: unknown[] = [];
    const lane = async () => {
      while (sent < 200) {
        sent++;
        const r = await call(b, 'POST', '/api/incr');
        if (r.status !== 200) failures.push(r.body);
      }
    };
    const started = Date.now();
    await Promise.all(Array.from({ length: 20 }, lane));
    const ms = Date.now() - started;
    assert.deepEqual(failures, []);
    const final = await call<{ data: { n: number } }>(b, 'GET', '/api/session');
    assert.equal(final.body.data.n, 200);
    console.log(`# 200 concurrent increments through 3 Express processes (round-robin): exactly 200 in ${ms} ms`);
  });
});

describe('Express without an engine option', () => {
  it('runs on the in-process memory engine and warns once in production, as express-session does for MemoryStore', async () => {
    const app = await startApp('express-app', { NODE_ENV: 'production', KILN_ENGINE: undefined });
    try {
      const b = new Browser(app.url);
      for (let i = 0; i < 3; i++) await b.post('/api/incr');
      assert.equal((await b.get<{ data: { n: number } }>('/api/session')).body.data.n, 3);
      const warnings = app.output().match(/KILN_MEMORY_ENGINE/g) ?? [];
      assert.equal(warnings.length, 1, app.output());
    } finally {
      await app.kill();
    }
  });
});
