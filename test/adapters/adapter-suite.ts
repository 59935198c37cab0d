import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { signValue, unsignValue } from '../../src/adapters/core/cookies.js';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { Browser } from '../helpers/browser.js';
import { startKilnServer, sleep, type ServerProcess } from '../helpers/processes.js';

/**
 * The adapter conformance suite: every framework adapter's fixture app (the same
 * routes, test/fixtures/apps/*) is driven over real HTTP, on the memory engine and on
 * a kiln server. A new adapter is added by writing its fixture and calling this.
 */
export interface AdapterHarness {
  /** Shown in test names. */
  name: string;
  /** test/fixtures/apps/<fixture>.js */
  fixture: string;
  /** Extra environment for the fixture (framework version…). */
  env?: Record<string, string>;
  /**
   * The status the fixture answers for a commit the tier refuses (an attribute too large:
   * the error's own 413 where the framework's or Kiln's default handler answers, 500
   * where the fixture's own handler does) and for an engine that cannot be reached at
   * open (503 with Retry-After, or the fixture's 500). Exact, so a changed error path shows.
   */
  errorStatuses: { tooLarge: 413 | 500; unavailable: 503 | 500 };
}

export type Env = Record<string, string | undefined>;
const SECRET = 'conformance-secret';

interface SessionReply {
  node: string;
  sessionId: string;
  data: Record<string, unknown> | null;
  principal: string | null;
  cookie: { originalMaxAge: number | null; expires: string | null };
}

export function adapterConformance(harness: AdapterHarness): void {
  for (const engineKind of ['memory', 'kiln server'] as const) {
    describe(`adapter conformance: ${harness.name} on ${engineKind}`, () => {
      let server: ServerProcess | undefined;
      const apps: AppProcess[] = [];

      async function app(env: Env = {}): Promise<AppProcess> {
        const a = await startApp(harness.fixture, {
          ...harness.env,
          KILN_ENGINE: server?.url,
          KILN_TOKEN: server?.token,
          SESSION_SECRETS: SECRET,
          ...env,
        });
        apps.push(a);
        return a;
      }

      let main: AppProcess;
      before(async () => {
        if (engineKind === 'kiln server') server = await startKilnServer({ args: ['--expiry-sweep-ms', '50', '--touch-grace-ms', '50'] });
        main = await app();
      });
      after(async () => {
        await Promise.all(apps.map((a) => a.kill()));
        await server?.kill();
      });

      const sessionOf = async (b: Browser) => (await b.get<SessionReply>('/api/session')).body;

      it('creates a session only when something is stored, with a signed, HttpOnly, SameSite=Lax cookie', async () => {
        const b = new Browser(main.url);
        const first = await b.get<SessionReply>('/api/session');
        assert.equal(first.status, 200);
        assert.deepEqual(first.setCookies, [], 'saveUninitialized false: nothing stored, no cookie');
        const incr = await b.post('/api/incr');
        assert.equal(incr.body['n'], 1);
        assert.equal(incr.setCookies.length, 1);
        const cookie = incr.setCookies[0]!;
        assert.match(cookie, /^connect\.sid=s%3A[A-Za-z0-9_-]{43}\.app-\d+\.[A-Za-z0-9%]{43,}; /, 'signed id with route, percent-encoded as express-session does');
        assert.match(cookie, /; HttpOnly/);
        assert.match(cookie, /; SameSite=Lax/);
        assert.match(cookie, /; Path=\//);
        const again = await b.post('/api/incr');
        assert.equal(again.body['n'], 2);
        assert.deepEqual(again.setCookies, [], 'not rolling: the cookie is sent once');
        const s = await sessionOf(b);
        assert.deepEqual(s.data, { n: 2 });
      });

      it('saveUninitialized stores an untouched new session', async () => {
        const a = await app({ SAVE_UNINITIALIZED: '1' });
        const b = new Browser(a.url);
        const first = await b.get<SessionReply>('/api/session');
        assert.equal(first.setCookies.length, 1);
        const again = await b.get<SessionReply>('/api/session');
        assert.equal(again.body.sessionId, first.body.sessionId, 'the stored session is found again');
      });

      it('loads and modifies, including in-place mutation of a stored object', async () => {
        const b = new Browser(main.url);
        for (let i = 0; i < 3; i++) await b.post('/api/cart', { sku: `sku-${i}` });
        const s = await sessionOf(b);
        assert.equal((s.data!['cart'] as unknown[]).length, 3);
      });

      it('regenerate on login: new id, chosen attributes kept, principal set, old cookie worthless', async () => {
        const b = new Browser(main.url);
        await b.post('/api/cart', { sku: 'kept' });
        await b.post('/api/set', { key: 'dropped', value: true });
        const before = await sessionOf(b);
        const old = b.clone();
        const login = await b.post('/api/login', { user: 'alice' });
        assert.equal(login.setCookies.length, 1);
        const after = await sessionOf(b);
        assert.notEqual(after.sessionId, before.sessionId);
        assert.equal(after.principal, 'alice');
        assert.deepEqual((after.data!['cart'] as { sku: string }[]).map((c) => c.sku), ['kept']);
        assert.equal(after.data!['dropped'], undefined);
        const replay = await sessionOf(old);
        assert.equal(replay.data!['cart'], undefined, 'the pre-login session is gone');
      });

      // Session fixation (issue #22, item 10); test/security/session-fixation.test.ts runs it too.
      it('a login without regenerate() rotates a planted id: data kept, new cookie, the planted id worthless; rotateOnLogin: false keeps it', () => checkLoginRotation(main, app));

      it('destroy on logout: the cookie is cleared and replaying it finds no session', async () => {
        const b = new Browser(main.url);
        await b.post('/api/login', { user: 'bob' });
        const old = b.clone();
        const out = await b.post('/api/logout');
        assert.equal(out.body['session'], 'gone', 'req.session is removed, as express-session does');
        assert.ok(out.setCookies.some((c) => /Expires=Thu, 01 Jan 1970/.test(c)), 'cookie cleared');
        const replay = await sessionOf(old);
        assert.equal(replay.principal, null);
        assert.equal(replay.data!['user'], undefined);
      });

      it('a save() not awaited, then the reply: 200 for a new and an existing session, both changes stored once', async () => {
        const b = new Browser(main.url);
        const first = await b.post('/api/save-unawaited');
        assert.equal(first.status, 200, JSON.stringify(first.body));
        assert.equal(first.setCookies.length, 1);
        const second = await b.post('/api/save-unawaited');
        assert.equal(second.status, 200, JSON.stringify(second.body));
        assert.deepEqual((await sessionOf(b)).data, { test: 2, afterSave: 2, list: ['a', 'b'] }, 'what changed while the save was on its way is stored by the commit at the end');
      });

      it('a destroy() not awaited, then the reply: the session is ended before the reply goes, and its cookie cleared', async () => {
        const b = new Browser(main.url);
        await b.post('/api/login', { user: 'carol' });
        const old = b.clone();
        const out = await b.post('/api/logout-unawaited');
        assert.equal(out.status, 200, JSON.stringify(out.body));
        assert.ok(out.setCookies.some((c) => /Expires=Thu, 01 Jan 1970/.test(c)), 'cookie cleared');
        const replay = await sessionOf(old);
        assert.equal(replay.principal, null, 'the logout took effect');
        assert.equal(replay.data!['user'], undefined);
      });

      it("regenerate() and new sessions take their id from the app's genid, which is given the framework's request", async () => {
        const withGenid = await app({ GENID: '1' });
        const b = new Browser(withGenid.url);
        await b.post('/api/incr');
        assert.match((await sessionOf(b)).sessionId, /^genid-\d{6}-apiincr\.app-\d+$/, 'a new session: genid, with the route');
        const login = await b.post<{ sessionId: string }>('/api/login', { user: 'gen' });
        assert.match(login.body.sessionId, /^genid-\d{6}-apilogin\.app-\d+$/, 'regenerate(): genid again');
        assert.equal((await sessionOf(b)).principal, 'gen');
      });

      it('a signed cookie whose session no longer exists gets a fresh session and is left alone (clearing it would race with a login); the next stored change replaces it', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        const old = b.clone();
        await b.post('/api/logout');
        const dead = await old.get('/api/session');
        assert.equal(dead.status, 200);
        assert.equal(dead.body['data'] !== null && Object.keys(dead.body['data'] as object).length, 0, 'a fresh, empty session');
        assert.deepEqual(dead.setCookies, [], 'no Set-Cookie: a response racing a login cannot clear the new cookie');
        const stored = await old.post('/api/incr');
        assert.equal(stored.body['n'], 1);
        assert.equal(stored.setCookies.length, 1, "the new session's cookie replaces the dead one");
      });

      it('promise forms, save() mid-request, reload(), req.session.id and cookie fields', async () => {
        const b = new Browser(main.url);
        const login = await b.post<{ sessionId: string; id: string }>('/api/login-async', { user: 'ivan' });
        assert.equal(login.status, 200);
        assert.equal(login.body.id, login.body.sessionId, 'req.session.id === req.sessionID');
        const s1 = await sessionOf(b);
        assert.equal(s1.principal, 'ivan');
        assert.equal(s1.data!['afterSave'], 'kept too', 'changes after save() are committed at the end');
        const reload = await b.post('/api/reload');
        assert.equal(reload.body['scratch'], null, 'reload() drops uncommitted changes');
        const failed = await b.post('/api/save-then-fail');
        assert.equal(failed.body['code'], 'APP_AFTER_SAVE');
        assert.equal((await sessionOf(b)).data!['saved'], 'yes', 'what save() committed stays');
        const c = (await b.get<Record<string, unknown>>('/api/cookie')).body;
        assert.equal(c['httpOnly'], true);
        assert.equal(c['secure'], false);
        assert.equal(c['sameSite'], 'lax');
        assert.equal(c['path'], '/');
        assert.equal(c['originalMaxAge'], null, 'no maxAge configured: a browser-session cookie');
        assert.deepEqual((c['keys'] as string[]).sort(), ['afterSave', 'cookie', 'saved', 'user'], 'Object.keys(req.session): cookie and the attributes');
      });

      it('log out everywhere ends every session of the user', async () => {
        const laptop = new Browser(main.url);
        const phone = new Browser(main.url);
        const other = new Browser(main.url);
        await laptop.post('/api/login', { user: 'carol' });
        await phone.post('/api/login', { user: 'carol' });
        await other.post('/api/login', { user: 'dave' });
        const r = await laptop.post('/api/logout-everywhere');
        assert.equal(r.body['count'], 2);
        assert.equal((await sessionOf(laptop)).principal, null);
        assert.equal((await sessionOf(phone)).principal, null);
        assert.equal((await sessionOf(other)).principal, 'dave');
      });

      it('idle expiry ends a session nobody uses; activity keeps it', async () => {
        const a = await app({ IDLE_MS: '400' });
        const idle = new Browser(a.url);
        const busy = new Browser(a.url);
        await idle.post('/api/incr');
        await busy.post('/api/incr');
        for (let i = 0; i < 6; i++) {
          await sleep(150);
          await busy.get('/api/session');
        }
        assert.equal((await sessionOf(busy)).data!['n'], 1, 'kept alive by use');
        assert.equal((await sessionOf(idle)).data!['n'], undefined, 'expired after 400 ms idle');
      });

      it('absolute expiry ends a session however busy, and a rolling cookie never outlives it', async () => {
        const a = await app({ ABSOLUTE_MS: '600', ROLLING: '1', COOKIE_MAX_AGE: '3600000' });
        const b = new Browser(a.url);
        const first = await b.post('/api/incr');
        const expires = /Expires=([^;]+)/.exec(first.setCookies[0]!)![1]!;
        assert.ok(new Date(expires).getTime() <= Date.now() + 1600, `cookie expiry capped by the absolute timeout (${expires})`);
        for (let i = 0; i < 8; i++) {
          await sleep(100);
          await b.get('/api/session');
        }
        await sleep(200);
        assert.equal((await sessionOf(b)).data!['n'], undefined);
      });

      it('rolling sends the cookie with a fresh expiry on every response', async () => {
        const a = await app({ ROLLING: '1', COOKIE_MAX_AGE: '60000' });
        const b = new Browser(a.url);
        await b.post('/api/incr');
        const r1 = await b.get('/api/session');
        await sleep(1100);
        const r2 = await b.get('/api/session');
        assert.equal(r1.setCookies.length, 1);
        assert.equal(r2.setCookies.length, 1);
        const exp = (r: { setCookies: string[] }) => new Date(/Expires=([^;]+)/.exec(r.setCookies[0]!)![1]!).getTime();
        assert.ok(exp(r2) > exp(r1), 'expiry moved forward');
        assert.match(r2.setCookies[0]!, /Max-Age=(59|60);/);
      });

      it('cookie attributes: maxAge, "remember me", Secure only over HTTPS (or a trusted proxy)', async () => {
        const a = await app({ COOKIE_MAX_AGE: '60000', COOKIE_SECURE: 'auto', TRUST_PROXY: '1' });
        const plain = new Browser(a.url);
        const r = await plain.post('/api/incr');
        assert.match(r.setCookies[0]!, /Max-Age=60; Path=\/; Expires=/);
        assert.doesNotMatch(r.setCookies[0]!, /Secure/, "'auto' over plain HTTP: not Secure");
        const remember = await plain.post('/api/remember', { maxAge: 30 * 86_400_000 });
        assert.match(remember.setCookies[0]!, /Max-Age=2592000/, 'a changed lifetime is sent');
        assert.equal((await sessionOf(plain)).cookie.originalMaxAge, 30 * 86_400_000, 'and kept');
        const fractional = await plain.post('/api/remember', { maxAge: 7 * 86_400_000 * 0.1 + 0.5 });
        assert.equal(fractional.status, 200, 'a lifetime of a fractional millisecond count is taken, as express-session takes it');
        const proxied = new Browser(a.url);
        const rp = await proxied.post('/api/incr', {}, { 'x-forwarded-proto': 'https' });
        assert.match(rp.setCookies[0]!, /; Secure/);
        // proxy: false is the app's word over the framework's own trust: a forged
        // X-Forwarded-Proto makes no Secure cookie, on every framework.
        const strict = await app({ COOKIE_SECURE: 'auto', TRUST_PROXY: '0', FRAMEWORK_TRUST_PROXY: '1' });
        const forged = await new Browser(strict.url).post('/api/incr', {}, { 'x-forwarded-proto': 'https' });
        assert.equal(forged.setCookies.length, 1);
        assert.doesNotMatch(forged.setCookies[0]!, /Secure/, 'proxy: false trusts the socket alone');
        const b = await app({ COOKIE_SECURE: 'true' });
        const insecure = new Browser(b.url);
        const ri = await insecure.post('/api/incr');
        assert.deepEqual(ri.setCookies, [], 'a Secure cookie is never sent over plain HTTP');
      });

      it('concurrent requests on one session: 50 at once, none lost', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        const replies = await Promise.all(Array.from({ length: 50 }, () => b.post('/api/incr')));
        assert.ok(replies.every((r) => r.status === 200));
        const ns = replies.map((r) => r.body['n'] as number).sort((x, y) => x - y);
        assert.deepEqual(ns, Array.from({ length: 50 }, (_, i) => i + 2), 'each request saw the previous one');
        assert.equal((await sessionOf(b)).data!['n'], 51);
      });

      it('a read-only route does not block writers on the same session (and cannot write); a normal one does', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        const t0 = Date.now();
        const slowRead = b.get('/api/slow-read?ms=600').then((r) => ({ r, at: Date.now() - t0 }));
        await sleep(50);
        const write = await b.post('/api/incr');
        const writeAt = Date.now() - t0;
        const read = await slowRead;
        assert.ok(writeAt < read.at, `the write (${writeAt} ms) finished before the slow read (${read.at} ms)`);
        assert.equal(read.r.body['readOnly'], true);
        assert.equal(write.body['n'], 2);
        const refused = await b.post('/api/slow-read');
        assert.equal(refused.status, 500);
        assert.equal(refused.body['code'], 'KILN_ERR_READ_ONLY_SESSION');
        const t1 = Date.now();
        const slowWrite = b.post('/api/slow-write?ms=400').then(() => Date.now() - t1);
        await sleep(50);
        await b.post('/api/incr');
        const blockedAt = Date.now() - t1;
        assert.ok(blockedAt >= (await slowWrite) - 5, 'a normal route holds the session until it ends');
        assert.equal((await sessionOf(b)).data!['n'], 4);
      });

      it('read-only routes on a hot session run concurrently, beside writers on it', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        const t0 = Date.now();
        // Ten slow reads of 400 ms at once, with increments going on: run one after
        // another they would take 4 s; side by side, about 400 ms.
        const reads = Promise.all(Array.from({ length: 10 }, () => b.get('/api/slow-read?ms=400')));
        const writes = Promise.all(Array.from({ length: 10 }, () => b.post('/api/incr')));
        const [readReplies, writeReplies] = await Promise.all([reads, writes]);
        const took = Date.now() - t0;
        assert.ok(readReplies.every((r) => r.status === 200 && r.body['readOnly'] === true), 'every read was a read-only snapshot');
        assert.ok(took < 1500, `ten 400 ms read-only requests on one session took ${took} ms: they did not run concurrently`);
        assert.deepEqual(writeReplies.map((r) => r.body['n'] as number).sort((x, y) => x - y), Array.from({ length: 10 }, (_, i) => i + 2), 'the writers ran one after another, none lost');
        assert.equal((await sessionOf(b)).data!['n'], 11);
      });

      it('a client that hangs up mid-request releases the session at once, and what the request changes later is not stored', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        for (let round = 0; round < 3; round++) {
          const hangUp = new AbortController();
          const abandoned = fetch(`${main.url}/api/slow-write?ms=800`, { method: 'POST', headers: { cookie: b.cookieHeader() }, signal: hangUp.signal }).catch((err: Error) => err);
          await sleep(100);
          hangUp.abort();
          assert.ok((await abandoned) instanceof Error);
          const t0 = Date.now();
          const next = await b.post('/api/incr');
          const waited = Date.now() - t0;
          assert.equal(next.status, 200);
          assert.equal(next.body['n'], round + 2, 'the abandoned request committed nothing');
          assert.ok(waited < 500, `the next request waited ${waited} ms: the session was held until the abandoned handler ended`);
        }
        await sleep(900);
        assert.equal((await sessionOf(b)).data!['n'], 4, 'the abandoned handlers\' late writes were refused');
      });

      it('a client that hangs up while its request waits for the session: the request commits nothing once it gets it', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        // The holder takes the session first (300 ms of margin on a busy machine) and keeps it 1.2 s.
        const holder = b.post('/api/slow-write?ms=1200');
        await sleep(300);
        const hangUp = new AbortController();
        const waiting = fetch(`${main.url}/api/slow-write?ms=10`, { method: 'POST', headers: { cookie: b.cookieHeader() }, signal: hangUp.signal }).catch((err: Error) => err);
        await sleep(300);
        hangUp.abort(); // still waiting behind the holder
        assert.ok((await waiting) instanceof Error);
        assert.equal((await holder).body['n'], 2);
        await sleep(300);
        const next = await b.post('/api/incr');
        assert.equal(next.status, 200);
        assert.equal(next.body['n'], 3, 'the request whose client left while it waited stored nothing');
      });

      it('errors reach the error handler with Kiln codes, and a failed commit stores nothing', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        const big = await b.post('/api/too-big');
        assert.equal(big.status, harness.errorStatuses.tooLarge);
        assert.equal(big.body['code'], 'KILN_ERR_ATTRIBUTE_TOO_LARGE');
        const fn = await b.post('/api/unserializable');
        assert.equal(fn.body['code'], 'KILN_ERR_UNSERIALIZABLE');
        assert.match(String(fn.body['message']), /"fn"/);
        const s = await sessionOf(b);
        assert.deepEqual(s.data, { n: 1 }, 'nothing of the failed requests was stored');
        const thrown = await b.get('/api/throw');
        assert.equal(thrown.body['code'], 'APP_BOOM');
      });

      it('tampered, unsigned, oversized and malformed cookies: a fresh session, no engine lookup, no error page', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        const real = b.cookies.get('connect.sid')!;
        const id = decodeURIComponent(real).slice(2).split('.').slice(0, 2).join('.');
        const statsBrowser = new Browser(main.url);
        const before = (await statsBrowser.get<{ counters: Record<string, number> }>('/api/stats')).body.counters;
        const cases = [
          `s%3A${id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`,
          encodeURIComponent(id),
          encodeURIComponent(signValue(id, 'some-other-secret')),
          'x'.repeat(5000),
          '%E0%A4%A',
          's%3A.',
          encodeURIComponent(signValue('not a session id!', SECRET)),
        ];
        for (const value of cases) {
          const evil = new Browser(main.url);
          evil.cookies.set('connect.sid', value);
          const r = await evil.get<SessionReply>('/api/session');
          assert.equal(r.status, 200, value.slice(0, 40));
          assert.equal(r.body.data!['n'], undefined);
          assert.notEqual(r.body.sessionId, id);
        }
        const afterStats = (await statsBrowser.get<{ counters: Record<string, number> }>('/api/stats')).body.counters;
        assert.equal(afterStats['acquires'], before['acquires'], 'no lease taken');
        assert.equal(afterStats['loads'], before['loads'], 'no session loaded');
        assert.equal((await sessionOf(b)).data!['n'], 1, 'the real cookie still works');
      });

      it('unset: deleting req.session keeps the stored session and drops the request\'s changes', async () => {
        const b = new Browser(main.url);
        await b.post('/api/incr');
        await b.post('/api/unset');
        assert.equal((await sessionOf(b)).data!['n'], 1);
      });

      it('secret rotation: cookies signed with an old secret still work, new ones are signed with the new', async () => {
        const rotated = await app({ SESSION_SECRETS: 'new-secret,old-secret' });
        const b = new Browser(rotated.url);
        await b.post('/api/incr');
        const issued = decodeURIComponent(b.cookies.get('connect.sid')!);
        const id = unsignValue(issued, ['new-secret']);
        assert.ok(id, 'the cookie is signed with the first secret');
        assert.equal(unsignValue(issued, ['old-secret']), undefined);
        const oldSigned = new Browser(rotated.url);
        oldSigned.cookies.set('connect.sid', encodeURIComponent(signValue(id, 'old-secret')));
        assert.equal((await sessionOf(oldSigned)).data!['n'], 1, 'a cookie signed with the old secret finds the session');
        const retired = new Browser(rotated.url);
        retired.cookies.set('connect.sid', encodeURIComponent(signValue(id, 'retired-secret')));
        assert.equal((await sessionOf(retired)).data!['n'], undefined, 'a secret no longer listed is refused');
        if (engineKind === 'kiln server') {
          // Across processes too: an app still on the old secret alone cannot read the new cookies.
          const oldOnly = await app({ SESSION_SECRETS: 'old-secret' });
          assert.equal((await sessionOf(oldSigned.clone(oldOnly.url))).data!['n'], 1);
          assert.equal((await sessionOf(b.clone(oldOnly.url))).data!['n'], undefined);
        }
      });

      it('engine unreachable: the request fails within its timeout with a Kiln code, or is served without a stored session', async () => {
        const dead = 'kiln://127.0.0.1:9';
        const failing = await app({ KILN_ENGINE: dead, TIMEOUT_MS: '600' });
        const b = new Browser(failing.url);
        b.cookies.set('connect.sid', encodeURIComponent(signValue(`${'A'.repeat(43)}`, SECRET)));
        const t0 = Date.now();
        const r = await b.get('/api/session');
        assert.ok(Date.now() - t0 < 3000, 'bounded');
        assert.equal(r.status, harness.errorStatuses.unavailable);
        if (r.status === 503) assert.equal(r.headers.get('retry-after'), '1');
        assert.equal(r.body['code'], 'KILN_ERR_ENGINE_UNAVAILABLE');
        const lenient = await app({ KILN_ENGINE: dead, TIMEOUT_MS: '600', ON_UNAVAILABLE: 'continue' });
        const c = b.clone(lenient.url);
        const served = await c.post('/api/incr');
        assert.equal(served.status, 200);
        assert.equal(served.body['n'], 1);
        assert.deepEqual(served.setCookies, [], 'nothing stored, no cookie');
      });
    });
  }
}

/**
 * Session fixation: an attacker's id, planted in a victim's cookie jar, must not become
 * the victim's logged-in session when the app sets `principal` without regenerate().
 * `app(env)` starts another instance of the fixture (for the opt-out).
 */
export async function checkLoginRotation(main: AppProcess, app: (env: Env) => Promise<AppProcess>): Promise<void> {
  const sessionOf = async (b: Browser) => (await b.get<SessionReply>('/api/session')).body;
  const attacker = new Browser(main.url);
  await attacker.post('/api/incr');
  const planted = (await sessionOf(attacker)).sessionId;
  const victim = attacker.clone();
  const plantedCookie = victim.cookieHeader();
  // The id changes when the login commits, at the end of the request (docs/security.md).
  const login = await victim.post('/api/login-plain', { user: 'victim' });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  assert.equal(login.setCookies.length, 1, 'the new id goes out with the login');
  assert.notEqual(victim.cookieHeader(), plantedCookie);
  const mine = await sessionOf(victim);
  assert.notEqual(mine.sessionId, planted);
  assert.equal(mine.principal, 'victim');
  assert.deepEqual(mine.data, { n: 1, user: 'victim' }, 'the pre-login data moved to the new id');
  const theirs = await sessionOf(attacker);
  assert.equal(theirs.principal, null, 'the planted id gives no access to the login');
  assert.deepEqual(theirs.data, {}, 'the planted session was destroyed');
  assert.equal((await victim.post('/api/incr')).body['n'], 2, 'the rotated session works on');

  // An attacker logged in as themselves plants that session: a login as another user rotates it too.
  const mallory = new Browser(main.url);
  assert.equal((await mallory.post('/api/login-plain', { user: 'mallory' })).status, 200);
  const mallorys = (await sessionOf(mallory)).sessionId;
  const victim2 = mallory.clone();
  const relogin = await victim2.post('/api/login-plain', { user: 'victim' });
  assert.equal(relogin.status, 200, JSON.stringify(relogin.body));
  assert.equal(relogin.setCookies.length, 1, 'the new id goes out with the login');
  const mine2 = await sessionOf(victim2);
  assert.notEqual(mine2.sessionId, mallorys);
  assert.equal(mine2.principal, 'victim');
  assert.equal((await sessionOf(mallory)).principal, null, "the attacker's planted session gives no access to the victim's login");

  const optedOut = await app({ ROTATE_ON_LOGIN: '0' });
  const a2 = new Browser(optedOut.url);
  await a2.post('/api/incr');
  const kept = (await sessionOf(a2)).sessionId;
  const v2 = a2.clone();
  const login2 = await v2.post<{ sessionId: string }>('/api/login-plain', { user: 'victim' });
  assert.equal(login2.body.sessionId, kept, 'rotateOnLogin: false keeps the id');
  assert.equal((await sessionOf(a2)).principal, 'victim', 'opted out: the planted id shares the login');
}
