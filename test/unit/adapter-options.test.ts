import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ADAPTER_OPTIONS, connectWarning, resolveCookieOptions, signerFromOption } from '../../src/adapters/core/adapter-options.js';
import { KilnError, isKilnError } from '../../src/errors/index.js';

/** The adapters' options, checked up front (adapter-options.ts alone). */
describe('adapter options', () => {
  const invalid = (option: string) => (err: unknown) => isKilnError(err, 'KILN_ERR_INVALID_OPTION') && err.details?.['option'] === option;

  it('cookie attributes get the defaults and a bad lifetime fails naming it', () => {
    assert.deepEqual(resolveCookieOptions('t', {}), { path: '/', httpOnly: true, sameSite: 'lax', secure: undefined });
    assert.equal(resolveCookieOptions('t', { secure: 'true' as unknown as boolean }).secure, true);
    assert.throws(() => resolveCookieOptions('t', { maxAge: Number.NaN }), invalid('cookie.maxAge'));
    assert.throws(() => resolveCookieOptions('t', { expires: new Date('nope') }), invalid('cookie.expires'));
    assert.throws(() => resolveCookieOptions('t', { colour: 'red' } as never), /colour/);
    // express-session takes any truthy value as true ('false' too): refused rather than guessed.
    for (const secure of ['yes', 'false', 1, null]) assert.throws(() => resolveCookieOptions('t', { secure } as never), invalid('cookie.secure'));
    assert.equal(resolveCookieOptions('t', { secure: 'auto' }).secure, 'auto');
  });

  it('a route that no balancer could name is refused up front, naming the option', async () => {
    const { session } = await import('../../src/adapters/express/index.js');
    assert.throws(() => session({ secret: 'x'.repeat(32), route: 'bad route!' }), invalid('route'));
  });

  it('the secret: strings or Buffers (the first signs, all verify), or a signer; anything else names the option', () => {
    const signer = signerFromOption('t', ['new-secret', 'old-secret'], 's:', 'sha256');
    const old = signerFromOption('t', 'old-secret', 's:', 'sha256');
    const id = 'abcdefghijklmnopqrstuvwxyz012345';
    assert.equal(signer.unsign(old.sign(id)), id, 'an older secret still verifies');
    assert.throws(() => signerFromOption('t', [], 's:', 'sha256'), invalid('secret'));
    assert.throws(() => signerFromOption('t', [''], 's:', 'sha256'), invalid('secret'));
    assert.throws(() => signerFromOption('t', 'x', 's:', 'no-such-hash'), invalid('algorithm'));
  });

  it('a refusal is named once and not retried; anything else is transient', () => {
    const [refused, { code }] = connectWarning('app', 'kiln://h:1', new KilnError('KILN_ERR_AUTH', 'bad token'));
    assert.equal(code, 'KILN_ERR_AUTH');
    assert.match(refused, /token is wrong or missing: set KILN_TOKEN.*\(bad token\)\. Not retrying/);
    // The server's own 'wrong or missing token' is not said twice.
    const [plain] = connectWarning('app', 'kiln://h:1', new KilnError('KILN_ERR_AUTH', 'wrong or missing token'));
    assert.doesNotMatch(plain, /\(wrong or missing token\)/);
    const [missing, m] = connectWarning('app', 'redis://h:1', new KilnError('KILN_ERR_MISSING_DEPENDENCY', 'the Redis engine needs the @redis/client package: npm install @redis/client'));
    assert.equal(m.code, 'KILN_ERR_MISSING_DEPENDENCY');
    assert.equal(missing, 'app: the Redis engine needs the @redis/client package: npm install @redis/client. Requests fail with KILN_ERR_MISSING_DEPENDENCY until it is installed.');
    const [transient, t] = connectWarning('app', 'kiln://h:1', new Error('ECONNREFUSED'));
    assert.equal(t.code, 'KILN_ERR_ENGINE_UNAVAILABLE');
    assert.match(transient, /retrying in the background/);
  });

  it('lists timeoutMs (one bound per request) among the options', () => {
    assert.ok(ADAPTER_OPTIONS.includes('timeoutMs'));
  });
});
