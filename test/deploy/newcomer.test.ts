import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { exerciseProgram, probeFor, snippets, withPorts } from '../helpers/doc-snippets.js';
import { freePort, removeDir, ROOT, startKilnServer, tempDir, trackChild, waitFor, type ServerProcess } from '../helpers/processes.js';

/**
 * What a newcomer does, from the packed tarball: a new folder, `npm init -y`, `npm install
 * <tgz>`, `npx kiln demo` (no Express installed), then `npm install express` and the
 * README's quick start as written, as an ES module and as CommonJS. Packages come from
 * npm's cache (`--prefer-offline`): the checkout's `npm ci` put every one of them there.
 */
const run = promisify(execFile);
const NPM_QUIET = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];
const SECRET = 'newcomer-secret-0123456789-abcdefghij';

describe('a newcomer, from npm pack to a clustered app', () => {
  const dir = tempDir('kiln-newcomer-');
  const project = join(dir, 'my-app');
  let tarball = '';
  let server: ServerProcess | undefined;

  before(async () => {
    const packed = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--loglevel=error'], { cwd: ROOT });
    tarball = join(dir, packed.stdout.trim().split('\n').pop()!);
    mkdirSync(project);
    await run('npm', ['init', '-y', '--loglevel=error'], { cwd: project });
    await run('npm', ['install', ...NPM_QUIET, tarball], { cwd: project, timeout: 180_000 });
  });
  after(async () => {
    await server?.stop();
    removeDir(dir);
  });

  it('installs with nothing else: no Express, no Redis client, a LICENSE, few packages; the Redis engine then says what to install', async () => {
    assert.ok(existsSync(join(project, 'node_modules', 'kiln', 'LICENSE')));
    assert.ok(!existsSync(join(project, 'node_modules', 'express')), 'express is not installed');
    assert.ok(!existsSync(join(project, 'node_modules', '@redis', 'client')), '@redis/client (8.5 MB) is installed only by who uses Redis');
    const script = "import('kiln').then((k) => k.connectEngine('redis://127.0.0.1:1').connect()).catch((e) => { console.log(e.code, e.message); })";
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: project, timeout: 20_000 });
    assert.match(stdout, /^KILN_ERR_MISSING_DEPENDENCY .*npm install @redis\/client/);
    const installed = readdirSync(join(project, 'node_modules')).filter((n) => !n.startsWith('.'));
    assert.ok(installed.length <= 30, `${installed.length} top-level packages: ${installed.join(', ')}`);
  });

  it('`npx kiln demo` runs without Express: the shop answers through the balancer and keeps a cart, and `npx kiln status` works right after', async () => {
    // Its own state file, so `kiln status` below finds this demo and not another test's.
    const demoEnv = { ...process.env, KILN_DEMO_STATE: join(dir, 'demo-state.json'), KILN_ADMIN_URL: '', KILN_ADMIN_TOKEN: '' };
    const child = spawn('npx', ['kiln', 'demo', '--port', '0'], { cwd: project, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: demoEnv });
    const exited = trackChild(child, { group: true });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => {
        if (child.exitCode !== null) throw new Error(`kiln demo exited (${child.exitCode}):\n${out}`);
        return /Ctrl-C stops everything/.test(out);
      }, 60_000, 'kiln demo ready');
      const url = /Point a browser at (http:\/\/\S+?)\/?$/m.exec(out)![1]!;
      const page = await fetch(`${url}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /Kiln shop/);
      const add = await fetch(`${url}/api/cart`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sku: 'teapot' }) });
      assert.equal(add.status, 200);
      const cookie = add.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
      const again = (await (await fetch(`${url}/api/session`, { headers: { cookie } })).json()) as { data: { cart: { sku: string; qty: number }[] } };
      assert.deepEqual(again.data.cart, [{ sku: 'teapot', qty: 1 }]);
      assert.doesNotMatch(out, /ERR_MODULE_NOT_FOUND|Cannot find (module|package)/);
      // Right after the demo, in another terminal: `npx kiln status` with nothing typed.
      const status = await run('npx', ['kiln', 'status'], { cwd: project, env: demoEnv, timeout: 30_000 });
      assert.match(status.stdout, /kiln server /);
      assert.match(status.stdout, /app-1/);
    } finally {
      if (child.pid && child.exitCode === null) process.kill(-child.pid, 'SIGTERM');
      const end = await Promise.race([exited, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 15_000))]);
      if (!end && child.pid) process.kill(-child.pid, 'SIGKILL');
    }
  });

  it("the README's quick start runs as written, as an ES module and as CommonJS, once express is installed", async () => {
    await run('npm', ['install', ...NPM_QUIET, 'express'], { cwd: project, timeout: 180_000 });
    server = await startKilnServer();
    const quickStart = snippets().find((s) => s.file === 'README.md' && /from 'kiln\/express'/.test(s.code) && /listen\(/.test(s.code));
    assert.ok(quickStart, 'the README has an Express quick start');
    const probe = probeFor(quickStart.code)!;
    const env = { SESSION_SECRET: SECRET, KILN_TOKEN: server.token, NODE_NAME: 'app-1' };

    const esmPort = await freePort();
    writeFileSync(join(project, 'app.mjs'), withPorts(quickStart.code, server.port, esmPort));
    await exerciseProgram(join(project, 'app.mjs'), { cwd: project, port: esmPort, probe, env });

    // CommonJS, as the block's own comment says: the two imports become require().
    const cjsPort = await freePort();
    const cjs = withPorts(quickStart.code, server.port, cjsPort)
      .replace(/^import express from 'express';/m, "const express = require('express');")
      .replace(/^import \{ session \} from 'kiln\/express';/m, "const { session } = require('kiln/express');");
    assert.doesNotMatch(cjs, /^import /m, 'every import was turned into a require');
    writeFileSync(join(project, 'app.cjs'), cjs);
    await exerciseProgram(join(project, 'app.cjs'), { cwd: project, port: cjsPort, probe, env });
  });
});
