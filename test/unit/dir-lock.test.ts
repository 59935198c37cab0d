import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { judgeHolder, LOCK_REFRESH_MS, LOCK_STALE_AFTER_MS, lockDataDir, parseLockRecord, refreshLockIfDue, unlockDataDir, type Judge, type ProcessProbe } from '../../src/server/storage/dir-lock.js';
import { ownIdentity, startTicksOf } from '../../src/util/process-alive.js';
import { removeDir, tempDir, waitFor } from '../helpers/processes.js';

/**
 * kiln.lock across pid namespaces, boots and reused pids: the pure verdict on every kind
 * of lock, and real processes in a pid namespace of their own (`unshare`, as a container
 * on the same volume would be).
 */
const NOW = 10_000_000_000;
const me = { pid: 1000, boot: 'boot-a', pidNamespace: '4026531836', started: '500', host: 'node-1', bootedAt: NOW - 3_600_000 };
function probe(live: Record<number, string>): ProcessProbe {
  return { alive: (pid) => pid in live, startedOf: (pid) => live[pid] };
}
const judge = (line: string, live: Record<number, string>, refreshedAgo = 0, self: Judge = me) => judgeHolder(parseLockRecord(line), NOW - refreshedAgo, NOW, self, probe(live)).held;

describe('kiln.lock: whether its holder lives', () => {
  it('a lock naming only a pid (an older Kiln): held while that pid lives, not when it is this process', () => {
    assert.equal(judge('2000\n', { 2000: '1' }), true);
    assert.equal(judge('2000\n', {}), false);
    assert.equal(judge('1000\n', { 1000: '500' }), false, 'a dead holder whose pid this process now has (a container restarted)');
    assert.equal(judge('not-a-pid\n', {}), false);
    assert.equal(judge('', {}), false);
  });

  it('same boot and pid namespace: the pid and its start time decide (a reused pid holds nothing)', () => {
    assert.equal(judge('2000 boot-a 4026531836 77 node-1', { 2000: '77' }), true);
    assert.equal(judge('2000 boot-a 4026531836 77 node-1', { 2000: '78' }), false, 'another process has the pid now');
    assert.equal(judge('2000 boot-a 4026531836 77 node-1', {}), false);
    assert.equal(judge('2000 boot-a 4026531836 - node-1', { 2000: '78' }), true, 'no start time written: the pid decides');
  });

  it('another pid namespace (a container on the same volume) or machine: held until not refreshed for the stale time, whatever our pids say', () => {
    for (const line of ['1000 boot-a 4026532176 77 c0ffee', '2000 boot-a 4026532176 77 c0ffee', '2000 boot-b 4026531836 77 node-2', '2000 boot-b 4026532176 77 node-1']) {
      assert.equal(judge(line, {}), true, `${line}: refreshed now`);
      assert.equal(judge(line, {}, LOCK_STALE_AFTER_MS - 1), true, `${line}: refreshed just within the stale time`);
      assert.equal(judge(line, {}, LOCK_STALE_AFTER_MS + 1), false, `${line}: not refreshed for longer`);
    }
  });

  it('an earlier boot of this machine is stale at once (a reboot): last refreshed before this boot began', () => {
    const beforeBoot = 3_600_000 + 1_000;
    assert.equal(judge('2000 boot-z 4026531836 77 node-1', { 2000: '1' }, beforeBoot), false);
    assert.equal(judge('2000 boot-z 4026532999 77 node-1', {}, beforeBoot), false, 'whatever its namespace');
    assert.equal(judge('2000 boot-z 4026531836 77 node-1', {}, 1_000), true, 'refreshed since this boot: another machine of the same name (the root namespace has one number on every machine)');
    assert.equal(judge('2000 boot-z 4026531836 77 -', {}, beforeBoot), false, 'no host name written: the refreshes decide, and it is old');
    assert.equal(judge('2000 boot-z 4026531836 77 -', {}, 1_000), true, 'no host name written: the refreshes decide');
    assert.equal(judge('2000 boot-z 4026531836 77 node-1', {}, beforeBoot, { ...me, bootedAt: undefined }), false, 'boot time unknown: the refreshes decide, and it is old');
  });

  it('this process not knowing its own boot or namespace (no /proc): the refreshes decide, except for a lock naming only a pid', () => {
    const blind = { ...me, boot: '-', pidNamespace: '-', started: '-', bootedAt: undefined };
    assert.equal(judge('2000 boot-a 4026531836 77 node-1', {}, 0, blind), true, 'a fresh lock of a process it cannot see');
    assert.equal(judge('2000 boot-a 4026531836 77 node-1', {}, LOCK_STALE_AFTER_MS + 1, blind), false);
    assert.equal(judge('2000\n', {}, 0, blind), false, "an older Kiln's lock: its pid is looked up");
    assert.equal(judge('2000\n', { 2000: '9' }, LOCK_STALE_AFTER_MS + 1, blind), true);
    // ...and a lock such a server writes ('-' for what it cannot know) is judged by its refreshes by everyone.
    assert.equal(judge('51234 - - - my-mac', {}, 0), true, 'fresh: held, though no pid 51234 lives here');
    assert.equal(judge('51234 - - - my-mac', {}, LOCK_STALE_AFTER_MS + 1), false);
  });

  it("a lock whose time is ahead of this clock counts as just refreshed, and the refusal says the clock is ahead", () => {
    assert.equal(judge('2000 boot-b 4026531836 77 node-2', {}, -3_600_000), true);
    const dir = tempDir();
    try {
      const path = join(dir, 'kiln.lock');
      writeFileSync(path, '2000 boot-b 4026531836 77 node-2\n');
      const ahead = new Date(Date.now() + 3_600_000);
      utimesSync(path, ahead, ahead);
      assert.throws(() => lockDataDir(dir), /its lock's time is 3600 s ahead of this machine's clock/);
    } finally {
      removeDir(dir);
    }
  });

  it("this process's record: its pid first (what every Kiln reads), then boot, pid namespace, start time, host", () => {
    const dir = tempDir();
    try {
      const lock = lockDataDir(dir);
      const words = readFileSync(join(dir, 'kiln.lock'), 'latin1').trim().split(' ');
      const own = ownIdentity();
      assert.deepEqual(words.slice(0, 4), [String(process.pid), own.boot, own.pidNamespace, startTicksOf(process.pid)]);
      assert.match(own.boot, /^[0-9a-f-]{36}$/);
      assert.match(own.pidNamespace, /^\d+$/);
      assert.equal(words.length, 5);
      unlockDataDir(lock);
    } finally {
      removeDir(dir);
    }
  });

  it('a lock naming a live process that started after it was written (a reused pid) is taken over', () => {
    const dir = tempDir();
    try {
      const own = ownIdentity();
      // The parent lives, but its start time is not the one written.
      writeFileSync(join(dir, 'kiln.lock'), `${process.ppid} ${own.boot} ${own.pidNamespace} 1 somehost\n`);
      const lock = lockDataDir(dir);
      unlockDataDir(lock);
      writeFileSync(join(dir, 'kiln.lock'), `${process.ppid} ${own.boot} ${own.pidNamespace} ${startTicksOf(process.ppid)} somehost\n`);
      assert.throws(() => lockDataDir(dir), new RegExp(`in use by process ${process.ppid}$`));
    } finally {
      removeDir(dir);
    }
  });

  it('a kiln.lock that is a FIFO, a symbolic link or a directory is refused as such at once (a FIFO is not waited on)', () => {
    const dir = tempDir();
    try {
      const path = join(dir, 'kiln.lock');
      execFileSync('mkfifo', [path]);
      assert.throws(() => lockDataDir(dir), /kiln\.lock is not a regular file/);
      rmSync(path);
      writeFileSync(join(dir, 'elsewhere'), `${process.ppid}\n`);
      symlinkSync(join(dir, 'elsewhere'), path);
      assert.throws(() => lockDataDir(dir), /kiln\.lock is a symbolic link/);
      rmSync(path);
      mkdirSync(path);
      assert.throws(() => lockDataDir(dir), /kiln\.lock is not a regular file/);
    } finally {
      removeDir(dir);
    }
  });

  it('is refreshed while held, also while synchronous work holds the event loop (a replay calls refreshLockIfDue), so a server that cannot see the holder knows it lives', () => {
    const dir = tempDir();
    try {
      const lock = lockDataDir(dir);
      const path = join(dir, 'kiln.lock');
      const old = new Date(Date.now() - 60_000);
      utimesSync(path, old, old);
      // The event loop held for longer than a refresh period: no timer runs meanwhile.
      const until = Date.now() + LOCK_REFRESH_MS + 300;
      while (Date.now() < until) refreshLockIfDue(lock);
      assert.ok(Date.now() - statSync(path).mtimeMs < 1_000, 'refreshed from within the synchronous work');
      unlockDataDir(lock);
    } finally {
      removeDir(dir);
    }
  });

  it("is touched by its timer every period while the event loop is free", async () => {
    const dir = tempDir();
    try {
      const lock = lockDataDir(dir);
      const path = join(dir, 'kiln.lock');
      const old = new Date(Date.now() - 60_000);
      utimesSync(path, old, old);
      await waitFor(() => Date.now() - statSync(path).mtimeMs < 2_000 || undefined, LOCK_REFRESH_MS + 3_000, 'the timer touching the lock');
      unlockDataDir(lock);
    } finally {
      removeDir(dir);
    }
  });

  it('a lock taken over while its holder looked dead is reported lost by the holder, which then leaves the new one alone', async () => {
    const dir = tempDir();
    try {
      const lost: string[] = [];
      const lock = lockDataDir(dir, { onLost: (why) => lost.push(why) });
      const path = join(dir, 'kiln.lock');
      // Another server's takeover: its own file in the lock's place.
      writeFileSync(join(dir, 'theirs'), '2000 boot-b 4026532176 77 elsewhere\n');
      renameSync(join(dir, 'theirs'), path);
      const theirs = new Date(Date.now() - 10_000);
      utimesSync(path, theirs, theirs);
      await waitFor(() => lost.length > 0 || undefined, LOCK_REFRESH_MS + 3_000, 'the loss reported');
      assert.match(lost[0]!, /is no longer this server's: another file is in its place: another server took the directory over/);
      assert.ok(Math.abs(statSync(path).mtimeMs - theirs.getTime()) < 1_000, "the new holder's file is not touched");
      unlockDataDir(lock);
      assert.equal(parseLockRecord(readFileSync(path, 'latin1')).pid, 2000, 'nor removed at unlock');
    } finally {
      removeDir(dir);
    }
  });
});

describe('kiln.lock between pid namespaces (real processes, unshare)', () => {
  const dirLockModule = new URL('../../src/server/storage/dir-lock.js', import.meta.url).href;

  const running: Array<{ stop(): Promise<void> }> = [];
  after(() => Promise.all(running.map((r) => r.stop())));

  /** Runs node in a pid namespace of its own (and its own /proc); it locks `dir`, says so and waits for its stdin to end. */
  function holderInNamespace(dir: string): Promise<{ said: string; pid: number; stop(): Promise<void> }> {
    const script = `const { lockDataDir } = await import(${JSON.stringify(dirLockModule)});
      let said; try { lockDataDir(${JSON.stringify(dir)}); said = 'took'; } catch (e) { said = e.message; }
      process.stdout.write(said + '\\n'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));`;
    const child = spawn('unshare', ['--pid', '--fork', '--kill-child=SIGKILL', '--map-root-user', '--mount-proc', process.execPath, '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    const stop = (): Promise<void> => {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      // unshare's --kill-child takes the namespaced node with it, as a crash would.
      child.kill('SIGKILL');
      child.stdin!.destroy();
      return exited;
    };
    return new Promise((resolve, reject) => {
      let out = '';
      running.push({ stop: () => stop() });
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`unshare exited (${code}) before locking: ${out}`)));
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (!out.endsWith('\n')) return;
        child.removeAllListeners('exit');
        resolve({ said: out.trim(), pid: child.pid!, stop });
      });
    });
  }

  it('a server in another pid namespace is refused a directory this one holds (its pid means nothing there), and the reverse; a crashed holder is taken over once its lock is stale', async () => {
    const dir = tempDir();
    try {
      // This process holds it: the namespaced process cannot see our pid, but the lock is fresh.
      const lock = lockDataDir(dir);
      const refused = await holderInNamespace(dir);
      await refused.stop();
      assert.match(refused.said, /in use by process \d+ of another pid namespace, boot or machine/);
      unlockDataDir(lock);

      // The reverse: held in a namespace of its own (pid 1 there, which lives here too, as init).
      const holder = await holderInNamespace(dir);
      assert.equal(holder.said, 'took');
      assert.equal(parseLockRecord(readFileSync(join(dir, 'kiln.lock'), 'latin1')).pid, 1);
      assert.throws(() => lockDataDir(dir), /of another pid namespace, boot or machine \(a container on the same volume\?\): its lock was refreshed 0 s ago, and is taken over once not refreshed for 30 s/);
      // It is killed; its lock stays, and is stale once not refreshed for the stale time.
      await holder.stop();
      assert.throws(() => lockDataDir(dir), /of another pid namespace/);
      const old = new Date(Date.now() - LOCK_STALE_AFTER_MS - 1_000);
      utimesSync(join(dir, 'kiln.lock'), old, old);
      const taken = lockDataDir(dir);
      assert.equal(parseLockRecord(readFileSync(join(dir, 'kiln.lock'), 'latin1')).pid, process.pid);
      unlockDataDir(taken);
    } finally {
      removeDir(dir);
    }
  });

  it('one process is refused one directory under a second path (a bind mount), and gets it there once the first lets it go', () => {
    const dir = tempDir();
    const mountPoint = tempDir();
    try {
      const script = `const { lockDataDir, unlockDataDir } = await import(${JSON.stringify(dirLockModule)});
        const first = lockDataDir(process.argv[1]);
        let said; try { lockDataDir(process.argv[2]); said = 'took it twice'; } catch (e) { said = e.message; }
        unlockDataDir(first);
        const second = lockDataDir(process.argv[2]);
        unlockDataDir(second);
        process.stdout.write(said + '\\n');`;
      const out = execFileSync('unshare', ['--mount', '--map-root-user', 'sh', '-c', 'mount --bind "$1" "$2" && exec "$3" --input-type=module -e "$4" "$1" "$2"', 'sh', dir, mountPoint, process.execPath, script], { encoding: 'utf8', timeout: 20_000 });
      assert.match(out, new RegExp(`data directory ${mountPoint} is in use by this process under another path \\(${dir}\\)`));
    } finally {
      removeDir(mountPoint);
      removeDir(dir);
    }
  });
});
