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
