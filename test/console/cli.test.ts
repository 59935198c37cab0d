import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import { generateSessionId } from '../../src/session/id.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { createServer } from 'node:http';
import { listen } from '../../src/util/net.js';
import { adminPortOf, freePort, KILN_BIN, startKilnServer, type ServerProcess } from '../helpers/processes.js';

const run = promisify(execFile);

/** kiln status / sessions / top against a live server: the same numbers as the admin API. */
describe('operator CLI', () => {
  let server: ServerProcess;
  let adminUrl: string;
  let tokenFile: string;
  let adminToken: string;
  let kiln: SessionClient;
  const ids: string[] = [];

  const cli = async (...args: string[]) => {
    const { stdout } = await run(process.execPath, [KILN_BIN, ...args, '--admin', adminUrl, '--token-file', tokenFile], { env: { ...process.env, KILN_ADMIN_TOKEN: '' } });
    return stdout;
  };
  const api = async <T>(path: string): Promise<T> => (await (await fetch(`${adminUrl}${path}`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as T;

  before(async () => {
    // No --admin-token-file: the server makes its own admin token and says which file holds it.
    server = await startKilnServer({ args: ['--admin-port', '0'] });
    ({ url: adminUrl, tokenFile, token: adminToken } = await adminPortOf(server));
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
    assert.ok(!server.output().includes(adminToken), 'the token itself is never printed');
    kiln = createSessionClient({ engine: connect(server.url, { token: server.token, name: 'cli-test' }), statsIntervalMs: 100 });
    for (let i = 0; i < 30; i++) {
      ids.push(
        await kiln.withSession(null, (s) => {
          s.set('i', i);
          if (i < 3) s.setPrincipal('olga');
          return s.id;
        }),
      );
    }
  });
  after(async () => {
    await kiln.close();
    await server.kill();
    rmSync(dirname(tokenFile), { recursive: true, force: true });
  });

  it('kiln status --json gives the same numbers as the API; the screen shows them', async () => {
    const fromCli = JSON.parse(await cli('status', '--json')) as { sessions: { count: number }; counters: Record<string, number>; clients: { name: string }[] };
    const fromApi = await api<typeof fromCli>('/api/overview');
    assert.deepEqual(fromCli.sessions, fromApi.sessions);
    assert.deepEqual(fromCli.counters, fromApi.counters);
    assert.deepEqual(fromCli.clients.map((c) => c.name), fromApi.clients.map((c) => c.name));
    const screen = await cli('status');
    assert.match(screen, /sessions +30 /);
    assert.match(screen, /cli-test/);
    assert.match(screen, /health +ok/);
  });

  it('kiln sessions ls --json gives the same page as the API, by prefix and by principal too', async () => {
    const fromCli = JSON.parse(await cli('sessions', 'ls', '--json', '--limit', '1000')) as { sessions: { id: string }[]; total: number };
    const fromApi = await api<typeof fromCli>('/api/sessions?limit=1000');
    assert.deepEqual(fromCli, fromApi);
    assert.equal(fromCli.total, 30);
    const olga = JSON.parse(await cli('sessions', 'ls', '--json', '--principal', 'olga')) as { sessions: { id: string }[] };
    assert.deepEqual(olga.sessions.map((s) => s.id).sort(), ids.slice(0, 3).sort());
    const human = await cli('sessions', 'ls', '--limit', '5');
    assert.match(human, /5 of 30 sessions; next page: --after /);
  });

  it('kiln sessions show and rm (one, and all of a principal)', async () => {
    const shown = JSON.parse(await cli('sessions', 'show', ids[10]!, '--json')) as { meta: { id: string }; attributes: { name: string }[] };
    assert.equal(shown.meta.id, ids[10]);
    assert.deepEqual(shown.attributes.map((a) => a.name), ['i']);
    assert.match(await cli('sessions', 'rm', ids[10]!), /invalidated/);
    assert.equal((await kiln.open(ids[10]!)).isNew, true);
    // An id and a principal: refused, nothing destroyed (which one was meant?).
    await assert.rejects(cli('sessions', 'rm', ids[11]!, '--principal', 'olga'), /takes a session id or --principal P, not both.*KILN_ERR_INVALID_ARGUMENT/s);
    assert.equal((await kiln.open(ids[11]!)).isNew, false);
    const r = JSON.parse(await cli('sessions', 'rm', '--principal', 'olga', '--json')) as { destroyed: number };
    assert.equal(r.destroyed, 3);
  });

  it('kiln sessions show and rm take an id that begins with a dash (one id in 32 does)', async () => {
    const handle = await kiln.open(null, { newId: () => `-${generateSessionId().slice(1)}` });
    handle.set('dash', true);
    await handle.commit({ final: true });
    handle.close();
    const dashed = handle.id;
    assert.ok(dashed.startsWith('-'));
    const shown = JSON.parse(await cli('sessions', 'show', dashed, '--json')) as { meta: { id: string } };
    assert.equal(shown.meta.id, dashed);
    assert.match(await cli('sessions', 'rm', '--json', dashed), /"destroyed":true|invalidated/);
    assert.equal((await kiln.open(dashed)).isNew, true);
  });

  it('kiln top --json prints a frame per interval with rates', async () => {
    const lines = (await cli('top', '--json', '--iterations', '2', '--interval-ms', '200')).trim().split('\n');
    assert.equal(lines.length, 2);
    const second = JSON.parse(lines[1]!) as { rates: { commitsPerSecond: number } | null; overview: { sessions: { count: number } } };
    assert.ok(second.rates && typeof second.rates.commitsPerSecond === 'number');
    assert.equal(second.overview.sessions.count, 26);
  });

  it('kiln top | head: the reader going away ends top quietly (exit 0, no EPIPE trace)', async () => {
    const child = spawn(process.execPath, [KILN_BIN, 'top', '--json', '--interval-ms', '100', '--admin', adminUrl, '--token-file', tokenFile], { env: { ...process.env, KILN_ADMIN_TOKEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const first = await Promise.race([new Promise<string>((resolve) => child.stdout.once('data', () => resolve('frame'))), exited.then(() => 'exited'), new Promise<string>((resolve) => setTimeout(() => resolve('nothing'), 10_000))]);
    assert.equal(first, 'frame', `top printed no frame: ${stderr}`);
    child.stdout.destroy(); // as head does after its lines
    const code = await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 5_000))]);
    if (code === 'still running') child.kill('SIGKILL');
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|\n\s+at /);
  });

  it('kiln top whose last frame could not reach the server exits 1, as kiln status does', async () => {
    const closedPort = await freePort();
    await assert.rejects(run(process.execPath, [KILN_BIN, 'top', '--json', '--iterations', '1', '--admin', `http://127.0.0.1:${closedPort}`], { env: { ...process.env, KILN_ADMIN_TOKEN: 'x'.repeat(40) } }), (err: { code: number; stdout: string }) => err.code === 1 && /"overview":null/.test(err.stdout));
  });

  it('the client token opens no admin port, and the CLI does not fall back to it', async () => {
    const res = await fetch(`${adminUrl}/api/overview`, { headers: { authorization: `Bearer ${server.token}` } });
    assert.equal(res.status, 401);
    await assert.rejects(run(process.execPath, [KILN_BIN, 'status', '--admin', adminUrl], { env: { ...process.env, KILN_ADMIN_TOKEN: '', KILN_TOKEN: server.token } }), (err: { stderr: string; code: number }) => err.code !== 0 && /no admin token: .*\[KILN_ERR_INVALID_OPTION\]/.test(err.stderr));
  });

  it('a refused admin port gets a hint: the server opens one only with --admin-port', async () => {
    const closedPort = await freePort();
    await assert.rejects(run(process.execPath, [KILN_BIN, 'status', '--admin', `http://127.0.0.1:${closedPort}`], { env: { ...process.env, KILN_ADMIN_TOKEN: 'x'.repeat(40) } }), (err: { stderr: string; code: number }) => err.code !== 0 && /not reachable: .*ECONNREFUSED/.test(err.stderr) && /--admin-port <n>/.test(err.stderr) && /KILN_ADMIN_URL/.test(err.stderr));
  });

  it('an admin API that answers a byte at a time is cut at the call\'s total deadline (5 s), not waited for while bytes trickle in', async () => {
    const trickle = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      const timer = setInterval(() => res.write(' '), 500);
      res.on('close', () => clearInterval(timer));
    });
    const port = await listen(trickle, 0, '127.0.0.1');
    try {
      const startedAt = Date.now();
      await assert.rejects(
        run(process.execPath, [KILN_BIN, 'status', '--admin', `http://127.0.0.1:${port}`], { env: { ...process.env, KILN_ADMIN_TOKEN: 'x'.repeat(40) }, timeout: 15_000 }),
        (err: { stderr: string; code: number; killed?: boolean }) => !err.killed && err.code === 1 && /not reachable: no whole answer within 5000 ms \[KILN_ERR_ENGINE_UNAVAILABLE\]/.test(err.stderr),
      );
      const ms = Date.now() - startedAt;
      assert.ok(ms >= 4500 && ms < 9000, `cut after ${ms} ms`);
    } finally {
      trickle.closeAllConnections();
      trickle.close();
    }
  });

  it('a wrong token is a clear error', async () => {
    await assert.rejects(run(process.execPath, [KILN_BIN, 'status', '--admin', adminUrl], { env: { ...process.env, KILN_ADMIN_TOKEN: 'nope' } }), (err: { stderr: string; code: number }) => err.code === 1 && /KILN_ERR_AUTH/.test(err.stderr));
  });
});
