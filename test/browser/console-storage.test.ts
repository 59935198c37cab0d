import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { generateSessionId } from '../../src/session/id.js';
import { launchChromium } from '../helpers/chromium.js';
import { adminPortOf, removeDir, ROOT, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
import { commitOf } from '../security/server-fixtures.js';

const SHOTS = join(ROOT, 'test-results');

/** The console's health line tells an operator, first of all, that the disk is behind and commits are refused. */
describe('the web console of a kiln server whose disk stalls', () => {
  it('says commits are refused, and why, in red; healthy again once the disk answers', async () => {
    mkdirSync(SHOTS, { recursive: true });
    const dataDir = tempDir();
    const holdDir = tempDir('kiln-hold-');
    const hold = join(holdDir, 'hold');
    const [server, chromium] = await Promise.all([
      startKilnServer({ dataDir, env: { KILN_FAILPOINT: 'log:write', KILN_FAILPOINT_HOLD: hold }, args: ['--log-stall-ms', '300', '--admin-port', '0'] }),
      launchChromium(),
    ]);
    const engine = connect(server.url, { token: server.token, name: 'app-1', operationTimeoutMs: 20_000 });
    try {
      await engine.connect();
      const admin = await adminPortOf(server);
      const page = await chromium.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`${admin.url}/#token=${encodeURIComponent(admin.token)}`);
      await waitFor(async () => ((await page.textContent('#health')) ?? '') === 'healthy', 10_000, 'healthy at first');

      writeFileSync(hold, '');
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      const stuck = engine.commit(commitOf(id, grant.token, 0, { n: 1 }));
      await waitFor(async () => /^commits refused: a write to the server's log has been waiting on its disk for \d+\.\d s$/.test((await page.textContent('#health')) ?? ''), 10_000, 'the refusal on the health line');
      assert.equal(await page.getAttribute('#health', 'class'), 'dead');
      await page.screenshot({ path: join(SHOTS, 'console-storage-stalled.png') });

      rmSync(hold);
      await stuck;
      await waitFor(async () => ((await page.textContent('#health')) ?? '') === 'healthy', 10_000, 'healthy once the disk answers');
      assert.equal(await page.getAttribute('#health', 'class'), 'ok');
    } finally {
      rmSync(hold, { force: true });
      await engine.close();
      await chromium.close();
      await server.kill();
      removeDir(dataDir);
      removeDir(holdDir);
    }
  });
});
