import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SessionHandle, type CachedSession, type HandleHost } from '../../src/client/session-handle.js';
import { KilnStore } from '../../src/adapters/express-store/index.js';
import { isKilnError } from '../../src/errors/index.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { encodeCommitBody, MessageType } from '../../src/protocol/messages.js';
import { decodeAttribute, encodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { checkDeltaLimits, DEFAULT_SESSION_LIMITS } from '../../src/session/limits.js';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { Browser } from '../helpers/browser.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';
import { RawClient } from '../helpers/raw-client.js';

/**
 * Issue #22, item 9: `Object.assign(req.session, req.body)` with a JSON body
 * `{"__proto__": {...}}` (JSON.parse makes `__proto__` an own property) must neither be
 * stored nor give any object built from the session a prototype.
 */
const PROTO_BODY = '{"__proto__":{"isAdmin":true,"polluted":"yes"},"theme":"dark"}';
const isPrototypePathError = (name: string) => (err: unknown) => isKilnError(err, 'KILN_ERR_INVALID_ARGUMENT') && err.details?.['attribute'] === name && err.message.includes(`"${name}" cannot be a session attribute name`);

/** A POST whose JSON body is sent as written (JSON.stringify would drop nothing, but this shows the bytes). */
async function postRaw(b: Browser, path: string, json: string): Promise<{ status: number; body: { code?: string; message?: string } }> {
  const res = await fetch(`${b.base}${path}`, { method: 'POST', headers: { cookie: b.cookieHeader(), 'content-type': 'application/json' }, body: json });
  const text = await res.text();
  return { status: res.status, body: (text.startsWith('{') ? JSON.parse(text) : { message: text }) as { code?: string; message?: string } };
}

describe('__proto__ attributes over HTTP', () => {
  let server: ServerProcess;
  const apps: AppProcess[] = [];
  before(async () => {
    server = await startKilnServer();
  });
  after(async () => {
    await Promise.all(apps.map((a) => a.kill()));
    await server.kill();
  });
  const app = async (fixture: string) => {
    const a = await startApp(fixture, { KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRETS: 'proto-secret' });
    apps.push(a);
    return a;
  };

  it("Kiln's Express adapter: the assignment throws KILN_ERR_INVALID_ARGUMENT naming __proto__; nothing is stored, no prototype later", async () => {
    const main = await app('express-app');
    const b = new Browser(main.url);
    await b.post('/api/incr');
    const polluted = await postRaw(b, '/api/assign', PROTO_BODY);
    assert.equal(polluted.status, 500);
    assert.equal(polluted.body.code, 'KILN_ERR_INVALID_ARGUMENT');
    assert.match(polluted.body.message ?? '', /"__proto__" cannot be a session attribute name/);
    for (const name of ['constructor', 'prototype']) {
      const r = await postRaw(b, '/api/assign', `{"${name}":{"isAdmin":true}}`);
      assert.equal(r.body.code, 'KILN_ERR_INVALID_ARGUMENT', name);
    }
    const next = await b.get<{ data: Record<string, unknown> }>('/api/session');
    assert.deepEqual(next.body.data, { n: 1 });
    const cookie = await b.get<{ keys: string[] }>('/api/cookie');
    assert.deepEqual(cookie.body.keys, ['cookie', 'n']);
  });

  it('express-session with KilnStore: a stored value holding a __proto__ key comes back as data, with no inherited properties', async () => {
    // express-session's req.session is its own object: `Object.assign(req.session, body)`
    // with a `__proto__` key replaces that object's prototype before any store sees it
    // (with MemoryStore too), so the store's part is what it keeps and hands back.
    const main = await app('express-session-app');
    const b = new Browser(main.url);
    await b.post('/api/incr');
    const set = await postRaw(b, '/api/set', `{"key":"prefs","value":${PROTO_BODY}}`);
    assert.equal(set.status, 200);
    const next = await b.get<{ data: Record<string, unknown> }>('/api/session');
    assert.equal(next.status, 200);
    assert.equal(next.body.data['isAdmin'], undefined);
    assert.equal(next.body.data['polluted'], undefined);
    assert.equal(next.body.data['n'], 1);
    const prefs = next.body.data['prefs'] as Record<string, unknown>;
    assert.equal(prefs['theme'], 'dark');
    assert.equal(prefs['isAdmin'], undefined, 'the nested __proto__ never became a prototype');
  });

  it('a hostile client committing __proto__ straight to the kiln server is refused with the same error', async () => {
    const raw = await RawClient.open(server.port);
    try {
      raw.hello(server.token);
      const id = generateSessionId();
      raw.send(MessageType.Acquire, 2, { id, timeoutMs: 1000 });
      const token = ((await raw.reply(2)).body as { token: number }).token;
      const commit = { sessionId: id, token, commitId: 'proto-1', baseVersion: 0, lastAccessedAt: Date.now(), set: [['__proto__', encodeAttribute('x', { isAdmin: true })]] as [string, Uint8Array][], del: [], idleTimeoutMs: 60_000, absoluteExpiresAt: 0 };
      raw.write(encodeFrame(MessageType.Commit, 3, encodeCommitBody(commit)));
      const reply = await raw.reply(3);
      assert.equal(reply.type, MessageType.Error);
      assert.ok(isPrototypePathError('__proto__')(raw.lastError()), String(raw.lastError()));
      raw.send(MessageType.Load, 4, { id, token });
      const loaded = (await raw.reply(4)).body as { attrs?: [string, Uint8Array][] } | null;
      assert.deepEqual(loaded?.attrs ?? [], [], 'nothing stored');
    } finally {
      raw.destroy();
    }
  });
});

describe('__proto__ attributes: validation and decoding', () => {
  it('checkDeltaLimits (client and server) refuses __proto__, constructor and prototype', () => {
    for (const name of ['__proto__', 'constructor', 'prototype']) {
      assert.throws(() => checkDeltaLimits(new Map(), 0, { set: [[name, Uint8Array.of(0xc0)]], del: [] }, DEFAULT_SESSION_LIMITS), isPrototypePathError(name));
      assert.throws(() => checkDeltaLimits(new Map(), 0, { set: [], del: [], patch: [{ name, baseLength: 1, cut: 0, bytes: Uint8Array.of(1) }] } as never, DEFAULT_SESSION_LIMITS), isPrototypePathError(name));
    }
    assert.equal(checkDeltaLimits(new Map(), 0, { set: [['__proto', Uint8Array.of(0xc0)]], del: [] }, DEFAULT_SESSION_LIMITS), 8);
  });

  it('KilnStore.set refuses a session whose own keys include __proto__', async () => {
    const store = new KilnStore();
    try {
      const session = JSON.parse(`{"cookie":{"originalMaxAge":null},${PROTO_BODY.slice(1)}`) as never;
      const err = await new Promise<unknown>((resolve) => store.set('proto-session-0001', session, resolve));
      assert.ok(isPrototypePathError('__proto__')(err), String(err));
      const stored = await new Promise<unknown>((resolve) => store.get('proto-session-0001', (_e, s) => resolve(s)));
      assert.equal(stored, null, 'nothing stored');
    } finally {
      await store.close();
    }
  });

  it('a nested __proto__ key decodes as data, never as a prototype', () => {
    const value = JSON.parse('{"prefs":{"__proto__":{"isAdmin":true}},"list":[{"__proto__":{"isAdmin":true}}]}') as Record<string, unknown>;
    const decoded = decodeAttribute(encodeAttribute('v', value)) as { prefs: Record<string, unknown>; list: Record<string, unknown>[] };
    for (const obj of [decoded, decoded.prefs, decoded.list[0]!]) {
      assert.equal(Object.getPrototypeOf(obj), Object.prototype);
      assert.equal((obj as { isAdmin?: unknown }).isAdmin, undefined);
    }
    assert.equal(({} as { isAdmin?: unknown }).isAdmin, undefined, 'Object.prototype untouched');
  });

  it('a __proto__ attribute already stored (before this check) is invisible: toObject() gains no prototype', () => {
    const host = {} as HandleHost;
    const base: CachedSession = {
      meta: { id: generateSessionId(), createdAt: 0, lastAccessedAt: 0, idleTimeoutMs: 0, absoluteExpiresAt: 0, principal: null, version: 1 },
      attributes: new Map([['__proto__', encodeAttribute('x', { isAdmin: true })], ['constructor', encodeAttribute('x', { isAdmin: true })], ['n', encodeAttribute('n', 1)]]),
      bytes: 0,
    };
    const handle = new SessionHandle(host, base, false, true, undefined);
    const obj = handle.toObject();
    assert.equal(Object.getPrototypeOf(obj), Object.prototype);
    assert.deepEqual(Object.keys(obj), ['n']);
    assert.equal((obj as { isAdmin?: unknown }).isAdmin, undefined);
    assert.equal(handle.get('__proto__'), undefined);
    assert.equal(handle.has('constructor'), false);
  });
});
