import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { appendFileSync, closeSync, constants, existsSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';
import { AppendLog, pieceEnd } from '../../src/server/storage/append-log.js';
import { settlesWithin } from '../../src/util/deadline.js';
import { frameRecords, LOG_MAGIC, snapshotTempNames, writeSnapshot } from '../../src/server/storage/frame-file.js';
import { decodeRecord, encodeRecord } from '../../src/server/storage/record-codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/session/limits.js';
import { packAttributesToBytes, SessionTable, type TierRecord } from '../../src/tier/session-table.js';
import { collector } from '../helpers/collect.js';
import { removeDir, sleep, tempDir, waitFor } from '../helpers/processes.js';

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
  assert.deepEqual(await log.close(), { clean: true });
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
      assert.deepEqual(back.principalSessions('p').map((m) => m.id).length, 50);
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
      const before = statSync(join(dir, file)).size;
      const { table, report } = reload(dir);
      assert.equal(table.size, 10);
      assert.equal(report.tornTails, 1);
      assert.deepEqual(report.tornTail, { file: join(dir, file), offset: before - 7, bytes: 7 });
      assert.equal(statSync(join(dir, file)).size, before - 7, 'the torn tail is cut off');
    } finally {
      removeDir(dir);
    }
  });

  it('refuses, naming file and offset and changing nothing, a record cut short in an older log or a damaged header', async () => {
    const dir = tempDir();
    try {
      await writeSessions(dir, 10);
      await writeSessions(dir, 5);
      const logs = readdirSync(dir).filter((f) => f.startsWith('log-')).sort();
      assert.ok(logs.length >= 2);
      const older = join(dir, logs[0]!);
      const good = readFileSync(older);
      writeFileSync(older, good.subarray(0, good.length - 3));
      const refusal = (path: string, offset: number) => (err: unknown) => {
        const e = err as { code: string; message: string; details: { file: string; offset: number } };
        assert.equal(e.code, 'KILN_ERR_STORAGE_DAMAGED');
        assert.equal(e.details.file, path);
        assert.equal(e.details.offset, offset);
        assert.match(e.message, /A damaged data directory/);
        return true;
      };
      assert.throws(() => reload(dir), (err: unknown) => (err as { code: string }).code === 'KILN_ERR_STORAGE_DAMAGED' && (err as { message: string }).message.includes(older));
      assert.equal(statSync(older).size, good.length - 3, 'the damaged file is left as it was');

      writeFileSync(older, good);
      const header = Buffer.from(good);
      header[2] = header[2]! ^ 0xff;
      writeFileSync(older, header);
      assert.throws(() => reload(dir), refusal(older, 0));
      assert.ok(readFileSync(older).equals(header));
    } finally {
      removeDir(dir);
    }
  });

  it('reads a log in pieces: frames across piece edges, one larger than a piece, a damaged one', async () => {
    const dir = tempDir();
    try {
      // The log is read 4 MiB at a time: 40 sessions of ~250 KB put frames across the
      // edges of three pieces, and a 6 MiB session is a frame larger than a piece.
      const limits = { ...DEFAULT_SESSION_LIMITS, maxSessionBytes: 8 * 1024 * 1024 };
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'never' });
      log.load(() => assert.fail('an empty directory has no records'));
      await log.open();
      const ids: string[] = [];
      const valueOf = (i: number, part: number, size: number): Uint8Array => new Uint8Array(size).fill((i * 7 + part) % 251);
      const commit = async (i: number, set: [string, Uint8Array][]): Promise<void> => {
        const id = generateSessionId();
        ids.push(id);
        const { record } = table.applyCommit({ sessionId: id, token: 1, commitId: `c${i}`, baseVersion: 0, lastAccessedAt: 1, set, del: [] }, limits, Date.now());
        await log.append(record!);
      };
      for (let i = 0; i < 40; i++) await commit(i, [['a', valueOf(i, 0, 200_000 + i * 997)], ['b', valueOf(i, 1, 50_000)]]);
      await commit(40, Array.from({ length: 6 }, (_, part) => [`part${part}`, valueOf(40, part, 1024 * 1024)] as [string, Uint8Array]));
      for (let i = 41; i < 45; i++) await commit(i, [['a', valueOf(i, 0, 300_000)]]);
      await log.close();
      const file = join(dir, readdirSync(dir).filter((f) => f.startsWith('log-')).sort().at(-1)!);
      assert.ok(statSync(file).size > 16 * 1024 * 1024, 'the log spans several pieces');

      const same = (back: SessionTable, upTo: number): void => {
        for (let i = 0; i < upTo; i++) {
          const want = table.snapshot(ids[i]!)!;
          const got = back.snapshot(ids[i]!);
          assert.ok(got, `session ${i} was replayed`);
          assert.deepEqual([...got.attributes.keys()], [...want.attributes.keys()]);
          for (const [name, value] of want.attributes) assert.ok(Buffer.from(got.attributes.get(name)!).equals(value), `session ${i}, attribute ${name}`);
        }
      };
      const whole = reload(dir);
      assert.equal(whole.report.records, 45);
      assert.equal(whole.report.tornTails, 0);
      same(whole.table, 45);
      await whole.log.close(); // its lock: a second storage of this process is refused the directory

      // A length that runs far past the end of the file is a torn tail, not an allocation.
      appendFileSync(file, Buffer.from([0xff, 0xff, 0xff, 0xf0, 1, 2, 3, 4, 5]));
      const torn = reload(dir);
      assert.equal(torn.report.tornTails, 1);
      assert.equal(torn.report.tornTail?.bytes, 9);
      same(torn.table, 45);
      await torn.log.close();

      // A damaged byte inside a frame in the middle is corruption, not a torn tail: the
      // load refuses, naming the frame's offset, and leaves the file as it is.
      const bytes = readFileSync(file);
      const frameOf41 = bytes.indexOf(Buffer.from('c41'));
      assert.ok(frameOf41 > 0);
      bytes[frameOf41 + 100] = (bytes[frameOf41 + 100]! + 1) % 256;
      writeFileSync(file, bytes);
      assert.throws(() => reload(dir), (err: unknown) => {
        const e = err as { code: string; details: { file: string; offset: number } };
        assert.equal(e.code, 'KILN_ERR_STORAGE_DAMAGED');
        assert.equal(e.details.file, file);
        assert.ok(e.details.offset < frameOf41 && e.details.offset > frameOf41 - 400_000, `offset ${e.details.offset} is the damaged frame's`);
        return true;
      });
      assert.ok(readFileSync(file).equals(bytes), 'the damaged file is left as it was');
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

  it('of processes taking one data directory at the same moment, exactly one gets it (the lock is made with O_EXCL), with a stale lock or none', async () => {
    const lockModule = new URL('../../src/server/storage/dir-lock.js', import.meta.url).href;
    for (const stale of [false, true]) {
      for (let round = 0; round < 3; round++) {
        const dir = tempDir();
        try {
          // A pid that is surely dead: above the kernel's pid_max.
          if (stale) writeFileSync(join(dir, 'kiln.lock'), '4194305\n');
          const startAt = Date.now() + 700;
          // Each stays alive (a live holder) until this test closes its stdin, however slow it started.
          const script = `const { lockDataDir } = await import(${JSON.stringify(lockModule)});
            while (Date.now() < ${startAt});
            let said; try { lockDataDir(${JSON.stringify(dir)}); said = 'took'; } catch (e) { said = /in use by process/.test(e.message) ? 'refused' : 'error ' + e.message; }
            process.stdout.write(said + '\\n'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));`;
          const children = Array.from({ length: 6 }, () => spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }));
          const said = await Promise.all(children.map((child) => new Promise<string>((resolve) => {
            let out = '';
            child.stdout!.on('data', (d: Buffer) => {
              out += d.toString();
              if (out.endsWith('\n')) resolve(out.trim());
            });
            child.once('exit', () => resolve(out.trim() || 'exited'));
          })));
          for (const child of children) child.stdin!.end();
          await Promise.all(children.map((child) => (child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : undefined)));
          assert.equal(said.filter((s) => s === 'took').length, 1, `${stale ? 'stale lock' : 'no lock'}, round ${round}: ${said.join(', ')}`);
          assert.equal(said.filter((s) => s === 'refused').length, 5, said.join(', '));
        } finally {
          removeDir(dir);
        }
      }
    }
  });

  it('a server whose lock another server took over (it looked dead: paused, its disk hung) refuses every commit from then on, and says why', async () => {
    const dir = tempDir();
    try {
      const errors: string[] = [];
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', dump: () => table.dump(Date.now()), liveBytes: () => table.bytes, onError: (err) => errors.push(err.message) });
      log.load((r) => table.replay(r));
      await log.open();
      assert.equal(log.refusal(), undefined);
      writeFileSync(join(dir, 'theirs'), '2000 boot-b 4026532176 77 elsewhere\n');
      renameSync(join(dir, 'theirs'), join(dir, 'kiln.lock'));
      await waitFor(() => log.refusal() !== undefined || undefined, 9_000, 'commits refused');
      assert.match(log.refusal()!, /lock .*kiln\.lock is no longer this server's: another file is in its place/);
      assert.ok(errors.some((e) => /commits are refused from now on: stop this server/.test(e)), errors.join('; '));
      // Nor does anything else of this server's go into the directory: a destroy, an expiry, a compaction.
      await assert.rejects(log.append({ t: 'e', id: generateSessionId() }), /is no longer this server's/);
      await assert.rejects(log.compact(), /is no longer this server's/);
      await log.close();
      assert.ok(existsSync(join(dir, 'kiln.lock')), "the other server's lock stays");
    } finally {
      removeDir(dir);
    }
  });

  it('a compaction under way when the lock is lost (its disk hung) goes no further once the disk answers: no new log, no snapshot, no log removed', async () => {
    const dir = tempDir();
    const hold = join(dir, '..', `${dir.split('/').pop()}-hold`);
    process.env['KILN_FAILPOINT'] = `log:rotate-synced=${hold}`;
    try {
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', dump: () => table.dump(Date.now()), liveBytes: () => table.bytes, onError: () => undefined });
      log.load((r) => table.replay(r));
      await log.open();
      await log.append({ t: 'e', id: generateSessionId() });
      const before = readdirSync(dir).sort();
      writeFileSync(hold, '');
      const compaction = log.compact(); // held at the switch to the next log, as a hung disk holds it
      const ended = compaction.then(() => 'done', (err: Error) => err.message);
      writeFileSync(join(dir, 'theirs'), '2000 boot-b 4026532176 77 elsewhere\n');
      renameSync(join(dir, 'theirs'), join(dir, 'kiln.lock'));
      await waitFor(() => log.refusal() !== undefined || undefined, 9_000, 'the loss found');
      rmSync(hold); // the disk answers
      assert.match(await ended, /is no longer this server's/);
      assert.deepEqual(readdirSync(dir).sort(), before, 'the directory as the new holder found it');
      await log.close();
    } finally {
      delete process.env['KILN_FAILPOINT'];
      rmSync(hold, { force: true });
      removeDir(dir);
    }
  });

  it("a start is not thrown off by a temporary snapshot its writer removes meanwhile (a server that lost the lock, abandoning its compaction)", async () => {
    const dir = tempDir();
    const temp = join(dir, 'snapshot.kiln.0123456789ab.tmp');
    // Another process makes and removes the file as fast as it can, for at most 30 s.
    const churn = spawn(process.execPath, ['-e', `const fs = require('fs'); const end = Date.now() + 30000; while (Date.now() < end) { try { fs.writeFileSync(process.argv[1], 'x'); } catch {} try { fs.unlinkSync(process.argv[1]); } catch {} }`, temp], { stdio: 'ignore' });
    try {
      await waitFor(() => existsSync(temp) || undefined, 5000, 'the churn begun');
      // Listed, then gone before its stat, chmod or removal: each of the three failed a start with ENOENT.
      for (let i = 0; i < 300; i++) {
        const { log } = reload(dir);
        await log.close();
      }
    } finally {
      churn.kill('SIGKILL');
      removeDir(dir);
    }
  });

  it('refuses a data directory another live process holds', async () => {
    const dir = tempDir();
    try {
      appendFileSync(join(dir, 'kiln.lock'), `${process.ppid}\n`);
      assert.throws(() => reload(dir), /in use by process/);
      // The holder is the first word, read no further than a pid goes: a lock file of megabytes is not read whole.
      writeFileSync(join(dir, 'kiln.lock'), `${process.ppid} ${'x'.repeat(8 * 1024 * 1024)}`);
      assert.throws(() => reload(dir), new RegExp(`in use by process ${process.ppid}`));
    } finally {
      removeDir(dir);
    }
  });

  it('refuses a data directory another storage of this process holds, until it stops; the lock file begins with the pid every Kiln reads', async () => {
    const dir = tempDir();
    try {
      const first = reload(dir);
      assert.equal(readFileSync(join(dir, 'kiln.lock'), 'utf8').split(' ')[0], String(process.pid));
      assert.throws(() => reload(dir), /in use by this process/);
      await first.log.close();
      assert.ok(!readdirSync(dir).includes('kiln.lock'));
      // A lock left by a process that died (here: one naming this pid, as after a crash and pid reuse) is taken over.
      writeFileSync(join(dir, 'kiln.lock'), `${process.pid}\n`);
      const second = reload(dir);
      await second.log.close();
      // A load refused as damage gives the directory back.
      writeFileSync(join(dir, 'snapshot.kiln'), 'not a snapshot');
      assert.throws(() => reload(dir), (err: { code?: string }) => err.code === 'KILN_ERR_STORAGE_DAMAGED');
      assert.ok(!readdirSync(dir).includes('kiln.lock'), 'no lock left by the refused load');
      assert.throws(() => reload(dir), (err: { code?: string }) => err.code === 'KILN_ERR_STORAGE_DAMAGED', 'refused as damage again, not as in use');
    } finally {
      removeDir(dir);
    }
  });

  it('reads logs and snapshots written as MessagePack before the binary records', () => {
    const dir = tempDir();
    try {
      const old = new Packr({ useRecords: false, variableMapSize: true });
      const frame = (record: TierRecord): Buffer => {
        const payload = old.pack(record);
        const header = Buffer.alloc(8);
        header.writeUInt32BE(payload.length, 0);
        header.writeUInt32BE(crc32(payload), 4);
        return Buffer.concat([header, payload]);
      };
      const packed = packAttributesToBytes([['n', Uint8Array.of(7)]]);
      const meta = { id: generateSessionId(), createdAt: 5, lastAccessedAt: 6, idleTimeoutMs: 1000, absoluteExpiresAt: 0, principal: 'ann', version: 2 };
      const snapshot = { t: 's', meta, packed, pb: 2, commits: [['x:1', 1], ['x:2', 2]] } as TierRecord;
      writeFileSync(join(dir, 'snapshot.kiln'), Buffer.concat([Buffer.from('KILNSNP1'), Buffer.from([0, 0, 0, 1]), frame(snapshot)]));
      const id = generateSessionId();
      const create = { t: 'c', id, v: 1, cid: 'y:1', la: 9, packed, pb: 2, del: [], ca: 9, it: 500, ae: 0, p: 'bob' } as TierRecord;
      writeFileSync(join(dir, 'log-00000001.kiln'), Buffer.concat([Buffer.from('KILNLOG1'), frame(create)]));
      const { table, report } = reload(dir);
      assert.equal(report.records, 2);
      assert.deepEqual(table.snapshot(meta.id)!.meta, meta);
      assert.deepEqual([...table.snapshot(id)!.attributes.keys()], [...table.snapshot(meta.id)!.attributes.keys()]);
      assert.equal(table.principalSessions('bob').map((m) => m.id).length, 1);
    } finally {
      removeDir(dir);
    }
  });

  it('writes creates and snapshots in the binary layout and reads back exactly what was written', () => {
    const packed = new Uint8Array([1, 2, 3, 250]);
    const records: TierRecord[] = [
      { t: 'c', id: 'a'.repeat(43), v: 1, cid: 'p:1', la: 1_764_000_000_123, packed, pb: 9, del: [], ca: 1_764_000_000_000, it: 1_800_000, ae: 0, p: 'ünïcode' },
      { t: 'c', id: 'b', v: 7, cid: 'p:2', la: 3, packed, del: [], p: null },
      { t: 'c', id: 'b', v: 8, cid: 'p:3', la: 4, packed, del: [] },
      { t: 's', meta: { id: 'c', createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 0, absoluteExpiresAt: 4, principal: null, version: 3 }, packed, pb: 4, commits: [['q:1', 2], ['q:2', 3]] },
      { t: 's', meta: { id: 'd', createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 3, absoluteExpiresAt: 4, principal: 'zoë', version: 1 }, packed, commits: [] },
    ];
    for (const record of records) {
      const bytes = Buffer.from(encodeRecord(record));
      assert.equal(bytes[0], 0xc1, `${record.t} is binary`);
      const back = decodeRecord(bytes) as Record<string, unknown>;
      const clean = (r: Record<string, unknown>) => JSON.parse(JSON.stringify({ ...r, packed: [...(r['packed'] as Uint8Array)] })) as unknown;
      assert.deepEqual(clean(back), clean(record as unknown as Record<string, unknown>));
    }
    // What the layout does not cover stays MessagePack (and reads back).
    for (const record of [
      { t: 'c', id: 'e', v: 2, cid: 'p:4', la: 5, packed, del: ['gone'] },
      { t: 'c', id: 'e', v: 2, cid: 'x'.repeat(70_000), la: 5, packed, del: [] },
      { t: 'd', id: 'e', until: 9 },
    ] as TierRecord[]) {
      const bytes = Buffer.from(encodeRecord(record));
      assert.notEqual(bytes[0], 0xc1);
      assert.equal((decodeRecord(bytes) as { id: string }).id, 'e');
    }
    // Strings are measured in UTF-8 bytes: 40,000 characters of 'é' do not fit a u16 length.
    const longPrincipal = 'é'.repeat(40_000);
    const longCid = 'x'.repeat(70_000);
    const meta = { id: 'e', createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 3, absoluteExpiresAt: 4, principal: null, version: 1 };
    for (const [record, longString] of [
      [{ t: 'c', id: 'e', v: 2, cid: 'p:5', la: 5, packed, del: [], p: longPrincipal }, (r: TierRecord) => (r as { p?: unknown }).p],
      [{ t: 's', meta: { ...meta, principal: longPrincipal }, packed, commits: [] }, (r: TierRecord) => (r as { meta: { principal: unknown } }).meta.principal],
      [{ t: 's', meta, packed, commits: [[longCid, 1]] }, (r: TierRecord) => (r as { commits: [string, number][] }).commits[0]![0]],
    ] as [TierRecord, (r: TierRecord) => unknown][]) {
      const bytes = Buffer.from(encodeRecord(record));
      assert.notEqual(bytes[0], 0xc1, `${record.t} with a long string is MessagePack`);
      assert.equal(longString(decodeRecord(bytes)), longString(record));
    }
    assert.equal(Buffer.from(encodeRecord({ t: 'c', id: 'e', v: 2, cid: 'p:5', la: 5, packed, del: [], p: 'é'.repeat(30_000) }))[0], 0xc1, '60,000 bytes still fit');
    assert.throws(() => decodeRecord(Buffer.from([0xc1, 0x63, 0, 1])), RangeError, 'a truncated binary record is refused');
  });
});

describe('append-only log: a disk that falls behind', () => {
  /**
   * Runs a test on a fresh data directory with a fault of the log on (failpoint `point`:
   * writes held, writes or syncs failing) while the file `hold` exists; cleans up after.
   */
  async function withFault(point: string, run: (dir: string, hold: string) => Promise<void>): Promise<void> {
    const dir = tempDir();
    const holdDir = tempDir('kiln-hold-');
    const hold = join(holdDir, 'hold');
    process.env['KILN_FAILPOINT'] = point;
    process.env['KILN_FAILPOINT_HOLD'] = hold;
    writeFileSync(hold, '');
    try {
      await run(dir, hold);
    } finally {
      delete process.env['KILN_FAILPOINT'];
      delete process.env['KILN_FAILPOINT_HOLD'];
      removeDir(holdDir);
      removeDir(dir);
    }
  }

  /** `done` once `work` succeeds, else the code it failed with. */
  function outcome<T extends string>(work: Promise<unknown>, done: T): Promise<T | string | undefined> {
    return work.then(
      () => done,
      (err: { code?: string }) => err.code,
    );
  }

  /** Waits for the storage (or a compaction it abandoned) to give kiln.lock back. */
  function lockReleased(dir: string): Promise<true> {
    return waitFor(() => !existsSync(join(dir, 'kiln.lock')) || undefined, 5000, 'the lock released');
  }

  /** Reloads the directory: it must load with nothing cut off and hold `sessions` sessions. */
  async function loadsClean(dir: string, sessions: number): Promise<void> {
    const { report, log, table } = reload(dir);
    assert.equal(report.tornTails, 0, 'no part of a batch left in the file');
    assert.equal(table.size, sessions);
    await log.open();
    await log.close();
  }

  function commitRecord(table: SessionTable, i: number, bytes: number): TierRecord {
    const { record } = table.applyCommit({ sessionId: generateSessionId(), token: 1, commitId: `c${i}`, baseVersion: 0, lastAccessedAt: 1, set: [['v', new Uint8Array(bytes).fill(i % 256)]], del: [], principal: undefined }, DEFAULT_SESSION_LIMITS, Date.now());
    return record!;
  }

  it('counts what waits for the disk, refuses commits past its limit, stops logging touches, and lets go when the disk answers', () =>
    withFault('log:write', async (dir, hold) => {
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', maxBacklogBytes: 64 * 1024, stallMs: 60_000 });
      log.load(() => undefined);
      await log.open();
      const pending: Promise<void>[] = [];
      let settled = 0;
      let touchDroppedAt = 0;
      for (let i = 0; log.refusal() === undefined; i++) {
        assert.ok(i < 200, 'the backlog reaches its limit');
        // From half the limit on, an access time is applied in memory only, and counted.
        if (!touchDroppedAt && log.backlog().bytes >= 32 * 1024) {
          const appends = log.counters.appends;
          await log.append({ t: 'a', items: [[generateSessionId(), 5]] });
          assert.equal(log.counters.accessTimesDropped, 1);
          assert.equal(log.counters.appends, appends);
          touchDroppedAt = log.backlog().bytes;
        }
        const done = log.append(commitRecord(table, i, 1024));
        void done.then(() => settled++);
        pending.push(done);
        await new Promise((resolve) => setImmediate(resolve)); // one write under way, the rest behind it
      }
      const { bytes } = log.backlog();
      assert.ok(bytes >= 64 * 1024 && bytes < 64 * 1024 + 2048, `backlog ${bytes} B: the records appended, up to the limit`);
      assert.equal(log.refusal(), `the server's log is ${(bytes / 1024).toFixed(1)} KiB behind its disk (limit 64.0 KiB)`);
      assert.ok(touchDroppedAt >= 32 * 1024 && touchDroppedAt < 64 * 1024, `a touch was dropped at ${touchDroppedAt} B, below the limit`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(settled, 0, 'nothing is acknowledged while the disk holds the write');
      unlinkSync(hold);
      await Promise.all(pending);
      assert.deepEqual(log.backlog(), { bytes: 0, stalledMs: 0, compactingMs: 0 });
      assert.equal(log.refusal(), undefined);
      await log.close();
      await loadsClean(dir, pending.length); // every record held back reached the disk
    }));

  it('holds a batch under way once, framed: its records as encoded are let go when the write begins', () =>
    withFault('log:write', async (dir, hold) => {
      const collect = collector();
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', stallMs: 60_000 });
      log.load(() => undefined);
      await log.open();
      const done = Promise.all([1, 2, 3].map((i) => log.append(commitRecord(table, i, 256 * 1024))));
      // The records as encoded, before the flush takes them (the batch is the log's own list).
      const appended = (log as unknown as { batch: Uint8Array[] }).batch.map((record) => new WeakRef(record));
      assert.equal(appended.length, 3);
      await waitFor(() => (log as unknown as { writingWaiters?: unknown }).writingWaiters !== undefined || undefined, 5000, 'the write begun, waiting on the held disk');
      assert.ok(log.backlog().bytes > 3 * 256 * 1024, 'still counted as behind');
      await collect();
      assert.deepEqual(appended.map((record) => record.deref() === undefined), [true, true, true], 'no record as encoded is kept beside the framed batch');
      unlinkSync(hold);
      await done;
      await log.close();
      await loadsClean(dir, 3);
    }));

  it('a slow disk that keeps taking the pieces of a batch is behind, not stalled: a batch that takes longer than stallMs is not refused as a stall', () =>
    withFault('log:write-slow', async (dir) => {
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', stallMs: 500, writePieceBytes: 512 * 1024 });
      log.load(() => undefined);
      await log.open();
      // One batch of 10 MiB on a disk of 14 MB/s: about 750 ms in all, in 20 pieces of two
      // records (512 KiB, about 37 ms each, a thirteenth of stallMs).
      const started = Date.now();
      let done = false;
      const written = Promise.all(Array.from({ length: 40 }, (_, i) => log.append(commitRecord(table, i, 256 * 1024)))).finally(() => (done = true));
      const refusals = new Set<string>();
      let longestWait = 0;
      while (!done) {
        const refusal = log.refusal();
        if (refusal !== undefined) refusals.add(refusal);
        longestWait = Math.max(longestWait, log.backlog().stalledMs);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await written;
      assert.ok(Date.now() - started > 500, `the batch took ${Date.now() - started} ms: longer than stallMs`);
      assert.deepEqual([...refusals].filter((r) => /waiting on its disk/.test(r)), [], 'no stall while every piece is taken');
      assert.ok(longestWait < 500, `the longest wait on one piece: ${longestWait} ms`);
      await log.close();
      await loadsClean(dir, 40);
    }));

  it('a stop on a disk that keeps failing the last write gives up at the third failure, not as a hung write: the pauses between tries are the write moving', () =>
    withFault('log:write-fails', async (dir, hold) => {
      unlinkSync(hold);
      // Tries 100, 200, 400 ms apart: more than stallMs between the later ones.
      const { table, log, errors } = await openLogNotingErrors(dir, { fsync: 'always', stallMs: 300 });
      writeFileSync(hold, ''); // the disk fills up
      const failing = outcome(log.append(commitRecord(table, 0, 100)), 'written');
      await waitFor(() => log.counters.writeFailures >= 2 || undefined, 5000, 'two failures before the stop');
      assert.deepEqual(await log.close(), { clean: false }, 'a stop that gave up on a write says so');
      assert.notEqual(await failing, 'written');
      assert.deepEqual(errors.filter((e) => /still waited on its disk/.test(e)), [], `a failing disk is not a hung one: ${errors.join(' | ')}`);
      const failures = log.counters.writeFailures;
      await sleep(1500);
      assert.equal(log.counters.writeFailures, failures, 'no try after the stop');
      await lockReleased(dir);
    }));

  it('a stop waits for a slow disk that keeps taking the pieces of its last batch, though it takes longer than stallMs', () =>
    withFault('log:write-slow', async (dir) => {
      const errors: string[] = [];
      const table = new SessionTable();
      // everysec: the pieces are timed without an fdatasync each, which a busy machine may hold long.
      const log = new AppendLog({ dir, fsync: 'everysec', stallMs: 500, writePieceBytes: 128 * 1024, onError: (e) => errors.push(e.message) });
      log.load(() => undefined);
      await log.open();
      // 10 MiB on a disk of 14 MB/s (about 750 ms, in pieces of two records, about 9 ms
      // each, so a busy machine's slow sync stays far from stallMs), the stop asked at once.
      const written = Promise.allSettled(Array.from({ length: 160 }, (_, i) => log.append(commitRecord(table, i, 64 * 1024))));
      const started = Date.now();
      await log.close();
      assert.ok(Date.now() - started > 500, `the stop took ${Date.now() - started} ms: longer than stallMs`);
      assert.deepEqual((await written).filter((o) => o.status === 'rejected'), [], 'every commit written');
      assert.deepEqual(errors, []);
      await loadsClean(dir, 160);
    }));

  it('a batch whose later piece the disk refuses, after earlier ones were synced, is written again whole: nothing acknowledged before, and it loads clean', () =>
    withFault('log:later-piece-fails', async (dir, hold) => {
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', stallMs: 60_000, writePieceBytes: 64 * 1024, onError: () => undefined });
      log.load(() => undefined);
      await log.open();
      await log.append(commitRecord(table, 0, 100));
      // One batch of about 200 KiB: three pieces of four records at most; the second is cut off by the full disk, on each try.
      let acknowledged = 0;
      const batch = Array.from({ length: 10 }, (_, i) => log.append(commitRecord(table, 1 + i, 20 * 1024)).then(() => void acknowledged++));
      await waitFor(() => log.counters.writeFailures >= 2 || undefined, 10_000, 'the later piece to fail, twice');
      assert.equal(acknowledged, 0, 'no record of the batch is acknowledged while a piece of it is not written');
      assert.match(log.refusal() ?? '', /cannot be written \(ENOSPC.*later-piece-fails\)/);
      unlinkSync(hold);
      await Promise.all(batch);
      assert.equal(log.refusal(), undefined);
      await log.close();
      await loadsClean(dir, 11);
    }));

  it('cuts a batch into pieces that end on whole records', () => {
    const sizes = [3000, 3000, 10_000, 100, 5000];
    const data = frameRecords(sizes.map((n) => new Uint8Array(n)), LOG_MAGIC, 1, 8, undefined);
    const ends = [8 + 3000, 16 + 6000, 24 + 16_000, 32 + 16_100, 40 + 21_100];
    const pieces: number[] = [];
    for (let at = 0, end = 0; at < data.length; at = end) pieces.push((end = pieceEnd(data, at, 4096)));
    // A piece runs to the first record end at least 4 KiB on: a record larger than that is a piece of its own.
    assert.deepEqual(pieces, [ends[1], ends[2], ends[4]]);
    assert.equal(pieceEnd(data, 0, 1 << 20), data.length, 'a batch within one piece is written whole');
  });

  it('calls a write outstanding past stallMs a stall, whatever the backlog', () =>
    withFault('log:write', async (dir, hold) => {
      const log = new AppendLog({ dir, fsync: 'everysec', stallMs: 1000 });
      try {
        log.load(() => undefined);
        await log.open();
        const done = log.append(commitRecord(new SessionTable(), 1, 100));
        await waitFor(() => log.backlog().stalledMs > 0 || undefined, 2000, 'the write under way');
        // Times are read at a given `now`, so the check does not race the machine's load.
        const now = Date.now();
      const started = now - log.backlog(now).stalledMs;
        assert.equal(log.refusal(started + 999), undefined, 'a write under way for less than stallMs is no stall');
        assert.equal(log.backlog(started + 2500).stalledMs, 2500);
        assert.match(log.refusal(started + 2500)!, /^a write to the server's log has been waiting on its disk for 2\.5 s$/);
        unlinkSync(hold);
        await done;
        assert.equal(log.refusal(Date.now() + 60_000), undefined, 'no write outstanding, no stall');
      } finally {
        rmSync(hold, { force: true }); // a held write would keep close() waiting
        await log.close();
      }
    }));

  it('writes a batch the disk refused again, whole and at its place, keeping later records behind it; the log loads clean', () =>
    withFault('log:write-fails', async (dir, hold) => {
      const table = new SessionTable();
      const errors: string[] = [];
      const recovered: string[] = [];
      const log = new AppendLog({ dir, fsync: 'always', stallMs: 60_000, onError: (e) => errors.push(e.message), onRecovered: (m) => recovered.push(m) });
      log.load(() => undefined);
      unlinkSync(hold); // the disk fills up once the log is open
      await log.open();
      writeFileSync(hold, '');
      let settled = 0;
      const first = Array.from({ length: 5 }, (_, i) => log.append(commitRecord(table, i, 700)));
      await new Promise((resolve) => setTimeout(resolve, 30));
      const later = Array.from({ length: 3 }, (_, i) => log.append(commitRecord(table, 10 + i, 700)));
      for (const p of [...first, ...later]) void p.then(() => settled++);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(settled, 0, 'nothing is acknowledged while the disk refuses the write');
      assert.ok(log.counters.writeFailures >= 2, `tried again: ${log.counters.writeFailures} failures`);
      assert.match(log.refusal()!, /^the server's log cannot be written \(ENOSPC: no space left on device.*\) for \d+\.\d s$/);
      assert.equal(errors.length, 1, 'one error line for the whole episode');
      assert.match(errors[0]!, /could not write the log \(ENOSPC.*\); commits are refused and the write is tried again/);
      unlinkSync(hold);
      await Promise.all([...first, ...later]);
      assert.equal(log.refusal(), undefined);
      assert.equal(recovered.length, 1);
      assert.match(recovered[0]!, /the log is written again after \d+\.\d s of failures/);
      await log.close();
      await loadsClean(dir, 8);
    }));

  /** A new log over an empty table that dumps it (compaction), opened: `options` as AppendLog takes them. */
  async function openLog(dir: string, options: Omit<ConstructorParameters<typeof AppendLog>[0], 'dir' | 'dump' | 'liveBytes'>): Promise<{ table: SessionTable; log: AppendLog }> {
    const table = new SessionTable();
    const log = new AppendLog({ dir, ...options, dump: () => table.dump(Date.now()), liveBytes: () => table.bytes });
    log.load(() => undefined);
    await log.open();
    return { table, log };
  }

  /** openLog, its errors' messages collected. */
  async function openLogNotingErrors(dir: string, options: Omit<ConstructorParameters<typeof AppendLog>[0], 'dir' | 'dump' | 'liveBytes' | 'onError'>): Promise<{ table: SessionTable; log: AppendLog; errors: string[] }> {
    const errors: string[] = [];
    return { ...(await openLog(dir, { ...options, onError: (e) => errors.push(e.message) })), errors };
  }

  /** An everysec log with 20 sessions written, its errors collected. */
  async function everysecLog(dir: string): Promise<{ table: SessionTable; log: AppendLog; errors: string[] }> {
    const table = new SessionTable();
    const errors: string[] = [];
    const log = new AppendLog({ dir, fsync: 'everysec', dump: () => table.dump(Date.now()), liveBytes: () => table.bytes, onError: (e) => errors.push(e.message) });
    log.load(() => undefined);
    await log.open();
    await Promise.all(Array.from({ length: 20 }, (_, i) => log.append(commitRecord(table, i, 100))));
    return { table, log, errors };
  }

  it('after a failed sync (everysec), refuses commits until a snapshot of every session is on disk', () =>
    withFault('log:sync-fails', async (dir, hold) => {
      const { log, errors } = await everysecLog(dir);
      // The sync timer ticks once a second.
      await waitFor(() => log.counters.syncFailures > 0, 3000, 'a failed sync');
      assert.match(log.refusal()!, /could not be synced \(EIO.*\); a snapshot is being written/);
      assert.match(errors[0]!, /could not sync the log \(EIO.*\); commits are refused until a snapshot of every session is on disk/);
      unlinkSync(hold);
      await waitFor(() => log.refusal() === undefined, 3000, 'commits taken again');
      assert.equal(log.counters.compactions, 1, 'durable again by a snapshot, not by a sync that proves nothing');
      await log.close();
      await loadsClean(dir, 20);
    }));

  it('a log closed while the disk refuses its write gives up, leaves no part of the batch, writes nothing after it, and loads clean', () =>
    withFault('log:write-fails', async (dir, hold) => {
      unlinkSync(hold);
      const { table, log } = await openLog(dir, { fsync: 'always', stallMs: 60_000, onError: () => undefined });
      await log.append(commitRecord(table, 0, 300));
      const logs = readdirSync(dir).filter((f) => f.startsWith('log-'));
      writeFileSync(hold, '');
      const failing = log.append(commitRecord(table, 1, 300)).then(() => 'written', (e: { code?: string }) => e.code);
      await waitFor(() => log.counters.writeFailures > 0, 2000, 'the failing write');
      const behind = log.append(commitRecord(table, 2, 300)).then(() => 'written', (e: { code?: string }) => e.code);
      // A compaction waiting for the write when it is given up must not start a log after the hole.
      const compaction = log.compact().then(() => 'compacted', (e: { code?: string }) => e.code);
      await log.close();
      assert.equal(await failing, 'KILN_ERR_STORAGE', 'the batch given up is rejected, never acknowledged');
      assert.equal(await behind, 'KILN_ERR_SERVER_SHUTTING_DOWN', 'nothing is written after the hole');
      assert.equal(await compaction, 'KILN_ERR_SERVER_SHUTTING_DOWN');
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('log-')), logs, 'no new log, no snapshot');
      assert.ok(!readdirSync(dir).includes('snapshot.kiln'));
      unlinkSync(hold);
      await loadsClean(dir, 1); // no part of the given-up batch is left
    }));

  it('a compaction the full disk refuses leaves no new log file behind, and the log loads clean after', () =>
    withFault('log:write-fails', async (dir, hold) => {
      unlinkSync(hold);
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', dump: () => table.dump(Date.now()), liveBytes: () => table.bytes });
      log.load(() => undefined);
      await log.open();
      for (let i = 0; i < 5; i++) await log.append(commitRecord(table, i, 100));
      const logs = () => readdirSync(dir).filter((f) => f.startsWith('log-')).sort();
      const before = logs();
      writeFileSync(hold, '');
      await assert.rejects(log.compact(), /ENOSPC/);
      assert.deepEqual(logs(), before, 'the new log the rotation began is removed');
      unlinkSync(hold);
      await log.compact();
      await log.close();
      await loadsClean(dir, 5);
    }));

  /** A session's change (attribute `w`), committed to the table: its record. */
  function change(table: SessionTable, id: string, value: string): TierRecord {
    const version = table.get(id)!.version;
    return table.applyCommit({ sessionId: id, token: 1, commitId: `w:${value}`, baseVersion: version, lastAccessedAt: 1, set: [['w', Buffer.from(value)]], del: [], principal: undefined }, DEFAULT_SESSION_LIMITS, Date.now()).record!;
  }

  /** Every live session of a table as plain data (version and attribute bytes), by id. */
  function contents(table: SessionTable): Map<string, { version: number; attributes: [string, string][] }> {
    const out = new Map<string, { version: number; attributes: [string, string][] }>();
    for (const record of table.dump(Date.now())) {
      if (record.t !== 's') continue;
      const s = table.snapshot(record.meta.id)!;
      out.set(record.meta.id, { version: s.meta.version, attributes: [...s.attributes].map(([k, v]) => [k, Buffer.from(v).toString('base64')]) });
    }
    return out;
  }

  /** 600 sessions of 4 KiB in a new log: a snapshot of 2.4 MiB, written in three chunks. */
  async function bigLog(dir: string, options: { fsync: 'always' | 'everysec'; stallMs?: number }): Promise<{ table: SessionTable; log: AppendLog; ids: string[] }> {
    const table = new SessionTable();
    const log = new AppendLog({ dir, ...options, dump: () => table.dump(Date.now()), liveBytes: () => table.bytes });
    log.load(() => undefined);
    await log.open();
    const ids: string[] = [];
    for (let i = 0; i < 600; i++) {
      const record = commitRecord(table, i, 4096);
      ids.push((record as { id: string }).id);
      await log.append(record);
    }
    return { table, log, ids };
  }

  /** Lets a writer blocked opening a FIFO go on (a reader opens it and goes: its writes then fail with EPIPE). */
  function releaseFifo(fifo: string): void {
    try {
      closeSync(openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK));
    } catch {
      // gone already
    }
  }

  /** Resolves once a compaction's snapshot has its header on disk: its dump then runs on to the first held chunk in the same turn. */
  const snapshotBegun = (dir: string, log: AppendLog) => waitFor(() => (statSync(join(dir, log.snapshotTempName), { throwIfNoEntry: false })?.size ?? 0) >= 12 || undefined, 10_000, 'the snapshot begun');

  it('a compaction whose snapshot waits on its disk partway through the dump takes commits meanwhile, and what it leaves reloads to the state in memory', () =>
    withFault('snapshot:write', async (dir, hold) => {
      const { table, log, ids } = await bigLog(dir, { fsync: 'everysec' });
      let compacted = false;
      const compaction = log.compact().then(() => void (compacted = true));
      await snapshotBegun(dir, log);
      await new Promise((resolve) => setTimeout(resolve, 200)); // the header's write seen done: the dump runs to the held chunk
      // The first chunk (about 256 sessions) waits on the disk. Meanwhile, sessions the dump
      // has passed and sessions it has not reached are changed, destroyed and created.
      for (const id of [...ids.slice(0, 5), ...ids.slice(595)]) await log.append(change(table, id, `after ${id}`));
      for (const id of [ids[10]!, ids[590]!]) await log.append(table.destroy(id, Date.now() + 60_000)!.record);
      for (let i = 0; i < 5; i++) await log.append(commitRecord(table, 1000 + i, 100));
      assert.equal(compacted, false, 'the snapshot still waits on its disk');
      assert.equal(log.counters.compactions, 0);
      assert.ok(log.backlog().compactingMs > 0);
      assert.equal(log.refusal(), undefined, 'commits are taken: the log the compaction started is written');
      unlinkSync(hold);
      await compaction;
      assert.equal(log.counters.compactions, 1);
      assert.equal(log.backlog().compactingMs, 0);
      const logs = readdirSync(dir).filter((f) => f.startsWith('log-'));
      assert.equal(logs.length, 1, 'the logs the snapshot covers are gone');
      assert.equal(log.bytesOnDisk, statSync(join(dir, logs[0]!)).size, 'the commits taken meanwhile count toward the next compaction');
      await log.close();
      assert.deepEqual(snapshotTempNames(dir), []);
      const { table: back } = reload(dir);
      assert.equal(back.size, 603);
      assert.deepEqual(contents(back), contents(table));
    }));

  it('a snapshot whose file blocks (a FIFO nobody reads yet: a disk that hangs) holds neither the event loop nor commits, and a compaction that fails after leaves the logs whole', async () => {
    const dir = tempDir();
    let fifo = '';
    let reader: ChildProcess | undefined;
    try {
      const { table, log } = await bigLog(dir, { fsync: 'everysec' });
      fifo = join(dir, log.snapshotTempName);
      execFileSync('mkfifo', [fifo]);
      // The snapshot's open waits for a reader, which comes in 8 s. A blocking open (or a
      // blocking write once the pipe is full) would hold this process until then, and
      // this test would fail on its time instead of hanging.
      reader = spawn('sh', ['-c', 'sleep 8; exec cat "$0" > /dev/null', fifo], { stdio: 'ignore' });
      const started = Date.now();
      const compaction = log.compact().then(() => 'compacted', (err: Error) => err.message);
      await new Promise((resolve) => setTimeout(resolve, 100));
      for (let i = 0; i < 10; i++) await log.append(commitRecord(table, 2000 + i, 100));
      assert.ok(Date.now() - started < 6000, `a timer and 10 commits took ${Date.now() - started} ms while the snapshot's file blocked`);
      assert.ok(log.backlog().compactingMs > 0, 'the snapshot still waits');
      releaseFifo(fifo);
      // A pipe takes no positional write (nor a sync): the compaction fails, and removes what it began.
      assert.match(await compaction, /ESPIPE|EINVAL/);
      assert.ok(!readdirSync(dir).includes(log.snapshotTempName) && !readdirSync(dir).includes('snapshot.kiln'));
      await log.append(commitRecord(table, 3000, 100));
      await log.close();
      await loadsClean(dir, 611);
    } finally {
      // A failure above must not leave the snapshot's open blocked (a thread of the pool, and this process, held).
      releaseFifo(fifo);
      reader?.kill('SIGKILL');
      removeDir(dir);
    }
  });

  it("a compaction abandoned at the lock's loss leaves the new holder's snapshot alone: each writer writes under a temporary name of its own", async () => {
    const dir = tempDir();
    const hold = join(dir, '..', `${dir.split('/').pop()}-hold`);
    process.env['KILN_FAILPOINT'] = `snapshot:write=${hold}`;
    try {
      const table = new SessionTable();
      const log = new AppendLog({ dir, fsync: 'always', dump: () => table.dump(Date.now()), liveBytes: () => table.bytes, onError: () => undefined });
      log.load((r) => table.replay(r));
      await log.open();
      for (let i = 0; i < 20; i++) await log.append(commitRecord(table, i, 1024));
      // The other writer (the holder after a takeover) has written its snapshot whole and is about to put it in place.
      let rename!: () => void;
      const theirsWritten = new Promise<void>((resolve) => (rename = resolve));
      const theirs = writeSnapshot(dir, table.dump(Date.now()), 7, undefined, { beforeRename: () => theirsWritten });
      await waitFor(() => snapshotTempNames(dir).length === 1 && statSync(join(dir, snapshotTempNames(dir)[0]!)).size > 20 * 1024 ? true : undefined, 5000, 'their snapshot written');
      const theirBytes = readFileSync(join(dir, snapshotTempNames(dir)[0]!));
      // This server, paused until its lock was taken over, goes on with a compaction: it opens its snapshot, and its disk holds the first chunk.
      writeFileSync(hold, '');
      const ours = log.compact().then(() => 'done', (err: Error) => err.message);
      await waitFor(() => (statSync(join(dir, log.snapshotTempName), { throwIfNoEntry: false })?.size ?? 0) >= 12 || undefined, 5000, 'our snapshot begun');
      writeFileSync(join(dir, 'theirs'), '2000 boot-b 4026532176 77 elsewhere\n');
      renameSync(join(dir, 'theirs'), join(dir, 'kiln.lock'));
      await waitFor(() => log.refusal() !== undefined || undefined, 9_000, 'the loss found');
      rmSync(hold); // the disk answers: our compaction finds the loss and removes what it began
      assert.match(await ours, /is no longer this server's/);
      assert.ok(!existsSync(join(dir, log.snapshotTempName)), 'our partial snapshot is gone');
      rename();
      await theirs; // with one shared name, ours had truncated theirs at its open and removed it at the loss: this rename failed
      assert.ok(readFileSync(join(dir, 'snapshot.kiln')).equals(theirBytes), 'their snapshot is in place, whole');
      await log.close();
    } finally {
      delete process.env['KILN_FAILPOINT'];
      rmSync(hold, { force: true });
      removeDir(dir);
    }
  });

  it('a snapshot is not put in place once a write is given up at stop: it may hold a change whose client was told it failed', async () => {
    const dir = tempDir();
    const holdDir = tempDir('kiln-hold-');
    const snapshotHold = join(holdDir, 'snapshot');
    const diskFull = join(holdDir, 'full');
    process.env['KILN_FAILPOINT'] = `snapshot:write=${snapshotHold},log:write-fails=${diskFull}`;
    try {
      const { table, log, ids } = await bigLog(dir, { fsync: 'always', stallMs: 60_000 });
      const before = contents(table);
      writeFileSync(snapshotHold, '');
      const compaction = outcome(log.compact(), 'compacted');
      await snapshotBegun(dir, log);
      // A session the dump has not reached changes; the disk refuses its record.
      writeFileSync(diskFull, '');
      const refused = log.append(change(table, ids[599]!, 'refused')).then(() => 'acknowledged', (err: { code?: string }) => err.code);
      await waitFor(() => log.refusal() ?? undefined, 10_000, 'the write to fail');
      // Stopping gives up on it: its client is told it failed.
      const closing = log.close();
      assert.equal(await refused, 'KILN_ERR_STORAGE');
      // The disk answers again and the snapshot (which holds the refused change) is written whole.
      unlinkSync(diskFull);
      unlinkSync(snapshotHold);
      assert.equal(await compaction, 'KILN_ERR_SERVER_SHUTTING_DOWN');
      await closing;
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('snapshot')), [], 'no snapshot put in place, none left behind');
      const { table: back } = reload(dir);
      assert.deepEqual(contents(back), before, 'the refused change is nowhere');
    } finally {
      delete process.env['KILN_FAILPOINT'];
      removeDir(holdDir);
      removeDir(dir);
    }
  });

  it('a stop does not wait for good on a compaction whose disk hangs: past stallMs the snapshot is abandoned, and the logs load whole', () =>
    withFault('snapshot:write', async (dir, hold) => {
      const { table, log } = await bigLog(dir, { fsync: 'everysec', stallMs: 300 });
      const errors: string[] = [];
      (log as unknown as { options: { onError: (e: Error) => void } }).options.onError = (e) => errors.push(e.message);
      const compaction = outcome(log.compact(), 'compacted');
      await snapshotBegun(dir, log);
      await log.append(commitRecord(table, 5000, 100));
      const started = Date.now();
      const stopped = await log.close();
      assert.ok(Date.now() - started < 5000, `close took ${Date.now() - started} ms`);
      assert.match(errors.join('\n'), /a compaction still waited on its disk after 300 ms at stop: abandoned/);
      assert.deepEqual(stopped, { clean: true }, 'an abandoned snapshot replaces nothing: every commit is in the logs, synced');
      assert.ok(existsSync(join(dir, 'kiln.lock')), 'the directory stays locked while the abandoned compaction may still touch it');
      // Not even to a server restarted in this process: the old compaction could remove its files.
      assert.throws(() => reload(dir), /in use by this process \(a storage not stopped yet, or a compaction abandoned at stop that still waits on its disk\)/);
      // The disk answers after the stop: the abandoned snapshot is not put in place, its temp file goes, and so does the lock.
      unlinkSync(hold);
      assert.equal(await compaction, 'KILN_ERR_SERVER_SHUTTING_DOWN');
      await lockReleased(dir);
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('snapshot')), []);
      await loadsClean(dir, 601);
    }));

  it('a stop does not wait for good on a compaction whose switch to the next log hangs: what was appended meanwhile is written to the current log, and nothing of the switch is left', () =>
    withFault('log:rotate', async (dir, hold) => {
      unlinkSync(hold);
      const { table, log, errors } = await openLogNotingErrors(dir, { fsync: 'everysec', stallMs: 300 });
      for (let i = 0; i < 5; i++) await log.append(commitRecord(table, i, 100));
      const logs = readdirSync(dir).filter((f) => f.startsWith('log-'));
      writeFileSync(hold, '');
      const compaction = outcome(log.compact(), 'compacted');
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Waits behind the switch, which waits on the disk.
      const late = outcome(log.append(commitRecord(table, 5, 100)), 'written');
      const started = Date.now();
      await log.close();
      assert.ok(Date.now() - started < 5000, `close took ${Date.now() - started} ms`);
      assert.equal(await late, 'written', 'the stop wrote it to the current log');
      assert.match(errors.join('\n'), /a compaction still waited on its disk after 300 ms at stop: abandoned/);
      assert.ok(existsSync(join(dir, 'kiln.lock')), 'locked while the switch may still touch the directory');
      unlinkSync(hold);
      assert.equal(await compaction, 'KILN_ERR_SERVER_SHUTTING_DOWN');
      await lockReleased(dir);
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('log-')), logs, 'no next log left');
      assert.deepEqual(errors.filter((e) => /could not sync/.test(e)), [], 'no sync failure made up by the stop');
      await loadsClean(dir, 6);
    }));

  it('a stop that gives up on a switch which has made the next log writes nothing more to the previous one: what was appended meanwhile is refused, and the logs load whole', () =>
    withFault('log:rotate-opened', async (dir, hold) => {
      unlinkSync(hold);
      const { table, log } = await openLog(dir, { fsync: 'everysec', stallMs: 300, onError: () => undefined });
      for (let i = 0; i < 5; i++) await log.append(commitRecord(table, i, 100));
      const logs = readdirSync(dir).filter((f) => f.startsWith('log-'));
      writeFileSync(hold, '');
      const compaction = outcome(log.compact(), 'compacted');
      await waitFor(() => readdirSync(dir).filter((f) => f.startsWith('log-')).length > logs.length || undefined, 5000, 'the next log made');
      const late = outcome(log.append(commitRecord(table, 5, 100)), 'written');
      await log.close();
      // Written to the previous log while the next exists, a crash could tear it where a start refuses a torn record.
      assert.equal(await late, 'KILN_ERR_SERVER_SHUTTING_DOWN');
      unlinkSync(hold);
      assert.equal(await compaction, 'KILN_ERR_SERVER_SHUTTING_DOWN');
      await lockReleased(dir);
      assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('log-')), logs, 'the next log removed');
      await loadsClean(dir, 5);
    }));

  it('a stop gives up on a last write hung on its disk after stallMs: what waited behind it is refused, the directory stays locked until the disk answers, and the log loads whole', () =>
    withFault('log:write', async (dir, hold) => {
      unlinkSync(hold);
      const { table, log, errors } = await openLogNotingErrors(dir, { fsync: 'always', stallMs: 300 });
      await log.append(commitRecord(table, 0, 100));
      writeFileSync(hold, '');
      const held = outcome(log.append(commitRecord(table, 1, 100)), 'written');
      await waitFor(() => (log as unknown as { writingWaiters?: unknown }).writingWaiters !== undefined || undefined, 5000, 'the write held');
      const behind = outcome(log.append(commitRecord(table, 2, 100)), 'written');
      const started = Date.now();
      // Two stops at once (a failed start's and a signal's): neither gives the lock back early.
      const stops = Promise.all([log.close(), log.close()]);
      const stopped = await settlesWithin(stops, 5000);
      if (!stopped) unlinkSync(hold); // let a stop that waits for good finish, and fail
      assert.ok(stopped, 'the stop returned while the write still waited');
      assert.deepEqual(await stops, [{ clean: false }, { clean: false }], 'both stops say the last write is not known to be on disk');
      assert.ok(Date.now() - started < 3000, `the stop took ${Date.now() - started} ms`);
      assert.ok(await settlesWithin(behind, 1000), 'what waited behind the write is answered');
      assert.equal(await behind, 'KILN_ERR_SERVER_SHUTTING_DOWN', 'never written, never acknowledged');
      assert.match(errors.join('\n'), /the log's last write still waited on its disk after 300 ms at stop/);
      assert.equal(errors.length, 1, `one line, not a second about the sync it waits for: ${errors.join(' | ')}`);
      await assert.rejects(log.append(commitRecord(table, 3, 100)), { code: 'KILN_ERR_SERVER_SHUTTING_DOWN' });
      assert.ok(existsSync(join(dir, 'kiln.lock')), 'locked while the write may still land');
      unlinkSync(hold);
      assert.equal(await held, 'written', 'the write lands when the disk answers');
      await lockReleased(dir);
      await loadsClean(dir, 2);
    }));

  it('a switch whose stop gave up on it while the previous log was syncing makes no next log when the disk answers', () =>
    withFault('log:rotate-synced', async (dir, hold) => {
      unlinkSync(hold);
      // The switch is held just after the previous log's sync; had it gone on, it would be
      // held again once the next file exists (a second hold file), so that file is seen.
      const opened = join(dirname(hold), 'opened');
      try {
        const { table, log } = await openLog(dir, { fsync: 'everysec', stallMs: 300, onError: () => undefined });
        for (let i = 0; i < 5; i++) await log.append(commitRecord(table, i, 100));
        const logs = readdirSync(dir).filter((f) => f.startsWith('log-'));
        writeFileSync(opened, '');
        process.env['KILN_FAILPOINT'] = `log:rotate-synced=${hold},log:rotate-opened=${opened}`;
        writeFileSync(hold, '');
        const compaction = outcome(log.compact(), 'compacted');
        await sleep(100);
        await log.close();
        unlinkSync(hold);
        const stopped = await settlesWithin(compaction, 2000);
        assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('log-')), logs, 'no next log made after the stop');
        assert.ok(stopped, 'the switch stopped');
        assert.equal(await compaction, 'KILN_ERR_SERVER_SHUTTING_DOWN');
        await lockReleased(dir);
      } finally {
        rmSync(opened, { force: true });
      }
      await loadsClean(dir, 5);
    }));

  it('a log cut short inside its header (a crash while a switch made it) is removed, wherever it sits, and the next starts load clean', async () => {
    const dir = tempDir();
    try {
      await writeSessions(dir, 3);
      const [first] = readdirSync(dir).filter((f) => f.startsWith('log-')).sort();
      const seqOf = (name: string) => Number(/^log-(\d+)\.kiln$/.exec(name)![1]);
      const newer = (n: number) => join(dir, `log-${String(seqOf(first!) + n).padStart(8, '0')}.kiln`);
      // An empty log (as an older Kiln cut one), then the newest cut inside its header.
      writeFileSync(newer(1), '');
      writeFileSync(newer(2), 'KILN');
      const { table, report, log } = reload(dir);
      assert.equal(table.size, 3);
      assert.equal(report.emptyLogsRemoved, 2);
      assert.equal(report.tornTails, 0);
      assert.equal(report.files, 1, 'the removed logs are not counted as read');
      assert.ok(!existsSync(newer(1)) && !existsSync(newer(2)));
      await log.open();
      await log.close();
      await loadsClean(dir, 3);
      await loadsClean(dir, 3);
    } finally {
      removeDir(dir);
    }
  });

  it('a stop waits for a compaction that ends within stallMs, and its snapshot is put in place', () =>
    withFault('snapshot:write', async (dir, hold) => {
      const { log } = await bigLog(dir, { fsync: 'everysec', stallMs: 10_000 });
      const compaction = outcome(log.compact(), 'compacted');
      await snapshotBegun(dir, log);
      const closing = log.close();
      await new Promise((resolve) => setTimeout(resolve, 300));
      unlinkSync(hold);
      await closing;
      assert.equal(await compaction, 'compacted');
      assert.ok(readdirSync(dir).includes('snapshot.kiln') && !existsSync(join(dir, 'kiln.lock')));
      await loadsClean(dir, 600);
    }));

  it('a sync that fails as a compaction makes its log durable (everysec) is the log\'s failed sync: commits are refused until a snapshot is on disk', () =>
    withFault('log:sync-fails', async (dir, hold) => {
      unlinkSync(hold);
      const { log } = await everysecLog(dir);
      await waitFor(() => log.counters.syncs > 0 || undefined, 3000, 'the tick to sync what was written');
      writeFileSync(hold, '');
      await assert.rejects(log.compact(), /EIO/);
      assert.equal(log.counters.syncFailures, 1);
      assert.match(log.refusal()!, /could not be synced \(EIO.*\); a snapshot is being written/);
      assert.ok(!readdirSync(dir).includes('snapshot.kiln'), 'the snapshot is not put in place');
      unlinkSync(hold);
      await waitFor(() => log.refusal() === undefined || undefined, 10_000, 'commits taken again once a snapshot is on disk');
      assert.equal(log.counters.compactions, 1);
      await log.close();
      await loadsClean(dir, 20);
    }));
});
