import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Express } from 'express';
import { CASES } from './express-session-cases.js';
import { IMPLEMENTATIONS, sess, withApp } from './express-session-harness.js';

/**
 * The differential suite: every case of express-session-cases.ts against
 * express-session (MemoryStore), express-session with KilnStore, and kiln/express, on
 * Express 4 and 5. A deliberate difference asserts that the yardstick's behaviour does
 * not hold for that implementation, then asserts what it does instead.
 */
for (const express of [4, 5] as const) {
  for (const impl of IMPLEMENTATIONS) {
    describe(`${impl} on Express ${express}`, () => {
      for (const c of CASES) {
        if (c.express && !c.express.includes(express)) continue;
        const different = c.differs?.[impl];
        const target = { impl, express };
        if (!different) {
          it(`[${c.area}] ${c.name}`, () => c.run(target));
        } else {
          it(`[${c.area}] ${c.name} — differs: ${different.why}`, async () => {
            if (impl !== 'express-session') await assert.rejects(c.run(target), 'the difference still holds (else remove it from differs)');
            await different.run(target);
          });
        }
      }
    });
  }
}

/**
 * Kiln's own limits, which express-session's MemoryStore does not have: a save() the
 * tier refuses rolls the request's changes back, so the application can answer.
 */
for (const express of [4, 5] as const) {
  describe(`kiln/express on Express ${express}: a save() the tier refuses`, () => {
    const target = { impl: 'kiln/express', express } as const;
    const tooLarge = 'x'.repeat(1024 * 1024 + 1);
    const routes = (app: Express) => {
      app.post('/small', (req, res) => {
        sess(req)!['small'] = 1;
        res.json({});
      });
      app.post('/caught', async (req, res) => {
        const s = sess(req)!;
        s['big'] = tooLarge;
        try {
          await new Promise<void>((resolve, reject) => s.save((err) => (err ? reject(err) : resolve())));
          res.json({ saved: true });
        } catch (err) {
          res.status(413).json({ code: (err as { code?: string }).code, big: s['big'] === undefined ? 'rolled back' : 'kept' });
        }
      });
      app.post('/to-handler', (req, res, next) => {
        sess(req)!['big'] = tooLarge;
        sess(req)!.save((err) => (err ? next(err) : res.json({ saved: true })));
      });
      app.get('/keys', (req, res) => res.json({ keys: Object.keys(sess(req)!).sort() }));
    };

    it('caught by the application: its own 413 reaches the client, the session keeps its last committed state', async () => {
      await withApp(target, {}, routes, async (s, c) => {
        await c.post('/small');
        const r = await c.post('/caught');
        assert.equal(r.status, 413);
        assert.deepEqual(r.body, { code: 'KILN_ERR_ATTRIBUTE_TOO_LARGE', big: 'rolled back' });
        assert.deepEqual((await c.get('/keys')).body['keys'], ['cookie', 'small']);
        assert.deepEqual(s.errors, []);
      });
    });

    it('only what the tier refused is rolled back: a change made after the save() was called is stored at the end', async () => {
      const more = (app: Express) => {
        routes(app);
        app.post('/then-more', (req, res) => {
          const s = sess(req)!;
          s['big'] = tooLarge;
          s.save(() => undefined);
          s['cart'] = ['mug'];
          res.json({});
        });
      };
      await withApp(target, {}, more, async (s, c) => {
        await c.post('/small');
        assert.equal((await c.post('/then-more')).status, 200);
        assert.deepEqual((await c.get('/keys')).body['keys'], ['cart', 'cookie', 'small']);
        assert.deepEqual(s.errors, []);
      });
    });

    it("passed to next(): Express's error handler answers, and the session keeps its last committed state", async () => {
      await withApp(target, {}, routes, async (s, c) => {
        await c.post('/small');
        const r = await c.post('/to-handler');
        // The error carries its status (413): Express's handler answers with it.
        assert.equal(r.status, 413);
        assert.equal(r.text, 'KILN_ERR_ATTRIBUTE_TOO_LARGE');
        assert.equal(s.errors.length, 1);
        assert.deepEqual((await c.get('/keys')).body['keys'], ['cookie', 'small']);
      });
    });
  });
}
