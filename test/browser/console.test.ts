import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser as Chromium } from 'playwright-core';
import { Browser } from '../helpers/browser.js';
import { launchChromium } from '../helpers/chromium.js';
import { startDemo, type DemoProcess } from '../helpers/demo.js';
import { ROOT, sleep, waitFor } from '../helpers/processes.js';
import { startStandalone } from '../helpers/redis.js';

const SHOTS = join(ROOT, 'test-results');

/** The same console page on a kiln server's admin port and on `kiln console` for Redis (the demo starts either). */
consoleInBrowser('kiln demo (kiln server)', '', async () => ({ demo: await startDemo(), async stop() {} }));
consoleInBrowser('kiln demo --engine redis://', 'redis-', async () => {
  const redis = await startStandalone();
  return { demo: await startDemo(['--engine', redis.url]), stop: () => redis.stop() };
});

function consoleInBrowser(name: string, shotPrefix: string, start: () => Promise<{ demo: DemoProcess; stop(): Promise<void> }>): void {
  describe(`the web console of a running ${name}`, () => {
    let demo: DemoProcess;
    let tier: { stop(): Promise<void> } | undefined;
    let chromium: Chromium;
    before(async () => {
      mkdirSync(SHOTS, { recursive: true });
      let started: Awaited<ReturnType<typeof start>>;
      [started, chromium] = await Promise.all([start(), launchChromium()]);
      demo = started.demo;
      tier = started;
    });
    after(async () => {
      await chromium?.close();
      await demo?.stop();
      await tier?.stop();
    });

    it('shows three app servers and live charts under load, finds a session by principal and invalidates it', async () => {
      const consoleUrl = demo.nodes.get('console')!.url;
      const page = await chromium.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(consoleUrl);
      await waitFor(async () => (await page.$$('#clients tr')).length === 3, 10_000, 'three app servers listed');
      const names = await page.$$eval('#clients tr', (rows) => rows.map((r) => r.getAttribute('data-client') ?? ''));
      for (const n of ['app-1', 'app-2', 'app-3']) assert.ok(names.some((name) => name.startsWith(n)), `${n} in ${names.join(', ')}`);

      // Load: a logged-in user and anonymous carts, through the balancer, for a few seconds.
      const user = new Browser(demo.url);
      await user.post('/api/login', { user: 'pat' });
      await user.post('/api/cart', { sku: 'teapot', qty: 1 });
      let stop = false;
      const load = (async () => {
        const shoppers = Array.from({ length: 10 }, () => new Browser(demo.url));
        while (!stop) await Promise.all(shoppers.map((b) => b.post('/api/cart', { sku: 'mug', qty: 1 })));
      })();
      try {
        await waitFor(async () => Number(await page.textContent('#rate-commits')) > 0, 10_000, 'commit rate shown');
        const before = Number(await page.getAttribute('#chart-commits', 'data-points'));
        await sleep(2200);
        const after = Number(await page.getAttribute('#chart-commits', 'data-points'));
        assert.ok(after > before, `the commits chart moves (${before} → ${after} points)`);
        assert.ok(Number(await page.textContent('#rate-requests')) > 0);
        assert.ok(Number(await page.getAttribute('#chart-wait', 'data-points')) > 1, 'the lease-wait chart is drawn');
        await page.screenshot({ path: join(SHOTS, `${shotPrefix}console-under-load.png`), fullPage: true });
      } finally {
        stop = true;
        await load;
      }

      await page.fill('#search', 'pat');
      await page.click('#search-button');
      await page.locator('#results li[data-id]').first().waitFor();
      assert.equal(await page.locator('#results li[data-id]').count(), 1);
      await page.locator('#results li[data-id]').first().click();
      await page.locator('#invalidate').waitFor();
      assert.match((await page.textContent('#detail')) ?? '', /principal pat/);
      await page.screenshot({ path: join(SHOTS, `${shotPrefix}console-session.png`), fullPage: true });
      await page.click('#invalidate');
      await page.locator('#invalidated').waitFor();

      const next = await user.get<{ data: { user: string | null; cart: unknown[] } }>('/api/session');
      assert.equal(next.body.data.user, null, 'the next request with that cookie gets a fresh session');
      assert.deepEqual(next.body.data.cart, []);
      await waitFor(async () => ((await page.textContent('#events')) ?? '').includes('destroyed'), 5000, 'destroy shown in the events pane');
    });
  });
}
