import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import { isAlive, startDemo, type DemoProcess } from '../helpers/demo.js';
import { ROOT, waitFor } from '../helpers/processes.js';

const SHOTS = join(ROOT, 'test-results');

describe('a real browser on the shop through kiln demo', () => {
  let demo: DemoProcess;
  let browser: Browser;
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    [demo, browser] = await Promise.all([startDemo(), launchChromium()]);
  });
  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  it('shows "no session yet" until something is stored, and renders a hostile sku as text (no script runs)', async () => {
    const page = await browser.newPage();
    await page.goto(`${demo.url}/`);
    await page.locator('#node', { hasText: /^app-\d$/ }).waitFor();
    assert.equal(await page.textContent('#session-id'), 'no session yet');
    const hostile = '<img src=x onerror="window.__shopXss=1">';
    // Posted from the page's own origin, as a crafted link or another tab could.
    await page.evaluate(async (sku) => {
      await fetch('/api/cart', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sku, qty: 1 }) });
    }, hostile);
    await page.reload();
    await page.locator('#cart-count', { hasText: /^1$/ }).waitFor({ timeout: 5000 });
    assert.deepEqual(await page.$$eval('#cart li', (lis) => lis.map((li) => li.textContent)), [`${hostile} × 1`]);
    assert.equal(await page.$$eval('#cart img', (imgs) => imgs.length), 0, 'no element was made from the sku');
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await page.evaluate(() => (globalThis as unknown as { __shopXss?: number }).__shopXss), undefined, 'no script ran');
    assert.match((await page.textContent('#session-id')) ?? '', /^[A-Za-z0-9_-]{16,}/, 'the stored session is shown');
    await page.screenshot({ path: join(SHOTS, 'shop-hostile-sku.png'), fullPage: true });
    await page.close();
  });

  it('live cart: two tabs on different app servers see each other\'s changes without reload; log out everywhere ends the other tabs\' sockets', async () => {
    const context = await browser.newContext();
    const tabA = await context.newPage();
    const logs: string[] = [];
    tabA.on('console', (m) => logs.push(m.text()));
    tabA.on('pageerror', (e) => logs.push(String(e)));
    await tabA.goto(`${demo.url}/`);
    await tabA.click('button[data-sku="teapot"]');
    await tabA.locator('#cart-count', { hasText: /^1$/ }).waitFor({ timeout: 5000 });
    const nodeA = (await tabA.textContent('#node'))!;
    await tabA.locator('#live', { hasText: /^on app-\d$/ }).waitFor({ timeout: 5000 }).catch(async (err: Error) => {
      throw new Error(`${err.message}\nlive: ${await tabA.textContent('#live')}\npage: ${logs.join('\n')}`);
    });
    // The same browser (same cookie) on another app server, straight to its port.
    const [nameB, infoB] = [...demo.nodes].find(([name, n]) => n.role === 'app server' && name !== nodeA)!;
    const tabB = await context.newPage();
    await tabB.goto(`${infoB.url}/`);
    await tabB.locator('#live', { hasText: new RegExp(`^on ${nameB}$`) }).waitFor({ timeout: 5000 });
    assert.equal(await tabB.textContent('#cart-count'), '1');

    const t0 = Date.now();
    await tabA.click('button[data-sku="mug"]');
    await tabB.locator('#cart-count', { hasText: /^2$/ }).waitFor({ timeout: 5000 });
    const seenAfter = Date.now() - t0;
    assert.deepEqual(await tabB.$$eval('#cart li', (lis) => lis.map((li) => li.textContent)), ['teapot × 1', 'mug × 1']);
    assert.ok(seenAfter < 3000, `tab B saw the change after ${seenAfter} ms`);
    await tabA.screenshot({ path: join(SHOTS, 'shop-live-tab-a.png'), fullPage: true });
    await tabB.screenshot({ path: join(SHOTS, 'shop-live-tab-b.png'), fullPage: true });

    // A second device of the same user, on a third route: log out everywhere from tab A ends its socket.
    await tabA.fill('#login-user', 'lee');
    await tabA.click('#login');
    await tabA.locator('#user', { hasText: /^lee$/ }).waitFor({ timeout: 5000 });
    const phone = await browser.newContext();
    const tabC = await phone.newPage();
    await tabC.goto(`${demo.url}/`);
    await tabC.fill('#login-user', 'lee');
    await tabC.click('#login');
    await tabC.locator('#user', { hasText: /^lee$/ }).waitFor({ timeout: 5000 });
    await tabC.locator('#live', { hasText: /^on app-\d$/ }).waitFor({ timeout: 5000 });
    await tabB.locator('#live', { hasText: /^on app-\d$/ }).waitFor({ timeout: 5000 });
    await tabA.click('#logout-everywhere');
    await tabC.locator('#live', { hasText: /^session ended/ }).waitFor({ timeout: 3000 });
    await tabB.locator('#live', { hasText: /^session ended/ }).waitFor({ timeout: 3000 });
    await tabC.locator('#user', { hasText: /^nobody$/ }).waitFor({ timeout: 3000 });
    await tabC.screenshot({ path: join(SHOTS, 'shop-live-logged-out-elsewhere.png'), fullPage: true });
    await context.close();
    await phone.close();
  });

  it('adds to the cart, logs in, and still shows both after the serving node is killed', async () => {
    const page = await browser.newPage();
    await page.goto(`${demo.url}/`);
    const shows = (selector: string, text: string) => page.locator(selector, { hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: 5000 });
    await page.locator('#node', { hasText: /^app-\d$/ }).waitFor();
    await page.click('button[data-sku="teapot"]');
    await shows('#cart-count', '1');
    await page.click('button[data-sku="mug"]');
    await shows('#cart-count', '2');
    await page.fill('#login-user', 'lee');
    await page.click('#login');
    await shows('#user', 'lee');
    const served = (await page.textContent('#node'))!;
    await page.screenshot({ path: join(SHOTS, 'shop-before-kill.png'), fullPage: true });

    const pid = demo.nodes.get(served)!.pid;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !isAlive(pid), 5000, 'node gone');
    await page.reload();
    await waitFor(async () => /^app-\d$/.test((await page.textContent('#node')) ?? '') && (await page.textContent('#node')) !== served, 5000, 'page served by another node');
    assert.notEqual(await page.textContent('#node'), served);
    assert.equal(await page.textContent('#user'), 'lee', 'still logged in');
    assert.equal(await page.textContent('#cart-count'), '2', 'cart intact');
    assert.deepEqual(await page.$$eval('#cart li', (lis) => lis.map((li) => li.textContent)), ['teapot × 1', 'mug × 1']);
    await page.screenshot({ path: join(SHOTS, 'shop-after-kill.png'), fullPage: true });
  });
});
