import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser as Chromium } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import { ROOT, waitFor } from '../helpers/processes.js';
import { ADMIN_TOKEN, startAdmin, type AdminUnderTest } from './admin-helpers.js';

const SHOTS = join(ROOT, 'test-results');

/**
 * Item 11 of #22: the console page ran under a CSP allowing 'unsafe-inline' scripts, could
 * be framed, and sent no nosniff or Referrer-Policy. Item 7's other half: the page put the
 * admin token in its EventSource URL.
 */
describe('the console page in Chromium: strict CSP, no framing, no token in any URL', () => {
  let t: AdminUnderTest;
  let chromium: Chromium;
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    [t, chromium] = await Promise.all([startAdmin(), launchChromium()]);
    for (let i = 0; i < 5; i++) {
      await t.kiln.withSession(null, (s) => {
        s.set('cart', [{ sku: 'teapot', qty: i + 1 }]);
        s.set('password', 'never-shown');
        if (i === 0) s.setPrincipal('pat');
      });
    }
  });
  after(async () => {
    await chromium?.close();
    await t?.stop();
  });

  it('loads the list, opens a session and follows live events with no CSP violation; an injected inline handler is blocked', async () => {
    const page = await chromium.newPage({ viewport: { width: 1280, height: 900 } });
    const messages: string[] = [];
    const urls: string[] = [];
    page.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => messages.push(`pageerror: ${e.message}`));
    page.on('request', (r) => urls.push(r.url()));
    // (Strings: this project compiles without the DOM types.)
    await page.addInitScript({ content: "window.violations = []; document.addEventListener('securitypolicyviolation', (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));" });
    const violations = () => page.evaluate('window.violations') as Promise<string[]>;
    const response = await page.goto(`${t.adminUrl}/#token=${encodeURIComponent(ADMIN_TOKEN)}`);
    const headers = response!.headers();
    const csp = headers['content-security-policy'] ?? '';
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /script-src 'nonce-[A-Za-z0-9+/=]{20,}'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'none'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['referrer-policy'], 'no-referrer');
    assert.equal(headers['x-frame-options'], 'DENY');

    await waitFor(async () => ((await page.textContent('#server')) ?? '').includes('standalone'), 10_000, 'the overview loaded');
    await waitFor(async () => (await page.$$('#clients tr')).length >= 1, 10_000, 'the app server listed');
    await page.fill('#search', 'pat');
    await page.click('#search-button');
    await page.locator('#results li[data-id]').first().click();
    await page.locator('#invalidate').waitFor();
    const detail = (await page.textContent('#detail')) ?? '';
    assert.match(detail, /principal pat/);
    assert.match(detail, /password \(string, \d+ B\): \[redacted\]/);
    assert.match(detail, /"sku":"teapot"/);
    await page.screenshot({ path: join(SHOTS, 'security-console-csp.png'), fullPage: true });
    await page.click('#invalidate');
    await page.locator('#invalidated').waitFor();
    await waitFor(async () => ((await page.textContent('#events')) ?? '').includes('destroyed'), 5000, 'the destroy in the events pane');

    assert.deepEqual(await violations(), [], 'no CSP violation');
    assert.deepEqual(messages.filter((m) => /Content Security Policy|pageerror/i.test(m)), []);
    assert.ok(urls.some((u) => /\/api\/events\?ticket=/.test(u)), 'the events stream opened with a ticket');
    for (const u of urls) assert.ok(!u.includes(ADMIN_TOKEN) && !u.includes(encodeURIComponent(ADMIN_TOKEN)) || u.endsWith(`#token=${encodeURIComponent(ADMIN_TOKEN)}`), `no token in ${u}`);
    assert.equal(new URL(page.url()).hash, '', 'the fragment is cleared once read');

    // What an XSS would try: inline handlers and scripts do not run.
    await page.evaluate(`
      document.body.insertAdjacentHTML('beforeend', '<img src="/nothing" onerror="window.pwned = 1">');
      const s = document.createElement('script');
      s.textContent = 'window.pwned = 2';
      document.body.append(s);
    `);
    await waitFor(async () => (await violations()).length >= 2, 3000, 'the violations reported');
    assert.equal(await page.evaluate('window.pwned'), undefined);
    await page.close();
  });

  it('refuses to be framed', async () => {
    const page = await chromium.newPage();
    const messages: string[] = [];
    page.on('console', (m) => messages.push(m.text()));
    // A page of another origin (here about:blank's opaque one) frames the console.
    await page.setContent(`<iframe id="f" src="${t.adminUrl}/"></iframe>`);
    await waitFor(() => messages.some((m) => /frame-ancestors|Refused to (display|frame)/i.test(m)), 5000, 'the frame refused');
    await page.close();
  });
});
