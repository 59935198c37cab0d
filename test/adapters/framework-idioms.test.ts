import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { Hono } from 'hono';
import Koa from 'koa';
import { kilnSession as fastifySession } from '../../src/adapters/fastify/index.js';
import { kilnSession as honoSession, type KilnVariables } from '../../src/adapters/hono/index.js';
import { kilnSession as koaSession } from '../../src/adapters/koa/index.js';
import { Browser } from '../helpers/browser.js';

/** Each framework's own idioms keep working with Kiln sessions. */
const cookieOf = (setCookie: string | string[] | undefined) => String(Array.isArray(setCookie) ? setCookie[0] : setCookie).split(';')[0]!;

describe('Fastify idioms', () => {
  it('inject(), @fastify/session-style get/set, regenerate(keep) and delete', async () => {
    const app = Fastify();
    await app.register(fastifySession, { secret: 'a fastify secret of 32 characters or more', cookie: { secure: false } });
    app.post('/visit', async (request) => {
      const visits = (request.session.get<number>('visits') ?? 0) + 1;
      request.session.set('visits', visits);
      return { visits, sessionId: request.session.sessionId };
    });
    app.post('/login', async (request) => {
      request.session.set('secret', 'not kept');
      await request.session.regenerate(['visits']);
      request.session.principal = 'mia';
      return { sessionId: request.session.sessionId };
    });
    app.get('/me', async (request) => ({ visits: request.session.get('visits') ?? null, secret: request.session.get('secret') ?? null, principal: request.session.principal }));
    app.post('/logout', async (request) => {
      await request.session.delete();
      return { session: request.session };
    });

    const first = await app.inject({ method: 'POST', url: '/visit' });
    assert.equal(first.json().visits, 1);
    const cookie = cookieOf(first.headers['set-cookie']);
    assert.match(cookie, /^sessionId=[A-Za-z0-9_-]{43}\./, "@fastify/session's cookie name and unprefixed value by default");
    const second = await app.inject({ method: 'POST', url: '/visit', headers: { cookie } });
    assert.equal(second.json().visits, 2);
    assert.equal(second.json().sessionId, first.json().sessionId);
    const login = await app.inject({ method: 'POST', url: '/login', headers: { cookie } });
    assert.notEqual(login.json().sessionId, first.json().sessionId);
    const newCookie = cookieOf(login.headers['set-cookie']);
    const me = await app.inject({ method: 'GET', url: '/me', headers: { cookie: newCookie } });
    assert.deepEqual(me.json(), { visits: 2, secret: null, principal: 'mia' });
    const out = await app.inject({ method: 'POST', url: '/logout', headers: { cookie: newCookie } });
    assert.equal(out.json().session, null, 'request.session is null after destroy, as with @fastify/session');
    assert.equal((await app.inject({ method: 'GET', url: '/me', headers: { cookie: newCookie } })).json().principal, null);
    assert.equal(typeof app.kiln.stats().counters.commits, 'number', 'the client is decorated on the instance');
    await app.close();
  });
});

describe('Koa idioms', () => {
  async function serve(app: Koa): Promise<{ url: string; close(): void }> {
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
  }

  it('ctx.throw after a change still commits it (as koa-session); ctx.session = null logs out; isNew and maxAge', async () => {
    const app = new Koa();
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        ctx.status = (err as { status: number }).status;
        ctx.body = { code: (err as { code?: string }).code ?? null };
      }
    });
    app.use(koaSession({ secret: 'koa-secret' }));
    app.use((ctx) => {
      const session = (ctx as unknown as { session: Record<string, unknown> & { isNew: boolean; maxAge: number | null } }).session;
      if (ctx.path === '/throw') {
        session['touched'] = true;
        ctx.throw(403, 'nope', { code: 'APP_FORBIDDEN' });
      }
      if (ctx.path === '/remember') session.maxAge = 60_000;
      if (ctx.path === '/logout') (ctx as unknown as { session: null }).session = null;
      ctx.body = { isNew: session?.isNew ?? null, touched: session?.['touched'] ?? null };
    });
    const server = await serve(app);
    try {
      const b = new Browser(server.url);
      const thrown = await b.get('/throw');
      assert.equal(thrown.status, 403);
      assert.equal(thrown.body['code'], 'APP_FORBIDDEN');
      assert.match(thrown.setCookies[0] ?? '', /^koa\.sess=/, "koa-session's cookie name by default");
      const after = await b.get('/');
      assert.deepEqual(after.body, { isNew: false, touched: true });
      const remembered = await b.get('/remember');
      assert.match(remembered.setCookies[0]!, /Max-Age=60;/);
      const old = b.clone();
      const out = await b.get('/logout');
      assert.ok(out.setCookies.some((c) => c.includes('Expires=Thu, 01 Jan 1970')), 'cookie cleared');
      assert.deepEqual((await old.get('/')).body, { isNew: true, touched: null }, 'the session is gone');
    } finally {
      server.close();
    }
  });
});

describe('Hono idioms', () => {
  it('typed context variables and app.request()', async () => {
    const app = new Hono<{ Variables: KilnVariables }>();
    app.use(honoSession({ secret: 'hono-secret' }));
    app.post('/cart/:sku', (c) => {
      const session = c.get('session');
      const cart = (session['cart'] as string[] | undefined) ?? [];
      cart.push(c.req.param('sku'));
      session['cart'] = cart;
      return c.json({ items: cart, sessionId: c.get('sessionId') });
    });
    const first = await app.request('/cart/mug', { method: 'POST' });
    const cookie = cookieOf(first.headers.get('set-cookie') ?? undefined);
    const second = await app.request('/cart/teapot', { method: 'POST', headers: { cookie } });
    const body = (await second.json()) as { items: string[]; sessionId: string };
    assert.deepEqual(body.items, ['mug', 'teapot']);
    assert.equal(body.sessionId, ((await first.json()) as { sessionId: string }).sessionId);
  });
});

describe('cookie options per request on Koa and Hono', () => {
  it('a cookie function gives each request its attributes, and a request outside cookie.path gets no session', async () => {
    const cookie = (req: unknown) => ({ path: '/app', maxAge: String((req as { url?: string }).url ?? '').includes('remember') ? 3_600_000 : 60_000 });
    const koa = new Koa();
    koa.use(koaSession({ secret: 'koa-secret', cookie }));
    koa.use((ctx) => {
      const session = (ctx as unknown as { session: Record<string, unknown> | null }).session;
      if (session) session['n'] = 1;
      ctx.body = { hasSession: session !== undefined && session !== null };
    });
    const hono = new Hono<{ Variables: KilnVariables }>();
    hono.use(honoSession({ secret: 'hono-secret', cookie }));
    hono.all('*', (c) => {
      const session = c.get('session');
      if (session) session['n'] = 1;
      return c.json({ hasSession: session !== undefined });
    });
    const server = koa.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const inside = await fetch(`${base}/app/remember`);
      assert.match(inside.headers.get('set-cookie') ?? '', /Max-Age=3600; Path=\/app/);
      const outside = await fetch(`${base}/elsewhere`);
      assert.equal(outside.headers.get('set-cookie'), null);
      assert.deepEqual(await outside.json(), { hasSession: false });
    } finally {
      server.close();
    }
    const inside = await hono.request('/app/x');
    assert.match(inside.headers.get('set-cookie') ?? '', /Max-Age=60; Path=\/app/);
    const outside = await hono.request('/elsewhere');
    assert.equal(outside.headers.get('set-cookie'), null);
    assert.deepEqual(await outside.json(), { hasSession: false });
  });
});
