import { after, before, describe, it } from 'node:test';
import { checkLoginRotation, type Env } from '../adapters/adapter-suite.js';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';

/**
 * Issue #22, item 10: an attacker plants their session id in a victim's browser; the
 * victim logs in on an app that sets `principal` without regenerate(). Kiln rotates the
 * id at that login, on every adapter (the case is part of the adapter conformance suite;
 * here it runs on a kiln server for two frameworks).
 */
for (const [name, fixture, env] of [['Express 5', 'express-app', { EXPRESS: '5' }], ['Fastify 5', 'fastify-app', {}]] as const) {
  describe(`session fixation: ${name} on a kiln server`, () => {
    let server: ServerProcess;
    const apps: AppProcess[] = [];
    const app = async (extra: Env = {}) => {
      const a = await startApp(fixture, { ...env, KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRETS: 'fixation-secret', ...extra });
      apps.push(a);
      return a;
    };
    before(async () => {
      server = await startKilnServer();
    });
    after(async () => {
      await Promise.all(apps.map((a) => a.kill()));
      await server.kill();
    });

    it('a planted id is rotated at a login without regenerate(), and kept only with rotateOnLogin: false', async () => {
      await checkLoginRotation(await app(), app);
    });
  });
}
