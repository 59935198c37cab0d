import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { removeDir, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
import { ADMIN_TOKEN, adminApiSuite, READ_TOKEN } from './admin-api-suite.js';

/** A kiln server serves its own admin API on --admin-port. */
adminApiSuite({
  name: 'kiln server --admin-port',
  role: 'standalone',
  async start() {
    const dir = tempDir();
    writeFileSync(join(dir, 'read.token'), READ_TOKEN);
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    const server = await startKilnServer({ args: ['--admin-port', '0', '--admin-token-file', join(dir, 'admin.token'), '--admin-read-token-file', join(dir, 'read.token')] });
    // The admin line follows the ready line.
    const adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line').catch(async (err: unknown) => {
      await server.kill();
      throw err;
    });
    return {
      adminUrl,
      adminToken: ADMIN_TOKEN,
      engine: (name) => connect(server.url, { token: server.token, name }),
      async stop() {
        await server.kill();
        removeDir(dir);
      },
    };
  },
});
