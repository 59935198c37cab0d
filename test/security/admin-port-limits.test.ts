import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { removeDir, sleep, startKilnServer, tempDir, waitFor } from '../helpers/processes.js';
import { kilnRefuses } from './server-fixtures.js';
import { ADMIN_TOKEN } from './admin-helpers.js';

/**
 * The admin port can read and invalidate every session. It bound to the tier's --host
 * (0.0.0.0 when the app servers are on other machines) and took any number of
 * connections with Node's default timeouts. Tests stay on loopback: 127.0.0.2 stands for
 * the address the app servers reach.
 */

/** A TCP connection to host:port: resolves once connected (or with the error), and tells whether the server closed it. */
function tcp(host: string, port: number): Promise<{ socket: Socket; closed(): boolean; received(): string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let closed = false;
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('close', () => (closed = true));
    socket.once('connect', () => resolve({ socket, closed: () => closed, received: () => received }));
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ socket, closed: () => true, received: () => received, error }));
  });
}

/** One keep-alive HTTP request on an open socket; resolves with the status line. */
function requestOn(socket: Socket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      // The whole answer: chunked (the API's JSON) or with a length.
      const head = got.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(got);
      if (head >= 0 && (got.endsWith('\r\n0\r\n\r\n') || (length && got.length >= head + 4 + Number(length[1])))) {
        socket.off('data', onData);
        resolve(got.split('\r\n')[0]!);
      }
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error(`closed before an answer: ${got}`)));
    socket.write(`GET ${path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n\r\n`);
  });
}

async function start(args: string[]): Promise<{ server: Awaited<ReturnType<typeof startKilnServer>>; admin: URL; dir: string }> {
  const dir = tempDir('kiln-admin-limits-');
  writeFileSync(join(dir, 'admin.token'), ADMIN_TOKEN, { mode: 0o600 });
  const server = await startKilnServer({ args: ['--admin-port', '0', '--admin-token-file', join(dir, 'admin.token'), ...args] });
  const url = await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line');
  return { server, admin: new URL(url), dir };
}

describe('admin port: where it listens', () => {
  it('defaults to 127.0.0.1 whatever --host is; --admin-host names another address', async () => {
    const a = await start(['--host', '127.0.0.2']);
    try {
      assert.match(a.server.output(), /ready on 127\.0\.0\.2:\d+/);
      assert.equal(a.admin.hostname, '127.0.0.1', 'the admin line says loopback');
      const port = Number(a.admin.port);
      const onLoopback = await tcp('127.0.0.1', port);
      assert.equal(onLoopback.error, undefined, 'the admin port answers on 127.0.0.1');
      onLoopback.socket.destroy();
      // Port 0 on two addresses may give both the same number: then that port on .2 is the tier's.
      const tierPort = Number(/ready on 127\.0\.0\.2:(\d+)/.exec(a.server.output())![1]);
      const onTierAddress = await tcp('127.0.0.2', port);
      if (tierPort !== port) assert.equal(onTierAddress.error?.code, 'ECONNREFUSED', 'and not on the address the app servers reach');
      onTierAddress.socket.destroy();
    } finally {
      await a.server.kill();
      removeDir(a.dir);
    }
    const b = await start(['--host', '127.0.0.1', '--admin-host', '127.0.0.2']);
    try {
      assert.match(b.server.output(), /ready on 127\.0\.0\.1:\d+/);
      assert.equal(b.admin.hostname, '127.0.0.2');
      const port = Number(b.admin.port);
      assert.equal((await tcp('127.0.0.2', port)).error, undefined);
      const tierPort = Number(/ready on 127\.0\.0\.1:(\d+)/.exec(b.server.output())![1]);
      const onLoopback = await tcp('127.0.0.1', port);
      if (tierPort !== port) assert.equal(onLoopback.error?.code, 'ECONNREFUSED');
      onLoopback.socket.destroy();
      const res = await fetch(`${b.admin.origin}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(res.status, 200);
    } finally {
      await b.server.kill();
      removeDir(b.dir);
    }
  });

  it('refuses an empty --admin-host (it would listen on every interface)', async () => {
    // Without --admin-port: should the check ever go, this test must not open a port on every interface.
    const { code, output } = await kilnRefuses(['server', '--no-data', '--insecure-no-auth', '--port', '0', '--admin-host', '']);
    assert.notEqual(code, 0);
    assert.match(output, /KILN_ERR_INVALID_OPTION/);
    assert.match(output, /--admin-host/);
  });
});

describe('admin port: connections', () => {
  it('past 256 connections, new ones are closed at once while those open keep working; idle ones are closed after 10 s with 408; an event stream is not', async () => {
    const { server, admin, dir } = await start([]);
    const port = Number(admin.port);
    const sockets: Socket[] = [];
    try {
      // Nothing else has connected to this admin port: the test counts every connection.
      const working = await tcp('127.0.0.1', port);
      sockets.push(working.socket);
      assert.match(await requestOn(working.socket, '/api/overview'), /^HTTP\/1\.1 200/);
      const stream = await tcp('127.0.0.1', port);
      sockets.push(stream.socket);
      stream.socket.write(`GET /api/events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n\r\n`);
      await waitFor(() => stream.received().includes('event: hello'), 5000, 'the stream open');
      const openedAt = Date.now();
      // 254 idle connections fill the 256; the next ones are closed as they come.
      const flood: Awaited<ReturnType<typeof tcp>>[] = [];
      for (let i = 0; i < 254 + 10; i++) flood.push(await tcp('127.0.0.1', port));
      sockets.push(...flood.map((f) => f.socket));
      await waitFor(() => flood.filter((f) => f.closed()).length >= 10 || undefined, 5_000, 'the connections past the cap closed');
      const refused = flood.filter((f) => f.closed());
      assert.equal(refused.length, 10, `${refused.length} of ${flood.length} closed at once`);
      assert.ok(refused.every((f) => f.received() === ''), 'closed without an answer');
      // Those open keep working.
      assert.match(await requestOn(working.socket, '/api/overview'), /^HTTP\/1\.1 200/);
      assert.equal(stream.closed(), false);
      // The idle ones sent nothing: closed once the headers deadline passes, with 408 in the API's format.
      const idle = flood.filter((f) => !f.closed());
      await waitFor(() => idle.every((f) => f.closed()), 15_000, 'idle connections closed');
      assert.ok(Date.now() - openedAt >= 9000, 'not before the 10 s headers deadline');
      assert.match(idle[0]!.received(), /^HTTP\/1\.1 408 .*KILN_ERR_TIMEOUT/s);
      // Room again for new connections.
      const res = await fetch(`${admin.origin}/api/overview`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(res.status, 200);
      // The event stream outlives the whole-request deadline (15 s): it was read whole long ago.
      await sleep(Math.max(0, openedAt + 16_000 - Date.now()));
      assert.equal(stream.closed(), false, 'the event stream is still open after 16 s');
    } finally {
      for (const s of sockets) s.destroy();
      await server.kill();
      removeDir(dir);
    }
  });
});
