import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { newToken, kilnRefuses } from '../security/server-fixtures.js';
import { KILN_BIN, removeDir, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';

/**
 * What the commands do with a bad flag: refuse it before anything listens, with a
 * KILN_ERR_ code and the flag's name, and exit. Before, a bad admin flag was found after
 * the server listened: it printed the error and kept serving, with no ready line and no
 * signal handler; an empty number flag (an unset shell variable) meant 0; a port in use
 * or a missing certificate was Node's stack trace.
 */
describe('kiln commands refuse bad flags up front, naming them', () => {
  let busy: Server;
  let busyPort = 0;
  before(async () => {
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    busyPort = (busy.address() as { port: number }).port;
  });
  after(() => new Promise<void>((resolve) => busy.close(() => resolve())));

  const token = newToken();
  const server = (...args: string[]) => kilnRefuses(['server', '--no-data', '--port', '0', ...args], { KILN_TOKEN: token });

  for (const [args, expected] of [
    [['--port', ''], /--port must be an integer from 0 to 65535 \(got ""\) \[KILN_ERR_INVALID_OPTION\]/],
    [['--port', '70000'], /--port must be an integer from 0 to 65535/],
    [['--max-leases-per-connection', ' '], /--max-leases-per-connection must be an integer/],
    [['--max-connections', '0x10'], /--max-connections must be an integer/],
    [['--max-connections', '0'], /--max-connections: .*"maxConnections" must be an integer from 1 .*\[KILN_ERR_INVALID_OPTION\]/],
    [['--max-session-bytes', '0'], /--max-session-bytes: .*"maxSessionBytes" must be an integer from 1 .*\[KILN_ERR_INVALID_OPTION\]/],
    [['--log-level', 'verbose'], /--log-level must be debug, info, warn, error, silent \(got "verbose"\) \[KILN_ERR_INVALID_OPTION\]/],
    [['--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem'], /"tls.cert" \(--tls-cert\): cannot read \/nonexistent\/cert.pem \(ENOENT\) \[KILN_ERR_INVALID_OPTION\]/],
    [['--admin-port', '0', '--admin-token-file', '/nonexistent/admin.token'], /--admin-token-file: cannot read \/nonexistent\/admin.token \(ENOENT\) \[KILN_ERR_INVALID_OPTION\]/],
    [['--admin-port', '70000'], /--admin-port must be an integer from 0 to 65535/],
    // Without --admin-port they used to be ignored in silence: the server ran with no admin API.
    [['--admin-token-file', '/nonexistent/admin.token'], /--admin-token-file needs --admin-port \[KILN_ERR_INVALID_OPTION\]/],
    [['--admin-read-token-file', '/nonexistent/read.token'], /--admin-read-token-file needs --admin-port \[KILN_ERR_INVALID_OPTION\]/],
    [['--admin-redact', 'password'], /--admin-redact needs --admin-port \[KILN_ERR_INVALID_OPTION\]/],
  ] as const) {
    it(`kiln server ${args.join(' ') || '""'}: refused before it listens, and it exits`, async () => {
      const r = await server(...args);
      assert.equal(r.code, 1, r.output);
      assert.match(r.output, expected);
      assert.doesNotMatch(r.output, /ready on|listening|\n\s+at /, 'nothing started, no stack trace');
    });
  }

  it('kiln server on a port in use: KILN_ERR_LISTEN naming the port and the cause; on an admin port in use it stops and exits', async () => {
    const onPort = await kilnRefuses(['server', '--no-data', '--port', String(busyPort)], { KILN_TOKEN: token });
    assert.equal(onPort.code, 1);
    assert.match(onPort.output, new RegExp(`the kiln server \\(port, --port\\) cannot listen on 127\\.0\\.0\\.1:${busyPort}: the port is in use by another process \\(EADDRINUSE\\).*\\[KILN_ERR_LISTEN\\]`));
    assert.doesNotMatch(onPort.output, /\n\s+at /);
    // The server listened already when its admin port failed: it stops rather than run on headless.
    const onAdmin = await kilnRefuses(['server', '--no-data', '--port', '0', '--admin-port', String(busyPort)], { KILN_TOKEN: token });
    assert.equal(onAdmin.code, 1);
    assert.match(onAdmin.output, new RegExp(`the admin server \\(port, --admin-port or --port\\) cannot listen on 127\\.0\\.0\\.1:${busyPort}.*\\[KILN_ERR_LISTEN\\]`));
    assert.match(onAdmin.output, /"msg":"stopped"/);
  });

  it('an empty --host (an unset variable) is refused by kiln server and kiln balancer, not read as every interface', async () => {
    // On a port in use: should the check ever go, nothing listens on every interface.
    const serverHost = await kilnRefuses(['server', '--no-data', '--port', String(busyPort), '--host', ''], { KILN_TOKEN: token });
    assert.equal(serverHost.code, 1);
    assert.match(serverHost.output, /--host must name an address \(default 127\.0\.0\.1\): an empty one would mean every interface \[KILN_ERR_INVALID_OPTION\]/);
    const balancerHost = await kilnRefuses(['balancer', '--node', 'a=http://127.0.0.1:1', '--port', String(busyPort), '--host', ' ']);
    assert.equal(balancerHost.code, 1);
    assert.match(balancerHost.output, /--host must name an address.*\[KILN_ERR_INVALID_OPTION\]/);
  });

  it('kiln balancer: a bad --log-level and a port in use are refused with their codes', async () => {
    const level = await kilnRefuses(['balancer', '--node', 'a=http://127.0.0.1:1', '--port', '0', '--log-level', 'verbose']);
    assert.equal(level.code, 1);
    assert.match(level.output, /--log-level must be .*\[KILN_ERR_INVALID_OPTION\]/);
    const port = await kilnRefuses(['balancer', '--node', 'a=http://127.0.0.1:1', '--port', String(busyPort)]);
    assert.equal(port.code, 1);
    assert.match(port.output, new RegExp(`the balancer \\(port, --port\\) cannot listen on 127\\.0\\.0\\.1:${busyPort}.*\\[KILN_ERR_LISTEN\\]`));
    assert.doesNotMatch(port.output, /\n\s+at /);
  });

  it('a mistyped option or command: one line with the code and the nearest name, not the whole help', async () => {
    const option = await kilnRefuses(['server', '--prot', '9512']);
    assert.equal(option.code, 2);
    assert.match(option.output, /kiln server: Unknown option '--prot'.*; did you mean --port\? \[KILN_ERR_INVALID_OPTION\]\nRun `kiln server --help` for its options\.\n$/);
    const command = await kilnRefuses(['sever']);
    assert.equal(command.code, 2);
    assert.match(command.output, /kiln: unknown command "sever"; did you mean "server"\? \[KILN_ERR_INVALID_ARGUMENT\]/);
    const conflicting = await kilnRefuses(['server', '--no-data', '--data', '/tmp/x'], { KILN_TOKEN: token });
    assert.match(conflicting.output, /--no-data and --data go one without the other.*\[KILN_ERR_INVALID_OPTION\]/);
  });

  it('a kiln server whose stdout reader went away still stops gracefully on SIGTERM (exit 0, its stop logged)', async () => {
    const child = spawn(process.execPath, [KILN_BIN, 'server', '--no-data', '--port', '0', '--log-level', 'info'], { env: { ...process.env, KILN_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => d.toString().includes('ready on') && resolve());
        void exited.then(() => reject(new Error(`exited: ${stderr}`)));
      });
      child.stdout.destroy(); // its "stopping" line now meets a closed pipe
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.match(stderr, /"msg":"stopped"/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a token file others may read is taken, with a warning that says how to fix it', async () => {
    const dir = tempDir();
    const file = join(dir, 'token');
    writeFileSync(file, `${newToken()}\n`, { mode: 0o644 });
    chmodSync(file, 0o644);
    const s = await startKilnServer({ args: ['--token-file', file] });
    try {
      assert.match(s.output(), new RegExp(`warning: --token-file ${file}: ${file} may be read by its group or others \\(mode 0644\\); chmod 600 ${file}`));
    } finally {
      await s.kill();
      removeDir(dir);
    }
  });

  it('an admin token generated into a temporary directory goes with the process', async () => {
    const s = await startKilnServer({ args: ['--admin-port', '0'] });
    let dir: string | undefined;
    try {
      const file = await waitFor(() => /admin token in (\S+?)\)$/m.exec(s.output())?.[1], 5_000, 'the admin line');
      dir = dirname(file);
      assert.ok(existsSync(file));
      assert.deepEqual(await s.stop('SIGTERM'), { code: 0, signal: null });
      assert.equal(existsSync(dir), false, `${dir} removed at exit`);
    } finally {
      await s.kill();
    }
  });
});
