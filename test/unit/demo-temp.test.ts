import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { sweepDeadDemoDirs } from '../../src/cli/demo-temp.js';
import { removeDir, tempDir } from '../helpers/processes.js';

/** The pid of a process that has run and exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid!;
}

describe("kiln demo's temp directories after a demo killed by SIGKILL", () => {
  const tmp = tempDir('kiln-demo-temp-test-');
  after(() => removeDir(tmp));

  it("the next demo removes those of a dead demo, and nothing that may be a live demo's or another user's", () => {
    const dead = deadPid();
    const live = process.ppid;
    const dir = (name: string, mode = 0o700): string => {
      const path = join(tmp, name);
      mkdirSync(path);
      chmodSync(path, mode);
      writeFileSync(join(path, 'something'), 'x');
      return path;
    };
    dir(`kiln-demo-data-${dead}-abcdef`);
    writeFileSync(join(tmp, `kiln-demo-data-${dead}-abcdef`, 'kiln.lock'), `${dead} boot 1 2 host\n`);
    dir(`kiln-demo-admin-${dead}-AbC123`);
    dir(`kiln-demo-data-${live}-zzzzzz`); // a live demo's
    dir(`kiln-demo-data-${dead}-qqqqqq`, 0o755); // not as mkdtemp makes it: not surely ours
    const lockedByLive = dir(`kiln-demo-data-${dead}-llllll`); // its kiln server still runs
    writeFileSync(join(lockedByLive, 'kiln.lock'), `${live}\n`);
    const target = dir('someone-elses');
    symlinkSync(target, join(tmp, `kiln-demo-admin-${dead}-ssssss`));
    dir('kiln-demo-data-notapid-xxxxxx');

    assert.equal(sweepDeadDemoDirs(tmp), 2);
    assert.deepEqual(readdirSync(tmp).sort(), [`kiln-demo-admin-${dead}-ssssss`, `kiln-demo-data-${dead}-llllll`, `kiln-demo-data-${dead}-qqqqqq`, `kiln-demo-data-${live}-zzzzzz`, 'kiln-demo-data-notapid-xxxxxx', 'someone-elses'].sort());
    assert.ok(existsSync(join(target, 'something')), "the link's target is untouched");
    assert.equal(sweepDeadDemoDirs(join(tmp, 'missing')), 0, 'a temp dir that cannot be read sweeps nothing');
  });
});
