import assert from 'node:assert/strict';
import { appendFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AppendLog } from '../../src/server/storage/append-log.js';
import { generateSessionId } from '../../src/session/id.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/session/limits.js';
import { SessionTable } from '../../src/tier/session-table.js';
import { removeDir, tempDir } from '../helpers/processes.js';

function reload(dir: string): { table: SessionTable; report: ReturnType<AppendLog['load']>; log: AppendLog } {
  const table = new SessionTable();
  const log = new AppendLog({ dir, fsync: 'always', dump: () => table.dump(Date.now()), liveBytes: () => table.bytes });
  const report = log.load((r) => table.replay(r));
  return { table, report, log };
}

async function writeSessions(dir: string, count: number): Promise<{ table: SessionTable; ids: string[] }> {
  const { table, log } = reload(dir);
  await log.open();
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = generateSessionId();
    ids.push(id);
    const { record } = table.applyCommit({ sessionId: id, token: 1, commitId: `c${i}`, baseVersion: 0, lastAccessedAt: 1, set: [['n', Uint8Array.of(i % 256)]], del: [], principal: 'p' }, DEFAULT_SESSION_LIMITS, Date.now());
    await log.append(record!);
  }
  await log.close();
  return { table, ids };
}

describe('append-only log', () => {
  it('replays what was appended, across restarts', async () => {
    const dir = tempDir();
    try {
      const { table, ids } = await writeSessions(dir, 50);
      const { table: back, report, log } = reload(dir);
      assert.equal(report.records, 50);
      assert.equal(back.size, 50);
      const plain = (s: ReturnType<SessionTable['snapshot']>) => ({ meta: s!.meta, attributes: [...s!.attributes].map(([k, v]) => [k, [...v]]) });
      assert.deepEqual(plain(back.snapshot(ids[7]!)), plain(table.snapshot(ids[7]!)));
      assert.deepEqual(back.sessionsOf('p').length, 50);
      await log.open();
      await log.close();
    } finally {
      removeDir(dir);
    }
  });

  it('stops at a torn last record and keeps everything before it', async () => {
    const dir = tempDir();
    try {
      await writeSessions(dir, 10);
      const file = readdirSync(dir).filter((f) => f.startsWith('log-')).sort().at(-1)!;
      appendFileSync(join(dir, file), Buffer.from([0, 0, 0, 50, 1, 2, 3]));
      const { table, report } = reload(dir);
      assert.equal(table.size, 10);
      assert.equal(report.tornTails, 1);
    } finally {
      removeDir(dir);
    }
  });

  it('compaction writes a snapshot, drops covered logs, and reloads the same state', async () => {
    const dir = tempDir();
    try {
      const { table: original } = await writeSessions(dir, 30);
      const { table, log } = reload(dir);
      await log.open();
      await log.compact();
      await log.close();
      const files = readdirSync(dir);
      assert.ok(files.includes('snapshot.kiln'));
      assert.equal(files.filter((f) => f.startsWith('log-')).length, 1, 'only the log after the snapshot remains');
      assert.ok(statSync(join(dir, 'snapshot.kiln')).size > 0);
      const { table: back } = reload(dir);
      assert.equal(back.size, table.size);
      assert.equal(back.bytes, original.bytes);
    } finally {
      removeDir(dir);
    }
  });

  it('refuses a data directory another live process holds', async () => {
    const dir = tempDir();
    try {
      appendFileSync(join(dir, 'kiln.lock'), `${process.ppid}\n`);
      assert.throws(() => reload(dir), /in use by process/);
    } finally {
      removeDir(dir);
    }
  });
});
