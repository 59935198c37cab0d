import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { adminCall, adminTarget, balancerTarget, clusterJson, readCluster, renderBalancer, renderCluster, renderStatus, type BalancerStatus, type Overview } from '../../src/cli/admin-client.js';
import { balancerStatusFrom } from '../../src/console/balancer-watch.js';
import { KilnError } from '../../src/errors/index.js';

describe('kiln status: the log behind its disk', () => {
  const overview = (backlog: Overview['storage']['backlog']): Overview => ({
    server: { role: 'standalone', version: '0.1.0', host: 'h', pid: 1, address: '127.0.0.1:9510', epoch: 'e', uptimeMs: 1000, tls: false },
    storage: { kind: 'kiln-log', dataDir: '/data', fsync: 'always', bytesOnDisk: 2048, ...(backlog ? { backlog } : {}) },
    sessions: { count: 1, bytes: 10, tombstones: 0 },
    leases: { held: 0, waiting: 0 },
    counters: {},
    connections: 1,
    recent: { leaseWaitMsP50: 0 },
    clients: [],
  });
  const line = (screen: string, name: string) => screen.split('\n').find((l) => l.startsWith(name)) ?? '';

  it('says nothing of a small backlog, notes a large one and a waiting write, and warns while commits are refused', () => {
    assert.equal(line(renderStatus(overview(undefined)), 'storage'), 'storage     /data  fsync always  log 2.0 KiB');
    assert.equal(line(renderStatus(overview({ bytes: 512 * 1024, stalledMs: 900, refusing: null })), 'storage'), 'storage     /data  fsync always  log 2.0 KiB');
    const behind = renderStatus(overview({ bytes: 3 * 1024 * 1024, stalledMs: 2500, refusing: null }));
    assert.equal(line(behind, 'storage'), 'storage     /data  fsync always  log 2.0 KiB  backlog 3.0 MiB, a write waiting 2.5 s');
    assert.equal(line(behind, 'health'), 'health      ok');
    const refusing = renderStatus(overview({ bytes: 64 * 1024 * 1024, stalledMs: 6000, refusing: "the server's log is 64.0 MiB behind its disk (limit 64.0 MiB)" }));
    assert.equal(line(refusing, 'health'), "health      WARN: commits refused: the server's log is 64.0 MiB behind its disk (limit 64.0 MiB)");
  });

  it('notes a compaction that runs long, and warns of one that may wait on a hung disk', () => {
    const quiet = { bytes: 0, stalledMs: 0, refusing: null };
    assert.equal(line(renderStatus(overview({ ...quiet, compactingMs: 4000 })), 'storage'), 'storage     /data  fsync always  log 2.0 KiB');
    const long = renderStatus(overview({ ...quiet, compactingMs: 75_000 }));
    assert.equal(line(long, 'storage'), 'storage     /data  fsync always  log 2.0 KiB  compacting for 1m15s');
    assert.equal(line(long, 'health'), 'health      ok');
    const behind = renderStatus(overview({ bytes: 3 * 1024 * 1024, stalledMs: 0, refusing: null, compactingMs: 6 * 60_000 }));
    assert.equal(line(behind, 'storage'), 'storage     /data  fsync always  log 2.0 KiB  backlog 3.0 MiB  compacting for 6m0s');
    assert.equal(line(behind, 'health'), 'health      WARN: a compaction has run for 6m0s: its snapshot may be waiting on a hung disk');
  });
});

describe('kiln status: where it reads its token', () => {
  it('a --token-file that is not there is a clear error naming the option, not a stack trace', () => {
    assert.throws(
      () => adminTarget({ 'token-file': '/nonexistent/kiln/admin.token' }),
      (err: { code?: string; message: string; details?: { option?: string } }) =>
        err.code === 'KILN_ERR_INVALID_OPTION' && err.details?.option === '--token-file' && /^--token-file \/nonexistent\/kiln\/admin\.token: no such file \(the server writes <data dir>\/admin\.token only when started with --admin-port\)$/.test(err.message),
    );
    assert.throws(() => adminTarget({ 'token-file': fileURLToPath(import.meta.url), 'ca-file': '/nonexistent/ca.pem' }), { code: 'KILN_ERR_INVALID_OPTION', message: '--ca-file /nonexistent/ca.pem: no such file' });
  });

  it('--balancer needs its own token file: the kiln server\'s admin token is never sent to another address', () => {
    const admin = { url: 'http://127.0.0.1:9511', token: 'the-kiln-admin-token', kind: 'admin' as const };
    assert.throws(() => balancerTarget({ balancer: 'http://10.0.0.9:8080' }, admin), (err: { code?: string; details?: { option?: string } }) => err.code === 'KILN_ERR_INVALID_OPTION' && err.details?.option === '--balancer-token-file');
    assert.equal(balancerTarget({ balancer: 'http://10.0.0.9:8080', 'balancer-token-file': fileURLToPath(import.meta.url) }, admin)?.kind, 'balancer');
    // A running demo's balancer takes the demo's admin token.
    assert.equal(balancerTarget({}, { ...admin, demo: { balancerUrl: 'http://127.0.0.1:8080' } as never })?.token, 'the-kiln-admin-token');
  });
});

describe('kiln status: the balancer beside the kiln server', () => {
  const admin = { url: 'http://127.0.0.1:9511', token: 't', kind: 'admin' as const };
  const balancer = { url: 'http://127.0.0.1:8080', token: 't', kind: 'balancer' as const };
  // As the balancer sends it, checked as status and top check it.
  const status: BalancerStatus = balancerStatusFrom({
    affinity: 'route',
    uptimeMs: 65_000,
    pid: 7,
    requests: 120,
    retries: 1,
    failovers: 2,
    errors: 0,
    noNode: 0,
    nodes: [
      { name: 'app-1', url: 'http://127.0.0.1:3001', healthy: true, draining: false, pid: 11, requests: 80, active: 1, failures: 0, lastError: null },
      { name: 'app-2', url: 'http://127.0.0.1:3002', healthy: false, draining: false, pid: 12, requests: 40, active: 0, failures: 3, lastError: 'connect ECONNREFUSED 127.0.0.1:3002' },
    ],
  })!;

  it('shows the balancer and one row per app server', () => {
    const screen = renderBalancer(balancer.url, status);
    assert.match(screen, /^balancer {4}http:\/\/127\.0\.0\.1:8080 {2}affinity route {2}pid 7 {2}up 1m5s {2}120 requests, 1 retries, 2 failovers, 0 errors$/m);
    assert.match(screen, /^nodes {7}1 of 2 in rotation$/m);
    assert.match(screen, /^app-1 +http:\/\/127\.0\.0\.1:3001 +up +1 +80 +0 +-$/m);
    assert.match(screen, /^app-2 +http:\/\/127\.0\.0\.1:3002 +DOWN +0 +40 +3 +connect ECONNREFUSED 127\.0\.0\.1:3002$/m);
  });

  it('what answers at --balancer is not trusted: an answer that is no kiln balancer status is an error row, and an endless one is cut', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/_kiln/balancer') {
        res.end(JSON.stringify({ affinity: 'route', nodes: 'not a list' }));
        return;
      }
      res.writeHead(200);
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const more = (): void => {
        while (res.write(chunk)) if (res.writableLength > 64 * 1024 * 1024) return;
      };
      res.on('drain', more);
      more();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const view = await readCluster({ url: 'http://127.0.0.1:9', token: 't', kind: 'admin' }, { url, token: 't', kind: 'balancer' }, 5000);
      assert.equal(view.balancer, undefined);
      assert.equal(view.errors.balancer?.code, 'KILN_ERR_PROTOCOL');
      assert.match(renderCluster(view, admin, { url, token: 't', kind: 'balancer' }), /ERROR: the answer at \/_kiln\/balancer is not a kiln balancer's status \[KILN_ERR_PROTOCOL\]/);
      await assert.rejects(adminCall({ url, token: 't', kind: 'admin' }, 'GET', '/endless', { timeoutMs: 20_000 }), (err: KilnError) => err.code === 'KILN_ERR_ENGINE_UNAVAILABLE' && /an answer above 16777216 characters/.test(err.message));
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('a part that did not answer is one row, and the other part is still shown', () => {
    const down = new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'admin API at http://127.0.0.1:9511 not reachable: connect ECONNREFUSED 127.0.0.1:9511', { details: { reason: 'connect ECONNREFUSED 127.0.0.1:9511' } });
    const screen = renderCluster({ balancer: status, errors: { server: down } }, admin, balancer);
    assert.match(screen, /^kiln server http:\/\/127\.0\.0\.1:9511 {2}UNREACHABLE: connect ECONNREFUSED 127\.0\.0\.1:9511$/m);
    assert.match(screen, /^balancer {4}http:\/\/127\.0\.0\.1:8080 /m);
    const refused = new KilnError('KILN_ERR_AUTH', 'bad token');
    assert.match(renderCluster({ errors: { server: down, balancer: refused } }, admin, balancer), /^balancer {4}http:\/\/127\.0\.0\.1:8080 {2}ERROR: bad token \[KILN_ERR_AUTH\]$/m);
    assert.deepEqual(clusterJson({ balancer: status, errors: { server: down } }), { balancer: status, errors: { server: { code: 'KILN_ERR_ENGINE_UNAVAILABLE', message: down.message } } });
  });
});
