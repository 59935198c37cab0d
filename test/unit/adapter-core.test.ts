import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { readCookie, serializeCookie, signValue, unsignValue } from '../../src/adapters/core/cookies.js';
import { readOnlyPaths, SessionRuntime } from '../../src/adapters/core/runtime.js';
import { SessionCookie } from '../../src/adapters/core/session-cookie.js';
import { KilnError, isKilnError } from '../../src/errors/index.js';
import { createSessionObject } from '../../src/adapters/core/session-object.js';

const require = createRequire(import.meta.url);

describe('cookie signing', () => {
  it('is compatible with express-session (cookie-signature) both ways', () => {
    const signature = require('cookie-signature') as { sign(v: string, s: string): string; unsign(v: string, s: string): string | false };
    const value = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';
    assert.equal(signValue(value, 'keyboard cat'), `s:${signature.sign(value, 'keyboard cat')}`);
    assert.equal(unsignValue(`s:${signature.sign(value, 'keyboard cat')}`, ['keyboard cat']), value);
  });

  it('verifies with any secret of a rotation and refuses tampering', () => {
    const signed = signValue('session-id-1234567890', 'old');
    assert.equal(unsignValue(signed, ['new', 'old']), 'session-id-1234567890');
    assert.equal(unsignValue(signed, ['new']), undefined);
    assert.equal(unsignValue(signed.replace('session', 'sessioN'), ['old']), undefined);
    assert.equal(unsignValue(signed.slice(0, -1), ['old']), undefined);
    for (const bad of [undefined, '', 's:', 's:.', 'plain', `${signed}x`]) assert.equal(unsignValue(bad, ['old']), undefined, String(bad));
  });

  it('reads one cookie out of a header, bounded, and serialises attributes', () => {
    assert.equal(readCookie('a=1; connect.sid=s%3Axyz.abc; b=2', 'connect.sid'), 's:xyz.abc');
    assert.equal(readCookie('connect.sid="quoted"', 'connect.sid'), 'quoted');
    assert.equal(readCookie(`connect.sid=${'x'.repeat(2000)}`, 'connect.sid'), undefined);
    assert.equal(readCookie('connect.sid=%E0%A4%A', 'connect.sid'), undefined);
    assert.equal(readCookie(undefined, 'x'), undefined);
    const line = serializeCookie('sid', 's:a+b/c', { maxAge: 60_000, path: '/', httpOnly: true, secure: true, sameSite: 'strict', partitioned: true, priority: 'high', domain: 'example.com' });
    assert.equal(line, 'sid=s%3Aa%2Bb%2Fc; Max-Age=60; Domain=example.com; Path=/; HttpOnly; Secure; Partitioned; Priority=High; SameSite=Strict');
    assert.throws(() => serializeCookie('bad name', 'v', {}), (err: KilnError) => err.code === 'KILN_ERR_INVALID_OPTION');
    assert.throws(() => serializeCookie('sid', 'v', { path: `/${'x'.repeat(5000)}` }), (err: KilnError) => err.code === 'KILN_ERR_INVALID_ARGUMENT');
  });

  it('finds a cookie after many pairs without a value, in one pass', () => {
    assert.equal(readCookie(`${';'.repeat(100_000)}sid=1`, 'sid'), '1');
    assert.equal(readCookie('a; b; sid=2; c', 'sid'), '2');
    assert.equal(readCookie('a=1; b', 'b'), undefined);
    assert.equal(readCookie('sid; other=3', 'sid'), undefined);
    assert.equal(readCookie(';'.repeat(100_000), 'sid'), undefined);
  });

  it("refuses attributes that would change the Set-Cookie header (a Domain from a Host header, say), as the cookie package does; cases as it takes them", () => {
    const invalid = (attrs: Parameters<typeof serializeCookie>[2], option: string) =>
      assert.throws(() => serializeCookie('sid', 'v', attrs), (err: KilnError) => err.code === 'KILN_ERR_INVALID_OPTION' && err.details?.['option'] === option);
    invalid({ domain: 'a.com; SameSite=None' }, 'cookie.domain');
    invalid({ domain: 'a..com' }, 'cookie.domain');
    invalid({ domain: `${'a.'.repeat(8_000)}!` }, 'cookie.domain'); // a Host header's worth of labels, then a bad character
    invalid({ path: '/; Domain=evil.example' }, 'cookie.path');
    invalid({ path: '/\n' }, 'cookie.path');
    invalid({ sameSite: 'sometimes' as never }, 'cookie.sameSite');
    invalid({ priority: 'urgent' as never }, 'cookie.priority');
    assert.equal(serializeCookie('sid', 'v', { domain: '.shop.example.com', path: '/app', sameSite: 'Lax' as never, priority: 'High' as never }), 'sid=v; Domain=.shop.example.com; Path=/app; Priority=High; SameSite=Lax');
    assert.throws(() => new SessionRuntime({ secret: 'k1', cookie: { domain: 'a.com;x' } }, 'x'), (err: KilnError) => err.code === 'KILN_ERR_INVALID_OPTION' && /cookie\.domain/.test(err.message));
  });
});

describe('session id from the Cookie header', () => {
  it('verifies the value as sent, encoded or not, and remembers only what verified', async () => {
    const runtime = new SessionRuntime({ secret: 'k1' }, 'x');
    try {
      const id = 'abcdefghijklmnopqrstuv';
      const signed = signValue(id, 'k1');
      const encoded = `connect.sid=${encodeURIComponent(signed)}`;
      for (let round = 0; round < 2; round++) {
        // The second round is served from the cache of verified values.
        assert.equal(runtime.sessionIdFrom(encoded), id);
        assert.equal(runtime.sessionIdFrom(`connect.sid=${signed}`), id);
        assert.equal(runtime.sessionIdFrom(`a=1; connect.sid="${signed}"`), id);
        assert.equal(runtime.sessionIdFrom(encoded.replace('abc', 'abd')), undefined, 'tampered');
        assert.equal(runtime.sessionIdFrom('connect.sid=%E0%A4%A'), undefined, 'malformed encoding');
        assert.equal(runtime.sessionIdFrom(`connect.sid=${encodeURIComponent(signValue(id, 'other'))}`), undefined, 'other secret');
      }
    } finally {
      await runtime.close();
    }
  });
});

describe('Set-Cookie signing', () => {
  it('signs with the first secret, the same value whether remembered or not, in a bounded memory', async () => {
    const runtime = new SessionRuntime({ secret: ['new', 'old'] }, 'x');
    try {
      const cookie = new SessionCookie({ path: '/' }, false, Date.now());
      const ids = Array.from({ length: 10_050 }, (_, i) => `session-${String(i).padStart(16, '0')}`);
      for (let round = 0; round < 2; round++) {
        for (const id of [ids[0]!, ids[1]!]) {
          assert.equal(runtime.signedCookie(id, cookie), `connect.sid=${encodeURIComponent(signValue(id, 'new'))}; Path=/; HttpOnly`);
        }
      }
      for (const id of ids) runtime.signedCookie(id, cookie);
      const remembered = (runtime as unknown as { signed: Map<string, string> }).signed;
      assert.equal(remembered.size, 10_000, 'oldest signatures make room');
      assert.ok(!remembered.has(ids[0]!) && remembered.has(ids.at(-1)!));
      assert.equal(runtime.signedCookie(ids[0]!, cookie), `connect.sid=${encodeURIComponent(signValue(ids[0]!, 'new'))}; Path=/; HttpOnly`);
    } finally {
      await runtime.close();
    }
  });
});

describe('adapter options', () => {
  const code = (c: string) => (err: unknown) => err instanceof KilnError && err.code === c;

  it('require a secret and refuse express-session\'s store option, naming them', () => {
    assert.throws(() => new SessionRuntime({} as never, 'x'), (err: KilnError) => code('KILN_ERR_INVALID_OPTION')(err) && /"secret"/.test(err.message));
    assert.throws(() => new SessionRuntime({ secret: 's', store: {} } as never, 'x'), /"store"/);
    assert.throws(() => new SessionRuntime({ secret: 's', rolling: 'yes' } as never, 'x'), /"rolling"/);
    assert.throws(() => new SessionRuntime({ secret: 's', cookie: { maxage: 1 } } as never, 'x'), /unknown option "maxage"/);
  });

  it('check __Host- and __Secure- cookie names', async () => {
    assert.throws(() => new SessionRuntime({ secret: 's', name: '__Host-sid' }, 'x'), code('KILN_ERR_INVALID_OPTION'));
    assert.throws(() => new SessionRuntime({ secret: 's', name: '__Host-sid', cookie: { secure: true, domain: 'a.com' } }, 'x'), /__Host-/);
    assert.throws(() => new SessionRuntime({ secret: 's', name: '__Secure-sid' }, 'x'), /__Secure-/);
    const ok = new SessionRuntime({ secret: 's', name: '__Host-sid', cookie: { secure: 'auto' } }, 'x');
    await ok.close();
  });

  it('readOnlyPaths matches exact paths, sub-paths and patterns', () => {
    const scope = readOnlyPaths('/api/catalog', /^\/files\//);
    assert.equal(scope({ url: '/api/catalog?page=2' }), 'read');
    assert.equal(scope({ url: '/api/catalog/items' }), 'read');
    assert.equal(scope({ url: '/api/catalogue' }), 'write');
    assert.equal(scope({ path: '/files/a.png' }), 'read');
    assert.equal(scope({ url: '/cart' }), 'write');
  });
});

describe("cookie-parser's parsed cookies", () => {
  it('req.cookies is verified (never past the cookie length limit), req.signedCookies trusted only from our own secret', async () => {
    let unsigned = 0;
    const signer = {
      sign: (v: string) => `${v}.sig`,
      unsign: (v: string) => {
        unsigned++;
        return v.endsWith('.sig') ? { valid: true, renew: false, value: v.slice(0, -4) } : { valid: false, renew: false, value: null };
      },
    };
    const id = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG';
    const runtime = new SessionRuntime({ secret: signer, cookiePrefix: '' }, 'test');
    assert.equal(runtime.sessionIdFromParsed(undefined, { 'connect.sid': `${id}.sig` }, undefined), id, 'a signed raw value verifies');
    assert.equal(runtime.sessionIdFromParsed(undefined, { 'connect.sid': `${id}.bad` }, undefined), undefined, 'a forged one does not');
    unsigned = 0;
    assert.equal(runtime.sessionIdFromParsed(undefined, { 'connect.sid': `${'x'.repeat(5000)}.sig` }, undefined), undefined);
    assert.equal(unsigned, 0, 'an oversized value costs no verification');
    const own = new SessionRuntime({ secret: ['ours', 'older'] }, 'test');
    assert.equal(own.sessionIdFromParsed({ 'connect.sid': id }, undefined, 'older'), id, 'cookie-parser with one of our secrets');
    assert.equal(own.sessionIdFromParsed({ 'connect.sid': id }, undefined, 'theirs'), undefined, 'cookie-parser with another secret');
    assert.equal(own.sessionIdFromParsed({ 'connect.sid': 'not an id' }, undefined, 'ours'), undefined, 'not a session id');
    await runtime.close();
    await own.close();
  });
});

describe('session methods called without a callback', () => {
  it('a failure nobody awaits is not an unhandled rejection (it would end the process); awaited, it still rejects', async () => {
    const runtime = new SessionRuntime({ secret: 'k1' }, 'x');
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const rs = await runtime.open({}, undefined, false);
      const failing = (): Promise<never> => Promise.reject(new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'the tier is away'));
      Object.assign(rs, { destroy: failing, regenerate: failing, destroyAllOfPrincipal: failing });
      rs.handle.setPrincipal('u1');
      const session = createSessionObject(rs) as unknown as Record<string, () => Promise<unknown>>;
      for (const method of ['destroy', 'regenerate', 'logoutEverywhere']) void session[method]!();
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(unhandled, []);
      await assert.rejects(session['destroy']!(), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
      rs.abort();
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await runtime.close();
    }
  });
});

/**
 * A stored session with `values`, on a runtime of the in-process memory engine: `fn` gets
 * the runtime and the session's id, and `stored()` reads back what the tier holds.
 */
async function withStoredSession(values: Record<string, unknown>, fn: (runtime: SessionRuntime<object>, id: string, stored: () => Promise<Record<string, unknown>>) => Promise<void>): Promise<void> {
  const runtime = new SessionRuntime<object>({ secret: 'k1' }, 'x');
  try {
    const first = await runtime.open({}, undefined, false);
    for (const [name, value] of Object.entries(values)) first.handle.set(name, value);
    await first.finish();
    const stored = async (): Promise<Record<string, unknown>> => {
      const check = await runtime.open({}, first.id, false);
      const all = check.handle.toObject();
      check.abort();
      return all;
    };
    await fn(runtime, first.id, stored);
  } finally {
    await runtime.close();
  }
}

describe('a save() the tier refuses', () => {
  it('rolls back what it carried, and keeps what the request changed after it was taken', async () => {
    await withStoredSession({ kept: 'before' }, async (runtime, id, stored) => {
      // Refused for one attribute: that attribute's change goes, unless written again since.
      const one = await runtime.open({}, id, false);
      one.handle.set('big', 'x'.repeat(1024 * 1024 + 10)); // over the attribute limit
      one.handle.set('other', 1);
      const refused = one.save().catch((err: unknown) => err);
      one.handle.set('big', 'fixed'); // after the save was taken
      assert.ok(isKilnError(await refused, 'KILN_ERR_ATTRIBUTE_TOO_LARGE'));
      assert.equal(one.handle.get('big'), 'fixed', 'written again after the save: kept');
      assert.equal(one.handle.get('other'), 1, 'only the attribute the error names is looked at');
      await one.finish();

      // Refused as a whole: everything it carried goes, what came after stays.
      const whole = await runtime.open({}, id, false);
      for (let i = 0; i < 5; i++) whole.handle.set(`part${i}`, 'y'.repeat(1000 * 1000)); // 5 MB: over the session limit
      const refusedWhole = whole.save().catch((err: unknown) => err);
      whole.handle.set('later', 2);
      assert.ok(isKilnError(await refusedWhole, 'KILN_ERR_SESSION_TOO_LARGE'), String(await refusedWhole));
      assert.equal(whole.handle.get('part0'), undefined, 'what the refused save carried is rolled back');
      assert.equal(whole.handle.get('later'), 2, 'a change made after the save was taken stays');
      await whole.finish();

      assert.deepEqual(await stored(), { kept: 'before', big: 'fixed', other: 1, later: 2 });
    });
  });
});

describe('a destroy() nobody waits for', () => {
  it('that fails fails the request (nothing committed), rather than leave the user logged in behind a successful reply', async () => {
    await withStoredSession({ user: 'ann' }, async (runtime, id, stored) => {
      const rs = await runtime.open({}, id, false);
      rs.handle.set('note', 'changed before the logout');
      rs.handle.destroy = () => Promise.reject(new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'the tier is away'));
      void rs.destroy().catch(() => undefined); // req.session.destroy(); res.redirect('/')
      await assert.rejects(rs.finish(), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
      assert.deepEqual(await stored(), { user: 'ann' }, 'nothing of the failed request was stored');
    });
  });
});
