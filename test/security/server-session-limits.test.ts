import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Engine } from '../../src/engines/engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { generateSessionId } from '../../src/session/id.js';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { removeDir, startKilnServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { commitOf, createSession, engineFor, newToken } from './server-fixtures.js';

/**
 * Issue #22 item 15: nothing capped the number of sessions, so anyone able to make an
 * app create sessions (every cookie-less request that writes one) could fill the
 * server's memory. Now --max-sessions and --max-sessions-per-principal refuse, with
 * their own codes, a count of refusals, and room again once sessions go.
 */
const code = (c: string) => (err: unknown): boolean => isKilnError(err) && err.code === c;

describe('kiln server: --max-sessions (issue #22 item 15)', () => {
  let server: ServerProcess;
  let engine: Engine;
  let app: AppProcess;
  before(async () => {
    server = await startKilnServer({ args: ['--max-sessions', '5', '--expiry-sweep-ms', '50'] });
    engine = await engineFor(server.url, server.token);
    app = await startApp('express-app', { KILN_ENGINE: server.url, KILN_TOKEN: server.token, NODE_NAME: 'app-1', SESSION_SECRETS: 'limits-secret' });
  });
  after(async () => {
    await app?.kill();
    await engine?.close();
    await server?.kill();
  });

  it('refuses the sixth session with KILN_ERR_SESSION_LIMIT, keeps the five working, and has room again after one goes', async () => {
    const sessions = [];
    for (let i = 0; i < 4; i++) sessions.push(await createSession(engine, { i }));
    // The fifth expires by itself shortly.
    sessions.push(await createSession(engine, { i: 4 }, { idleTimeoutMs: 2000 }));
    await engine.release(sessions[4]!.id, sessions[4]!.token);

    const sixth = generateSessionId();
    const grant = await engine.acquire(sixth);
    await assert.rejects(engine.commit(commitOf(sixth, grant.token, 0, { i: 5 })), code('KILN_ERR_SESSION_LIMIT'));
    assert.equal((await engine.stats()).sessions, 5, 'nothing was stored');

    // The app's answer to a request that would create a session: a clear error, not a hang.
    const res = await fetch(`${app.url}/api/incr`, { method: 'POST' });
    assert.equal(res.status, 500);
    assert.equal(((await res.json()) as { code: string }).code, 'KILN_ERR_SESSION_LIMIT');

    // Existing sessions keep working.
    const first = sessions[0]!;
    assert.equal((await engine.commit(commitOf(first.id, first.token, 1, { i: 'changed' }))).version, 2);

    // One destroyed: a new session fits.
    assert.equal(await engine.destroy(sessions[1]!.id), true);
    await engine.commit(commitOf(sixth, grant.token, 0, { i: 5 }));
    // One expired: another fits (the commit is retried until the expiry sweep has run).
    const seventh = generateSessionId();
    const g7 = await engine.acquire(seventh);
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        await engine.commit(commitOf(seventh, g7.token, 0, { i: 7 }));
        break;
      } catch (err) {
        if (!code('KILN_ERR_SESSION_LIMIT')(err) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const stats = await engine.stats();
    assert.equal(stats.sessions, 5);
    assert.ok(stats.counters['sessionLimitRefusals']! >= 2, `refusals counted: ${stats.counters['sessionLimitRefusals']}`);
  });
});

describe('kiln server: --max-sessions-per-principal', () => {
  const dir = tempDir('kiln-cap-');
  let server: ServerProcess;
  const tokenA = newToken();
  before(async () => {
    writeFileSync(join(dir, 'tokens'), `app-a ${tokenA}\n`);
    server = await startKilnServer({ args: ['--max-sessions-per-principal', '2', '--tokens-file', join(dir, 'tokens')] });
  });
  after(async () => {
    await server?.kill();
    removeDir(dir);
  });

  it('refuses the third login of one principal, not a session without one nor another namespace', async () => {
    const engine = await engineFor(server.url, server.token);
    const other = await engineFor(server.url, tokenA);
    try {
      await createSession(engine, {}, { principal: 'pat' });
      const second = await createSession(engine, {});
      // A login on an existing session counts as well.
      await engine.commit(commitOf(second.id, second.token, 1, {}, { principal: 'pat' }));
      const third = await createSession(engine, { anonymous: true });
      await assert.rejects(engine.commit(commitOf(third.id, third.token, 1, {}, { principal: 'pat' })), code('KILN_ERR_PRINCIPAL_SESSION_LIMIT'));
      const id = generateSessionId();
      const g = await engine.acquire(id);
      await assert.rejects(engine.commit(commitOf(id, g.token, 0, {}, { principal: 'pat' })), code('KILN_ERR_PRINCIPAL_SESSION_LIMIT'));
      // Re-committing the same principal on a session that has it is no new login.
      await engine.commit(commitOf(second.id, second.token, 2, { more: 1 }, { principal: 'pat' }));
      await createSession(engine, {}, { principal: 'sam' });
      // Another namespace's "pat" is another principal.
      await createSession(other, {}, { principal: 'pat' });
      // Logging out one session makes room.
      await engine.commit(commitOf(second.id, second.token, 3, {}, { principal: null }));
      await engine.commit(commitOf(third.id, third.token, 1, {}, { principal: 'pat' }));
    } finally {
      await Promise.all([engine.close(), other.close()]);
    }
  });
});

describe('kiln server: --max-leases-per-connection', () => {
  it('refuses one lease past the limit with KILN_ERR_LEASE_LIMIT, counts it, grants again after a release, and limits each connection alone', async () => {
    const server = await startKilnServer({ args: ['--max-leases-per-connection', '50'] });
    const engine = await engineFor(server.url, server.token);
    const other = await engineFor(server.url, server.token);
    try {
      // Leases on ids that are not sessions (as an attacker would take them): 50 are granted.
      const held = [];
      for (let i = 0; i < 50; i++) {
        const id = generateSessionId();
        held.push({ id, token: (await engine.acquire(id)).token });
      }
      await assert.rejects(engine.acquire(generateSessionId()), code('KILN_ERR_LEASE_LIMIT'));
      // Re-acquiring one it holds is not one more.
      assert.equal((await engine.acquire(held[0]!.id)).token, held[0]!.token);
      // Another connection has a limit of its own.
      await other.acquire(generateSessionId());
      const counters = (await engine.stats()).counters as Record<string, number>;
      assert.equal(counters['leaseLimitRefusals'], 1);
      // One released: the next is granted.
      await engine.release(held[1]!.id, held[1]!.token);
      await engine.acquire(generateSessionId());
      await assert.rejects(engine.acquire(generateSessionId()), code('KILN_ERR_LEASE_LIMIT'));
    } finally {
      await engine.close();
      await other.close();
      await server.kill();
    }
  });

  it('refuses a value that is not a number, naming the option', async () => {
    await assert.rejects(startKilnServer({ args: ['--max-leases-per-connection', 'lots'], readyTimeoutMs: 3000 }), /max-leases-per-connection/);
  });
});
