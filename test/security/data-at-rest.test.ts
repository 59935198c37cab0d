import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import { connect, type KilnEngine } from '../../src/engines/kiln/kiln-engine.js';
import { KilnError } from '../../src/errors/index.js';
import { AppendLog } from '../../src/server/storage/append-log.js';
import { Keyring, readKeyFile } from '../../src/server/storage/record-codec.js';
import { generateSessionId } from '../../src/session/id.js';
import { DEFAULT_SESSION_LIMITS } from '../../src/session/limits.js';
import { SessionTable } from '../../src/tier/session-table.js';
import { removeDir, startKilnServer, tempDir, type ServerProcess } from '../helpers/processes.js';

/**
 * Item 12 of #22: what another local user, or whoever gets a copy of the data directory,
 * can read or plant. The kiln server runs from the CLI; sessions go in through a real
 * KilnEngine client; the files are then read as raw bytes.
 */
const CANARY = 'hunter2-PLAINTEXT-CANARY';

function keyLine(id: string, key = randomBytes(32)): string {
  return `${id}:${key.toString('base64')}\n`;
}

function writeKeyFile(dir: string, text: string, mode = 0o600): string {
  const path = join(dir, `keys-${randomBytes(4).toString('hex')}`);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}

async function client(server: ServerProcess): Promise<KilnEngine> {
  const engine = connect(server.url, { token: server.token });
  await engine.connect();
  return engine;
}

/** Creates sessions holding the canary (as value and as principal), returns their ids. */
async function writeSessions(server: ServerProcess, count: number, tag: string): Promise<string[]> {
  const engine = await client(server);
  try {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = generateSessionId();
      const grant = await engine.acquire(id);
      await engine.commit({ sessionId: id, token: grant.token, commitId: `${tag}-${i}`, baseVersion: 0, lastAccessedAt: Date.now(), set: [['password', Buffer.from(`${CANARY}-${tag}-${i}`)]], del: [], principal: `${CANARY}-user-${i}` });
      await engine.release(id, grant.token);
      ids.push(id);
    }
    return ids;
  } finally {
    await engine.close();
  }
}

async function readSessions(server: ServerProcess, ids: string[]): Promise<Map<string, string>> {
  const engine = await client(server);
  try {
    const values = new Map<string, string>();
    for (const id of ids) {
      const grant = await engine.acquire(id);
      const value = grant.snapshot?.attributes.get('password');
      if (value) values.set(id, Buffer.from(value).toString());
      await engine.release(id, grant.token);
    }
    return values;
  } finally {
    await engine.close();
  }
}

/** Every file of the directory, raw. */
function filesOf(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).map((name) => [name, readFileSync(join(dir, name))]));
}

function assertNoPlaintext(dir: string, needles: string[]): void {
  const files = filesOf(dir);
  assert.ok(files.size >= 2, `expected the lock and a log in ${dir}, found ${[...files.keys()].join(', ')}`);
  for (const [name, bytes] of files) {
    for (const needle of needles) assert.equal(bytes.indexOf(needle), -1, `${name} holds ${needle} in plain text`);
  }
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

function assertModes(dir: string): void {
  assert.equal(mode(dir).toString(8), '700', 'data directory mode');
  const names = readdirSync(dir);
  assert.ok(names.includes('kiln.lock') && names.some((n) => n.startsWith('log-')), `files: ${names.join(', ')}`);
  for (const name of names) assert.equal(mode(join(dir, name)).toString(8), '600', `${name} mode`);
}

/** Starts the server with `umask` in force for the child (it inherits the test process's). */
async function withUmask<T>(umask: number, start: () => Promise<T>): Promise<T> {
  const previous = process.umask(umask);
  try {
    return await start();
  } finally {
    process.umask(previous);
  }
}

describe('data at rest: modes', () => {
  for (const umask of [0o000, 0o277]) {
    it(`creates the data dir 0700 and every file 0600 under umask ${umask.toString(8).padStart(3, '0')}, snapshot included`, async () => {
      const root = tempDir();
      const dataDir = join(root, 'nested', 'data');
      try {
        let server = await withUmask(umask, () => startKilnServer({ dataDir }));
        await writeSessions(server, 5, 'modes');
        assertModes(dataDir);
        await server.stop();
        // Encryption on an existing plain directory compacts at start: the snapshot is written too.
        const keys = writeKeyFile(root, keyLine('k1'));
        server = await withUmask(umask, () => startKilnServer({ dataDir, args: ['--encryption-key-file', keys] }));
        assert.ok(readdirSync(dataDir).includes('snapshot.kiln'));
        assertModes(dataDir);
        await server.stop();
      } finally {
        removeDir(root);
      }
    });
  }

  it('tightens files an older version left 0644', async () => {
    const dataDir = tempDir();
    try {
      let server = await startKilnServer({ dataDir });
      await writeSessions(server, 2, 'old');
      await server.stop();
      for (const name of readdirSync(dataDir)) chmodSync(join(dataDir, name), 0o644);
      server = await startKilnServer({ dataDir });
      assertModes(dataDir);
      await server.stop();
    } finally {
      removeDir(dataDir);
    }
  });

  it('refuses a world-writable data dir, naming it, its mode and the fix', async () => {
    const dataDir = tempDir();
    try {
      chmodSync(dataDir, 0o777);
      await assert.rejects(startKilnServer({ dataDir }), (err: Error) => {
        assert.match(err.message, /KILN_ERR_UNSAFE_PERMISSIONS/);
        assert.ok(err.message.includes(`${dataDir} has mode 0777`), err.message);
        assert.ok(err.message.includes(`chmod 700 ${dataDir}`), err.message);
        return true;
      });
      chmodSync(dataDir, 0o770);
      await assert.rejects(startKilnServer({ dataDir }), /KILN_ERR_UNSAFE_PERMISSIONS/);
      assert.deepEqual(readdirSync(dataDir), [], 'nothing written to a refused directory');
    } finally {
      removeDir(dataDir);
    }
  });

  it('refuses a data dir owned by another user, even as root', async () => {
    const root = tempDir();
    // As root, a fresh directory handed to nobody; as anyone else, / (root's, not writable by others).
    const asRoot = process.getuid?.() === 0;
    const dataDir = asRoot ? join(root, 'data') : '/';
    try {
      if (asRoot) {
        mkdirSync(dataDir, { mode: 0o700 });
        chownSync(dataDir, 65534, 65534);
      }
      await assert.rejects(startKilnServer({ dataDir }), (err: Error) => {
        assert.match(err.message, /KILN_ERR_UNSAFE_PERMISSIONS/);
        assert.match(err.message, new RegExp(`${dataDir} is owned by uid ${asRoot ? 65534 : 0}`));
        return true;
      });
    } finally {
      removeDir(root);
    }
  });
});

describe('data at rest: encryption', () => {
  it('never writes a value, principal or session id in plain text in any file; a restart reads them back', async () => {
    const root = tempDir();
    const dataDir = join(root, 'data');
    const keys = writeKeyFile(root, keyLine('k1'));
    try {
      let server = await startKilnServer({ dataDir, fsync: 'always', args: ['--encryption-key-file', keys] });
      const ids = await writeSessions(server, 20, 'enc');
      assertNoPlaintext(dataDir, [CANARY, ...ids]);
      await server.stop();
      server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      const back = await readSessions(server, ids);
      assert.equal(back.size, 20);
      for (const [i, id] of ids.entries()) assert.equal(back.get(id), `${CANARY}-enc-${i}`);
      await server.stop();
    } finally {
      removeDir(root);
    }
  });

  it('turning encryption on converts a plain directory at start: no plain record is left', async () => {
    const root = tempDir();
    const dataDir = join(root, 'data');
    try {
      let server = await startKilnServer({ dataDir });
      const ids = await writeSessions(server, 10, 'plain');
      await server.stop();
      assert.ok([...filesOf(dataDir).values()].some((b) => b.includes(CANARY)), 'the plain server wrote the canary (the check below can fail)');
      const keys = writeKeyFile(root, keyLine('k1'));
      server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      assertNoPlaintext(dataDir, [CANARY, ...ids]);
      assert.equal((await readSessions(server, ids)).size, 10);
      await server.stop();
    } finally {
      removeDir(root);
    }
  });

  it('refuses to start without the key, or with a wrong key, naming the key id', async () => {
    const root = tempDir();
    const dataDir = join(root, 'data');
    const keys = writeKeyFile(root, keyLine('prod-2026'));
    try {
      const server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      await writeSessions(server, 3, 'key');
      await server.stop();
      const before = filesOf(dataDir);
      await assert.rejects(startKilnServer({ dataDir }), (err: Error) => {
        assert.match(err.message, /KILN_ERR_ENCRYPTION_KEY/);
        assert.match(err.message, /key id "prod-2026"/);
        return true;
      });
      await assert.rejects(startKilnServer({ dataDir, args: ['--encryption-key-file', writeKeyFile(root, keyLine('prod-2026'))] }), /key id "prod-2026" in the key file is not the key[^]*KILN_ERR_ENCRYPTION_KEY/);
      await assert.rejects(startKilnServer({ dataDir, args: ['--encryption-key-file', writeKeyFile(root, keyLine('other'))] }), /key id "prod-2026", which the key file lacks[^]*KILN_ERR_ENCRYPTION_KEY/);
      // Refusing touched nothing stored.
      for (const [name, bytes] of before) if (name.startsWith('log-') || name === 'snapshot.kiln') assert.ok(filesOf(dataDir).get(name)?.equals(bytes), `${name} unchanged`);
    } finally {
      removeDir(root);
    }
  });

  it('rotation: add the new key first, restart (compacts), drop the old key, restart: every session kept', async () => {
    const root = tempDir();
    const dataDir = join(root, 'data');
    const oldKey = keyLine('old');
    const newKey = keyLine('new');
    const keys = writeKeyFile(root, oldKey);
    try {
      let server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      const ids = await writeSessions(server, 10, 'rot-a');
      await server.stop();
      writeFileSync(keys, newKey + oldKey);
      server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      ids.push(...(await writeSessions(server, 5, 'rot-b')));
      await server.stop();
      writeFileSync(keys, newKey);
      server = await startKilnServer({ dataDir, args: ['--encryption-key-file', keys] });
      const back = await readSessions(server, ids);
      assert.equal(back.size, 15);
      for (const [i, id] of ids.entries()) assert.equal(back.get(id), i < 10 ? `${CANARY}-rot-a-${i}` : `${CANARY}-rot-b-${i - 10}`);
      await server.stop();
      assertNoPlaintext(dataDir, [CANARY, ...ids]);
    } finally {
      removeDir(root);
    }
  });

  it('refuses a key file group or others can read, and a malformed one, without printing key material', async () => {
    const root = tempDir();
    const dataDir = join(root, 'data');
    try {
      const secret = randomBytes(32);
      const readable = writeKeyFile(root, keyLine('k1', secret), 0o640);
      await assert.rejects(startKilnServer({ dataDir, args: ['--encryption-key-file', readable] }), (err: Error) => {
        assert.match(err.message, /KILN_ERR_UNSAFE_PERMISSIONS/);
        assert.ok(err.message.includes(`${readable} has mode 0640`) && err.message.includes(`chmod 600 ${readable}`), err.message);
        return true;
      });
      const short = writeKeyFile(root, `k1:${secret.subarray(0, 16).toString('base64')}\n`);
      await assert.rejects(startKilnServer({ dataDir, args: ['--encryption-key-file', short] }), (err: Error) => {
        assert.match(err.message, /line 1: expected "id:base64"[^]*KILN_ERR_ENCRYPTION_KEY/);
        assert.ok(!err.message.includes(secret.subarray(0, 16).toString('base64')), 'the key is not printed');
        return true;
      });
    } finally {
      removeDir(root);
    }
  });
});

describe('data at rest: the sealed record format (in process)', () => {
  const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);

  async function writeSealed(dir: string, count: number): Promise<void> {
    const table = new SessionTable();
    const log = new AppendLog({ dir, fsync: 'always', keyring });
    log.load((r) => table.replay(r));
    await log.open();
    for (let i = 0; i < count; i++) {
      const { record } = table.applyCommit({ sessionId: generateSessionId(), token: 1, commitId: `c${i}`, baseVersion: 0, lastAccessedAt: 1, set: [['v', Buffer.from(`${CANARY}-${i}`)]], del: [] }, DEFAULT_SESSION_LIMITS, Date.now());
      await log.append(record!);
    }
    await log.close();
  }

  /** The directory's sessions as a start loads them (the storage stopped after, giving the directory back). */
  async function reload(dir: string): Promise<SessionTable> {
    const table = new SessionTable();
    const log = new AppendLog({ dir, fsync: 'always', keyring });
    log.load((r) => table.replay(r));
    await log.close();
    return table;
  }

  /** The frames of the newest log: [offset, length] of each payload. */
  function framesOf(bytes: Buffer): [number, number][] {
    const frames: [number, number][] = [];
    for (let at = 8; at + 8 <= bytes.length; at += 8 + bytes.readUInt32BE(at)) frames.push([at + 8, bytes.readUInt32BE(at)]);
    return frames;
  }

  function newestLog(dir: string): string {
    return join(dir, readdirSync(dir).filter((f) => f.startsWith('log-')).sort().at(-1)!);
  }

  it('detects altered ciphertext (CRC recomputed, as an attacker would) as corruption, naming file and offset', async () => {
    const dir = tempDir();
    try {
      await writeSealed(dir, 4);
      assert.equal((await reload(dir)).size, 4);
      const path = newestLog(dir);
      const bytes = readFileSync(path);
      const [offset, length] = framesOf(bytes)[2]!;
      bytes[offset + length - 20]! ^= 1;
      bytes.writeUInt32BE(crc32(bytes.subarray(offset, offset + length)), offset - 4);
      writeFileSync(path, bytes);
      await assert.rejects(reload(dir), (err: unknown) => {
        assert.ok(err instanceof KilnError && err.code === 'KILN_ERR_STORAGE_CORRUPT', String(err));
        assert.ok(err.message.includes(`${path} at byte ${offset - 8}`), err.message);
        return true;
      });
    } finally {
      removeDir(dir);
    }
  });

  it('detects two whole records swapped within a log', async () => {
    const dir = tempDir();
    try {
      await writeSealed(dir, 4);
      const path = newestLog(dir);
      const bytes = readFileSync(path);
      const frames = framesOf(bytes);
      const [a, b] = [frames[1]!, frames[2]!];
      // Same-size frames (same value length), so the swap keeps every frame boundary.
      assert.equal(a[1], b[1]);
      const first = Buffer.from(bytes.subarray(a[0] - 8, a[0] + a[1]));
      bytes.copy(bytes, a[0] - 8, b[0] - 8, b[0] + b[1]);
      first.copy(bytes, b[0] - 8);
      writeFileSync(path, bytes);
      await assert.rejects(reload(dir), (err: unknown) => err instanceof KilnError && err.code === 'KILN_ERR_STORAGE_CORRUPT');
    } finally {
      removeDir(dir);
    }
  });

  it('deletes what a compaction that crashed before its deletes left: covered plain logs and a partial snapshot', async () => {
    const dir = tempDir();
    try {
      const table = new SessionTable();
      const plain = new AppendLog({ dir, fsync: 'always' });
      plain.load((r) => table.replay(r));
      await plain.open();
      const { record } = table.applyCommit({ sessionId: generateSessionId(), token: 1, commitId: 'c', baseVersion: 0, lastAccessedAt: 1, set: [['v', Buffer.from(CANARY)]], del: [] }, DEFAULT_SESSION_LIMITS, Date.now());
      await plain.append(record!);
      await plain.close();
      const plainLog = newestLog(dir);
      const plainBytes = readFileSync(plainLog);
      const open = async (): Promise<SessionTable> => {
        const back = new SessionTable();
        const log = new AppendLog({ dir, fsync: 'always', keyring, dump: () => back.dump(Date.now()) });
        log.load((r) => back.replay(r));
        await log.open();
        await log.close();
        return back;
      };
      await open(); // the conversion: compacts, writes an encrypted snapshot, deletes the plain log
      assertNoPlaintext(dir, [CANARY]);
      // As if it had crashed between the snapshot's rename and the deletes, and in an earlier snapshot's write.
      writeFileSync(plainLog, plainBytes);
      writeFileSync(join(dir, 'snapshot.kiln.tmp'), plainBytes); // an older Kiln's temporary name
      writeFileSync(join(dir, 'snapshot.kiln.0123456789ab.tmp'), plainBytes);
      assert.equal((await open()).size, 1);
      assertNoPlaintext(dir, [CANARY]);
    } finally {
      removeDir(dir);
    }
  });

  it('reads key files: first line current, comments skipped; rejects duplicates and bad ids', () => {
    const dir = tempDir();
    try {
      const a = randomBytes(32);
      const b = randomBytes(32);
      const ring = readKeyFile(writeKeyFile(dir, `# rotated 2026-12\n${keyLine('b', b)}\n${keyLine('a', a)}`));
      assert.equal(ring.current.id, 'b');
      assert.ok(ring.get('a')?.key.equals(a));
      assert.throws(() => readKeyFile(writeKeyFile(dir, keyLine('a') + keyLine('a'))), /appears twice/);
      assert.throws(() => readKeyFile(writeKeyFile(dir, keyLine('bad id'))), /line 1/);
      assert.throws(() => readKeyFile(writeKeyFile(dir, '# nothing\n')), /holds no key/);
    } finally {
      removeDir(dir);
    }
  });
});
