import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa3 from 'koa';
import Koa2 from 'koa2';
import koaSession from 'koa-session';
import { kilnSession } from '../../src/adapters/koa/index.js';
import { Client, expiresIn, noSessionCookie, sessionCookie, sleep } from './express-session-harness.js';

/**
 * The cases of the differential suite for Koa (koa-session.test.ts runs them): koa-session (with an external store, so sessions live
 * on the server as with Kiln) and kiln/koa, on Koa 2 and 3, for what docs/frameworks.md
 * says Kiln keeps of koa-session: the cookie name, its lifetime (maxAge) and its refresh
 * on change, `ctx.session = null`, `ctx.session = {…}`, isNew, maxAge, save(),
 * regenerate(), rolling, genid, and changes made before ctx.throw being kept.
 */
export type Impl = 'koa-session' | 'kiln/koa';
const SECRET = 'koa compat secret';
const NAME = 'koa.sess';

type KoaApp = InstanceType<typeof Koa3>;
type Ctx = Parameters<Parameters<KoaApp['use']>[0]>[0];
type Session = Record<string, unknown> & { isNew: boolean; maxAge: number | 'session' | null; save(): Promise<void>; regenerate(): Promise<void> };
const sess = (ctx: Ctx) => (ctx as unknown as { session: Session | null }).session;

/** koa-session's external store: sessions on the server, the cookie carries a key. */
function mapStore() {
  const data = new Map<string, unknown>();
  return {
    get: (key: string) => data.get(key),
    set: (key: string, value: unknown) => void data.set(key, value),
    destroy: (key: string) => void data.delete(key),
  };
}

async function withApp(impl: Impl, koa: 2 | 3, options: Record<string, unknown>, handler: (ctx: Ctx) => unknown, body: (c: Client) => Promise<void>): Promise<void> {
  const Koa = (koa === 2 ? Koa2 : Koa3) as unknown as typeof Koa3;
  const app = new Koa();
  app.keys = [SECRET];
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      ctx.status = (err as { status?: number }).status ?? 500;
      ctx.body = { error: (err as Error).message };
    }
  });
  if (impl === 'koa-session') app.use(koaSession({ store: mapStore(), ...options } as never, app as never) as never);
  else app.use(kilnSession({ secret: SECRET, ...options }));
  app.use(async (ctx) => {
    const result = await handler(ctx);
    if (result !== undefined) ctx.body = result;
  });
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  try {
    await body(new Client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

/** The routes every case serves. */
async function routes(ctx: Ctx): Promise<unknown> {
  const s = sess(ctx);
  switch (ctx.path) {
    case '/incr':
      s!['n'] = ((s!['n'] as number | undefined) ?? 0) + 1;
      return { n: s!['n'], isNew: s!.isNew };
    case '/read':
      return { n: s?.['n'] ?? null, isNew: s?.isNew ?? null, maxAge: s?.maxAge ?? null };
    case '/logout':
      (ctx as unknown as { session: null }).session = null;
      return { ok: true };
    case '/replace':
      (ctx as unknown as { session: unknown }).session = { only: 'this' };
      return { ok: true };
    case '/remember':
      s!['user'] = 'ada';
      s!.maxAge = 60_000;
      return { ok: true };
    case '/save':
      s!['a'] = 1;
      await s!.save();
      s!['b'] = 2;
      return { ok: true };
    case '/regenerate':
      await s!.regenerate();
      return { n: s!['n'] ?? null };
    case '/throw':
      s!['touched'] = true;
      ctx.throw(403, 'nope');
      return undefined;
    case '/slow-add': {
      const list = ((s!['list'] as string[] | undefined) ?? []).slice();
      await sleep(150);
      list.push(String(ctx.query['item']));
      s!['list'] = list;
      return { ok: true };
    }
    case '/list':
      return { list: s!['list'] ?? [] };
    default:
      return { path: ctx.path };
  }
}

export interface Case {
  name: string;
  run(impl: Impl, koa: 2 | 3): Promise<void>;
  kiln?: { why: string; run(impl: Impl, koa: 2 | 3): Promise<void> };
}

export const KOA_CASES: Case[] = [
  {
    name: 'an untouched new session: isNew, no cookie',
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        const r = await c.get('/read');
        assert.equal(r.body['isNew'], true);
        noSessionCookie(r, NAME);
      });
    },
  },
  {
    name: "a change: the 'koa.sess' cookie, a browser-session cookie by default; the next request is not new",
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        const r = await c.get('/incr');
        const sc = sessionCookie(r, NAME);
        assert.equal(sc.attributes['expires'], undefined);
        assert.equal(sc.attributes['httponly'], '');
        const again = await c.get('/incr');
        assert.deepEqual(again.body, { n: 2, isNew: false });
      });
    },
  },
  {
    name: 'a change to an existing session sends the cookie again with a fresh expiry; a read does not',
    async run(impl, koa) {
      await withApp(impl, koa, { maxAge: 60_000 }, routes, async (c) => {
        await c.get('/incr');
        await sleep(2100);
        noSessionCookie(await c.get('/read'), NAME);
        const sc = sessionCookie(await c.get('/incr'), NAME);
        assert.ok(expiresIn(sc) > 58_300, `a fresh expiry: ${expiresIn(sc)}`);
      });
    },
  },
  {
    name: "maxAge: 'session' gives a browser-session cookie",
    async run(impl, koa) {
      await withApp(impl, koa, { maxAge: 'session' }, routes, async (c) => {
        assert.equal(sessionCookie(await c.get('/incr'), NAME).attributes['expires'], undefined);
      });
    },
  },
  {
    name: 'rolling: every response of a stored session carries the cookie',
    async run(impl, koa) {
      await withApp(impl, koa, { rolling: true }, routes, async (c) => {
        await c.get('/incr');
        sessionCookie(await c.get('/read'), NAME);
      });
    },
  },
  {
    name: 'ctx.session = null logs out: the cookie is cleared and the session is gone',
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        await c.get('/incr');
        const old = c.clone();
        const out = await c.get('/logout');
        assert.ok(expiresIn(sessionCookie(out, NAME)) < 0);
        assert.deepEqual((await old.get('/read')).body['n'], null);
      });
    },
  },
  {
    name: 'ctx.session = { … } replaces the session',
    async run(impl, koa) {
      await withApp(impl, koa, {}, async (ctx) => (ctx.path === '/all' ? { only: sess(ctx)!['only'] ?? null, n: sess(ctx)!['n'] ?? null } : routes(ctx)), async (c) => {
        await c.get('/incr');
        await c.get('/replace');
        assert.deepEqual((await c.get('/all')).body, { only: 'this', n: null });
      });
    },
  },
  {
    name: 'ctx.session.maxAge = 60000: the cookie lives a minute, and maxAge reads 60000 on later requests',
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        const sc = sessionCookie(await c.get('/remember'), NAME);
        assert.ok(Math.abs(expiresIn(sc) - 60_000) < 2000, `expires in ${expiresIn(sc)}`);
        assert.equal((await c.get('/read')).body['maxAge'], 60_000);
      });
    },
  },
  {
    name: 'await ctx.session.save() mid-request, then more changes: both stored',
    async run(impl, koa) {
      await withApp(impl, koa, {}, async (ctx) => (ctx.path === '/ab' ? { a: sess(ctx)!['a'] ?? null, b: sess(ctx)!['b'] ?? null } : routes(ctx)), async (c) => {
        await c.get('/save');
        assert.deepEqual((await c.get('/ab')).body, { a: 1, b: 2 });
      });
    },
  },
  {
    name: 'regenerate(): a new id, the data kept',
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        await c.get('/incr');
        const before = c.jar.get(NAME);
        const r = await c.get('/regenerate');
        assert.equal(r.body['n'], 1);
        assert.notEqual(c.jar.get(NAME), before);
        assert.equal((await c.get('/incr')).body['n'], 2);
      });
    },
  },
  {
    name: 'a change made before ctx.throw is kept',
    async run(impl, koa) {
      await withApp(impl, koa, {}, async (ctx) => (ctx.path === '/touched' ? { touched: sess(ctx)!['touched'] ?? null } : routes(ctx)), async (c) => {
        const thrown = await c.get('/throw');
        assert.equal(thrown.status, 403);
        assert.deepEqual((await c.get('/touched')).body, { touched: true });
      });
    },
  },
  {
    name: 'genid(ctx) makes the ids',
    async run(impl, koa) {
      let n = 0;
      const genid = (ctx: Ctx) => `koa-genid-${String(++n).padStart(6, '0')}-${ctx.path.replace(/\W/g, '')}`;
      await withApp(impl, koa, { genid }, async (ctx) => (ctx.path === '/id' ? { id: (ctx as unknown as { sessionId?: string }).sessionId ?? null } : routes(ctx)), async (c) => {
        await c.get('/incr');
        const cookie = decodeURIComponent(c.jar.get(NAME)!);
        assert.match(cookie, /koa-genid-000001-incr/);
      });
    },
  },
  {
    name: "signing: the cookie and a 'koa.sess.sig' cookie signed with app.keys",
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        const r = await c.get('/incr');
        sessionCookie(r, NAME);
        sessionCookie(r, `${NAME}.sig`);
      });
    },
    kiln: {
      why: "one cookie, signed with the `secret` option in express-session's format (`s:<id>.<HMAC>`); Koa's app.keys are not used",
      async run(impl, koa) {
        await withApp(impl, koa, {}, routes, async (c) => {
          const r = await c.get('/incr');
          assert.match(decodeURIComponent(sessionCookie(r, NAME).value), /^s:[A-Za-z0-9_-]{43}\.[A-Za-z0-9+/]{43}$/);
          noSessionCookie(r, `${NAME}.sig`);
        });
      },
    },
  },
  {
    name: 'two concurrent requests on one session: one change is lost',
    async run(impl, koa) {
      await withApp(impl, koa, {}, routes, async (c) => {
        await c.get('/incr');
        await Promise.all([c.get('/slow-add?item=a'), c.get('/slow-add?item=b')]);
        assert.equal(((await c.get('/list')).body['list'] as string[]).length, 1);
      });
    },
    kiln: {
      why: 'requests on one session run one after another (the session lease): no change is lost',
      async run(impl, koa) {
        await withApp(impl, koa, {}, routes, async (c) => {
          await c.get('/incr');
          await Promise.all([c.get('/slow-add?item=a'), c.get('/slow-add?item=b')]);
          assert.deepEqual(((await c.get('/list')).body['list'] as string[]).sort(), ['a', 'b']);
        });
      },
    },
  },
];

