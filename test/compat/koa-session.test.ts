import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KOA_CASES } from './koa-session-cases.js';

/**
 * The differential suite for Koa: every case of koa-session-cases.ts against
 * koa-session and kiln/koa, on Koa 2 and 3.
 */
for (const koa of [2, 3] as const) {
  for (const impl of ['koa-session', 'kiln/koa'] as const) {
    describe(`${impl} on Koa ${koa}`, () => {
      for (const c of KOA_CASES) {
        if (impl === 'kiln/koa' && c.kiln) {
          const kiln = c.kiln;
          it(`${c.name} — differs: ${kiln.why}`, async () => {
            await assert.rejects(c.run(impl, koa), 'the difference still holds (else remove it)');
            await kiln.run(impl, koa);
          });
        } else {
          it(c.name, () => c.run(impl, koa));
        }
      }
    });
  }
}
