import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_REGISTRY, errorFromWire, KilnError } from '../../src/errors/index.js';
import { ROOT } from '../helpers/processes.js';

describe('error registry', () => {
  it('every code is documented in docs/errors.md with its meaning, and the page names no other code', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');
    for (const [code, { meaning, retryable }] of Object.entries(ERROR_REGISTRY)) {
      assert.ok(doc.includes(`| \`${code}\` | ${retryable ? 'yes' : 'no'} | ${meaning} |`), `${code} documented as in the registry`);
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
});
