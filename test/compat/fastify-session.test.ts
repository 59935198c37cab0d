import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Client } from './express-session-harness.js';
import { FASTIFY_CASES, IMPLS, NAME, sess, withApp } from './fastify-session-cases.js';

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

describe('kiln/fastify decryptSession', () => {
  it("inside a request, for another session: a read-only view of it; the request's own session is released at its end", async () => {
    const routes = (app: FastifyInstance) =>
      app.post('/peek-other', (request, reply) => {
        const value = String((request.body as { cookie: string }).cookie);
        (app as unknown as { decryptSession(v: string, r: object, cb: (err?: unknown) => void): void }).decryptSession(value, request, () => void reply.send({ n: sess(request).get('n') ?? null }));
      });
    await withApp('kiln/fastify', {}, routes, async (_s, c) => {
      const other = new Client(c.base);
      await other.post('/incr');
      await other.post('/incr');
      await c.post('/incr');
      const peek = await c.post('/peek-other', { cookie: decodeURIComponent(other.jar.get(NAME)!) });
      assert.equal(peek.body['n'], 2, "the other session's data");
      const started = Date.now();
      assert.equal((await c.post('/incr')).body['n'], 2, 'the own session is served again');
      assert.ok(Date.now() - started < 2000, 'without waiting for a lock');
      assert.equal((await other.post('/incr')).body['n'], 3, 'the other session is not held either');
    });
  });
});
