import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type * as Kiln from '../../src/index.js';
import { ROOT } from '../helpers/processes.js';

describe('package entry points', () => {
  it('CommonJS apps can require() kiln and run a session', async () => {
    const require = createRequire(join(ROOT, 'package.json'));
    const kiln = require('kiln') as typeof Kiln;
    const client = kiln.createSessionClient({ engine: kiln.createMemoryTier().engine() });
    const id = await client.withSession(null, (s) => {
      s.set('n', 1);
      return s.id;
    });
    assert.equal(await client.withSession(id, (s) => s.get('n')), 1);
    await client.close();
    assert.equal(typeof (require('kiln/server') as { KilnServer: unknown }).KilnServer, 'function');
  });

  it('every subpath export loads from CommonJS and from ESM', async () => {
    const require = createRequire(join(ROOT, 'package.json'));
    const expected: Record<string, string> = {
      'kiln/express': 'session',
      'kiln/express-store': 'KilnStore',
      'kiln/fastify': 'kilnSession',
      'kiln/koa': 'kilnSession',
      'kiln/hono': 'kilnSession',
      'kiln/http': 'createSessions',
    };
    for (const [path, name] of Object.entries(expected)) {
      assert.equal(typeof (require(path) as Record<string, unknown>)[name], 'function', `require('${path}').${name}`);
      assert.equal(typeof ((await import(path)) as Record<string, unknown>)[name], 'function', `import('${path}').${name}`);
    }
  });

  it('ESM apps import the same API', async () => {
    const kiln = await import('kiln');
    assert.equal(typeof kiln.createSessionClient, 'function');
    assert.equal(typeof kiln.connect, 'function');
  });
});

describe('one implementation behind every entry point', () => {
  const entries = ['kiln', 'kiln/server', 'kiln/express', 'kiln/express-store', 'kiln/http', 'kiln/fastify', 'kiln/koa', 'kiln/hono', 'kiln/metrics'];
  /** A KilnError thrown by an entry point: its refusal of bad options (kiln and kiln/server: their own constructors). */
  function thrownBy(mod: Record<string, unknown>, path: string): unknown {
    const attempts: Record<string, () => unknown> = {
      kiln: () => (mod['createSessionClient'] as (o: unknown) => unknown)({ engine: 42 }),
      'kiln/server': () => {
        throw new (mod['KilnError'] as new (c: string, m: string) => Error)('KILN_ERR_INTERNAL', 'from kiln/server');
      },
      'kiln/express': () => (mod['session'] as (o: unknown) => unknown)({}),
      'kiln/express-store': () => new (mod['KilnStore'] as new (o: unknown) => unknown)({ engine: 42 }),
      'kiln/http': () => (mod['createSessions'] as (o: unknown) => unknown)({}),
      'kiln/fastify': () => (mod['kilnSession'] as (f: unknown, o: unknown, done: (err?: unknown) => void) => unknown)({}, {}, (err) => {
        throw err;
      }),
      'kiln/koa': () => (mod['kilnSession'] as (o: unknown) => unknown)({}),
      'kiln/hono': () => (mod['kilnSession'] as (o: unknown) => unknown)({}),
      'kiln/metrics': () => {
        throw new (mod['KilnError'] as new (c: string, m: string) => Error)('KILN_ERR_INTERNAL', 'from kiln/metrics');
      },
    };
    try {
      return attempts[path]!();
    } catch (err) {
      return err;
    }
  }

  for (const format of ['CommonJS', 'ESM'] as const) {
    it(`${format}: isKilnError and instanceof KilnError hold for an error of any entry point, checked by any other`, async () => {
      const require = createRequire(join(ROOT, 'package.json'));
      const load = async (path: string) => (format === 'CommonJS' ? require(path) : await import(path)) as Record<string, unknown>;
      const errors = new Map<string, unknown>();
      for (const path of entries) errors.set(path, thrownBy(await load(path), path));
      for (const [path, err] of errors) assert.equal((err as { code?: string })?.code?.startsWith('KILN_ERR_'), true, `${path} threw a KilnError: ${String(err)}`);
      for (const checker of entries) {
        const mod = await load(checker);
        const isKilnError = mod['isKilnError'] as (e: unknown) => boolean;
        const KilnError = mod['KilnError'] as new (...a: never[]) => Error;
        for (const [path, err] of errors) {
          assert.equal(isKilnError(err), true, `${checker}'s isKilnError on ${path}'s error`);
          assert.ok(err instanceof KilnError, `${path}'s error instanceof ${checker}'s KilnError`);
        }
      }
    });
  }

  it('CommonJS: every entry point is a view of one bundle (dist/cjs/kiln.cjs), loaded once', () => {
    const require = createRequire(join(ROOT, 'package.json'));
    for (const path of entries) require(path);
    const bundles = Object.keys(require.cache).filter((f) => f.includes(`${join('dist', 'cjs')}`) && f.endsWith('.cjs') && !/\/(index|server|express|express-store|http|fastify|koa|hono|metrics)\.cjs$/.test(f));
    assert.deepEqual(bundles.map((f) => f.replace(/^.*\//, '')), ['kiln.cjs']);
  });

  it('a KilnError of the ESM build is one to the CommonJS build, and the other way round', async () => {
    const require = createRequire(join(ROOT, 'package.json'));
    const cjs = require('kiln') as typeof Kiln;
    const esm = await import('kiln');
    const fromEsm = new esm.KilnError('KILN_ERR_INTERNAL', 'esm');
    const fromCjs = new cjs.KilnError('KILN_ERR_INTERNAL', 'cjs');
    assert.ok(cjs.isKilnError(fromEsm) && fromEsm instanceof cjs.KilnError);
    assert.ok(esm.isKilnError(fromCjs) && fromCjs instanceof esm.KilnError);
    assert.ok(!(new Error('plain') instanceof esm.KilnError));
    // The brand alone does not make a KilnError: it must be an Error with a registered code.
    const fake = { [Symbol.for('kiln.KilnError')]: true, code: 'KILN_ERR_INTERNAL' };
    assert.ok(!(fake instanceof esm.KilnError) && !esm.isKilnError(fake));
    const branded = Object.assign(new Error('x'), { [Symbol.for('kiln.KilnError')]: true, code: 'NOT_A_KILN_CODE' });
    assert.ok(!(branded instanceof cjs.KilnError));
  });
});
