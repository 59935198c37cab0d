import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { KilnError } from '../../src/errors/index.js';
import { resolveKilnOptions } from '../../src/engines/kiln/kiln-options.js';
import { limitsFromWelcome, listPageFromWire, pingIntervalFor, PrincipalPageReader } from '../../src/engines/kiln/kiln-wire.js';
import { PendingRequests } from '../../src/engines/kiln/pending-requests.js';
import { ReadyWaiters } from '../../src/engines/kiln/ready-waiters.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('kiln engine options', () => {
  it('takes the URL apart with its defaults', () => {
    const o = resolveKilnOptions('kiln://10.0.0.1', {}, {});
    assert.equal(o.host, '10.0.0.1');
    assert.equal(o.port, 9510);
    assert.equal(o.secure, false);
    assert.equal(o.token, '');
    assert.equal(o.pingIntervalMs, undefined);
    const v6 = resolveKilnOptions('kilns://[::1]:9600', {}, {});
    assert.equal(v6.host, '::1');
    assert.equal(v6.port, 9600);
    assert.equal(v6.secure, true);
  });

  it('prefers the token option, then the URL password, then KILN_TOKEN', () => {
    const opt = 'o'.repeat(32);
    const env = { KILN_TOKEN: 'e'.repeat(32) };
    const url = `kiln://:p%40ss${'u'.repeat(28)}@h:1`;
    assert.equal(resolveKilnOptions(url, { token: opt }, env).token, opt);
    assert.equal(resolveKilnOptions(url, {}, env).token, `p@ss${'u'.repeat(28)}`);
    assert.equal(resolveKilnOptions('kiln://h:1', {}, env).token, env.KILN_TOKEN);
    assert.equal(resolveKilnOptions('kiln://h:1', {}, {}).token, '', 'none: a server run with insecureNoAuth');
  });

  it('refuses a token shorter than any kiln server accepts, naming where it came from (no handshake fails over and over)', () => {
    const refusal = (where: RegExp) => (err: KilnError) => err.code === 'KILN_ERR_INVALID_OPTION' && where.test(err.message) && /at least 32 bytes/.test(err.message);
    assert.throws(() => resolveKilnOptions('kiln://h:1', { token: 'opt' }), refusal(/option "token"/));
    assert.throws(() => resolveKilnOptions('kiln://:p%40ss@h:1', {}), refusal(/the token in the engine URL/));
    assert.throws(() => resolveKilnOptions('kiln://h:1', {}, { KILN_TOKEN: 'short' }), refusal(/KILN_TOKEN/));
    // The secret is not echoed, and a URL password that is no percent-encoding is a KilnError, not a URIError.
    assert.throws(() => resolveKilnOptions('kiln://h:1', { token: 'hunter2' }), (err: Error) => !err.message.includes('hunter2'));
    assert.throws(() => resolveKilnOptions('kiln://:%E0%A4%A@h:1', {}), { code: 'KILN_ERR_INVALID_OPTION', message: /not valid percent-encoding/ });
  });

  it('refuses a bad URL, another scheme and unknown options at once', () => {
    assert.throws(() => resolveKilnOptions('not a url'), { code: 'KILN_ERR_INVALID_OPTION' });
    assert.throws(() => resolveKilnOptions('redis://h:1'), { code: 'KILN_ERR_INVALID_OPTION' });
    assert.throws(() => resolveKilnOptions('kiln://h:1', { tokn: 'x' } as never), { code: 'KILN_ERR_INVALID_OPTION' });
  });

  it('names the owner after the name option with a random suffix', () => {
    const a = resolveKilnOptions('kiln://h', { name: 'web' }, {});
    const b = resolveKilnOptions('kiln://h', { name: 'web' }, {});
    assert.match(a.ownerId, /^web-[0-9a-f]{6}$/);
    assert.notEqual(a.ownerId, b.ownerId);
  });
});

describe('kiln wire', () => {
  it('fills the limits a Welcome leaves out with the defaults', () => {
    assert.deepEqual(limitsFromWelcome(undefined), { maxAttributeBytes: 1 << 20, maxSessionBytes: 4 << 20, maxAttributes: 1000, maxAttributeNameLength: 256, maxPrincipalLength: 256, touchGraceMs: undefined });
    assert.equal(limitsFromWelcome({ maxAttributes: 5, touchGraceMs: 900 }).maxAttributes, 5);
    assert.equal(limitsFromWelcome({ maxAttributes: 5, touchGraceMs: 900 }).touchGraceMs, 900);
  });

  it('pings at a third of the idle timeout, between 100 ms and 10 s, unless told', () => {
    assert.equal(pingIntervalFor(undefined, undefined), 10_000);
    assert.equal(pingIntervalFor({ idleConnectionTimeoutMs: 3000 }, undefined), 1000);
    assert.equal(pingIntervalFor({ idleConnectionTimeoutMs: 60 }, undefined), 100);
    assert.equal(pingIntervalFor({ idleConnectionTimeoutMs: 0 }, undefined), 10_000, 'no idle timeout: 30 s assumed');
    assert.equal(pingIntervalFor({ idleConnectionTimeoutMs: 3000 }, 250), 250);
  });

  it('reads a listing page and refuses a malformed one', () => {
    const id = 'a'.repeat(22);
    const meta = { id, createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 0, absoluteExpiresAt: 0, principal: null, version: 1 };
    const page = listPageFromWire({ sessions: [meta], next: id, total: 3 });
    assert.equal(page.sessions[0]?.id, id);
    assert.equal(page.next, id);
    assert.equal(page.total, 3);
    assert.equal(listPageFromWire({ sessions: [], next: null, total: 0 }).next, null);
    assert.throws(() => listPageFromWire({ sessions: 'x' }), { code: 'KILN_ERR_PROTOCOL' });
    assert.throws(() => listPageFromWire([]), { code: 'KILN_ERR_PROTOCOL' });
  });

  it("reads a principal's pages; refuses a malformed one and pages that do not go on, and flags empty pages past what the principal's sessions need", () => {
    const id = 'a'.repeat(22);
    const meta = (n: number) => ({ id: String(n).padStart(22, 'b'), createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 0, absoluteExpiresAt: 0, principal: 'ann', version: 1 });
    const reader = new PrincipalPageReader();
    assert.deepEqual(reader.page({ sessions: [meta(1), meta(2)], next: { id, join: 9 }, total: 5 }), { id, join: 9 });
    assert.deepEqual(reader.page({ sessions: [], next: { id, join: 9 }, total: 5 }), { id, join: 9 }, 'a cut walk: an empty page, the same join');
    assert.deepEqual(reader.page({ sessions: [meta(3)], next: { id, join: 4 }, total: 6 }), { id, join: 4 });
    assert.equal(reader.page({ sessions: [meta(4), meta(5)], next: null, total: 6 }), null);
    assert.deepEqual(reader.sessions.map((m) => m.id), [1, 2, 3, 4, 5].map((n) => meta(n).id));

    /** A reader that has read one page (next { id, join: 9 }, total 5), then `body`. */
    const refused = (body: unknown, first = true) => {
      const r = new PrincipalPageReader();
      if (first) r.page({ sessions: [meta(1)], next: { id, join: 9 }, total: 5 });
      assert.throws(() => r.page(body), { code: 'KILN_ERR_PROTOCOL' }, JSON.stringify(body));
    };
    refused([meta(1)], false); // the one array of a server from before pages, to a paging request
    refused({ sessions: 'x', next: null, total: 1 }, false);
    refused({ sessions: [meta(1)], next: null }, false); // no total
    refused({ sessions: [meta(1)], next: 'cursor', total: 3 }, false);
    refused({ sessions: [meta(1)], next: { id: 'not an id!', join: 1 }, total: 3 }, false);
    refused({ sessions: [meta(1)], next: { id, join: -1 }, total: 3 }, false);
    refused({ sessions: [], next: { id, join: 3 }, total: 3 }, false); // an empty first page with a cursor
    refused({ sessions: [meta(2)], next: { id, join: 9 }, total: 5 }); // the same join again, with sessions
    refused({ sessions: [meta(2)], next: { id, join: 12 }, total: 5 }); // a later join
    refused({ sessions: [], next: { id, join: 8 }, total: 5 }); // an empty page must keep the join
    refused({ sessions: [meta(2), meta(3), meta(4), meta(5), meta(6)], next: null, total: 5 }); // more than the principal had
    // Empty pages in a row: what the principal's sessions need, ceil(2 × total / 1024) + 8
    // with the most total any page reported (logins since the first page lengthen a walk),
    // then a flag: the caller reads again (a real server under churn can get there too).
    const r = new PrincipalPageReader();
    r.page({ sessions: [meta(1)], next: { id, join: 9 }, total: 5 });
    for (let i = 0; i < 9; i++) r.page({ sessions: [], next: { id, join: 9 }, total: 5 });
    assert.equal(r.tooManyEmptyPages, false, '9 allowed');
    r.page({ sessions: [], next: { id, join: 9 }, total: 5 });
    assert.equal(r.tooManyEmptyPages, true);
    const grown = new PrincipalPageReader();
    grown.page({ sessions: [meta(1)], next: { id, join: 9 }, total: 5 });
    for (let i = 0; i < 20; i++) grown.page({ sessions: [], next: { id, join: 9 }, total: 10_000 });
    assert.equal(grown.tooManyEmptyPages, false, '10,000 sessions now: ceil(20,000 / 1024) + 8 = 28 allowed');
    assert.deepEqual(grown.page({ sessions: [meta(2)], next: null, total: 10_000 }), null);
  });
});

describe('pending requests', () => {
  // Its timer is unref'd (it must not keep a process alive): something else keeps this one alive.
  let keepAlive: NodeJS.Timeout;
  before(() => {
    keepAlive = setInterval(() => undefined, 1000);
  });
  after(() => clearInterval(keepAlive));

  it('settles a request by id with its answer or its error, once', async () => {
    const p = new PendingRequests();
    const ok = new Promise((resolve, reject) => p.add(p.nextId(), 1, 1000, Date.now() + 1000, resolve, reject));
    const bad = new Promise((resolve, reject) => p.add(p.nextId(), 1, 1000, Date.now() + 1000, resolve, reject));
    assert.equal(p.settle(1, true, 'yes', () => new KilnError('KILN_ERR_INTERNAL', 'x')), true);
    assert.equal(p.settle(1, true, 'again', () => new KilnError('KILN_ERR_INTERNAL', 'x')), false);
    assert.equal(p.settle(2, false, 'no', (b) => new KilnError('KILN_ERR_CONFLICT', String(b))), true);
    assert.equal(await ok, 'yes');
    await assert.rejects(bad, { code: 'KILN_ERR_CONFLICT', message: 'no' });
    assert.equal(p.size, 0);
  });

  it('fails overdue requests with KILN_ERR_TIMEOUT and keeps the others', async () => {
    let timeouts = 0;
    const p = new PendingRequests(() => timeouts++);
    const late = new Promise((resolve, reject) => p.add(p.nextId(), 7, 500, Date.now() + 500, resolve, reject));
    const soon = new Promise((resolve, reject) => p.add(p.nextId(), 7, 20, Date.now() + 20, resolve, reject));
    await assert.rejects(soon, { code: 'KILN_ERR_TIMEOUT' });
    assert.equal(timeouts, 1);
    assert.equal(p.size, 1, 'the later request still waits');
    p.settle(1, true, 'done', () => new KilnError('KILN_ERR_INTERNAL', 'x'));
    assert.equal(await late, 'done');
  });

  it('re-arms for a later deadline after the earliest fires', async () => {
    const p = new PendingRequests();
    const a = new Promise((resolve, reject) => p.add(p.nextId(), 1, 10, Date.now() + 10, resolve, reject));
    const b = new Promise((resolve, reject) => p.add(p.nextId(), 1, 40, Date.now() + 40, resolve, reject));
    await assert.rejects(a, { code: 'KILN_ERR_TIMEOUT' });
    await assert.rejects(b, { code: 'KILN_ERR_TIMEOUT' });
  });

  it('rejects every request at once when the connection goes', async () => {
    const p = new PendingRequests();
    const a = new Promise((resolve, reject) => p.add(p.nextId(), 1, 1000, Date.now() + 1000, resolve, reject));
    p.rejectAll(new KilnError('KILN_ERR_CONNECTION_LOST', 'gone'));
    await assert.rejects(a, { code: 'KILN_ERR_CONNECTION_LOST' });
    assert.equal(p.size, 0);
    await sleep(5);
  });

  it('numbers requests from 1 and never hands out 0', () => {
    const p = new PendingRequests();
    assert.equal(p.nextId(), 1);
    assert.equal(p.nextId(), 2);
  });
});

describe('ready waiters', () => {
  it('resolves every waiter when connected and rejects them all on failure', async () => {
    const w = new ReadyWaiters();
    const a = w.wait(1000, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'x'));
    w.resolveAll();
    await a;
    const b = w.wait(1000, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'x'));
    w.rejectAll(new KilnError('KILN_ERR_CLOSED', 'closed'));
    await assert.rejects(b, { code: 'KILN_ERR_CLOSED' });
    assert.equal(w.size, 0);
  });

  it('gives up on a waiter after its own timeout', async () => {
    const w = new ReadyWaiters();
    const a = w.wait(10, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'not reachable'));
    const b = w.wait(1000, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'x'));
    await assert.rejects(a, { code: 'KILN_ERR_ENGINE_UNAVAILABLE' });
    assert.equal(w.size, 1);
    w.resolveAll();
    await b;
  });
});
