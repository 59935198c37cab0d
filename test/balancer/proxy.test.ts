import assert from 'node:assert/strict';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KilnBalancer } from '../../src/balancer/balancer.js';
import { DEFAULT_LIMITS } from '../../src/balancer/limits.js';
import { BackendNode } from '../../src/balancer/node-table.js';
import { newProxyCounters, proxyRequest, type ProxyHost } from '../../src/balancer/proxy.js';
import { silentLogger } from '../../src/util/log.js';
import { sleep, waitFor } from '../helpers/processes.js';

const ADMIN_TOKEN = 'balancer-admin-token-0123456789abcdef-test';

/**
 * The proxy's own duties, against real HTTP servers on loopback: forwarded headers,
 * streaming both ways, WebSocket upgrades, retry of a refused connection, health
 * checks, drain.
 */
interface Backend {
  name: string;
  server: Server;
  port: number;
  seen: IncomingHttpHeaders[];
  close(): Promise<void>;
}

async function backend(name: string, port = 0): Promise<Backend> {
  const seen: IncomingHttpHeaders[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    seen.push(req.headers);
    if (req.url === '/healthz') return void res.end('ok');
    if (req.url === '/upload') {
      let bytes = 0;
      req.on('data', (c: Buffer) => (bytes += c.length));
      req.on('end', () => res.end(JSON.stringify({ name, bytes })));
      return;
    }
    if (req.url === '/slow-stream') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first chunk\n');
      setTimeout(() => res.end('last chunk\n'), 400);
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name, url: req.url, headers: req.headers }));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket: Socket) => {
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Backend: ${name}\r\nX-Forwarded-For-Seen: ${String(req.headers['x-forwarded-for'])}\r\n\r\n`);
    socket.on('data', (d: Buffer) => socket.write(Buffer.concat([Buffer.from(`${name}:`), d])));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  const address = server.address();
  return {
    name,
    server,
    port: typeof address === 'object' && address ? address.port : port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('kiln balancer proxy', () => {
  let backends: Backend[];
  let lb: KilnBalancer;

  before(async () => {
    backends = await Promise.all(['app-1', 'app-2'].map((n) => backend(n)));
    lb = new KilnBalancer({ port: 0, nodes: backends.map((b) => ({ name: b.name, url: `http://127.0.0.1:${b.port}` })), affinity: 'none', healthIntervalMs: 100, adminToken: ADMIN_TOKEN, logger: silentLogger });
    await lb.start();
  });
  after(async () => {
    await lb.stop(100);
    await Promise.all(backends.map((b) => b.close()));
  });

  it('sets X-Forwarded-For, -Proto and -Host and drops hop-by-hop headers', async () => {
    const r = await get(`${lb.url}/hello?x=1`, { 'x-forwarded-for': '203.0.113.9', 'proxy-connection': 'keep-alive', host: 'shop.example' });
    const { headers, url } = JSON.parse(r.body) as { headers: IncomingHttpHeaders; url: string };
    assert.equal(url, '/hello?x=1');
    assert.equal(headers['x-forwarded-for'], '127.0.0.1', 'an untrusted client cannot choose its forwarded address');
    assert.equal(headers['x-forwarded-proto'], 'http');
    assert.equal(headers['x-forwarded-host'], 'shop.example');
    assert.equal(headers['proxy-connection'], undefined);
  });

  it('streams a 20 MB upload and a slow response through without waiting for the whole', async () => {
    const size = 20 * 1024 * 1024;
    const uploaded = await new Promise<{ bytes: number }>((resolve, reject) => {
      const req = request(`${lb.url}/upload`, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(JSON.parse(body) as { bytes: number }));
      });
      req.on('error', reject);
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      const pump = (): void => {
        while (sent < size) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    assert.equal(uploaded.bytes, size);
    const firstChunkAt = await new Promise<number>((resolve, reject) => {
      const started = Date.now();
      request(`${lb.url}/slow-stream`, { agent: false }, (res) => {
        res.once('data', () => resolve(Date.now() - started));
        res.resume();
      }).on('error', reject).end();
    });
    assert.ok(firstChunkAt < 300, `first chunk after ${firstChunkAt} ms, before the backend finished (400 ms)`);
  });

  it('passes WebSocket upgrades both ways', async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const req = request(`${lb.url}/ws`, { agent: false, headers: { connection: 'Upgrade', upgrade: 'websocket' } });
      req.on('upgrade', (res, socket: Socket) => {
        assert.equal(res.statusCode, 101);
        assert.equal(res.headers['x-forwarded-for-seen'], '127.0.0.1');
        socket.once('data', (d: Buffer) => {
          resolve(d.toString());
          socket.destroy();
        });
        socket.write('ping');
      });
      req.on('error', reject);
      req.end();
    });
    assert.match(reply, /^app-\d:ping$/);
  });

  it('retries a refused connection on another node, and active health checks mark nodes down and up', async () => {
    const victim = backends[0]!;
    const port = victim.port;
    await victim.close();
    for (let i = 0; i < 6; i++) {
      const r = await get(`${lb.url}/after-kill-${i}`);
      assert.equal(r.status, 200, 'no error reaches the client');
      assert.equal((JSON.parse(r.body) as { name: string }).name, 'app-2');
    }
    assert.equal(lb.node('app-1')!.healthy, false);
    backends[0] = await backend('app-1', port);
    await waitFor(() => lb.node('app-1')!.healthy, 3000, 'app-1 back after a health check');
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) names.add((JSON.parse((await get(`${lb.url}/x`)).body) as { name: string }).name);
    assert.deepEqual([...names].sort(), ['app-1', 'app-2']);
  });

  it('drain: no requests go to a draining node; the status JSON says so', async () => {
    const res = await new Promise<number>((resolve, reject) => {
      request(`${lb.url}/_kiln/balancer/nodes/app-2/drain`, { method: 'POST', agent: false, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, (r) => {
        r.resume();
        resolve(r.statusCode!);
      }).on('error', reject).end();
    });
    assert.equal(res, 200);
    for (let i = 0; i < 4; i++) assert.equal((JSON.parse((await get(`${lb.url}/d`)).body) as { name: string }).name, 'app-1');
    const status = JSON.parse((await get(`${lb.url}/_kiln/balancer`, { authorization: `Bearer ${ADMIN_TOKEN}` })).body) as { nodes: { name: string; draining: boolean; healthy: boolean; requests: number; active: number }[] };
    assert.equal(status.nodes.find((n) => n.name === 'app-2')?.draining, true);
    assert.ok(status.nodes.every((n) => typeof n.requests === 'number' && typeof n.active === 'number' && typeof n.healthy === 'boolean'));
    lb.drain('app-2', false);
    await sleep(10);
  });

  it('closes an idle connection to an app server before the app server does (no hang-up on a reused socket)', async () => {
    // The app server announces Keep-Alive: timeout=2; the balancer must let go about a
    // second earlier. A request sent on a socket the app server is closing fails with
    // "socket hang up", and a POST cannot be retried.
    const closedAfter: number[] = [];
    const app = createServer((req, res) => {
      // Only the proxied request's connection is watched (health checks have their own).
      if (req.url === '/probe') {
        res.on('finish', () => {
          const respondedAt = Date.now();
          req.socket.once('close', () => closedAfter.push(Date.now() - respondedAt));
        });
      }
      res.end('ok');
    });
    app.keepAliveTimeout = 2_000;
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', () => resolve()));
    const port = (app.address() as { port: number }).port;
    const lone = new KilnBalancer({ port: 0, nodes: [{ name: 'app', url: `http://127.0.0.1:${port}` }], healthIntervalMs: 60_000, logger: silentLogger });
    await lone.start();
    try {
      const r = await get(`${lone.url}/probe`);
      assert.equal(r.status, 200);
      await waitFor(() => closedAfter.length > 0, 5_000, 'the idle connection closed');
      assert.ok(closedAfter[0]! < 1_700, `closed ${closedAfter[0]} ms after the response; the app server closes it after 2,000 ms`);
    } finally {
      await lone.stop(100);
      app.closeAllConnections();
      await new Promise<void>((resolve) => app.close(() => resolve()));
    }
  });

  it('answers 503 with a clear code when no node is healthy', async () => {
    const lone = new KilnBalancer({ port: 0, nodes: [{ name: 'gone', url: 'http://127.0.0.1:9' }], logger: silentLogger });
    await lone.start();
    try {
      const r = await get(`${lone.url}/`);
      assert.equal(r.status, 503);
      assert.equal((JSON.parse(r.body) as { code: string }).code, 'KILN_ERR_NO_NODE');
    } finally {
      await lone.stop(100);
    }
  });
});

/**
 * proxy.ts with a host (the balancer's side of it) that fails: a request Node refuses to
 * make, or a throw on the way to it, is answered and releases the node; neither may be
 * an unhandled rejection or exception, which ends a Node 20 process.
 */
describe('kiln balancer proxy when the upstream request cannot be made', () => {
  let app: Backend;
  let front: Server;
  let frontUrl: string;
  let node: BackendNode;
  let host: ProxyHost & { fail?: 'headers' | 'pick' };

  before(async () => {
    app = await backend('app-1');
    node = new BackendNode('app-1', `http://127.0.0.1:${app.port}`);
    host = {
      limits: DEFAULT_LIMITS,
      counters: newProxyCounters(),
      log: silentLogger,
      pick: (_req, tried) => {
        if (host.fail === 'pick') throw new Error('a bug on the way to the node');
        return tried.has(node.name) ? undefined : node;
      },
      // A header Node refuses to send, as a request line or header it cannot carry would be.
      upstreamHeaders: (req) => (host.fail === 'headers' ? { ...req.headers, 'x-bad': 'a\nb' } : { ...req.headers }),
      adjustResponse: () => undefined,
      suspect: () => undefined,
    };
    front = createServer((req, res) => proxyRequest(host, req, res));
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', () => resolve()));
    frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
  });
  after(async () => {
    front.closeAllConnections();
    front.close();
    await app.close();
  });

  it('a request Node refuses to make gets 400, the node released', { timeout: 10_000 }, async () => {
    host.fail = 'headers';
    const r = await get(`${frontUrl}/page`);
    assert.equal(r.status, 400, r.body);
    assert.equal((JSON.parse(r.body) as { code: string }).code, 'KILN_ERR_INVALID_ARGUMENT');
    assert.equal(node.active, 0);
    assert.equal(node.queued, 0);
  });

  it('a throw on the way to the node gets 502, not an unhandled rejection', { timeout: 10_000 }, async () => {
    host.fail = 'pick';
    const r = await get(`${frontUrl}/page`);
    assert.equal(r.status, 502, r.body);
    assert.equal((JSON.parse(r.body) as { code: string }).code, 'KILN_ERR_BAD_GATEWAY');
    host.fail = undefined;
    assert.equal((await get(`${frontUrl}/page`)).status, 200, 'and the proxy goes on');
    assert.equal(node.active, 0);
  });
});
