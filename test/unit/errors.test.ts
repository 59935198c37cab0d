import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_REGISTRY, errorFromWire, httpStatusOf, KilnError } from '../../src/errors/index.js';
import type { KilnErrorCode } from '../../src/errors/index.js';
import { ROOT } from '../helpers/processes.js';

describe('error registry', () => {
  it('every code is documented in docs/errors.md with its meaning, and the page names no other code', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');
    for (const [code, { meaning, retryable }] of Object.entries(ERROR_REGISTRY)) {
      assert.ok(doc.includes(`| \`${code}\` | ${httpStatusOf(code as KilnErrorCode)} | ${retryable ? 'yes' : 'no'} | ${meaning} |`), `${code} documented as in the registry`);
    }
    const documented = [...doc.matchAll(/KILN_ERR_[A-Z_]+/g)].map((m) => m[0]);
    for (const code of documented) assert.ok(code in ERROR_REGISTRY, `${code} in docs but not in the registry`);
  });

  it('errors carry name, code, cause and details, and cross the wire by code', () => {
    const cause = new Error('disk');
    const err = new KilnError('KILN_ERR_STORAGE', 'could not write', { cause, details: { path: '/x' } });
    assert.equal(err.name, 'KilnError');
    assert.equal(err.code, 'KILN_ERR_STORAGE');
    assert.equal(err.cause, cause);
    assert.equal(err.retryable, false);
    const back = errorFromWire(JSON.parse(JSON.stringify(err)));
    assert.equal(back.code, 'KILN_ERR_STORAGE');
    assert.deepEqual(back.details, { path: '/x' });
    assert.equal(errorFromWire({ code: 'EVIL', message: 'x' }).code, 'KILN_ERR_INTERNAL', 'unknown codes are not trusted');
  });

  it('errors carry the HTTP status web frameworks answer with: 503 + Retry-After when the tier is away, 413 over the limits, 500 for the app\'s own mistakes', async () => {
    const away = new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'tier down');
    assert.deepEqual([away.status, away.statusCode, away.expose, away.headers], [503, 503, false, { 'Retry-After': '1' }]);
    const big = new KilnError('KILN_ERR_SESSION_TOO_LARGE', 'too big');
    assert.deepEqual([big.status, big.expose, big.headers], [413, true, undefined]);
    assert.equal(new KilnError('KILN_ERR_INVALID_ARGUMENT', 'bad genid').status, 500);
    assert.equal(new KilnError('KILN_ERR_INTERNAL', 'bug').status, 500);
    // Every retryable error is one a client may try again: never a 4xx or a plain 500.
    for (const [code, { retryable }] of Object.entries(ERROR_REGISTRY)) if (retryable) assert.ok([502, 503].includes(httpStatusOf(code as KilnErrorCode)), `${code} is retryable: 502/503`);
    const res = away.getResponse();
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.deepEqual(await res.json(), { code: 'KILN_ERR_ENGINE_UNAVAILABLE' });
  });
});
