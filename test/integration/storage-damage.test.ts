import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { removeDir, startKilnServer, startWorker, tempDir } from '../helpers/processes.js';
import type { IncrementResult } from './no-lost-update-suite.js';

/**
 * A real kiln server's data directory, damaged after a SIGKILL: only an incomplete last
 * record of the newest log is a torn tail (cut off, reported, nothing acknowledged lost);
 * any other damage refuses the start with KILN_ERR_STORAGE_DAMAGED, naming file and
 * offset, and leaves the files as they were.
 */
async function history(dataDir: string): Promise<{ ids: string[]; acked: Record<string, number>; port: number }> {
  // Two runs: each start opens a new log, so the directory holds an older and a newer one.
  let server = await startKilnServer({ dataDir, fsync: 'always' });
  const port = server.port;
  const worker = await startWorker();
  try {
    await worker.call({ op: 'connect', url: server.url, token: server.token });
    const ids = await worker.call<string[]>({ op: 'create', count: 20 });
    await worker.call<IncrementResult>({ op: 'increment', sessions: ids, perSession: 2, inFlight: 10 });
    await server.kill();
    server = await startKilnServer({ dataDir, fsync: 'always', port });
    const r = await worker.call<IncrementResult>({ op: 'increment', sessions: ids, perSession: 3, inFlight: 10 }, 60_000);
    const acked = await worker.call<Record<string, number>>({ op: 'read', sessions: ids });
    assert.equal(r.lost, 0);
    return { ids, acked, port };
  } finally {
    await worker.kill();
    await server.kill();
  }
}

function logs(dataDir: string): string[] {
  return readdirSync(dataDir).filter((f) => /^log-\d+\.kiln$/.test(f)).sort().map((f) => join(dataDir, f));
}

async function refuses(dataDir: string, file: string): Promise<string> {
  const before = readFileSync(file);
  const err = await startKilnServer({ dataDir }).then(
    async (s) => {
      await s.kill();
      assert.fail('the server started on a damaged data directory');
    },
    (e: Error) => e.message,
  );
  assert.match(err, /KILN_ERR_STORAGE_DAMAGED/);
  assert.ok(err.includes(file), `the refusal names ${file}:\n${err}`);
  assert.match(err, /at byte \d+/);
  assert.match(err, /A damaged data directory/);
  assert.ok(readFileSync(file).equals(before), 'the damaged file is left as it was');
  return err;
}

describe('storage damage (real kiln server, SIGKILL)', () => {
  it('a newest log cut mid-record starts, reports the torn tail, and keeps every acknowledged state', async () => {
    const dataDir = tempDir();
    try {
      const { ids, acked } = await history(dataDir);
      const newest = logs(dataDir).at(-1)!;
      const size = statSync(newest).size;
      writeFileSync(newest, readFileSync(newest).subarray(0, size - 5));
      const server = await startKilnServer({ dataDir });
      const worker = await startWorker();
      try {
        assert.match(server.output(), /torn tail cut: \d+ bytes at .*log-\d+\.kiln:\d+/);
        await worker.call({ op: 'connect', url: server.url, token: server.token });
        const values = await worker.call<Record<string, number | null>>({ op: 'read', sessions: ids });
        // Cutting into the last record loses at most that record (which may be a touch, not an increment).
        let short = 0;
        for (const id of ids) {
          assert.ok(values[id] !== null, 'no session vanished');
          if (values[id] !== acked[id]) {
            short++;
            assert.equal(values[id], acked[id]! - 1, 'only the cut record is missing');
          }
        }
        assert.ok(short <= 1, `${short} sessions lost an increment`);
      } finally {
        await worker.kill();
        await server.kill();
      }
    } finally {
      removeDir(dataDir);
    }
  });

  it('a byte flipped mid newest log, mid oldest log, a cut oldest log, a damaged header: refuses, naming file and offset', async () => {
    const dataDir = tempDir();
    try {
      await history(dataDir);
      const [oldest, newest] = [logs(dataDir)[0]!, logs(dataDir).at(-1)!];
      assert.notEqual(oldest, newest);
      const damage = async (file: string, change: (b: Buffer) => Buffer): Promise<void> => {
        const good = readFileSync(file);
        writeFileSync(file, change(Buffer.from(good)));
        await refuses(dataDir, file);
        writeFileSync(file, good);
      };
      const flip = (at: (b: Buffer) => number) => (b: Buffer): Buffer => {
        const i = at(b);
        b[i] = b[i]! ^ 0x5a;
        return b;
      };
      await damage(newest, flip((b) => b.length >> 1));
      await damage(oldest, flip((b) => b.length >> 1));
      await damage(oldest, (b) => b.subarray(0, b.length - 5));
      await damage(newest, flip(() => 3));
    } finally {
      removeDir(dataDir);
    }
  });

  it('a damaged snapshot (an encrypted data directory) refuses, naming file and offset', async () => {
    const dataDir = tempDir();
    const keyDir = tempDir();
    try {
      await history(dataDir);
      // A start with a key over plain records rewrites them sealed: a compaction, so a snapshot.
      const keys = join(keyDir, 'keys');
      writeFileSync(keys, `k1:${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
      chmodSync(keys, 0o600);
      const server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      await server.stop();
      const snapshot = join(dataDir, 'snapshot.kiln');
      assert.ok(existsSync(snapshot));
      const good = readFileSync(snapshot);
      const bad = Buffer.from(good);
      bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 0x5a;
      writeFileSync(snapshot, bad);
      const err = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] }).then(
        async (s) => {
          await s.kill();
          assert.fail('the server started on a damaged snapshot');
        },
        (e: Error) => e.message,
      );
      assert.match(err, /KILN_ERR_STORAGE_DAMAGED/);
      assert.ok(err.includes(snapshot) && /at byte \d+/.test(err), err);
      assert.ok(readFileSync(snapshot).equals(bad), 'the snapshot is left as it was');
      // Restored, it starts again with every session.
      writeFileSync(snapshot, good);
      const back = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      await back.stop();
    } finally {
      removeDir(dataDir);
      removeDir(keyDir);
    }
  });
});
