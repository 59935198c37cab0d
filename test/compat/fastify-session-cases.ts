import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { kilnSession } from '../../src/adapters/fastify/index.js';
import { Client, HTTPS, expiresIn, noSessionCookie, sessionCookie, sleep } from './express-session-harness.js';

/**
 * The cases of the differential suite for Fastify (fastify-session.test.ts runs them): the same cases against @fastify/session (with
 * @fastify/cookie and its MemoryStore, the yardstick) and kiln/fastify, over real HTTP on
 * loopback. As in the express-session suite, a deliberate difference asserts that the
 * yardstick's behaviour does not hold for Kiln and what Kiln does instead.
 */
export type Impl = '@fastify/session' | 'kiln/fastify';
export const IMPLS: Impl[] = ['@fastify/session', 'kiln/fastify'];
const require = createRequire(import.meta.url);
// Loaded untyped: @fastify/session's declarations of request.session would clash with kiln/fastify's.
const fastifyCookie = require('@fastify/cookie') as { default: unknown; Signer: new (secrets: string | string[], algorithm?: string) => { sign(v: string): string; unsign(v: string): { valid: boolean; renew: boolean; value: string | null } } };
const fastifySession = require('@fastify/session') as { default: unknown; MemoryStore: new () => unknown };

const SECRET = 'a secret of thirty-two characters or more, for the compat suite';
const BASE = { secret: SECRET, saveUninitialized: false, cookie: { secure: false } } as Record<string, unknown>;
export const NAME = 'sessionId';

type Session = Record<string, unknown> & {
  get(k: string): unknown;
  set(k: string, v: unknown): void;
  save(cb?: (err?: unknown) => void): Promise<void> | void;
  reload(cb?: (err?: unknown) => void): Promise<void> | void;
  regenerate(keys?: string[] | ((err?: unknown) => void), cb?: (err?: unknown) => void): Promise<void> | void;
  destroy(cb?: (err?: unknown) => void): Promise<void> | void;
  touch(): void;
  options(o: Record<string, unknown>): void;
  isModified(): boolean;
  isSaved(): boolean;
  sessionId: string;
  cookie: { maxAge: number | null; expires: Date | null; originalMaxAge: number | null; secure?: unknown };
};
export const sess = (request: FastifyRequest) => (request as unknown as { session: Session }).session;

interface Served {
  url: string;
  app: FastifyInstance;
  errors: unknown[];
  close(): Promise<void>;
}

async function serve(impl: Impl, options: Record<string, unknown>, routes: (app: FastifyInstance) => void): Promise<Served> {
  const app = Fastify({ trustProxy: '127.0.0.1' });
  await app.register(fastifyCookie.default as never);
  const merged = { ...BASE, ...options };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  await app.register((impl === 'kiln/fastify' ? kilnSession : fastifySession.default) as never, merged as never);
  const errors: unknown[] = [];
  app.setErrorHandler((err, _request, reply) => {
    errors.push(err);
    void reply.status((err as { statusCode?: number }).statusCode ?? 500).type('text/plain').send(String((err as { code?: string }).code ?? (err as Error).message));
  });
  app.get('/s', async (request) => {
    const s = sess(request);
    return { id: s?.sessionId ?? null, n: s?.get?.('n') ?? null, keys: s ? Object.keys(JSON.parse(JSON.stringify(s)) as object).filter((k) => k !== 'cookie').sort() : null, maxAge: s?.cookie?.maxAge ?? null };
  });
  app.post('/incr', async (request) => {
    const s = sess(request);
    s.set('n', ((s.get('n') as number | undefined) ?? 0) + 1);
    return { n: s.get('n'), id: s.sessionId };
  });
  app.get('/list', async (request) => ({ list: sess(request).get('list') ?? [] }));
  routes(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address() as { port: number };
  return { url: `http://127.0.0.1:${address.port}`, app, errors, close: () => app.close() };
}

export async function withApp(impl: Impl, options: Record<string, unknown>, routes: (app: FastifyInstance) => void, body: (s: Served, c: Client) => Promise<void>): Promise<void> {
  const s = await serve(impl, options, routes);
  try {
    await body(s, new Client(s.url));
  } finally {
    await s.close();
  }
}

const none = () => undefined;

export interface Case {
  area: string;
  name: string;
  run(impl: Impl): Promise<void>;
  kiln?: { why: string; run(impl: Impl): Promise<void> };
}

export const FASTIFY_CASES: Case[] = [
  {
    area: 'defaults',
    name: "cookie 'sessionId', value `<id>.<signature>` without prefix, HttpOnly, Path=/",
    async run(impl) {
      await withApp(impl, {}, none, async (_s, c) => {
        const r = await c.post('/incr');
        const sc = sessionCookie(r, NAME);
        assert.match(decodeURIComponent(sc.value), /^[^:]+\.[A-Za-z0-9+/]+$/);
        assert.equal(decodeURIComponent(sc.value).split('.')[0], r.body['id']);
        assert.equal(sc.attributes['httponly'], '');
        assert.equal(sc.attributes['path'], '/');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'defaults',
    name: 'cookie.secure defaults to true: a Secure cookie through a trusted TLS terminator',
    async run(impl) {
      await withApp(impl, { cookie: {} }, none, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/incr', {}, HTTPS), NAME).attributes['secure'], '');
      });
    },
  },
  {
    area: 'defaults',
    name: 'rolling defaults to true: every response of a stored session carries the cookie with a fresh expiry',
    async run(impl) {
      await withApp(impl, { cookie: { secure: false, maxAge: 60_000 } }, none, async (_s, c) => {
        sessionCookie(await c.post('/incr'), NAME);
        await sleep(2100);
        const read = sessionCookie(await c.get('/s'), NAME);
        assert.ok(expiresIn(read) > 58_300, `a fresh expiry: ${expiresIn(read)}`);
      });
    },
  },
  {
    area: 'saveUninitialized',
    name: 'saveUninitialized omitted: an untouched new session is stored and sent',
    async run(impl) {
      await withApp(impl, { saveUninitialized: undefined }, none, async (_s, c) => {
        sessionCookie(await c.get('/s'), NAME);
      });
    },
    kiln: {
      why: 'saveUninitialized defaults to false, as everywhere in Kiln: an untouched session is neither stored nor sent',
      async run(impl) {
        await withApp(impl, { saveUninitialized: undefined }, none, async (_s, c) => {
          noSessionCookie(await c.get('/s'), NAME);
        });
      },
    },
  },
  {
    area: 'secret',
    name: 'a string secret shorter than 32 characters is refused; an array, or a signer object, is taken',
    async run(impl) {
      await assert.rejects(withApp(impl, { secret: 'short' }, none, async () => undefined), /32/);
      await withApp(impl, { secret: ['short-but-in-an-array', 'old-one'] }, none, async (_s, c) => {
        await c.post('/incr');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
      const signer = new fastifyCookie.Signer(SECRET, 'sha512');
      await withApp(impl, { secret: signer }, none, async (_s, c) => {
        const r = await c.post('/incr');
        const value = decodeURIComponent(sessionCookie(r, NAME).value);
        assert.equal(signer.unsign(value).value, r.body['id'], 'the application signer signed it');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'secret',
    name: 'algorithm picks the HMAC; cookiePrefix goes in front of the signed value',
    async run(impl) {
      await withApp(impl, { algorithm: 'sha512', cookiePrefix: 's:' }, none, async (_s, c) => {
        const r = await c.post('/incr');
        const value = decodeURIComponent(sessionCookie(r, NAME).value);
        assert.ok(value.startsWith('s:'));
        assert.equal(new fastifyCookie.Signer(SECRET, 'sha512').unsign(value.slice(2)).value, r.body['id']);
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'cookieName',
    name: 'cookieName names the cookie',
    async run(impl) {
      await withApp(impl, { cookieName: 'sid' }, none, async (_s, c) => {
        sessionCookie(await c.post('/incr'), 'sid');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'idGenerator',
    name: 'idGenerator(request) makes new ids and regenerated ones, given the Fastify request',
    async run(impl) {
      let n = 0;
      const idGenerator = (request: FastifyRequest) => `generated${String(++n).padStart(8, '0')}${typeof request.routeOptions === 'object' ? 'fastify' : 'raw'}${request.url.replace(/\W/g, '')}`;
      const routes = (app: FastifyInstance) =>
        app.post('/login', async (request) => {
          await sess(request).regenerate();
          sess(request).set('user', 'ada');
          return { id: sess(request).sessionId };
        });
      await withApp(impl, { idGenerator }, routes, async (_s, c) => {
        const first = await c.post('/incr');
        assert.match(String(first.body['id']), /^generated\d{8}fastifyincr$/);
        const login = await c.post('/login');
        assert.match(String(login.body['id']), /^generated\d{8}fastifylogin$/);
        assert.equal(decodeURIComponent(sessionCookie(login, NAME).value).split('.')[0], login.body['id']);
      });
    },
  },
  {
    area: 'save',
    name: 'save() not awaited, then the reply: 200, the change stored once',
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.post('/fire', (request, reply) => {
          const s = sess(request);
          s.set('test', ((s.get('test') as number | undefined) ?? 0) + 1);
          void s.save(() => undefined);
          void reply.send('ok');
        });
      await withApp(impl, {}, routes, async (s, c) => {
        const first = await c.post('/fire');
        assert.equal(first.status, 200);
        sessionCookie(first, NAME);
        assert.equal((await c.post('/fire')).status, 200);
        await sleep(20);
        const keys = (await c.get('/s')).body;
        assert.deepEqual(keys['keys'], ['test']);
        assert.deepEqual(s.errors, []);
      });
    },
  },
  {
    area: 'dead cookie',
    name: 'a validly signed cookie for a session that no longer exists is cleared',
    async run(impl) {
      const replay = await replayAfterDestroy(impl);
      const cleared = sessionCookie(replay, NAME);
      assert.ok(cleared.value === '' && (cleared.attributes['max-age'] === '0' || expiresIn(cleared) < 0), JSON.stringify(cleared));
    },
    kiln: {
      why: 'a dead cookie is left alone (as express-session does): a request still in flight with the cookie of the session a login just replaced would otherwise clear the new cookie and log the user out; the next stored change replaces it',
      async run(impl) {
        noSessionCookie(await replayAfterDestroy(impl), NAME);
      },
    },
  },
  {
    area: 'Set-Cookie',
    name: "reply.setCookie() and reply.header('set-cookie') beside a session change: each cookie sent once",
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.post('/theme', (request, reply) => {
          sess(request).set('theme', 'dark');
          void (reply as FastifyReply & { setCookie(n: string, v: string): FastifyReply }).setCookie('theme', 'dark');
          void reply.header('set-cookie', 'lang=en; Path=/');
          void reply.send('ok');
        });
      await withApp(impl, {}, routes, async (_s, c) => {
        const r = await c.post('/theme');
        assert.equal(r.setCookies.filter((l) => l.startsWith('theme=')).length, 1, JSON.stringify(r.setCookies));
        assert.equal(r.setCookies.filter((l) => l.startsWith('lang=')).length, 1, JSON.stringify(r.setCookies));
        sessionCookie(r, NAME);
      });
    },
  },
  {
    area: 'cookie',
    name: "secure: 'auto' with sameSite: 'none' over plain HTTP: SameSite=Lax, not Secure; over HTTPS: None and Secure",
    async run(impl) {
      await withApp(impl, { cookie: { secure: 'auto', sameSite: 'none' } }, none, async (_s, c) => {
        const plain = sessionCookie(await c.post('/incr'), NAME);
        assert.equal(plain.attributes['samesite'], 'Lax');
        assert.equal(plain.attributes['secure'], undefined);
        const tls = new Client(c.base);
        const secure = sessionCookie(await tls.post('/incr', {}, HTTPS), NAME);
        assert.equal(secure.attributes['samesite'], 'None');
        assert.equal(secure.attributes['secure'], '');
      });
    },
  },
  {
    area: 'cookie',
    name: "secure: 'true' (a string) is read as true: Secure (and Partitioned kept) over HTTPS",
    async run(impl) {
      await withApp(impl, { cookie: { secure: 'true', partitioned: true } }, none, async (_s, c) => {
        const sc = sessionCookie(await c.post('/incr', {}, HTTPS), NAME);
        assert.equal(sc.attributes['secure'], '');
        assert.equal(sc.attributes['partitioned'], '');
      });
    },
  },
  {
    area: 'cookie',
    name: "secure: 'true' (a string) on a plain HTTP request: the cookie is sent with Secure all the same (the browser drops it)",
    async run(impl) {
      await withApp(impl, { cookie: { secure: 'true' } }, none, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/incr'), NAME).attributes['secure'], '');
      });
    },
    kiln: {
      why: "'true' is true: a Secure cookie is never sent over plain HTTP (a browser would drop it), as with secure: true",
      async run(impl) {
        await withApp(impl, { cookie: { secure: 'true' } }, none, async (_s, c) => {
          noSessionCookie(await c.post('/incr'), NAME);
        });
      },
    },
  },
  {
    area: 'cookie',
    name: 'cookie.path: a request outside it gets an empty session and no cookie',
    async run(impl) {
      const routes = (app: FastifyInstance) => {
        app.post('/app/incr', async (request) => {
          const s = sess(request);
          s.set('n', ((s.get('n') as number | undefined) ?? 0) + 1);
          return { n: s.get('n') };
        });
        app.get('/outside', async (request) => ({ session: JSON.stringify(sess(request)) }));
      };
      await withApp(impl, { cookie: { secure: false, path: '/app' } }, routes, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/app/incr'), NAME).attributes['path'], '/app');
        const outside = await c.get('/outside');
        assert.equal(outside.body['session'], '{}');
        noSessionCookie(outside, NAME);
      });
    },
  },
  {
    area: 'session.options',
    name: 'session.options({ maxAge }) sets this response’s cookie lifetime',
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.post('/remember', async (request) => {
          sess(request).set('user', 'ada');
          sess(request).options({ maxAge: 3_600_000 });
          return {};
        });
      await withApp(impl, {}, routes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/remember'), NAME);
        assert.ok(Math.abs(expiresIn(sc) - 3_600_000) < 5000, `expires in ${expiresIn(sc)}`);
      });
    },
  },
  {
    area: 'isModified / isSaved',
    name: 'isModified() after a change; isSaved() after save()',
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.post('/state', async (request) => {
          const s = sess(request);
          const before = s.isModified();
          s.set('x', 1);
          const modified = s.isModified();
          const savedBefore = s.isSaved();
          await s.save();
          return { before, modified, savedBefore, saved: s.isSaved() };
        });
      await withApp(impl, {}, routes, async (_s, c) => {
        await c.post('/incr');
        assert.deepEqual((await c.post('/state')).body, { before: false, modified: true, savedBefore: false, saved: true });
      });
    },
  },
  {
    area: 'touch',
    name: "touch() restarts the cookie's expiry from its original maxAge",
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.get('/touch', async (request) => {
          sess(request).touch();
          return { after: sess(request).cookie.maxAge };
        });
      await withApp(impl, { rolling: false, cookie: { secure: false, maxAge: 60_000 } }, routes, async (_s, c) => {
        await c.post('/incr');
        await sleep(1100);
        const after = (await c.get('/touch')).body['after'] as number;
        assert.ok(after > 59_500, `restarted: ${after}`);
      });
    },
  },
  {
    area: 'cookie.maxAge',
    name: "a stored session's cookie.maxAge starts each request at the full original maxAge",
    async run(impl) {
      await withApp(impl, { rolling: false, cookie: { secure: false, maxAge: 60_000 } }, none, async (_s, c) => {
        await c.post('/incr');
        await sleep(1100);
        assert.ok(((await c.get('/s')).body['maxAge'] as number) > 59_500);
      });
    },
    kiln: {
      why: "cookie.maxAge counts down from when the cookie was last sent: the browser's copy expires then",
      async run(impl) {
        await withApp(impl, { rolling: false, cookie: { secure: false, maxAge: 60_000 } }, none, async (_s, c) => {
          await c.post('/incr');
          await sleep(1100);
          const left = (await c.get('/s')).body['maxAge'] as number;
          assert.ok(left < 59_200 && left > 57_000, `${left}`);
        });
      },
    },
  },
  {
    area: 'secret',
    name: 'an array secret is read live: a secret added to it later verifies cookies signed with it',
    async run(impl) {
      const secrets = ['first-secret-of-the-array'];
      await withApp(impl, { secret: secrets }, none, async (_s, c) => {
        const r = await c.post('/incr');
        const id = String(r.body['id']);
        const other = new fastifyCookie.Signer('added-later-secret', 'sha256');
        secrets.push('added-later-secret');
        c.jar.set(NAME, encodeURIComponent(other.sign(id)));
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
    kiln: {
      why: 'the secrets are read once, at start-up (verified cookies are remembered): rotate by restarting with the new list',
      async run(impl) {
        const secrets = ['first-secret-of-the-array'];
        await withApp(impl, { secret: secrets }, none, async (_s, c) => {
          const r = await c.post('/incr');
          const id = String(r.body['id']);
          secrets.push('added-later-secret');
          c.jar.set(NAME, encodeURIComponent(new fastifyCookie.Signer('added-later-secret', 'sha256').sign(id)));
          assert.equal((await c.post('/incr')).body['n'], 1, 'a fresh session');
        });
      },
    },
  },
  {
    area: 'reload',
    name: 'reload(callback) calls back with null and drops unsaved changes',
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.post('/reload', (request, reply) => {
          sess(request).set('n', 100);
          void sess(request).reload((err) => {
            void reply.send({ err: err === null ? 'null' : String(err), n: sess(request).get('n') });
          });
        });
      await withApp(impl, {}, routes, async (_s, c) => {
        await c.post('/incr');
        assert.deepEqual((await c.post('/reload')).body, { err: 'null', n: 1 });
      });
    },
  },
  {
    area: 'regenerate / destroy',
    name: 'regenerate(keys) keeps the named fields under a new id; destroy() leaves request.session null',
    async run(impl) {
      const routes = (app: FastifyInstance) => {
        app.post('/login', async (request) => {
          sess(request).set('secret', 'not kept');
          await sess(request).regenerate(['n']);
          return { id: sess(request).sessionId, n: sess(request).get('n') ?? null, secret: sess(request).get('secret') ?? null };
        });
        app.post('/logout', async (request) => {
          await sess(request).destroy();
          return { session: (request as unknown as { session: unknown }).session };
        });
      };
      await withApp(impl, {}, routes, async (_s, c) => {
        const first = await c.post('/incr');
        const login = await c.post('/login');
        assert.notEqual(login.body['id'], first.body['id']);
        assert.equal(login.body['n'], 1);
        assert.equal(login.body['secret'], null);
        assert.equal((await c.post('/logout')).body['session'], null);
      });
    },
  },
  {
    area: 'decryptSession',
    name: 'fastify.decryptSession(cookieValue, request, callback) loads the session a cookie names',
    async run(impl) {
      const routes = (app: FastifyInstance) =>
        app.post('/peek', (request, reply) => {
          const holder = {} as { session?: Session };
          const value = String((request.body as { cookie: string }).cookie);
          (app as unknown as { decryptSession(v: string, r: object, cb: (err?: unknown) => void): void }).decryptSession(value, holder, (err) => {
            void reply.send({ err: err ? String(err) : null, n: holder.session?.get('n') ?? null });
          });
        });
      await withApp(impl, {}, routes, async (_s, c) => {
        await c.post('/incr');
        const cookie = decodeURIComponent(c.jar.get(NAME)!);
        const peek = await new Client(c.base).post('/peek', { cookie });
        assert.deepEqual(peek.body, { err: null, n: 1 });
      });
    },
  },
  {
    area: 'store',
    name: 'store: an express-session-style store; request.sessionStore is it',
    async run(impl) {
      const store = new fastifySession.MemoryStore();
      const routes = (app: FastifyInstance) => app.get('/store', async (request) => ({ same: (request as unknown as { sessionStore: unknown }).sessionStore === store }));
      await withApp(impl, { store }, routes, async (_s, c) => {
        assert.equal((await c.get('/store')).body['same'], true);
      });
    },
    kiln: {
      why: '`store` is refused with a message naming `engine` (Kiln is the store); request.sessionStore is the Kiln client (fastify.kiln), not a Store',
      async run(impl) {
        await assert.rejects(withApp(impl, { store: new fastifySession.MemoryStore() }, none, async () => undefined), (err: Error) => /engine/.test(err.message) && /Fastify/.test(err.message));
        const routes = (app: FastifyInstance) => app.get('/store', async (request) => ({ same: (request as unknown as { sessionStore: unknown }).sessionStore === (app as unknown as { kiln: unknown }).kiln }));
        await withApp(impl, {}, routes, async (_s, c) => {
          assert.equal((await c.get('/store')).body['same'], true);
        });
      },
    },
  },
  {
    area: 'concurrency',
    name: 'two concurrent requests on one session: the last write wins, one change is lost',
    async run(impl) {
      const listed = await concurrentAdds(impl);
      assert.equal(listed.length, 1, JSON.stringify(listed));
    },
    kiln: {
      why: 'requests on one session run one after another (the session lease): no change is lost',
      async run(impl) {
        assert.deepEqual((await concurrentAdds(impl)).sort(), ['a', 'b']);
      },
    },
  },
];

/** Two slow requests on one session each add an item to `list`: what the list holds after. */
async function concurrentAdds(impl: Impl): Promise<string[]> {
  const routes = (app: FastifyInstance) =>
    app.post('/slow-add', async (request) => {
      const list = ((sess(request).get('list') as string[] | undefined) ?? []).slice();
      await sleep(150);
      list.push(String((request.body as { item: string }).item));
      sess(request).set('list', list);
      return {};
    });
  let list: string[] = [];
  await withApp(impl, {}, routes, async (_s, c) => {
    await c.post('/incr');
    await Promise.all([c.post('/slow-add', { item: 'a' }), c.post('/slow-add', { item: 'b' })]);
    list = (await c.get('/list')).body['list'] as string[];
  });
  return list;
}


/** A session is made, its cookie kept, then it is destroyed: the reply to the kept cookie's next request. */
async function replayAfterDestroy(impl: Impl) {
  const routes = (app: FastifyInstance) =>
    app.post('/logout', async (request) => {
      await sess(request).destroy();
      return { ok: true };
    });
  let replay: Awaited<ReturnType<Client['get']>> | undefined;
  await withApp(impl, {}, routes, async (_s, c) => {
    await c.post('/incr');
    const old = c.clone();
    await c.post('/logout');
    replay = await old.get('/s');
  });
  return replay!;
}
