import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FASTIFY_CASES, IMPLS } from './fastify-session-cases.js';

/**
 * The differential suite for Fastify: every case of fastify-session-cases.ts against
 * @fastify/session and kiln/fastify; a deliberate difference asserts that the
 * yardstick's behaviour does not hold for Kiln, then what Kiln does instead.
 */
for (const impl of IMPLS) {
  describe(`${impl} (Fastify 5)`, () => {
    for (const c of FASTIFY_CASES) {
      if (impl === 'kiln/fastify' && c.kiln) {
        const kiln = c.kiln;
        it(`[${c.area}] ${c.name} — differs: ${kiln.why}`, async () => {
          await assert.rejects(c.run(impl), 'the difference still holds (else remove it)');
          await kiln.run(impl);
        });
      } else {
        it(`[${c.area}] ${c.name}`, () => c.run(impl));
      }
    }
  });
}
