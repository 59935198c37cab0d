import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createSessionClient } from '../../src/client/session-client.js';
import type { SessionHandle } from '../../src/client/session-handle.js';
import type { Engine } from '../../src/engines/engine.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { decodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { adminPortOf, removeDir, sleep, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';
import { commitOf, createSession } from '../security/server-fixtures.js';
import { RawClient } from '../helpers/raw-client.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { SNAPSHOT_TEMP_PATTERN } from '../../src/server/storage/frame-file.js';
import { encodeCommitBody, MessageType } from '../../src/protocol/messages.js';

/**
 * A disk that stops answering: the kiln server's log writes wait (failpoint `log:write`,
 * held while a file exists), as on a stalled or dying disk. Before, every commit was
 * applied in memory and then waited on the disk, unacknowledged and without bound: the
 * server's memory grew with what clients sent, and readers saw changes a crash would
 * lose. Now a commit past the backlog limit is refused before it changes anything, with a
 * retryable KILN_ERR_STORAGE_BEHIND, and the backlog shows in the admin API and metrics.
 */
describe('kiln server: a log whose disk falls behind', () => {
  const BACKLOG = 256 * 1024;
  const VALUE = 'x'.repeat(16 * 1024);

  /** A fresh data directory, and the file whose presence turns the log's fault `point` on in a server started with `env`. */
  function faultyDisk(point: string): { dataDir: string; hold: string; env: Record<string, string>; cleanup: () => void } {
    const dataDir = tempDir();
    const holdDir = tempDir('kiln-hold-');
    const hold = join(holdDir, 'hold');
    return { dataDir, hold, env: { KILN_FAILPOINT: point, KILN_FAILPOINT_HOLD: hold }, cleanup: () => [dataDir, holdDir].forEach(removeDir) };
  }

  /** A kiln server with the fault `point` and a client engine on it, for a test that needs no restart. */
  async function withFaultyServer(point: string, serverOptions: { fsync: 'always' | 'everysec'; args: string[] }, operationTimeoutMs: number, run: (server: ServerProcess, engine: Engine, hold: string) => Promise<void>): Promise<void> {
    const disk = faultyDisk(point);
    const server = await startKilnServer({ dataDir: disk.dataDir, env: disk.env, ...serverOptions });
    const engine = connect(server.url, { token: server.token, operationTimeoutMs });
    try {
      await engine.connect();
      await run(server, engine, disk.hold);
    } finally {
      rmSync(disk.hold, { force: true });
      await engine.close();
      await server.kill();
      disk.cleanup();
    }
  }

  it('refuses commits past --max-log-backlog-bytes before applying them, keeps every one it took, and takes commits again when the disk answers', async () => {
    const { dataDir, hold, env, cleanup } = faultyDisk('log:write');
    let server = await startKilnServer({ dataDir, fsync: 'always', env, args: ['--max-log-backlog-bytes', String(BACKLOG), '--log-stall-ms', '60000', '--admin-port', '0'] });
    let engine: Engine | undefined;
    try {
      engine = connect(server.url, { token: server.token, operationTimeoutMs: 20_000 });
      await engine.connect();
      const admin = await adminPortOf(server);
      const before = await createSession(engine, { v: 'before' });

      writeFileSync(hold, '');
      // Sessions of 16 KiB each until the server refuses one: the ones it took wait on the disk.
      const taken: { id: string; done: Promise<unknown> }[] = [];
      let refused: { id: string; token: number; error: { code?: string; message: string } } | undefined;
      for (let i = 0; !refused; i++) {
        assert.ok(i < 40, 'a commit is refused once the backlog is full');
        const id = generateSessionId();
        const grant = await engine.acquire(id);
        const done = engine.commit(commitOf(id, grant.token, 0, { v: VALUE }));
        const outcome = await Promise.race([done.then(() => 'acked', (e: { code?: string; message: string }) => e), sleep(100).then(() => 'waiting')]);
        if (outcome === 'waiting') taken.push({ id, done });
        else if (outcome === 'acked') assert.fail('a commit was acknowledged while the disk held its write');
        else refused = { id, token: grant.token, error: outcome as { code?: string; message: string } };
      }
      assert.equal(refused.error.code, 'KILN_ERR_STORAGE_BEHIND');
      const behind = /^the server's log is (\d+\.\d) KiB behind its disk \(limit 256\.0 KiB\); the commit was not applied, try again later$/.exec(refused.error.message);
      assert.ok(behind, refused.error.message);
      const kib = Number(behind[1]);
      assert.ok(kib >= 256 && kib < 256 + 17, `${kib} KiB waiting: the limit, and less than one more commit`);
      // Refused means not applied: the session does not exist.
      const again = await engine.acquire(refused.id);
      assert.equal(again.snapshot, null, 'the refused commit changed nothing');
      // The backlog is there to see.
      const overview = (await (await admin.get('/api/overview')).json()) as { storage: { backlog?: { bytes: number; refusing: string | null } } };
      assert.ok((overview.storage.backlog?.bytes ?? 0) >= BACKLOG, JSON.stringify(overview.storage));
      assert.match(overview.storage.backlog?.refusing ?? '', /behind its disk/);
      const metrics = await (await admin.get('/metrics')).text();
      assert.match(metrics, /^kiln_storage_refusing 1$/m);
      assert.match(metrics, /^kiln_storage_backlog_bytes \d{6,}$/m);

      // A request through the client: its commit is retried under its lease, then fails with 503.
      const client = createSessionClient({ engine: connect(server.url, { token: server.token }), requestTimeoutMs: 5000 });
      try {
        const started = Date.now();
        await assert.rejects(client.withSession(null, (s: SessionHandle) => void s.set('v', 1)), (err: { code?: string; status?: number }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && err.status === 503);
        assert.ok(Date.now() - started < 4000, 'refused at once each time, not after a timeout');
        assert.ok(client.stats().counters.commitRetries >= 2, 'retried after pauses');
      } finally {
        await client.close();
      }

      // The disk answers: everything taken is acknowledged, and commits are taken again.
      // (A refusal slower than 100 ms to come back was filed as taken: it must be a refusal.)
      unlinkSync(hold);
      const outcomes = await Promise.allSettled(taken.map((t) => t.done));
      const late = outcomes.filter((o) => o.status === 'rejected');
      for (const o of late) assert.equal((o.reason as { code?: string }).code, 'KILN_ERR_STORAGE_BEHIND');
      const acked = taken.filter((_, i) => outcomes[i]!.status === 'fulfilled');
      assert.ok(acked.length >= BACKLOG / VALUE.length - 1, `${acked.length} commits acknowledged`);
      await engine.commit(commitOf(refused.id, refused.token, 0, { v: 'after' }));
      const metricsAfter = await (await admin.get('/metrics')).text();
      assert.match(metricsAfter, /^kiln_storage_refusing 0$/m);

      // A crash now keeps every acknowledged commit, and the refused one only as retried.
      await engine.close();
      engine = undefined;
      await server.kill();
      server = await startKilnServer({ dataDir, fsync: 'always' });
      engine = connect(server.url, { token: server.token });
      await engine.connect();
      for (const { id } of [before, ...acked]) {
        const grant = await engine.acquire(id);
        assert.ok(grant.snapshot, `session ${id} survived the crash`);
        assert.equal(String(decodeAttribute(grant.snapshot.attributes.get('v')!)).length, id === before.id ? 'before'.length : VALUE.length);
      }
      const retried = await engine.acquire(refused.id);
      assert.equal(decodeAttribute(retried.snapshot!.attributes.get('v')!), 'after');
    } finally {
      await engine?.close();
      rmSync(hold, { force: true });
      await server.kill();
      cleanup();
    }
  });

  it('refuses commits while a log write has waited --log-stall-ms, whatever its size', () =>
    withFaultyServer('log:write', { fsync: 'everysec', args: ['--log-stall-ms', '300', '--admin-port', '0'] }, 20_000, async (server, engine, hold) => {
      const admin = await adminPortOf(server);
      writeFileSync(hold, '');
      const stuck = (async () => {
        const id = generateSessionId();
        const grant = await engine.acquire(id);
        return engine.commit(commitOf(id, grant.token, 0, { n: 1 }));
      })();
      stuck.catch(() => undefined); // awaited below; a failure before that must not surface as unhandled
      // One small record, far below the backlog limit: only its wait refuses what follows.
      await waitFor(async () => /^kiln_storage_refusing 1$/m.test(await (await admin.get('/metrics')).text()), 10_000, 'the stall to refuse commits');
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      await assert.rejects(engine.commit(commitOf(id, grant.token, 0, { n: 1 })), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && /a write to the server's log has been waiting on its disk for \d+\.\d s/.test(err.message));
      // A client from before the code (no 'storage-behind' in its Hello) gets a code it knows and retries.
      const old = await RawClient.open(server.port);
      try {
        old.hello(server.token);
        const oldId = generateSessionId();
        old.send(MessageType.Acquire, 2, { id: oldId, timeoutMs: 1000 });
        const oldToken = ((await old.reply(2)).body as { token: number }).token;
        old.write(encodeFrame(MessageType.Commit, 3, encodeCommitBody(commitOf(oldId, oldToken, 0, { n: 1 }))));
        const answer = await old.reply(3);
        assert.equal(answer.type, MessageType.Error);
        assert.equal(old.lastError()?.code, 'KILN_ERR_ENGINE_UNAVAILABLE');
        assert.match(old.lastError()?.message ?? '', /waiting on its disk/);
      } finally {
        old.destroy();
      }
      unlinkSync(hold);
      await stuck;
      await engine.commit(commitOf(id, grant.token, 0, { n: 2 }));
    }));

  it('a stop that gives up on a write hung on its disk exits 1 once the disk answers, saying why (a stop that finished its writes exits 0)', () =>
    withFaultyServer('log:write', { fsync: 'always', args: ['--log-stall-ms', '300', '--admin-port', '0'] }, 20_000, async (server, engine, hold) => {
      const admin = await adminPortOf(server);
      writeFileSync(hold, '');
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      const stuck = engine.commit(commitOf(id, grant.token, 0, { n: 1 }));
      stuck.catch(() => undefined); // never acknowledged: the stop gives it up
      await waitFor(async () => /^kiln_storage_refusing 1$/m.test(await (await admin.get('/metrics')).text()), 10_000, 'the write to hang');
      process.kill(server.pid, 'SIGTERM');
      await waitFor(() => /the log's last write still waited on its disk after 300 ms at stop/.test(server.output()) || undefined, 10_000, 'the stop to give the write up');
      assert.equal(await Promise.race([server.exited.then(() => 'exited'), sleep(500).then(() => 'waiting')]), 'waiting', 'a write cannot be cancelled: the process waits for its disk');
      unlinkSync(hold);
      assert.deepEqual(await server.exited, { code: 1, signal: null });
      assert.match(server.output(), /stopped, but its last writes could not be made sure of/);
    }));

  it('a disk gone full: the batch it refused is written again whole when space is back, commits are refused meanwhile, and a crash after finds a clean log', async () => {
    const { dataDir, hold, env, cleanup } = faultyDisk('log:write-fails');
    let server = await startKilnServer({ dataDir, fsync: 'always', env, args: ['--log-stall-ms', '60000'] });
    let engine = connect(server.url, { token: server.token, operationTimeoutMs: 20_000 });
    try {
      await engine.connect();
      const before = await createSession(engine, { v: 'before' });
      writeFileSync(hold, '');
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      const pending = engine.commit(commitOf(id, grant.token, 0, { v: 'while full' }));
      await waitFor(() => /could not write the log \(ENOSPC/.test(server.output()), 5000, 'the storage error line');
      const other = generateSessionId();
      const otherGrant = await engine.acquire(other);
      await assert.rejects(engine.commit(commitOf(other, otherGrant.token, 0, { v: 1 })), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_STORAGE_BEHIND' && /log cannot be written \(ENOSPC/.test(err.message));
      unlinkSync(hold);
      assert.equal((await pending).version, 1, 'acknowledged once the disk takes it');
      await waitFor(() => /storage recovered/.test(server.output()), 5000, 'the recovery line');
      await engine.close();
      await server.kill();
      server = await startKilnServer({ dataDir, fsync: 'always' });
      assert.doesNotMatch(server.output(), /torn/, 'no half record was left in the log');
      engine = connect(server.url, { token: server.token });
      await engine.connect();
      assert.equal(decodeAttribute((await engine.acquire(before.id)).snapshot!.attributes.get('v')!), 'before');
      assert.equal(decodeAttribute((await engine.acquire(id)).snapshot!.attributes.get('v')!), 'while full');
      assert.equal((await engine.acquire(other)).snapshot, null, 'the refused commit was never applied');
    } finally {
      await engine.close();
      rmSync(hold, { force: true });
      await server.kill();
      cleanup();
    }
  });

  it('a compaction whose snapshot waits on a hung disk: the server answers and takes commits meanwhile, shows how long it has run, and completes when the disk answers', async () => {
    const { dataDir, hold, env, cleanup } = faultyDisk('snapshot:write');
    writeFileSync(hold, '');
    let server = await startKilnServer({ dataDir, fsync: 'always', env, args: ['--compact-min-bytes', '65536', '--admin-port', '0'] });
    let engine = connect(server.url, { token: server.token, operationTimeoutMs: 10_000 });
    try {
      await engine.connect();
      const admin = await adminPortOf(server);
      type Backlog = { bytes: number; stalledMs: number; compactingMs: number; refusing: string | null };
      const backlog = async () => ((await (await admin.get('/api/overview')).json()) as { storage: { backlog: Backlog } }).storage.backlog;
      const { id, token } = await createSession(engine, { v: 'first' });
      // Overwrites of one 16 KiB value: the logs pass --compact-min-bytes and twice the live data.
      let version = 1;
      const snapshotBeingWritten = () => readdirSync(dataDir).some((name) => SNAPSHOT_TEMP_PATTERN.test(name));
      while (!snapshotBeingWritten()) {
        assert.ok(version < 40, 'a compaction begins');
        await engine.commit(commitOf(id, token, version, { v: `${version}:${VALUE}` }));
        version++;
      }
      // Its snapshot waits on the disk. Written with blocking calls, it held the server until the disk answered.
      const during = [];
      for (let i = 0; i < 5; i++) during.push(await createSession(engine, { v: `during ${i}` }));
      await engine.commit(commitOf(id, token, version, { v: 'last' }));
      await waitFor(async () => (await backlog()).compactingMs >= 500 || undefined, 10_000, 'the compaction to show how long it has run');
      const shown = await backlog();
      assert.equal(shown.refusing, null, 'commits are taken: the log the compaction started is written');
      assert.ok(shown.stalledMs < 1000, `no write waits: ${shown.stalledMs} ms`);
      assert.match(await (await admin.get('/metrics')).text(), /^kiln_storage_compaction_seconds (0\.[5-9]|[1-9])/m);
      assert.ok(snapshotBeingWritten() && !existsSync(join(dataDir, 'snapshot.kiln')), 'the snapshot still waits');

      unlinkSync(hold);
      await waitFor(async () => ((await backlog()).compactingMs === 0 && existsSync(join(dataDir, 'snapshot.kiln'))) || undefined, 20_000, 'the compaction to complete');
      assert.ok(!snapshotBeingWritten());
      assert.equal(readdirSync(dataDir).filter((f) => f.startsWith('log-')).length, 1, 'the logs the snapshot covers are gone');
      assert.match(await (await admin.get('/metrics')).text(), /^kiln_storage_compaction_seconds 0$/m);

      // A crash now loses nothing acknowledged: the snapshot and the log after it.
      await engine.close();
      await server.kill();
      server = await startKilnServer({ dataDir, fsync: 'always' });
      engine = connect(server.url, { token: server.token });
      await engine.connect();
      assert.equal(decodeAttribute((await engine.acquire(id)).snapshot!.attributes.get('v')!), 'last');
      for (const [i, s] of during.entries()) assert.equal(decodeAttribute((await engine.acquire(s.id)).snapshot!.attributes.get('v')!), `during ${i}`);
    } finally {
      await engine.close();
      rmSync(hold, { force: true });
      await server.kill();
      cleanup();
    }
  });

  it('a commit retried after its first try timed out on a stalled disk is acknowledged only once the disk took it', () =>
    withFaultyServer('log:write', { fsync: 'always', args: ['--log-stall-ms', '60000'] }, 500, async (_server, engine, hold) => {
      writeFileSync(hold, '');
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      const request = commitOf(id, grant.token, 0, { v: 1 });
      await assert.rejects(engine.commit(request), (err: { code?: string }) => err.code === 'KILN_ERR_TIMEOUT');
      // The same commit again, as CommitSender sends it: the server knows it, but its record is not on disk yet.
      const retried = engine.commit(request);
      const early = await Promise.race([retried.then(() => 'acknowledged', (e: { code?: string }) => e.code), sleep(300).then(() => 'waiting')]);
      assert.notEqual(early, 'acknowledged', 'no acknowledgement ahead of the disk');
      unlinkSync(hold);
      // Waiting, it is acknowledged now; timed out again (a loaded machine), a third try is.
      const retryAgain = (e: { code?: string }) => (e.code === 'KILN_ERR_TIMEOUT' ? engine.commit(request) : Promise.reject(e));
      const ack = early === 'waiting' ? await retried.catch(retryAgain) : await engine.commit(request);
      assert.deepEqual(ack, { version: 1, duplicate: true });
    }));
});
