import assert from 'node:assert/strict';
import type { Express, Request } from 'express';
import { signValue } from '../../src/adapters/core/cookies.js';
import { Client, HTTPS, expiresIn, noSessionCookie, sess, sessionCookie, sleep, standardRoutes, withApp, type Case, type Reply, type SessionOptions, type Target } from './express-session-harness.js';

/**
 * express-session's documented behaviour, one case each: every option of its README,
 * every req.session method, cookie attributes and when Set-Cookie is sent, and what an
 * application can do to a response. The same cases run against express-session itself,
 * express-session with KilnStore, and kiln/express (test/compat/express-session.test.ts).
 */
const DAY = 86_400_000;
const KILN = 'kiln/express' as const;

const idOf = (setCookie: string) => decodeURIComponent(setCookie).replace(/^s:/, '').replace(/\.[^.]+$/, '');

/**
 * express-session computes originalMaxAge as expires − Date.now() right after setting
 * expires from another Date.now(): a millisecond may pass between the two (seen in full
 * runs on the incumbent's side, in two cases).
 */
function assertOriginalMaxAge(actual: number, expected: number): void {
  assert.ok(actual === expected || actual === expected - 1, `originalMaxAge ${actual}, expected ${expected}`);
}

export const CASES: Case[] = [
  // ---- when a session is stored and a cookie sent
  {
    area: 'saveUninitialized',
    name: 'saveUninitialized false: a new session that stays empty is neither stored nor sent',
    async run(t) {
      await withApp(t, {}, standardRoutes, async (_s, c) => {
        const r = await c.get('/s');
        assert.equal(r.status, 200);
        noSessionCookie(r);
        assert.equal(typeof r.body['id'], 'string', 'req.sessionID is set all the same');
        assert.equal(r.body['sameId'], true, 'req.session.id is req.sessionID');
      });
    },
  },
  {
    area: 'saveUninitialized',
    name: 'saveUninitialized true: a new empty session is stored and its cookie sent',
    async run(t) {
      await withApp(t, { saveUninitialized: true }, standardRoutes, async (_s, c) => {
        const first = await c.get('/s');
        const cookie = sessionCookie(first);
        assert.equal(idOf(cookie.value), first.body['id']);
        const again = await c.get('/s');
        assert.equal(again.body['id'], first.body['id'], 'the stored session is found again');
        noSessionCookie(again);
      });
    },
  },
  {
    area: 'saveUninitialized',
    name: 'saveUninitialized omitted: defaults to true (with a deprecation warning)',
    async run(t) {
      await withApp(t, { saveUninitialized: undefined }, standardRoutes, async (_s, c) => {
        sessionCookie(await c.get('/s'));
      });
    },
    differs: {
      [KILN]: {
        why: 'saveUninitialized defaults to false: an empty session is not stored (no store write, no cookie, no tracking before consent)',
        async run(t) {
          await withApp(t, { saveUninitialized: undefined }, standardRoutes, async (_s, c) => {
            noSessionCookie(await c.get('/s'));
          });
        },
      },
    },
  },
  {
    area: 'Set-Cookie',
    name: 'a change to a new session sends a signed cookie, HttpOnly, Path=/, no Expires by default',
    async run(t) {
      await withApp(t, {}, standardRoutes, async (_s, c) => {
        const r = await c.post('/incr');
        const cookie = sessionCookie(r);
        assert.match(decodeURIComponent(cookie.value), /^s:.+\..+$/);
        assert.equal(idOf(cookie.value), r.body['id']);
        assert.equal(cookie.attributes['httponly'], '');
        assert.equal(cookie.attributes['path'], '/');
        assert.equal(cookie.attributes['expires'], undefined, 'a browser-session cookie');
        assert.equal(cookie.attributes['secure'], undefined);
        assert.equal(cookie.attributes['samesite'], undefined);
        const again = await c.post('/incr');
        assert.equal(again.body['n'], 2);
        noSessionCookie(again, 'connect.sid');
      });
    },
    differs: {
      [KILN]: {
        why: 'SameSite=Lax is the default (express-session sends no SameSite); set cookie.sameSite: false for none',
        async run(t) {
          await withApp(t, {}, standardRoutes, async (_s, c) => {
            const r = await c.post('/incr');
            const cookie = sessionCookie(r);
            assert.equal(idOf(cookie.value), r.body['id']);
            assert.equal(cookie.attributes['samesite'], 'Lax');
            assert.equal(cookie.attributes['expires'], undefined);
            noSessionCookie(await c.post('/incr'));
          });
          await withApp(t, { cookie: { sameSite: false } }, standardRoutes, async (_s, c) => {
            assert.equal(sessionCookie(await c.post('/incr')).attributes['samesite'], undefined);
          });
        },
      },
    },
  },
  {
    area: 'Set-Cookie',
    name: 'cookie.maxAge: the cookie carries its expiry as Expires alone (no Max-Age)',
    async run(t) {
      await withApp(t, { cookie: { maxAge: 60_000 } }, standardRoutes, async (_s, c) => {
        const cookie = sessionCookie(await c.post('/incr'));
        assert.ok(cookie.attributes['expires']);
        assert.equal(cookie.attributes['max-age'], undefined);
      });
    },
    differs: {
      [KILN]: {
        why: 'the cookie carries Max-Age beside Expires (the same expiry, in seconds; browsers prefer Max-Age), so a client whose clock is off still keeps it for its lifetime',
        async run(t) {
          await withApp(t, { cookie: { maxAge: 60_000 } }, standardRoutes, async (_s, c) => {
            const cookie = sessionCookie(await c.post('/incr'));
            assert.ok(Math.abs(expiresIn(cookie) - 60_000) < 2_000);
            assert.equal(cookie.attributes['max-age'], '60');
          });
        },
      },
    },
  },
  {
    area: 'Set-Cookie',
    name: 'cookie.maxAge: a modified session is sent again with a fresh Expires, so an active user is never logged out at creation + maxAge',
    async run(t) {
      // Expires has whole seconds: the margins below allow for that and for a slow machine.
      await withApp(t, { cookie: { maxAge: 4000 } }, standardRoutes, async (_s, c) => {
        const first = sessionCookie(await c.post('/incr'));
        assert.ok(Math.abs(expiresIn(first) - 4000) < 1500);
        await sleep(1500);
        const second = sessionCookie(await c.post('/incr'));
        assert.ok(expiresIn(second) > 2700, `the expiry moved on: ${expiresIn(second)} ms left`);
        assert.equal(second.value, first.value, 'the same id');
        const read = await c.get('/s');
        noSessionCookie(read);
        assert.ok((read.body['maxAge'] as number) > 2700, `req.session.cookie.maxAge counts from the last save: ${String(read.body['maxAge'])}`);
        await sleep(2700);
        // Past creation + maxAge, but within the refreshed expiry: still the same session.
        const later = await c.post('/incr');
        assert.equal(later.body['n'], 3);
      });
    },
  },
  {
    area: 'Set-Cookie',
    name: 'cookie.maxAge: an unmodified session sends no cookie',
    async run(t) {
      await withApp(t, { cookie: { maxAge: DAY } }, standardRoutes, async (_s, c) => {
        sessionCookie(await c.post('/incr'));
        noSessionCookie(await c.get('/s'));
      });
    },
  },
  {
    area: 'rolling',
    name: 'rolling: every response carries the cookie with a fresh Expires',
    async run(t) {
      await withApp(t, { rolling: true, cookie: { maxAge: 60_000 } }, standardRoutes, async (_s, c) => {
        sessionCookie(await c.post('/incr'));
        await sleep(2100);
        // Not rolled, it would expire within 57.9 s (Expires has whole seconds).
        const read = sessionCookie(await c.get('/s'));
        assert.ok(expiresIn(read) > 58_300, `a fresh expiry: ${expiresIn(read)} ms left`);
      });
    },
  },
  {
    area: 'rolling',
    name: 'rolling with an uninitialized session and saveUninitialized false: no cookie',
    async run(t) {
      await withApp(t, { rolling: true, cookie: { maxAge: 5000 } }, standardRoutes, async (_s, c) => {
        noSessionCookie(await c.get('/s'));
      });
    },
  },
  // ---- cookie options
  {
    area: 'cookie',
    name: 'cookie.domain, path, httpOnly false, sameSite strict, priority and partitioned appear on the cookie',
    async run(t) {
      const cookie = { domain: 'example.test', path: '/', httpOnly: false, sameSite: 'strict', priority: 'high', partitioned: true, secure: true };
      await withApp(t, { cookie }, standardRoutes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/incr', {}, HTTPS));
        assert.equal(sc.attributes['domain'], 'example.test');
        assert.equal(sc.attributes['httponly'], undefined);
        assert.equal(sc.attributes['samesite'], 'Strict');
        assert.equal(sc.attributes['priority'], 'High');
        assert.equal(sc.attributes['partitioned'], '');
        assert.equal(sc.attributes['secure'], '');
      });
    },
  },
  {
    area: 'cookie',
    name: 'cookie.expires as a Date sets the expiry',
    async run(t) {
      const expires = new Date(Date.now() + 3_600_000);
      await withApp(t, { cookie: { expires } }, standardRoutes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/incr'));
        assert.ok(Math.abs(new Date(sc.attributes['expires']!).getTime() - expires.getTime()) < 2000);
      });
    },
  },
  {
    area: 'resave',
    name: 'resave: true writes back an unchanged session: a slow request that only read it undoes a change made meanwhile',
    async run(t) {
      assert.equal(await changeDuringSlowRead(t, { resave: true }), 1, 'the change was undone');
    },
    differs: {
      [KILN]: {
        why: 'resave is accepted and has no effect: only changes are written, and a request that only read the session writes nothing',
        async run(t) {
          assert.equal(await changeDuringSlowRead(t, { resave: true }), 2);
        },
      },
    },
  },
  {
    area: 'cookie',
    name: 'cookie as a function of the request',
    async run(t) {
      const cookie = (req: Request) => ({ maxAge: req.headers['x-remember'] ? 60_000 : 10_000 });
      await withApp(t, { cookie }, standardRoutes, async (_s, c) => {
        assert.ok(expiresIn(sessionCookie(await c.post('/incr'))) < 11_000);
        const other = c.clone();
        other.jar.clear();
        assert.ok(expiresIn(sessionCookie(await other.post('/incr', {}, { 'x-remember': '1' }))) > 50_000);
      });
    },
  },
  {
    area: 'cookie',
    name: 'cookie.path: requests outside it get no req.session and no cookie',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/app/incr', (req, res) => {
          const s = sess(req)!;
          s['n'] = ((s['n'] as number | undefined) ?? 0) + 1;
          res.json({ n: s['n'] });
        });
        app.get('/outside', (req, res) => res.json({ hasSession: sess(req) !== undefined, id: req.sessionID ?? null }));
      };
      await withApp(t, { cookie: { path: '/app' } }, routes, async (_s, c) => {
        const inside = await c.post('/app/incr');
        assert.equal(sessionCookie(inside).attributes['path'], '/app');
        const outside = await c.get('/outside');
        assert.deepEqual(outside.body, { hasSession: false, id: null });
        noSessionCookie(outside);
      });
    },
  },
  {
    area: 'cookie',
    name: 'req.session.cookie.maxAge set in a handler ("remember me") is sent and kept',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/remember', (req, res) => {
          const s = sess(req)!;
          s['user'] = 'ada';
          s.cookie.maxAge = 30 * DAY;
          res.json({});
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/remember'));
        assert.ok(Math.abs(expiresIn(sc) - 30 * DAY) < 5000);
        const read = await c.get('/s');
        assert.ok(Math.abs((read.body['maxAge'] as number) - 30 * DAY) < 5000);
        assertOriginalMaxAge((read.body['session'] as { cookie: { originalMaxAge: number } }).cookie.originalMaxAge, 30 * DAY);
      });
    },
  },
  {
    area: 'cookie',
    name: 'req.session.cookie.expires = null once: a browser-session cookie, not sent again on later requests',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/forget', (req, res) => {
          const s = sess(req)!;
          s['user'] = 'ada';
          s.cookie.expires = null;
          res.json({});
        });
      };
      await withApp(t, { cookie: { maxAge: DAY } }, routes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/forget'));
        assert.equal(sc.attributes['expires'], undefined);
        noSessionCookie(await c.get('/s'));
        noSessionCookie(await c.get('/s'));
        const read = await c.get('/s');
        assert.equal(read.body['maxAge'], null);
      });
    },
  },
  {
    area: 'cookie',
    name: 'an invalid cookie.expires set in a handler: the error goes to next() and no cookie is sent',
    async run(t) {
      const routes = (app: Express) => {
        app.post('/bad', (req, res) => {
          const s = sess(req)!;
          s['user'] = 'ada';
          s.cookie.expires = new Date('not a date');
          res.json({ ok: true });
        });
      };
      await withApp(t, {}, routes, async (s, c) => {
        const r = await c.post('/bad').catch((err: unknown) => ({ failed: err }));
        if (!('failed' in r)) noSessionCookie(r);
        await sleep(50);
        assert.equal(s.errors.length, 1, 'one error reached the error handler');
      });
    },
  },
  // ---- secure cookies and proxies
  {
    area: 'cookie.secure',
    name: 'secure: true over plain HTTP sends no cookie; through a trusted TLS terminator it is Secure',
    async run(t) {
      await withApp(t, { cookie: { secure: true } }, standardRoutes, async (_s, c) => {
        noSessionCookie(await c.post('/incr'));
        const other = new Client(c.base);
        assert.equal(sessionCookie(await other.post('/incr', {}, HTTPS)).attributes['secure'], '');
      });
    },
  },
  {
    area: 'cookie.secure',
    name: "secure: any other truthy value ('yes') counts as true",
    async run(t) {
      await withApp(t, { cookie: { secure: 'yes' as never } }, standardRoutes, async (_s, c) => {
        noSessionCookie(await c.post('/incr'));
        const other = new Client(c.base);
        assert.equal(sessionCookie(await other.post('/incr', {}, HTTPS)).attributes['secure'], '');
      });
    },
    differs: {
      [KILN]: {
        why: "cookie.secure must be true, false, 'auto' (or the string 'true'); any other value is refused at start-up with KILN_ERR_INVALID_OPTION rather than read as true or false, so a typo cannot quietly decide whether the cookie is Secure",
        async run(t) {
          for (const secure of ['yes', 1, 'false']) {
            await assert.rejects(withApp(t, { cookie: { secure: secure as never } }, standardRoutes, async () => undefined), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_INVALID_OPTION' && /"cookie.secure"/.test(err.message));
          }
        },
      },
    },
  },
  {
    area: 'cookie.secure',
    name: "secure: 'auto' follows the request",
    async run(t) {
      await withApp(t, { cookie: { secure: 'auto' } }, standardRoutes, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/incr')).attributes['secure'], undefined);
        const other = c.clone();
        other.jar.clear();
        assert.equal(sessionCookie(await other.post('/incr', {}, HTTPS)).attributes['secure'], '');
      });
    },
  },
  {
    area: 'cookie.secure',
    name: 'req.session.cookie.secure = true set in a handler, on a secure request: the cookie is sent with Secure',
    async run(t) {
      const routes = (app: Express) => {
        app.post('/login', (req, res) => {
          const s = sess(req)!;
          s['user'] = 'ada';
          s.cookie.secure = true as never;
          res.json({});
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/login', {}, HTTPS)).attributes['secure'], '');
        const plain = c.clone();
        plain.jar.clear();
        noSessionCookie(await plain.post('/login'));
      });
    },
  },
  {
    area: 'cookie.sameSite',
    name: "sameSite: 'auto' is Lax over HTTP and None (with Secure) over HTTPS",
    async run(t) {
      await withApp(t, { cookie: { sameSite: 'auto', secure: 'auto' } }, standardRoutes, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/incr')).attributes['samesite'], 'Lax');
        const tls = c.clone();
        tls.jar.clear();
        const sc = sessionCookie(await tls.post('/incr', {}, HTTPS));
        assert.equal(sc.attributes['samesite'], 'None');
        assert.equal(sc.attributes['secure'], '');
      });
    },
  },
  {
    area: 'proxy',
    name: 'proxy: true trusts X-Forwarded-Proto without Express trust proxy; proxy: false ignores it',
    async run(t) {
      await withApp(t, { proxy: true, cookie: { secure: true } }, standardRoutes, async (_s, c) => {
        assert.equal(sessionCookie(await c.post('/incr', {}, HTTPS)).attributes['secure'], '');
      }, (app) => app.set('trust proxy', false));
      await withApp(t, { proxy: false, cookie: { secure: true } }, standardRoutes, async (_s, c) => {
        noSessionCookie(await c.post('/incr', {}, HTTPS));
      });
    },
  },
  // ---- name, secret, genid
  {
    area: 'name',
    name: 'name sets the cookie name; key is its old alias',
    async run(t) {
      await withApp(t, { name: 'sid' }, standardRoutes, async (_s, c) => {
        sessionCookie(await c.post('/incr'), 'sid');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
      await withApp(t, { key: 'old.sid' }, standardRoutes, async (_s, c) => {
        sessionCookie(await c.post('/incr'), 'old.sid');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'secret',
    name: 'secret as an array rotates: the first signs, every one verifies; a Buffer secret works',
    async run(t) {
      await withApp(t, { secret: ['new-secret', 'old-secret'] }, standardRoutes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/incr'));
        const id = idOf(sc.value);
        assert.equal(decodeURIComponent(sc.value), signValue(id, 'new-secret'), 'the first secret signs');
        c.jar.set('connect.sid', encodeURIComponent(signValue(id, 'old-secret')));
        const r = await c.post('/incr');
        assert.equal(r.body['n'], 2, 'a cookie signed with the old secret still verifies');
        assert.equal(r.body['id'], id);
      });
      await withApp(t, { secret: Buffer.from('buffer-secret') }, standardRoutes, async (_s, c) => {
        const sc = sessionCookie(await c.post('/incr'));
        assert.equal(decodeURIComponent(sc.value), signValue(idOf(sc.value), 'buffer-secret'));
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'secret',
    name: 'a tampered or unsigned cookie starts a new session',
    async run(t) {
      await withApp(t, {}, standardRoutes, async (_s, c) => {
        await c.post('/incr');
        const value = c.jar.get('connect.sid')!;
        const id = idOf(value);
        c.jar.set('connect.sid', encodeURIComponent(`s:${id}.AAAA`));
        assert.notEqual((await c.get('/s')).body['id'], id);
        c.jar.set('connect.sid', id);
        assert.notEqual((await c.get('/s')).body['id'], id);
      });
    },
  },
  {
    area: 'secret',
    name: 'no secret',
    async run(t) {
      await withApp(t, { secret: undefined }, standardRoutes, async (_s, c) => {
        assert.equal((await c.get('/s')).status, 500, 'express-session fails each request');
      });
    },
    differs: {
      [KILN]: {
        why: 'a missing secret fails at start-up (KILN_ERR_INVALID_OPTION), not on every request',
        async run(t) {
          await assert.rejects(withApp(t, { secret: undefined }, standardRoutes, async () => undefined), { code: 'KILN_ERR_INVALID_OPTION' });
        },
      },
    },
  },
  {
    area: 'genid',
    name: 'genid makes the id of new sessions and of regenerated ones, and receives the request',
    async run(t) {
      let n = 0;
      const genid = (req: Request) => `custom-id-${String(++n).padStart(8, '0')}-${req.path === '/login' ? 'login' : 'first'}`;
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/login', (req, res, next) => {
          sess(req)!.regenerate((err: unknown) => {
            if (err) return next(err);
            sess(req)!['user'] = 'ada';
            res.json({ id: req.sessionID });
          });
        });
      };
      await withApp(t, { genid }, routes, async (_s, c) => {
        const first = await c.post('/incr');
        assert.equal(first.body['id'], 'custom-id-00000001-first');
        const login = await c.post('/login');
        assert.equal(login.body['id'], 'custom-id-00000002-login');
        assert.equal(idOf(sessionCookie(login).value), login.body['id']);
      });
    },
  },
  {
    area: 'genid',
    name: "genid may return any string (user:1, %, /foo, long ones): each is a session of its own",
    async run(t) {
      const ids = ['user:1', '%', '/foo', 'ünïcödé id', 'x'.repeat(200)];
      let next = 0;
      const genid = () => ids[next++ % ids.length]!;
      await withApp(t, { genid }, standardRoutes, async (s, c) => {
        for (const id of ids) {
          const browser = c.clone();
          browser.jar.clear();
          const first = await browser.post('/incr');
          assert.equal(first.body['id'], id);
          sessionCookie(first);
          const second = await browser.post('/incr');
          assert.equal(second.body['n'], 2, `the session ${JSON.stringify(id.slice(0, 20))} was stored and found again`);
        }
        assert.deepEqual(s.errors, []);
      });
    },
    differs: {
      [KILN]: {
        why: "kiln/express ids are 16–128 base64url characters (with an optional .route): genid's result is checked, and one outside that fails the request with KILN_ERR_INVALID_ARGUMENT instead of being stored",
        async run(t) {
          await withApp(t, { genid: () => 'user:1' }, standardRoutes, async (s, c) => {
            const r = await c.post('/incr');
            assert.equal(r.status, 500);
            assert.equal(r.text, 'KILN_ERR_INVALID_ARGUMENT');
            assert.equal(s.errors.length, 1);
          });
        },
      },
    },
  },
  {
    area: 'store.touch',
    name: "a request that changes nothing touches the stored session: the next request's cookie.maxAge counts from it",
    async run(t) {
      await withApp(t, { cookie: { maxAge: 60_000 } }, standardRoutes, async (_s, c) => {
        await c.post('/incr');
        await sleep(1100);
        await c.get('/s');
        await sleep(1100);
        const left = (await c.get('/s')).body['maxAge'] as number;
        assert.ok(left > 58_500, `maxAge counts from the last touch: ${left} ms left`);
      });
    },
    differs: {
      [KILN]: {
        why: "req.session.cookie.maxAge counts down from when the cookie was last sent (the browser's copy expires then), not from the last request that only read the session: a read commits nothing",
        async run(t) {
          await withApp(t, { cookie: { maxAge: 60_000 } }, standardRoutes, async (_s, c) => {
            await c.post('/incr');
            await sleep(1100);
            await c.get('/s');
            await sleep(1100);
            const left = (await c.get('/s')).body['maxAge'] as number;
            assert.ok(left < 58_300 && left > 57_000, `maxAge counts from the cookie: ${left} ms left`);
          });
        },
      },
    },
  },
  {
    area: 'store',
    name: 'store: any express-session Store',
    async run(t) {
      const { default: expressSession } = await import('express-session');
      await withApp(t, { store: new expressSession.MemoryStore() }, standardRoutes, async (_s, c) => {
        await c.post('/incr');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
    differs: {
      [KILN]: {
        why: '`store` is refused with a message naming `engine` (Kiln is the store and the middleware); keep express-session with KilnStore if you need a Store',
        async run(t) {
          const { default: expressSession } = await import('express-session');
          await assert.rejects(withApp(t, { store: new expressSession.MemoryStore() }, standardRoutes, async () => undefined), (err: Error & { code?: string }) => err.code === 'KILN_ERR_INVALID_OPTION' && /engine/.test(err.message));
        },
      },
    },
  },
  // ---- req.session methods
  {
    area: 'regenerate',
    name: 'regenerate(cb): a new id and an empty session; the old id is gone',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/login', (req, res, next) => {
          sess(req)!.regenerate((err: unknown) => {
            if (err) return next(err);
            sess(req)!['user'] = 'ada';
            res.json({ id: req.sessionID, n: sess(req)!['n'] ?? null });
          });
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        const before = await c.post('/incr');
        const old = c.clone();
        const login = await c.post('/login');
        assert.notEqual(login.body['id'], before.body['id']);
        assert.equal(login.body['n'], null);
        assert.equal(idOf(sessionCookie(login).value), login.body['id']);
        const after = (await c.get('/s')).body;
        assert.equal((after['session'] as Record<string, unknown>)['user'], 'ada');
        const replay = await old.get('/s');
        assert.notEqual(replay.body['id'], before.body['id'], 'the old session is gone');
      });
    },
  },
  {
    area: 'destroy',
    name: 'destroy(cb): req.session is gone and the session with it',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/logout', (req, res, next) => {
          sess(req)!.destroy((err: unknown) => {
            if (err) return next(err);
            res.json({ session: sess(req) === undefined ? 'undefined' : 'present' });
          });
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        await c.post('/incr');
        const old = c.clone();
        const out = await c.post('/logout');
        assert.equal(out.body['session'], 'undefined');
        assert.equal((await old.post('/incr')).body['n'], 1, 'a replayed cookie finds nothing');
      });
    },
  },
  {
    area: 'reload',
    name: "reload(cb): this request's unsaved changes are replaced by the stored session",
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/reload', (req, res, next) => {
          sess(req)!['n'] = 100;
          sess(req)!.reload((err: unknown) => {
            if (err) return next(err);
            res.json({ n: sess(req)!['n'] });
          });
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        await c.post('/incr');
        assert.equal((await c.post('/reload')).body['n'], 1);
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
    },
  },
  {
    area: 'save',
    name: 'save(cb) mid-request, then more changes: both are stored',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/two-step', (req, res, next) => {
          sess(req)!['a'] = 1;
          sess(req)!.save((err: unknown) => {
            if (err) return next(err);
            sess(req)!['b'] = 2;
            res.json({});
          });
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        await c.post('/two-step');
        const s = (await c.get('/s')).body['session'] as Record<string, unknown>;
        assert.equal(s['a'], 1);
        assert.equal(s['b'], 2);
      });
    },
  },
  {
    area: 'save',
    name: 'save() not awaited, then a reply: 200, one stored session (new and existing)',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/fire', (req, res) => {
          const s = sess(req)!;
          s['test'] = ((s['test'] as number | undefined) ?? 0) + 1;
          (s['save'] as (cb: () => void) => void)(() => undefined);
          res.send('ok');
        });
      };
      await withApp(t, {}, routes, async (s, c) => {
        const first = await c.post('/fire');
        assert.equal(first.status, 200);
        assert.equal(first.text, 'ok');
        sessionCookie(first);
        const second = await c.post('/fire');
        assert.equal(second.status, 200);
        await sleep(20);
        assert.equal(((await c.get('/s')).body['session'] as Record<string, unknown>)['test'], 2);
        assert.deepEqual(s.errors, []);
      });
    },
  },
  {
    area: 'touch',
    name: 'touch() and resetMaxAge() restart cookie.maxAge from originalMaxAge',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.get('/touch', (req, res) => {
          const s = sess(req)!;
          const before = s.cookie.maxAge!;
          (s['touch'] as () => void)();
          const touched = s.cookie.maxAge!;
          (s['resetMaxAge'] as () => void)();
          res.json({ before, touched, reset: s.cookie.maxAge, original: s.cookie.originalMaxAge });
        });
      };
      await withApp(t, { cookie: { maxAge: 60_000 } }, routes, async (_s, c) => {
        await c.post('/incr');
        await sleep(1100);
        const r = (await c.get('/touch')).body as Record<string, number>;
        assert.ok(r['before']! < 59_500, `counted down: ${r['before']}`);
        assert.ok(r['touched']! > 59_500);
        assert.ok(r['reset']! > 59_500);
        assertOriginalMaxAge(r['original']!, 60_000);
      });
    },
  },
  {
    area: 'req.session',
    name: 'properties are stored as JSON; nested objects changed in place are saved',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/cart', (req, res) => {
          const s = sess(req)!;
          const cart = (s['cart'] ??= { items: [] as string[] }) as { items: string[] };
          cart.items.push(String(req.body.sku));
          res.json({ items: cart.items.length });
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        await c.post('/cart', { sku: 'mug' });
        assert.equal((await c.post('/cart', { sku: 'pot' })).body['items'], 2);
        await c.post('/set', { when: '2020-01-01T00:00:00.000Z', nothing: null });
        const s = (await c.get('/s')).body['session'] as Record<string, unknown>;
        assert.deepEqual(s['cart'], { items: ['mug', 'pot'] });
        assert.equal(s['when'], '2020-01-01T00:00:00.000Z');
        assert.equal(s['nothing'], null);
      });
    },
  },
  {
    area: 'unset',
    name: "unset 'keep' (default): delete req.session keeps the stored session; 'destroy' destroys it",
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/unset', (req, res) => {
          delete (req as unknown as { session?: unknown }).session;
          res.json({});
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        await c.post('/incr');
        await c.post('/unset');
        assert.equal((await c.post('/incr')).body['n'], 2);
      });
      await withApp(t, { unset: 'destroy' }, routes, async (_s, c) => {
        await c.post('/incr');
        await c.post('/unset');
        assert.equal((await c.post('/incr')).body['n'], 1);
      });
    },
  },
  {
    area: 'req.sessionID',
    name: 'req.sessionID assigned something that is not a string: nothing is saved and no cookie is sent',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/bogus', (req, res) => {
          sess(req)!['n'] = 41;
          (req as unknown as { sessionID: unknown }).sessionID = null;
          res.json({});
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        noSessionCookie(await c.post('/bogus'));
        await c.post('/incr');
        const again = await c.post('/bogus');
        noSessionCookie(again);
        assert.equal((await c.post('/incr')).body['n'], 2, 'the bogus request stored nothing');
      });
    },
  },
  {
    area: 'cookie-parser',
    name: 'with the Cookie header consumed, the id is read from req.signedCookies or req.cookies (deprecated)',
    async run(t) {
      // A middleware that parsed the header and removed it, as old cookie-parser setups do.
      const consume = (app: Express) =>
        app.use((req, _res, next) => {
          const into = req.headers['x-into'];
          const raw = /connect\.sid=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
          if ((into === 'cookies' || into === 'signedCookies') && raw) {
            const signed = decodeURIComponent(raw);
            (req as unknown as Record<string, unknown>)[into] = { 'connect.sid': into === 'cookies' ? signed : idOf(signed) };
            // cookie-parser(secret) sets req.secret to the secret it verified signedCookies with.
            (req as unknown as Record<string, unknown>)['secret'] = req.headers['x-parser-secret'] ?? 'compat-secret';
            delete req.headers.cookie;
          }
          next();
        });
      await withApp(t, {}, standardRoutes, async (_s, c) => {
        await c.post('/incr');
        assert.equal((await c.post('/incr', {}, { 'x-into': 'cookies' })).body['n'], 2);
        assert.equal((await c.post('/incr', {}, { 'x-into': 'signedCookies' })).body['n'], 3);
      }, consume);
    },
  },
  {
    area: 'cookie-parser',
    name: "req.signedCookies verified by cookie-parser with another secret than the session's: the id is used",
    async run(t) {
      assert.equal(await incrWithForeignParser(t), 2);
    },
    differs: {
      [KILN]: {
        why: "req.signedCookies is trusted only when cookie-parser's secret (req.secret) is one of the session's secrets: anyone knowing another secret could otherwise choose a session id",
        async run(t) {
          assert.equal(await incrWithForeignParser(t), 1);
        },
      },
    },
  },
  // ---- the response
  {
    area: 'response',
    name: 'res.end(body) then res.end(): 200 with the body, nothing thrown',
    async run(t) {
      const routes = (app: Express) => {
        app.post('/twice', (req, res) => {
          sess(req)!['n'] = 1;
          res.end('body');
          res.end();
        });
      };
      await withApp(t, {}, routes, async (s, c) => {
        const r = await c.post('/twice');
        assert.equal(r.status, 200);
        assert.equal(r.text, 'body');
        sessionCookie(r);
        await sleep(20);
        assert.deepEqual(s.errors, []);
      });
    },
  },
  {
    area: 'response',
    name: "res.end(); res.setHeader(…) throws as after any end; a later res.end('foo') sends nothing more",
    async run(t) {
      const routes = (app: Express) => {
        app.post('/late', (req, res) => {
          sess(req)!['n'] = 1;
          res.end();
          let threw: string | undefined;
          try {
            res.setHeader('x-late', '1');
          } catch (err) {
            threw = (err as { code?: string }).code;
          }
          res.end('foo');
          setImmediate(() => ((req as unknown as Record<string, unknown>)['threw'] = threw));
          lastThrew = threw;
        });
      };
      let lastThrew: string | undefined;
      await withApp(t, {}, routes, async (_s, c) => {
        const r = await c.post('/late');
        assert.equal(r.status, 200);
        assert.equal(r.text, '');
        assert.equal(r.headers.get('x-late'), null);
        assert.equal(lastThrew, 'ERR_HTTP_HEADERS_SENT');
      });
    },
  },
  {
    area: 'response',
    name: 'after res.end(body): res.write(null) throws to its caller; a second res.end(callback) is dropped, its callback never called',
    async run(t) {
      const { threw, calledBack } = await lateCalls(t);
      assert.equal(threw, 'ERR_STREAM_NULL_VALUES');
      assert.equal(calledBack, false);
    },
    differs: {
      [KILN]: {
        why: "the second end's callback is called once the response finished, as Node calls it",
        async run(t) {
          const { threw, calledBack } = await lateCalls(t);
          assert.equal(threw, 'ERR_STREAM_NULL_VALUES');
          assert.equal(calledBack, true);
        },
      },
    },
  },
  {
    area: 'response',
    name: 'cookie.maxAge, a change, then res.write() before res.end(): the cookie goes with the streamed headers, with a fresh expiry',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/stream-change', (req, res) => {
          sess(req)!['streamed'] = ((sess(req)!['streamed'] as number | undefined) ?? 0) + 1;
          res.write('a');
          setTimeout(() => res.end('b'), 10);
        });
      };
      await withApp(t, { cookie: { maxAge: 60_000 } }, routes, async (_s, c) => {
        await c.post('/stream-change');
        await sleep(2100);
        const r = await c.post('/stream-change');
        assert.equal(r.text, 'ab');
        assert.ok(expiresIn(sessionCookie(r)) > 58_300, `a fresh expiry: ${expiresIn(sessionCookie(r))}`);
        const read = await c.get('/s');
        assert.ok((read.body['maxAge'] as number) > 58_000, 'the stored expiry is the one sent');
      });
    },
  },
  {
    area: 'response',
    name: 'res.write() then res.end(): the streamed body arrives and the change is stored',
    async run(t) {
      const routes = (app: Express) => {
        standardRoutes(app);
        app.post('/stream', (req, res) => {
          sess(req)!['streamed'] = true;
          res.write('a');
          setTimeout(() => {
            res.write('b');
            res.end('c');
          }, 10);
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        const r = await c.post('/stream');
        assert.equal(r.text, 'abc');
        sessionCookie(r);
        assert.equal(((await c.get('/s')).body['session'] as Record<string, unknown>)['streamed'], true);
      });
    },
  },
  {
    area: 'response',
    name: 'writeHead with headers, then end: the cookie is added to them',
    async run(t) {
      const routes = (app: Express) => {
        app.post('/head', (req, res) => {
          sess(req)!['n'] = 1;
          res.writeHead(201, { 'content-type': 'text/plain', 'set-cookie': 'theme=dark; Path=/' });
          res.end('made');
        });
      };
      await withApp(t, {}, routes, async (_s, c) => {
        const r = await c.post('/head');
        assert.equal(r.status, 201);
        assert.equal(r.text, 'made');
        sessionCookie(r);
      });
    },
  },
  // ---- concurrency
  {
    area: 'concurrency',
    name: 'two concurrent requests on one session each add to it: one change is lost',
    async run(t) {
      const list = await concurrentAdds(t);
      assert.equal(list.length, 1, `last write wins: ${JSON.stringify(list)}`);
    },
    differs: {
      [KILN]: {
        why: 'requests on one session run one after another (the session lease): no change is lost',
        async run(t) {
          assert.deepEqual((await concurrentAdds(t)).sort(), ['a', 'b']);
        },
      },
    },
  },
  {
    area: 'dead cookie',
    name: 'a validly signed cookie for a session that no longer exists: a new session, the dead cookie left alone',
    async run(t) {
      const { replay } = await replayAfterLogout(t);
      noSessionCookie(replay);
      assert.equal((replay.body['session'] as Record<string, unknown>)['n'], undefined);
    },
  },
  {
    area: 'destroy',
    name: 'destroy() sends no Set-Cookie: the browser keeps the dead cookie',
    async run(t) {
      const { logout } = await replayAfterLogout(t);
      assert.deepEqual(logout.setCookies, []);
    },
    differs: {
      [KILN]: {
        why: 'destroy() clears the cookie (Expires in the past, Max-Age=0) with the attributes it was sent with',
        async run(t) {
          const { logout } = await replayAfterLogout(t);
          assert.ok(expiresIn(sessionCookie(logout)) < 0);
        },
      },
    },
  },
];

/** Two slow requests on one session each add an item to `list`: what the list holds after. */
async function concurrentAdds(t: Target): Promise<string[]> {
  const routes = (app: Express) => {
    standardRoutes(app);
    app.post('/slow-add', (req, res) => {
      const s = sess(req)!;
      const list = ((s['list'] as string[] | undefined) ?? []).slice();
      setTimeout(() => {
        list.push(String(req.body.item));
        s['list'] = list;
        res.json({});
      }, 150);
    });
  };
  let list: string[] = [];
  await withApp(t, {}, routes, async (_s, c) => {
    await c.post('/set', { list: [] });
    await Promise.all([c.post('/slow-add', { item: 'a' }), c.post('/slow-add', { item: 'b' })]);
    list = ((await c.get('/s')).body['session'] as Record<string, unknown>)['list'] as string[];
  });
  return list;
}

/** n is 1; a slow request reads the session while another increments n: n after both. */
async function changeDuringSlowRead(t: Target, options: SessionOptions): Promise<unknown> {
  const routes = (app: Express) => {
    standardRoutes(app);
    app.get('/slow-read', (req, res) => {
      void sess(req)!['n'];
      setTimeout(() => res.json({}), 200);
    });
  };
  let n: unknown;
  await withApp(t, options, routes, async (_s, c) => {
    await c.post('/incr');
    const slow = c.get('/slow-read');
    await sleep(50);
    await c.post('/incr');
    await slow;
    n = ((await c.get('/s')).body['session'] as Record<string, unknown>)['n'];
  });
  return n;
}

/** A session is made, its cookie kept, then it is destroyed: the logout's reply and that of the kept cookie's next request. */
async function replayAfterLogout(t: Target): Promise<{ logout: Reply; replay: Reply }> {
  const routes = (app: Express) => {
    standardRoutes(app);
    app.post('/logout', (req, res, next) => sess(req)!.destroy((err: unknown) => (err ? next(err) : res.json({}))));
  };
  let result: { logout: Reply; replay: Reply } | undefined;
  await withApp(t, {}, routes, async (_s, c) => {
    await c.post('/incr');
    const old = c.clone();
    const logout = await c.post('/logout');
    result = { logout, replay: await old.get('/s') };
  });
  return result!;
}

/** A session's id placed in req.signedCookies by a "cookie-parser" with a secret of its own: n after one more increment. */
async function incrWithForeignParser(t: Target): Promise<unknown> {
  let n: unknown;
  const consume = (app: Express) =>
    app.use((req, _res, next) => {
      const id = req.headers['x-id'];
      if (typeof id === 'string') {
        (req as unknown as Record<string, unknown>)['signedCookies'] = { 'connect.sid': id };
        (req as unknown as Record<string, unknown>)['secret'] = 'cookie-parser-own-secret';
        delete req.headers.cookie;
      }
      next();
    });
  await withApp(t, {}, standardRoutes, async (_s, c) => {
    const first = await c.post('/incr');
    n = (await new Client(c.base).post('/incr', {}, { 'x-id': String(first.body['id']) })).body['n'];
  }, consume);
  return n;
}

/** After res.end(body) on a changed session: what res.write(null) threw, and whether a second end's callback ran. */
async function lateCalls(t: Target): Promise<{ threw: string | undefined; calledBack: boolean }> {
  let threw: string | undefined;
  let calledBack = false;
  const routes = (app: Express) => {
    app.post('/late-calls', (req, res) => {
      sess(req)!['n'] = 1;
      res.end('body');
      try {
        res.write(null as never);
      } catch (err) {
        threw = (err as { code?: string }).code;
      }
      res.end(() => (calledBack = true));
    });
  };
  await withApp(t, {}, routes, async (s, c) => {
    const r = await c.post('/late-calls');
    assert.equal(r.text, 'body');
    await sleep(50);
    assert.deepEqual(s.errors, []);
  });
  return { threw, calledBack };
}
