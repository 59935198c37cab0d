import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { KilnBalancer } from '../../src/balancer/balancer.js';
import { isKilnError } from '../../src/errors/index.js';
import { KILN_BIN, removeDir, tempDir, trackChild, waitFor } from '../helpers/processes.js';

describe('kiln balancer command', () => {
  it('takes its nodes from --config and --node, and serves the status JSON', async () => {
    const backend = createServer((req, res) => res.end(JSON.stringify({ url: req.url })));
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', () => resolve()));
    const port = (backend.address() as AddressInfo).port;
    const dir = tempDir();
    const config = join(dir, 'balancer.json');
    writeFileSync(config, JSON.stringify({ port: 0, affinity: 'none', nodes: [{ name: 'from-file', url: `http://127.0.0.1:${port}` }] }));
    const child = spawn(process.execPath, [KILN_BIN, 'balancer', '--config', config, '--node', `from-flag=http://127.0.0.1:${port}`, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = trackChild(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const url = await waitFor(() => /ready on (http:\/\/\S+)/.exec(out)?.[1], 10_000, 'balancer ready');
      assert.equal((await fetch(`${url}/_kiln/balancer`)).status, 401, 'the status JSON needs the admin token');
      const tokenFile = /admin token in (\S+)\)/.exec(out)?.[1];
      assert.ok(tokenFile, `the ready line names the generated admin token file: ${out}`);
      assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
      const adminToken = readFileSync(tokenFile, 'utf8').trim();
      assert.ok(!out.includes(adminToken), 'the token itself is never printed');
      const status = (await (await fetch(`${url}/_kiln/balancer`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as { affinity: string; nodes: { name: string }[] };
      assert.equal(status.affinity, 'none');
      assert.deepEqual(status.nodes.map((n) => n.name), ['from-file', 'from-flag']);
      assert.equal(((await (await fetch(`${url}/x?y=1`)).json()) as { url: string }).url, '/x?y=1');
      child.kill('SIGTERM');
      assert.equal((await exited).code, 0, 'stops cleanly on SIGTERM');
    } finally {
      child.kill('SIGKILL');
      backend.close();
      removeDir(dir);
    }
  });

  it('refuses a bad limit up front, naming the flag or the option', async () => {
    const child = spawn(process.execPath, [KILN_BIN, 'balancer', '--node', 'a=http://127.0.0.1:1', '--port', '0', '--queue-timeout-ms', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = trackChild(child);
    let out = '';
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const { code } = await exited;
    assert.notEqual(code, 0);
    assert.match(out, /--queue-timeout-ms must be an integer from 1 .*KILN_ERR_INVALID_OPTION/);
    for (const [option, value] of [['maxConnectionsPerClient', 0], ['headersTimeoutMs', 'fast'], ['upstreamSockets', 1.5]] as const) {
      assert.throws(
        () => new KilnBalancer({ nodes: [{ name: 'a', url: 'http://127.0.0.1:1' }], [option]: value }),
        (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && err.message.includes(`"${option}"`),
      );
    }
  });
});
