import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, it } from 'node:test';
import type { RepairSummary } from '../../src/server/storage/last-repair.js';
import { LOG_MAGIC, snapshotTempNames } from '../../src/server/storage/frame-file.js';
import { adminPortOf, KILN_BIN, removeDir, startKilnServer, startWorker, tempDir, waitFor } from '../helpers/processes.js';
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

  it('a byte flipped mid newest log, mid oldest log, a cut oldest log, a damaged header, a record length blown up mid newest log: refuses, naming file and offset', async () => {
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
      // A length field damaged into a huge value reads as a record cut short; the valid
      // records after it show it is not a crash mid-write, so it is not cut off as one.
      await damage(newest, (b) => {
        const starts: number[] = [];
        for (let at = LOG_MAGIC.length; at + 8 <= b.length; at += 8 + b.readUInt32BE(at)) starts.push(at);
        b.writeUInt32BE(0x7ffffff0, starts[starts.length >> 1]!);
        return b;
      });
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

/**
 * `kiln repair` on a real server's damaged directory. The history has three generations:
 * A created and partly destroyed in the first run (the oldest log), B created and partly
 * destroyed early in the second run, C created late in it (the newest log), so a gap in
 * either log leaves sessions before it (dropped) and after it (kept).
 */
interface Story {
  all: string[];
  destroyed: Set<string>;
  /** Each live session's last acknowledged count, read back before the last kill. */
  final: Record<string, number>;
  meta: Record<string, { createdAt: number; idleTimeoutMs: number }>;
}

async function generations(dataDir: string): Promise<Story> {
  let server = await startKilnServer({ dataDir, fsync: 'always' });
  const port = server.port;
  const worker = await startWorker();
  try {
    await worker.call({ op: 'connect', url: server.url, token: server.token });
    const a = await worker.call<string[]>({ op: 'create', count: 20 });
    await worker.call<IncrementResult>({ op: 'increment', sessions: a, perSession: 2, inFlight: 10 });
    await worker.call({ op: 'destroy', sessions: a.slice(0, 5) });
    await server.kill();
    server = await startKilnServer({ dataDir, fsync: 'always', port });
    const b = await worker.call<string[]>({ op: 'create', count: 20 });
    const r = await worker.call<IncrementResult>({ op: 'increment', sessions: [...a.slice(5), ...b], perSession: 2, inFlight: 10 }, 60_000);
    assert.equal(r.lost, 0);
    await worker.call({ op: 'destroy', sessions: b.slice(0, 5) });
    const c = await worker.call<string[]>({ op: 'create', count: 20 });
    await worker.call<IncrementResult>({ op: 'increment', sessions: c, perSession: 1, inFlight: 10 });
    const destroyed = new Set([...a.slice(0, 5), ...b.slice(0, 5)]);
    const all = [...a, ...b, ...c];
    const live = all.filter((id) => !destroyed.has(id));
    const final = await worker.call<Record<string, number>>({ op: 'read', sessions: live });
    // A fresh client reads what the server holds (the first one's cache has its own clock's createdAt).
    const fresh = await startWorker();
    try {
      await fresh.call({ op: 'connect', url: server.url, token: server.token });
      const meta = await fresh.call<Story['meta']>({ op: 'meta', sessions: live });
      return { all, destroyed, final, meta };
    } finally {
      await fresh.kill();
    }
  } finally {
    await worker.kill();
    await server.kill();
  }
}

function runRepair(dataDir: string, args: string[] = [], env: Record<string, string> = {}): { code: number | null; signal: NodeJS.Signals | null; out: string } {
  const r = spawnSync(process.execPath, [KILN_BIN, 'repair', '--data-dir', dataDir, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, signal: r.signal, out: r.stdout + r.stderr };
}

/** What a server started on the directory serves of the story's sessions: each one's count (null: gone) and creation metadata. */
async function served(dataDir: string, story: Story): Promise<{ values: Record<string, number | null>; meta: Record<string, Story['meta'][string] | null> }> {
  const server = await startKilnServer({ dataDir });
  const worker = await startWorker();
  try {
    await worker.call({ op: 'connect', url: server.url, token: server.token });
    const values = await worker.call<Record<string, number | null>>({ op: 'read', sessions: story.all });
    const meta = await worker.call<Record<string, Story['meta'][string] | null>>({ op: 'meta', sessions: story.all });
    return { values, meta };
  } finally {
    await worker.kill();
    await server.kill();
  }
}

/** What the repaired directory serves: no destroyed session, every kept one whole and as acknowledged. */
async function checkRepaired(dataDir: string, story: Story, summary: RepairSummary, args: string[] = []): Promise<number> {
  const server = await startKilnServer({ dataDir, args });
  const worker = await startWorker();
  try {
    assert.doesNotMatch(server.output(), /repaired/, 'a start without --repair reports no repair on its ready line');
    await worker.call({ op: 'connect', url: server.url, token: server.token });
    const values = await worker.call<Record<string, number | null>>({ op: 'read', sessions: story.all });
    const meta = await worker.call<Record<string, Story['meta'][string] | null>>({ op: 'meta', sessions: story.all });
    let kept = 0;
    for (const id of story.all) {
      if (story.destroyed.has(id)) {
        assert.equal(values[id], null, 'no destroyed session is alive');
        continue;
      }
      if (values[id] === null) continue;
      kept++;
      const v = values[id]!;
      assert.ok(Number.isInteger(v) && v >= 0 && v <= story.final[id]!, `kept session holds ${v}, not an acknowledged count (0..${story.final[id]})`);
      assert.equal(v, story.final[id], 'a kept session has its whole history: its last acknowledged count');
      assert.deepEqual(meta[id], story.meta[id], 'a kept session has its creation metadata');
    }
    assert.equal(kept, summary.sessionsKept);
    const lost = story.all.filter((id) => !story.destroyed.has(id) && values[id] === null).length;
    // A snapshot record in the skipped bytes takes its session's only record with it: the repair cannot name that one.
    assert.ok(lost <= summary.sessionsDropped + summary.damagedSpots, `${lost} live sessions gone, ${summary.sessionsDropped} reported dropped`);
    return kept;
  } finally {
    await worker.kill();
    await server.kill();
  }
}

function lastRepair(dataDir: string): RepairSummary {
  return JSON.parse(readFileSync(join(dataDir, 'last-repair.json'), 'utf8')) as RepairSummary;
}

/** Damages `pick(dataDir)`, repairs with the CLI, checks the summary, the kept evidence and what the server then serves. */
async function repairCase(damage: { pick: (dataDir: string) => string; change: (b: Buffer) => Buffer; args?: string[]; prepare?: (dataDir: string) => Promise<void> }): Promise<RepairSummary> {
  const dataDir = tempDir();
  try {
    const story = await generations(dataDir);
    await damage.prepare?.(dataDir);
    const file = damage.pick(dataDir);
    const bad = damage.change(Buffer.from(readFileSync(file)));
    writeFileSync(file, bad);
    const { code, out } = runRepair(dataDir, damage.args);
    assert.equal(code, 0, out);
    assert.match(out, /sessions kept \d+, dropped \d+ \(live at a gap \d+, no creation record \d+\)/);
    const summary = lastRepair(dataDir);
    assert.equal(summary.repaired, true);
    assert.equal(summary.damaged[0]!.file, file, out);
    assert.ok(summary.bytesSkipped > 0 && summary.recordsSalvaged > 0);
    assert.ok(summary.movedTo?.startsWith(join(dataDir, 'damaged-')));
    assert.ok(readFileSync(join(summary.movedTo!, basename(file))).equals(bad), 'the damaged file is kept aside byte for byte');
    assert.ok(!existsSync(file) || basename(file) === 'snapshot.kiln', 'the damaged log is out of the data directory');
    await checkRepaired(dataDir, story, summary, damage.args);
    const again = runRepair(dataDir, damage.args);
    assert.equal(again.code, 0, again.out);
    assert.match(again.out, /nothing to repair/);
    return summary;
  } finally {
    removeDir(dataDir);
  }
}

const flipAt = (at: (b: Buffer) => number) => (b: Buffer): Buffer => {
  const i = at(b);
  b[i] = b[i]! ^ 0x5a;
  return b;
};
const oldest = (dataDir: string): string => logs(dataDir)[0]!;
const newest = (dataDir: string): string => logs(dataDir).at(-1)!;
const figures = (s: RepairSummary): string => `kept ${s.sessionsKept}, dropped ${s.sessionsDropped} (live at a gap ${s.dropped.liveAtGap}, no creation ${s.dropped.noCreation}), salvaged ${s.recordsSalvaged}, skipped ${s.recordsSkipped}, ${s.bytesSkipped} bytes skipped`;

/** Runs `fn` with the server arguments of a fresh encryption key file, removed after. */
async function withKeyFile<T>(fn: (args: string[]) => Promise<T>): Promise<T> {
  const keyDir = tempDir();
  const keys = join(keyDir, 'keys');
  writeFileSync(keys, `k1:${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  chmodSync(keys, 0o600);
  try {
    return await fn(['--encryption-key-file', keys]);
  } finally {
    removeDir(keyDir);
  }
}

describe('kiln repair (real kiln server, SIGKILL)', () => {
  it('a byte flipped mid oldest log: A dropped, B and C kept whole', async () => {
    const s = await repairCase({ pick: oldest, change: flipAt((b) => b.length >> 1) });
    console.log(`# flip mid oldest log: ${figures(s)}`);
    assert.equal(s.sessionsKept, 35);
  });

  it('the oldest log cut short: the cut record is a gap, B and C kept', async () => {
    const s = await repairCase({ pick: oldest, change: (b) => b.subarray(0, b.length - 5) });
    console.log(`# oldest log cut: ${figures(s)}`);
    assert.equal(s.sessionsKept, 35);
  });

  it('a damaged newest log header: sessions of the first run dropped, the second run\'s kept', async () => {
    const s = await repairCase({ pick: newest, change: flipAt(() => 3) });
    console.log(`# newest log header: ${figures(s)}`);
    assert.equal(s.damaged[0]!.offset, 0);
    assert.equal(s.sessionsKept, 35);
    assert.equal(s.dropped.liveAtGap, 15);
  });

  it('a byte flipped mid newest log: only sessions created after the damage are kept', async () => {
    const s = await repairCase({ pick: newest, change: flipAt((b) => b.length >> 1) });
    console.log(`# flip mid newest log: ${figures(s)}`);
    assert.ok(s.sessionsKept < 35, 'the B sessions live at the gap are dropped');
    assert.ok(s.dropped.liveAtGap >= 15);
  });

  it('a damaged snapshot (encrypted directory, made by compaction): only the sessions in the skipped bytes are lost, repaired with the key', async () => {
    await withKeyFile(async (args) => {
      const s = await repairCase({
        args,
        // A start with a key over plain records rewrites them sealed: a compaction, so a snapshot.
        prepare: async (dataDir) => {
          const server = await startKilnServer({ dataDir, args });
          await server.stop();
        },
        pick: (dataDir) => join(dataDir, 'snapshot.kiln'),
        change: flipAt((b) => b.length >> 1),
      });
      console.log(`# damaged snapshot: ${figures(s)}`);
      // The snapshot holds each session once, whole: a gap in it takes the records in the
      // skipped bytes (a session or a tombstone each) and nothing read before or after it.
      assert.equal(s.dropped.liveAtGap, 0, figures(s));
      assert.ok(s.sessionsKept >= 48 && s.sessionsKept <= 50, figures(s));
    });
  });

  it('an encrypted snapshot whose header cannot be trusted, with the logs it covers still there: its records fail authentication, and the logs rebuild every session as acknowledged', async () => {
    await withKeyFile(async (args) => {
      let restored = 0;
      const s = await repairCase({
        args,
        // A compaction (a start with a key over plain records), then its covered logs put
        // back, as a crash after the snapshot's rename and before their removal leaves them.
        prepare: async (dataDir) => {
          const covered = new Map(logs(dataDir).map((file) => [file, readFileSync(file)]));
          const server = await startKilnServer({ dataDir, args });
          await server.stop();
          for (const [file, bytes] of covered) {
            if (existsSync(file)) continue;
            writeFileSync(file, bytes);
            restored++;
          }
        },
        pick: (dataDir) => join(dataDir, 'snapshot.kiln'),
        // The magic and the first-log number both damaged: the repair cannot tell which logs
        // the snapshot covers, so it reads every log after it, the covered ones included.
        // A sealed record's place (its file's first-log number) is part of what it
        // authenticates, so none of the snapshot's records can be trusted either.
        change: (b) => {
          b[0] = b[0]! ^ 0x5a;
          b.writeUInt32BE(0xffffffff, 8);
          return b;
        },
      });
      console.log(`# encrypted snapshot, header untrusted, ${restored} covered logs left: ${figures(s)}`);
      assert.ok(restored > 0, 'the compaction had removed the logs it covered');
      assert.ok(s.bytesSkipped > 0, 'the snapshot was skipped');
      // The covered logs hold every session's whole history here: all 50 live ones come back, each at its last count.
      assert.equal(s.sessionsKept, 50, figures(s));
      assert.equal(s.sessionsDropped, 0, figures(s));
    });
  });

  it('a repair killed between any two steps of its file swap: repairing again (or starting) ends where an uninterrupted repair does', async () => {
    // The steps, in order (src/server/storage/repair.ts, frame-file.ts): the aside
    // directory made; the old files linked into it; the new snapshot written, not yet
    // renamed over the old one; renamed; the old logs unlinked, the report not written.
    const points = [
      { name: 'repair:aside-made', installed: false },
      { name: 'repair:old-files-kept', installed: false },
      { name: 'snapshot:before-rename', installed: false },
      { name: 'repair:snapshot-installed', installed: true },
      { name: 'repair:old-logs-removed', installed: true },
    ];
    const base = tempDir();
    const dirs: string[] = [base];
    const copyOf = (): string => {
      const dir = tempDir();
      cpSync(base, dir, { recursive: true });
      dirs.push(dir);
      return dir;
    };
    try {
      const story = await generations(base);
      const damagedLog = oldest(base);
      writeFileSync(damagedLog, flipAt((b) => b.length >> 1)(Buffer.from(readFileSync(damagedLog))));
      const damagedBytes = readFileSync(damagedLog);
      const reference = copyOf();
      const uninterrupted = runRepair(reference);
      assert.equal(uninterrupted.code, 0, uninterrupted.out);
      const expected = await served(reference, story);
      const kept = Object.values(expected.values).filter((v) => v !== null).length;
      assert.ok(kept > 0 && kept < story.all.length - story.destroyed.size, `the damage drops some sessions and keeps others (kept ${kept})`);
      for (const point of points) {
        const dir = copyOf();
        const crashed = runRepair(dir, [], { KILN_FAILPOINT: point.name });
        assert.equal(crashed.signal, 'SIGKILL', `${point.name}: the repair was to die there\n${crashed.out}`);
        assert.ok(!existsSync(join(dir, 'last-repair.json')), `${point.name}: no report of a repair that did not finish`);
        const again = runRepair(dir);
        assert.equal(again.code, 0, `${point.name}: ${again.out}`);
        // Before the rename the directory is still the damaged one; after it, the repaired one.
        assert.match(again.out, point.installed ? /nothing to repair/ : /sessions kept \d+/, point.name);
        assert.deepEqual(await served(dir, story), expected, `${point.name}: the same sessions, counts and metadata as the uninterrupted repair`);
        const asides = readdirSync(dir).filter((name) => name.startsWith('damaged-'));
        assert.ok(
          asides.some((aside) => existsSync(join(dir, aside, basename(damagedLog))) && readFileSync(join(dir, aside, basename(damagedLog))).equals(damagedBytes)),
          `${point.name}: the damaged log is kept byte for byte (${asides.join(', ')})`,
        );
        assert.ok(!existsSync(join(dir, basename(damagedLog))), `${point.name}: the damaged log is out of the data directory after the start`);
        assert.deepEqual(snapshotTempNames(dir), [], `${point.name}: no partial snapshot left`);
      }
    } finally {
      for (const dir of dirs) removeDir(dir);
    }
  });

  it('kiln server --repair repairs a damaged directory before loading, and reports it on the ready line and in the overview', async () => {
    const dataDir = tempDir();
    try {
      await generations(dataDir);
      const file = oldest(dataDir);
      writeFileSync(file, flipAt((b) => b.length >> 1)(readFileSync(file)));
      const server = await startKilnServer({ dataDir, args: ['--repair', '--admin-port', '0'] });
      try {
        assert.match(server.output(), /repaired \S+: kept 35, dropped \d+/);
        const res = await (await adminPortOf(server)).get('/api/overview');
        const overview = (await res.json()) as { storage: { lastRepair: RepairSummary | null } };
        assert.equal(overview.storage.lastRepair?.sessionsKept, 35);
        assert.equal(overview.storage.lastRepair?.repaired, true);
      } finally {
        await server.kill();
      }
      // A sound directory: --repair loads it as it is and the ready line says nothing of a repair.
      const again = await startKilnServer({ dataDir, args: ['--repair'] });
      assert.doesNotMatch(again.output(), /repaired/);
      await again.kill();
    } finally {
      removeDir(dataDir);
    }
  });

  it('a hostile last-repair.json is ignored with a warn line', async () => {
    const dataDir = tempDir();
    try {
      const first = await startKilnServer({ dataDir });
      await first.stop();
      writeFileSync(join(dataDir, 'last-repair.json'), '{"repaired": true, "at": 12');
      const server = await startKilnServer({ dataDir });
      await waitFor(() => server.output().includes('last-repair.json ignored'), 5000, 'the warn line');
      await server.kill();
      writeFileSync(join(dataDir, 'last-repair.json'), 'x'.repeat(100_000));
      const big = await startKilnServer({ dataDir });
      await waitFor(() => /100000 bytes, more than \d+.*last-repair\.json ignored/.test(big.output()), 5000, 'the warn line');
      await big.kill();
    } finally {
      removeDir(dataDir);
    }
  });
});
