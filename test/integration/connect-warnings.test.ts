import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { freePort, ROOT, startKilnServer, type ServerProcess } from '../helpers/processes.js';

const run = promisify(execFile);

/** An app server started with kiln/http against `engine`, alive `aliveMs`: what it prints. */
async function appStderr(engine: string, token: string, aliveMs = 2000): Promise<string> {
  const script = `
    import { createSessions } from ${JSON.stringify(join(ROOT, 'dist/src/adapters/http/index.js'))};
    const sessions = createSessions({ secret: 'x'.repeat(32), engine: ${JSON.stringify(engine)} });
    setTimeout(() => sessions.close().then(() => process.exit(0)), ${aliveMs});`;
  const { stderr } = await run(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, KILN_TOKEN: token }, timeout: 20_000 });
  return stderr;
}

describe('what an app server says when it cannot use the tier', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startKilnServer();
  });
  after(async () => {
    await server?.stop();
  });

  it('a wrong token is named as such, once, as not retried (KILN_ERR_AUTH), not as an unreachable tier', async () => {
    const stderr = await appStderr(server.url, 'wrong-token-0123456789-0123456789-abcdef');
    assert.match(stderr, /refused this app server: its token is wrong or missing: set KILN_TOKEN/);
    assert.match(stderr, /\[?KILN_ERR_AUTH\]?/);
    assert.doesNotMatch(stderr, /cannot reach|retrying in the background/);
    assert.equal(stderr.match(/refused this app server/g)?.length, 1);
  });

  it('an unreachable tier is transient: the warning says it keeps trying (KILN_ERR_ENGINE_UNAVAILABLE)', async () => {
    // The first connection gives up after connectTimeoutMs (5 s), then the engine keeps trying.
    const stderr = await appStderr(`kiln://127.0.0.1:${await freePort()}`, server.token, 8000);
    assert.match(stderr, /cannot reach the session tier .* retrying in the background/);
    assert.match(stderr, /KILN_ERR_ENGINE_UNAVAILABLE/);
  });
});
