import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { adminTarget, renderStatus, type Overview } from '../../src/cli/admin-client.js';

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
});
