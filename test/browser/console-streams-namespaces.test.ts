import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser as Chromium } from 'playwright-core';
import { createSessionClient } from '../../src/client/session-client.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import type { Engine } from '../../src/engines/engine.js';
import { generateSessionId } from '../../src/session/id.js';
import { launchChromium } from '../helpers/chromium.js';
import { removeDir, ROOT, sleep, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';
import { ADMIN_TOKEN } from '../console/admin-api-suite.js';
import { createSession, engineFor, newToken } from '../security/server-fixtures.js';

const SHOTS = join(ROOT, 'test-results');

/** The console page against a kiln server with two token namespaces: its event stream across a refused token, its memory of app servers, and sessions that share an id. */
describe('the web console: one event stream per login, and sessions of token namespaces', () => {
  let server: ServerProcess;
  let dir: string;
  let adminUrl: string;
  let chromium: Chromium;
  const tokens = { a: newToken(), b: newToken() };
  const engines: Engine[] = [];

  const metric = async (name: string): Promise<number> => {
    const text = await (await fetch(`${adminUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  };

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    dir = tempDir();
    writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN);
    writeFileSync(join(dir, 'tokens'), `app-a ${tokens.a}\napp-b ${tokens.b}\n`);
    [server, chromium] = await Promise.all([
      startKilnServer({ args: ['--tokens-file', join(dir, 'tokens'), '--admin-port', '0', '--admin-token-file', join(dir, 'admin.token')] }),
      launchChromium(),
    ]);
    adminUrl = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line');
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await chromium?.close();
    await server?.kill();
    removeDir(dir);
  });

  it('a refused token closes the event stream; logging in again opens one, not a second', async () => {
    const page = await chromium.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await page.goto(`${adminUrl}/#token=${encodeURIComponent(ADMIN_TOKEN)}`);
      await page.locator('#app').waitFor({ state: 'visible' });
      await waitFor(async () => (await metric('kiln_admin_event_streams')) === 1, 5000, 'the page\'s stream open');
      // The token stops being accepted (as when the server is restarted with another): the next poll is refused.
      // A string is evaluated in the page's global scope, where the script's own bindings are.
      await page.evaluate("token = 'not-the-token-0123456789-0123456789-xx'");
      await page.locator('#login').waitFor({ state: 'visible' });
      assert.match((await page.textContent('#login-error')) ?? '', /refused/);
      await waitFor(async () => (await metric('kiln_admin_event_streams')) === 0, 5000, 'the stream closed with the refused token');
      await page.fill('#token-input', ADMIN_TOKEN);
      await page.click('#token-submit');
      await page.locator('#app').waitFor({ state: 'visible' });
      await waitFor(async () => (await metric('kiln_admin_event_streams')) === 1, 5000, 'a stream again');
      // Long enough for a leftover stream's reconnect (1 s) or retry (5 s) to show.
      await sleep(6000);
      assert.equal(await metric('kiln_admin_event_streams'), 1, 'one stream, not one per login');
      // It still delivers: an app server joining shows in the events pane.
      const engine = connect(server.url, { token: tokens.a, name: 'late-app' });
      engines.push(engine);
      await engine.connect();
      await waitFor(async () => ((await page.textContent('#events')) ?? '').includes('late-app'), 5000, 'the join in the events pane');
    } finally {
      await page.close();
    }
  });

  it('forgets the rates of app servers no longer listed', async () => {
    const page = await chromium.newPage({ viewport: { width: 1280, height: 900 } });
    const client = createSessionClient({ engine: connect(server.url, { token: tokens.b, name: 'passing-app' }), statsIntervalMs: 100 });
    try {
      await page.goto(`${adminUrl}/#token=${encodeURIComponent(ADMIN_TOKEN)}`);
      await client.withSession(null, (s) => s.set('n', 1));
      const tracked = () => page.evaluate('[...trackers.keys()]') as Promise<string[]>;
      await waitFor(async () => (await tracked()).some((k) => k.startsWith('passing-app')), 10_000, 'the app server\'s rates tracked');
      await client.close();
      await waitFor(async () => !(await tracked()).some((k) => k.startsWith('passing-app')), 10_000, 'its rates forgotten once it left');
      // Owner names kept are those the overview lists (it keeps a departed app server a minute).
      const owners = (await page.evaluate('owners.size')) as number;
      const listed = await (await fetch(`${adminUrl}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as { clients: unknown[]; departed: unknown[] };
      assert.ok(owners <= listed.clients.length + listed.departed.length, `${owners} owner names for ${listed.clients.length + listed.departed.length} listed`);
    } finally {
      await page.close();
    }
  });

  it('lists one id held by two namespaces twice, opens and invalidates the one clicked', async () => {
    const [a, b] = [await engineFor(server.url, tokens.a), await engineFor(server.url, tokens.b)];
    engines.push(a, b);
    const shared = generateSessionId();
    for (const [engine, owner] of [[a, 'tenant a'], [b, 'tenant b']] as const) {
      const { token } = await createSession(engine, { owner }, {}, shared);
      await engine.release(shared, token);
    }
    const page = await chromium.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await page.goto(`${adminUrl}/#token=${encodeURIComponent(ADMIN_TOKEN)}`);
      await page.locator('#app').waitFor({ state: 'visible' });
      await page.fill('#search', shared.slice(0, 12));
      await page.click('#search-button');
      await page.locator('#results li[data-id]').nth(1).waitFor();
      const rows = await page.$$eval('#results li[data-id]', (lis) => lis.map((l) => [l.getAttribute('data-ns'), l.textContent ?? '']));
      assert.deepEqual(rows.map((r) => r[0]), ['app-a', 'app-b']);
      assert.ok(rows.every(([ns, text]) => text.includes(ns!)), `each row names its namespace: ${JSON.stringify(rows)}`);
      await page.locator('#results li[data-ns="app-b"]').click();
      await page.locator('#invalidate').waitFor();
      const detail = (await page.textContent('#detail')) ?? '';
      assert.match(detail, /namespace app-b/);
      assert.match(detail, /"tenant b"/);
      await page.screenshot({ path: join(SHOTS, 'console-namespaces.png'), fullPage: true });
      await page.click('#invalidate');
      await page.locator('#invalidated').waitFor();
      const get = (ns: string) => fetch(`${adminUrl}/api/sessions/${shared}?namespace=${ns}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal((await get('app-b')).status, 404, "app-b's session invalidated");
      assert.equal((await get('app-a')).status, 200, "app-a's untouched");
    } finally {
      await page.close();
    }
  });
});
