import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { kilnSession } from '../../src/adapters/fastify/index.js';

/**
 * kiln/fastify's hooks are callback hooks: an error thrown after the commit (a Set-Cookie
 * the browser would not keep) must reach Fastify's error handler on the path that waits
 * for the engine too, not hang the request as an unhandled rejection.
 */
describe('kiln/fastify errors after an asynchronous commit', () => {
  it('a Set-Cookie above 4,096 bytes after a write answers 500 with its code', async () => {
    const app = Fastify();
    await app.register(kilnSession, { secret: 'x'.repeat(32), cookie: { secure: false } });
    app.setErrorHandler((err, _request, reply) => void reply.status(500).send({ code: (err as { code?: string }).code }));
    app.post('/write', async (request) => {
      const session = request.session as unknown as { set(k: string, v: unknown): void; options(o: Record<string, unknown>): void };
      session.set('n', 1);
      // A valid domain (labels of 60 characters), too long for a Set-Cookie browsers keep.
      session.options({ domain: `${Array.from({ length: 70 }, () => 'a'.repeat(60)).join('.')}.example` });
      return { ok: true };
    });
    try {
      const res = await Promise.race([app.inject({ method: 'POST', url: '/write' }), new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the request hung')), 5_000))]);
      assert.equal(res.statusCode, 500);
      assert.equal((res.json() as { code: string }).code, 'KILN_ERR_INVALID_ARGUMENT');
    } finally {
      await app.close();
    }
  });
});
