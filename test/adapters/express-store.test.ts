import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { SessionData } from 'express-session';
import { KilnStore } from '../../src/adapters/express-store/index.js';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { Browser } from '../helpers/browser.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';

const sid = (n: number) => `express-session-id-${String(n).padStart(12, '0')}`;
const cookie = (maxAge = 60_000) => ({ originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge).toISOString(), httpOnly: true, path: '/' });

function storeContract(name: string, makeEngine: () => string | undefined) {
  describe(`KilnStore contract (${name})`, () => {
    let store: KilnStore;
    let get: (id: string) => Promise<unknown>;
    let set: (id: string, s: unknown) => Promise<void>;
    let destroy: (id: string) => Promise<void>;
    let length: () => Promise<number>;
    let all: () => Promise<unknown[]>;
    let clear: () => Promise<void>;
    let touch: (id: string, s: unknown) => Promise<void>;

    before(() => {
      store = new KilnStore({ engine: makeEngine() });
      get = promisify(store.get.bind(store)) as typeof get;
      set = promisify(store.set.bind(store)) as unknown as typeof set;
      destroy = promisify(store.destroy.bind(store)) as typeof destroy;
      length = promisify(store.length!.bind(store)) as typeof length;
      all = promisify(store.all!.bind(store)) as typeof all;
      clear = promisify(store.clear!.bind(store)) as typeof clear;
      touch = promisify(store.touch!.bind(store)) as unknown as typeof touch;
    });
    after(() => store.close());

    it('get of an unknown id is null; set then get returns the session as JSON', async () => {
      assert.equal(await get(sid(1)), null);
      const session = { cookie: cookie(), user: { name: 'Ada', since: new Date(0) }, n: 1 };
      await set(sid(1), session);
      assert.deepEqual(await get(sid(1)), JSON.parse(JSON.stringify(session)));
    });

    it('set replaces the whole session (removed keys are gone) and writes only what changed', async () => {
      await set(sid(2), { cookie: cookie(), keep: 'x'.repeat(5000), gone: true, n: 1 });
      const before = store.client.stats().counters.commitBytes;
      await set(sid(2), { cookie: cookie(), keep: 'x'.repeat(5000), n: 2 });
      const sent = store.client.stats().counters.commitBytes - before;
      assert.deepEqual(Object.keys((await get(sid(2))) as object).sort(), ['cookie', 'keep', 'n']);
      assert.ok(sent < 500, `only n and cookie travelled (${sent} B), not the 5 KB attribute`);
    });

    it('destroy, touch, length, all, clear', async () => {
      await clear();
      assert.equal(await length(), 0);
      for (let i = 10; i < 15; i++) await set(sid(i), { cookie: cookie(), i });
      assert.equal(await length(), 5);
      await touch(sid(10), { cookie: cookie(120_000), i: 10 });
      await destroy(sid(11));
      assert.equal(await get(sid(11)), null);
      const everything = (await all()) as (SessionData & { i: number; id: string })[];
      assert.deepEqual(everything.map((s) => s.i).sort(), [10, 12, 13, 14]);
      assert.ok(everything.every((s) => typeof s.id === 'string'));
      await clear();
      assert.equal(await length(), 0);
    });

    it('a destroyed session cannot be written back by a late set (no resurrection)', async () => {
      await set(sid(20), { cookie: cookie(), n: 1 });
      await destroy(sid(20));
      await assert.rejects(set(sid(20), { cookie: cookie(), n: 2 }), (err: { code?: string }) => err.code === 'KILN_ERR_SESSION_DESTROYED');
      assert.equal(await get(sid(20)), null);
    });
  });
}

describe('KilnStore', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startKilnServer();
    process.env['KILN_TOKEN'] = server.token;
  });
  after(() => server.kill());

  storeContract('memory engine', () => undefined);
  storeContract('kiln server', () => server.url);

  describe('driven through express-session, two app processes sharing a kiln server', () => {
    let apps: AppProcess[];
    before(async () => {
      apps = await Promise.all([0, 1].map(() => startApp('express-session-app', { KILN_ENGINE: server.url, KILN_TOKEN: server.token, COOKIE_MAX_AGE: '60000' })));
    });
    after(() => Promise.all(apps.map((a) => a.kill())));

    it('a session made on one process is read and changed on the other', async () => {
      const b = new Browser(apps[0]!.url);
      await b.post('/api/incr');
      await b.request('POST', '/api/incr', {}, {}, apps[1]!.url);
      const seen = await b.request<{ data: { n: number } }>('GET', '/api/session', undefined, {}, apps[0]!.url);
      assert.equal(seen.body.data.n, 2);
    });

    it('regenerate and destroy: replaying the old cookie finds nothing', async () => {
      const b = new Browser(apps[0]!.url);
      await b.post('/api/set', { key: 'secret', value: 's3' });
      const before = b.clone();
      await b.request('POST', '/api/login', { user: 'eve' }, {}, apps[1]!.url);
      const stale = await before.request<{ data: Record<string, unknown> }>('GET', '/api/session', undefined, {}, apps[1]!.url);
      assert.equal(stale.body.data['secret'], undefined);
      const loggedIn = b.clone();
      await b.post('/api/logout');
      const replay = await loggedIn.request<{ data: Record<string, unknown> }>('GET', '/api/session', undefined, {}, apps[1]!.url);
      assert.equal(replay.body.data['user'], undefined);
    });

    it('store.all, length and clear through the app', async () => {
      const admin = new Browser(apps[0]!.url);
      const n = (await admin.get<{ n: number }>('/api/store/length')).body.n;
      assert.ok(n >= 1);
      const listed = (await admin.get<unknown[]>('/api/store/all')).body;
      assert.equal(listed.length, n);
      await admin.post('/api/store/clear');
      assert.equal((await admin.get<{ n: number }>('/api/store/length')).body.n, 0);
    });
  });
});

describe('KilnStore callbacks', () => {
  it('are called outside promise chains: an exception thrown in one is an uncaught exception (as with MemoryStore), never an unhandled rejection', async () => {
    const store = new KilnStore();
    const seen: string[] = [];
    const uncaught = (err: Error) => seen.push(`uncaught ${err.message}`);
    const rejected = (err: unknown) => seen.push(`rejection ${(err as Error).message}`);
    // node:test turns an uncaught exception into a test failure: take it first.
    const previous = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', uncaught);
    process.on('unhandledRejection', rejected);
    try {
      store.get('missing-session-id-0001', () => {
        throw new Error('thrown by the callback');
      });
      for (let i = 0; i < 50 && seen.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.deepEqual(seen, ['uncaught thrown by the callback']);
    } finally {
      process.off('uncaughtException', uncaught);
      process.off('unhandledRejection', rejected);
      for (const l of previous) process.on('uncaughtException', l);
      await store.close();
    }
  });

  it('store any express-session id: user:1, %, /foo, lone surrogates, a 200-character one, and a Kiln-shaped id ending in .xs', async () => {
    const store = new KilnStore();
    const get = promisify(store.get.bind(store)) as (id: string) => Promise<unknown>;
    const set = promisify(store.set.bind(store)) as unknown as (id: string, s: unknown) => Promise<void>;
    const all = promisify(store.all!.bind(store)) as unknown as () => Promise<{ id: string; i: number }[]>;
    // Two lone surrogates: one id each (UTF-8 would turn both into U+FFFD).
    const ids = ['user:1', '%', '/foo', 'y'.repeat(200), 'abcdefghijklmnopqrstuvwx.xs', 'abcdefghijklmnopqrstuvwx', 'lone \uD800', 'lone \uD801'];
    try {
      for (const [i, id] of ids.entries()) await set(id, { cookie: cookie(), i });
      for (const [i, id] of ids.entries()) assert.equal((await get(id) as { i: number }).i, i, id);
      const listed = await all();
      assert.equal(listed.length, ids.length);
      const readable = listed.filter((s) => s.id !== undefined && ids.includes(s.id)).map((s) => s.i).sort();
      assert.deepEqual(readable, [0, 1, 2, 4, 5, 6, 7], 'every id but the hashed long one lists as itself');
      const hashed = listed.find((x) => x.i === 3)!;
      assert.match(hashed.id, /\.xsh$/);
      await promisify(store.destroy.bind(store))(hashed.id);
      assert.equal(await get('y'.repeat(200)), null, 'the id all() lists destroys the session');
    } finally {
      await store.close();
    }
  });
});
