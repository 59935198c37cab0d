import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { removeDir, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
import { adminApiSuite, READ_TOKEN } from './admin-api-suite.js';

/** A kiln server serves its own admin API on --admin-port. */
adminApiSuite({
  name: 'kiln server --admin-port',
  role: 'standalone',
  async start() {
    const dir = tempDir();
    writeFileSync(join(dir, 'read.token'), READ_TOKEN);
    const server = await startKilnServer({ args: ['--admin-port', '0', '--admin-read-token-file', join(dir, 'read.token')] });
    // The admin line follows the ready line.
    const adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line').catch(async (err: unknown) => {
      await server.kill();
      throw err;
    });
    return {
      adminUrl,
      adminToken: server.token,
      engine: (name) => connect(server.url, { token: server.token, name }),
      async stop() {
        await server.kill();
        removeDir(dir);
      },
    };
  },
});
