/**
 * #22 item 3: behind a TLS terminator the app learns the request came over HTTPS
 * (--trust-proxy), and nobody else can claim so.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { KILN_BIN } from '../helpers/processes.js';
import { spawnSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { startBalancerProcess, startRecordingBackend, type BalancerProcess, type RecordingBackend } from './balancer-fixtures.js';

const FORGED = { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.9', 'x-forwarded-host': 'shop.example' };

describe('security: X-Forwarded-* and --trust-proxy (#22 item 3)', () => {
  let backend: RecordingBackend;
  let trusting: BalancerProcess;
  let untrusting: BalancerProcess;
  let app: AppProcess;
  let appLb: BalancerProcess;

  before(async () => {
    backend = await startRecordingBackend('app');
    trusting = await startBalancerProcess([backend], ['--trust-proxy', '127.0.0.1']);
    untrusting = await startBalancerProcess([backend]);
    app = await startApp('express-app', { NODE_NAME: 'app', KILN_ENGINE: undefined, COOKIE_SECURE: 'auto', TRUST_PROXY: '1', SESSION_SECRETS: 'trust-proxy-secret' });
    appLb = await startBalancerProcess([{ name: 'app', port: app.port } as RecordingBackend], ['--trust-proxy', 'loopback']);
  });
  after(async () => {
    await Promise.all([trusting?.stop(), untrusting?.stop(), appLb?.stop()]);
    await app?.stop();
    await backend?.close();
  });

  it('from a trusted proxy the forwarded protocol and host are kept and its peer address appended', async () => {
    backend.seen.length = 0;
    assert.equal((await fetch(`${trusting.url}/t`, { headers: FORGED })).status, 200);
    const seen = backend.seen[0]!.headers;
    assert.equal(seen['x-forwarded-proto'], 'https');
    assert.equal(seen['x-forwarded-host'], 'shop.example');
    assert.equal(seen['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
  });

  it('from anyone else all three are overwritten with what the balancer saw', async () => {
    backend.seen.length = 0;
    assert.equal((await fetch(`${untrusting.url}/u`, { headers: { ...FORGED, forwarded: 'for=6.6.6.6;proto=https', 'x-real-ip': '6.6.6.6' } })).status, 200);
    const seen = backend.seen[0]!.headers;
    assert.equal(seen['forwarded'], undefined, 'other spellings of the same claim are dropped');
    assert.equal(seen['x-real-ip'], undefined);
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], `127.0.0.1:${untrusting.port}`);
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
  });

  it('from anyone else every other forwarding claim is dropped too (X-Forwarded-Ssl, -Prefix, True-Client-IP, Front-End-Https, …)', async () => {
    backend.seen.length = 0;
    const claims = {
      'x-forwarded-ssl': 'on',
      'x-forwarded-prefix': '/admin',
      'x-forwarded-port': '443',
      'x-forwarded-scheme': 'https',
      'x-forwarded-server': 'evil.example',
      'true-client-ip': '6.6.6.6',
      'front-end-https': 'on',
      'x-client-ip': '6.6.6.6',
      'cf-connecting-ip': '6.6.6.6',
      'x-cluster-client-ip': '6.6.6.6',
      'x-url-scheme': 'https',
    };
    assert.equal((await fetch(`${untrusting.url}/claims`, { headers: { ...claims, 'x-kept': 'yes' } })).status, 200);
    const seen = backend.seen[0]!.headers;
    for (const name of Object.keys(claims)) assert.equal(seen[name], undefined, `${name} never reaches the app`);
    assert.equal(seen['x-kept'], 'yes', 'other headers pass');
    assert.deepEqual(Object.keys(seen).filter((h) => h.startsWith('x-forwarded')).sort(), ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto'], 'only the three the balancer sets');
  });

  it('from a trusted proxy they are kept', async () => {
    backend.seen.length = 0;
    assert.equal((await fetch(`${trusting.url}/claims`, { headers: { 'x-forwarded-prefix': '/shop', 'true-client-ip': '203.0.113.9' } })).status, 200);
    const seen = backend.seen[0]!.headers;
    assert.equal(seen['x-forwarded-prefix'], '/shop');
    assert.equal(seen['true-client-ip'], '203.0.113.9');
  });

  it("an Express app with cookie.secure 'auto' behind a trusted terminator sets a Secure cookie; plain HTTP through it gets none", async () => {
    const viaTerminator = await fetch(`${appLb.url}/api/incr`, { method: 'POST', headers: { 'x-forwarded-proto': 'https' } });
    assert.equal(viaTerminator.status, 200);
    assert.match(viaTerminator.headers.get('set-cookie') ?? '', /;\s*Secure/i);
    const plain = await fetch(`${appLb.url}/api/incr`, { method: 'POST' });
    assert.doesNotMatch(plain.headers.get('set-cookie') ?? '', /;\s*Secure/i, 'plain HTTP through the terminator: no Secure');
  });

  it('a trusted proxy has no per-address connection cap (all its clients share its address); an untrusted address keeps it', async () => {
    const capped = await startBalancerProcess([backend], ['--trust-proxy', '127.0.0.1', '--max-connections-per-client', '5']);
    const held: Socket[] = [];
    /** A new connection from `localAddress`, kept open, and the head of the answer to one GET on it. */
    const open = (localAddress: string): Promise<string> =>
      new Promise((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: capped.port, localAddress }, () => socket.write('GET /held HTTP/1.1\r\nHost: shop\r\n\r\n'));
        held.push(socket);
        let text = '';
        socket.on('error', () => undefined);
        socket.on('data', (d: Buffer) => {
          text += d.toString('latin1');
          if (text.includes('\r\n\r\n')) resolve(text.split('\r\n')[0]!);
        });
        socket.on('close', () => resolve(text.split('\r\n')[0]!));
      });
    try {
      const fromProxy = await Promise.all(Array.from({ length: 10 }, () => open('127.0.0.1')));
      assert.deepEqual(fromProxy, fromProxy.map(() => 'HTTP/1.1 200 OK'), '10 connections from the trusted proxy, all served');
      const fromClient = [];
      for (let i = 0; i < 6; i++) fromClient.push(await open('127.0.0.77'));
      assert.deepEqual(fromClient.slice(0, 5), Array(5).fill('HTTP/1.1 200 OK'));
      assert.equal(fromClient[5], 'HTTP/1.1 503 Service Unavailable', 'the sixth from an untrusted address is refused');
    } finally {
      for (const socket of held) socket.destroy();
      await capped.stop();
    }
  });

  it('a bad --trust-proxy entry is refused at start, naming it', () => {
    const run = spawnSync(process.execPath, [KILN_BIN, 'balancer', '--port', '0', '--node', 'a=http://127.0.0.1:9', '--trust-proxy', '127.0.0.1,10.0.0.0/33'], { encoding: 'utf8', timeout: 10_000 });
    assert.notEqual(run.status, 0);
    assert.match(run.stderr, /KILN_ERR_INVALID_OPTION/);
    assert.match(run.stderr, /10\.0\.0\.0\/33/);
  });
});
