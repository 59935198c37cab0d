import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { adminTarget } from '../../src/cli/admin-client.js';
import { clearDemoState, demoStatePath, readDemoState, writeDemoState, type DemoState } from '../../src/cli/demo-state.js';
import { removeDir, tempDir } from '../helpers/processes.js';

/**
 * The demo's state file lives under the temp dir every local user shares: a file or
 * directory planted there by someone else, a symlink, or a loose mode is refused (never
 * followed, never trusted), and a stale state says so. Each test has its own TMPDIR.
 */
const ENV = ['TMPDIR', 'KILN_DEMO_STATE', 'KILN_ADMIN_URL', 'KILN_ADMIN_TOKEN'] as const;
const asRoot = process.getuid?.() === 0;

describe('kiln demo state file', () => {
  let saved: Partial<Record<(typeof ENV)[number], string>>;
  let tmp: string;
  let tokenFile: string;
  let state: DemoState;

  beforeEach(() => {
    saved = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));
    for (const k of ENV) delete process.env[k];
    tmp = tempDir('kiln-demo-state-test-');
    process.env['TMPDIR'] = tmp;
    const adminDir = join(tmp, 'admin');
    mkdirSync(adminDir, { mode: 0o700 });
    tokenFile = join(adminDir, 'admin.token');
    writeFileSync(tokenFile, 'a'.repeat(43), { mode: 0o600 });
    // Our own pid: a demo that is running.
    state = { pid: process.pid, adminUrl: 'http://127.0.0.1:1', adminTokenFile: tokenFile, balancerUrl: 'http://127.0.0.1:2' };
  });
  afterEach(() => {
    for (const k of ENV) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    removeDir(tmp);
  });

  const refused = (pattern: RegExp) => (err: { code?: string; message: string }) => err.code === 'KILN_ERR_UNSAFE_PERMISSIONS' && pattern.test(err.message);

  it('is written 0600 in a 0700 directory of ours, read back, and removed by its demo only', () => {
    const path = writeDemoState(state);
    assert.equal(path, join(tmp, `kiln-${process.getuid?.() ?? 'user'}`, 'demo.json'));
    assert.equal(statSync(join(path, '..')).mode & 0o777, 0o700);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readDemoState(), state);
    assert.deepEqual(readdirSync(join(path, '..')), ['demo.json'], 'no temp file left beside it');
    const target = adminTarget({});
    assert.equal(target.url, state.adminUrl);
    assert.equal(target.token, 'a'.repeat(43));
    clearDemoState(process.pid + 1);
    assert.deepEqual(readDemoState(), state, 'another pid does not remove it');
    clearDemoState();
    assert.equal(readDemoState(), undefined);
  });

  it('a symlink planted at its name is replaced on write, never followed: its target is untouched', () => {
    const dir = join(tmp, 'mine');
    mkdirSync(dir, { mode: 0o700 });
    process.env['KILN_DEMO_STATE'] = join(dir, 'demo.json');
    const victim = join(tmp, 'victim');
    writeFileSync(victim, 'precious\n', { mode: 0o600 });
    symlinkSync(victim, demoStatePath());
    writeDemoState(state);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    assert.ok(lstatSync(demoStatePath()).isFile(), 'the state is a file of its own now');
    assert.deepEqual(readDemoState(), state);
  });

  it('a symlink at its name is refused on read, even to a valid state of ours', () => {
    const dir = join(tmp, 'mine');
    mkdirSync(dir, { mode: 0o700 });
    const real = join(dir, 'real.json');
    writeFileSync(real, JSON.stringify(state), { mode: 0o600 });
    process.env['KILN_DEMO_STATE'] = join(dir, 'demo.json');
    symlinkSync(real, demoStatePath());
    assert.throws(() => readDemoState(), refused(/is a symbolic link/));
    assert.throws(() => adminTarget({}), refused(/is a symbolic link/), 'the operator commands say so too');
  });

  it('the default directory is refused when it is a symlink or others can enter it', () => {
    const dir = join(tmp, `kiln-${process.getuid?.() ?? 'user'}`);
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    assert.throws(() => writeDemoState(state), refused(/has mode 0755; it must be 0700: chmod 700 /));
    // A state already there is not trusted either.
    writeFileSync(join(dir, 'demo.json'), JSON.stringify(state), { mode: 0o600 });
    assert.throws(() => readDemoState(), refused(/has mode 0755/));
    removeDir(dir);
    const elsewhere = join(tmp, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o700 });
    symlinkSync(elsewhere, dir);
    assert.throws(() => writeDemoState(state), refused(/is a symbolic link/));
    assert.deepEqual(readdirSync(elsewhere), [], 'nothing written through it');
  });

  it('a state file larger than a demo writes is refused unread', () => {
    writeDemoState(state);
    writeFileSync(demoStatePath(), `${JSON.stringify(state)}${' '.repeat(1024 * 1024)}`);
    assert.throws(() => readDemoState(), (err: { code?: string; message: string }) => err.code === 'KILN_ERR_UNSAFE_PERMISSIONS' && /1048\d+ bytes, more than a kiln demo writes/.test(err.message));
  });

  it('a state file others can change is refused', () => {
    const path = writeDemoState(state);
    chmodSync(path, 0o666);
    assert.throws(() => readDemoState(), refused(/has mode 0666: others can change it/));
  });

  it('another user’s directory or state file is refused (as root, made so by chown)', { skip: !asRoot && 'needs root to chown' }, () => {
    const path = writeDemoState(state);
    chownSync(path, 4242, 4242);
    assert.throws(() => readDemoState(), refused(/belongs to uid 4242, not to you/));
    chownSync(path, 0, 0);
    chownSync(join(path, '..'), 4242, 4242);
    assert.throws(() => writeDemoState(state), refused(/directory .* belongs to uid 4242/));
    assert.throws(() => readDemoState(), refused(/directory .* belongs to uid 4242/));
  });

  it('the admin token file it names must be ours and private', () => {
    writeDemoState(state);
    chmodSync(tokenFile, 0o644);
    assert.throws(() => adminTarget({}), refused(/admin token file .* has mode 0644: others can read it; chmod 600 /));
  });

  it('a stale state (its pid alive but taken by another process, its token file gone) is a clear error, not ENOENT', () => {
    writeDemoState(state);
    removeDir(join(tokenFile, '..'));
    assert.throws(
      () => adminTarget({}),
      (err: { code?: string; message: string; details?: { option?: string } }) =>
        err.code === 'KILN_ERR_INVALID_OPTION' && err.details?.option === 'KILN_DEMO_STATE' && /is stale: its admin token file .* is gone.*start kiln demo again, or pass --admin URL and --token-file F/.test(err.message),
    );
  });

  it('a state whose demo is gone is ignored: the operator commands fall back to their defaults', () => {
    writeDemoState({ ...state, pid: 2 ** 22 + 1 });
    assert.equal(readDemoState(), undefined);
    assert.throws(() => adminTarget({}), { code: 'KILN_ERR_INVALID_OPTION', message: /^no running kiln demo of this user was found, and no admin token: pass --token-file F/ });
  });
});
