/**
 * #22 item 1: nobody drains the site through the balancer. Behind a TLS terminator on
 * the same host every public request comes from 127.0.0.1, so the status JSON and the
 * drain actions need the admin token; the source address authorises nothing.
 */
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KilnBalancer } from '../../src/balancer/balancer.js';
import { isKilnError } from '../../src/errors/index.js';
import { silentLogger } from '../../src/util/log.js';
import { removeDir, sleep, tempDir } from '../helpers/processes.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BALANCER_ADMIN_TOKEN, startBalancerProcess, startRecordingBackend, type BalancerProcess, type RecordingBackend } from './balancer-fixtures.js';

/** A same-host "TLS terminator": a plain reverse proxy on loopback in front of the balancer. */
function startFrontProxy(targetPort: number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const upstream = request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers, agent: false }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port })));
}

describe('security: the balancer admin endpoints (#22 item 1)', () => {
  let backends: RecordingBackend[];
  let lb: BalancerProcess;
  let front: { server: Server; port: number };
  let dir: string;

  before(async () => {
    dir = tempDir();
    const tokenFile = join(dir, 'admin.token');
    writeFileSync(tokenFile, BALANCER_ADMIN_TOKEN, { mode: 0o600 });
    backends = await Promise.all([startRecordingBackend('app-1'), startRecordingBackend('app-2')]);
    lb = await startBalancerProcess(backends, ['--admin-token-file', tokenFile]);
    front = await startFrontProxy(lb.port);
  });
  after(async () => {
    front?.server.close();
    await lb?.stop();
    await Promise.all(backends.map((b) => b.close()));
    removeDir(dir);
  });

  it('a public client behind a same-host proxy can neither read the node table nor drain any node; the site keeps answering', async () => {
    const publicUrl = `http://127.0.0.1:${front.port}`;
    const status = await fetch(`${publicUrl}/_kiln/balancer`);
    const body = await status.text();
    assert.equal(status.status, 401);
    for (const b of backends) assert.ok(!body.includes(b.name) && !body.includes(String(b.port)), 'no node name or address leaks');
    for (const name of ['app-1', 'app-2']) {
      for (const action of ['drain', 'undrain']) {
        const res = await fetch(`${publicUrl}/_kiln/balancer/nodes/${name}/${action}`, { method: 'POST' });
        assert.equal(res.status, 401, `${action} ${name} refused`);
      }
    }
    const served = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${publicUrl}/page`);
      assert.equal(res.status, 200);
      served.add(((await res.json()) as { node: string }).node);
    }
    assert.deepEqual([...served].sort(), ['app-1', 'app-2'], 'both nodes still in rotation');
  });

  it('the token is taken from the Authorization header only: not from the URL, not a wrong one of the same length', async () => {
    const wrong = BALANCER_ADMIN_TOKEN.replace(/.$/, (c) => (c === 'x' ? 'y' : 'x'));
    for (const url of [`${lb.url}/_kiln/balancer?token=${BALANCER_ADMIN_TOKEN}`, `${lb.url}/_kiln/balancer?access_token=${BALANCER_ADMIN_TOKEN}`]) {
      assert.equal((await fetch(url)).status, 401, url);
    }
    assert.equal((await fetch(`${lb.url}/_kiln/balancer`, { headers: { authorization: `Bearer ${wrong}` } })).status, 401);
    assert.equal((await fetch(`${lb.url}/_kiln/balancer/nodes/app-1/drain?token=${BALANCER_ADMIN_TOKEN}`, { method: 'POST' })).status, 401);
  });

  it('with the token the operator reads the status and drains a node', async () => {
    const headers = { authorization: `Bearer ${BALANCER_ADMIN_TOKEN}` };
    const status = (await (await fetch(`${lb.url}/_kiln/balancer`, { headers })).json()) as { nodes: { name: string }[] };
    assert.deepEqual(status.nodes.map((n) => n.name), ['app-1', 'app-2']);
    assert.equal((await fetch(`${lb.url}/_kiln/balancer/nodes/app-2/drain`, { method: 'POST', headers })).status, 200);
    for (let i = 0; i < 4; i++) assert.equal(((await (await fetch(`${lb.url}/after-drain`)).json()) as { node: string }).node, 'app-1');
    assert.equal((await fetch(`${lb.url}/_kiln/balancer/nodes/app-2/undrain`, { method: 'POST', headers })).status, 200);
  });

  it('an admin request with a body nobody reads is answered with Connection: close and its connection closed, however the client trickles', async () => {
    const socket = connect(lb.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
    socket.write('POST /_kiln/balancer/nodes/app-1/drain HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\nabc');
    const trickle = setInterval(() => socket.write('x'), 100);
    try {
      const ended = await Promise.race([closed, sleep(3_000).then(() => false)]);
      assert.match(text, /^HTTP\/1\.1 401 /);
      assert.match(text, /\r\nconnection: close\r\n/i);
      assert.ok(ended, 'the balancer closed the connection while the client kept sending');
    } finally {
      clearInterval(trickle);
      socket.destroy();
    }
  });

  it('a KilnBalancer without a token answers 404 on its admin paths to everybody, loopback included; a short token is refused', async () => {
    const lone = new KilnBalancer({ port: 0, nodes: [{ name: 'app', url: `http://127.0.0.1:${backends[0]!.port}` }], healthIntervalMs: 60_000, logger: silentLogger });
    await lone.start();
    try {
      assert.equal((await fetch(`${lone.url}/_kiln/balancer`)).status, 404);
      assert.equal((await fetch(`${lone.url}/_kiln/balancer/nodes/app/drain`, { method: 'POST' })).status, 404);
      assert.equal(lone.node('app')!.draining, false);
    } finally {
      await lone.stop(100);
    }
    assert.throws(() => new KilnBalancer({ nodes: [{ name: 'a', url: 'http://127.0.0.1:9' }], adminToken: 'short', logger: silentLogger }), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && /32 bytes/.test(err.message));
  });
});
