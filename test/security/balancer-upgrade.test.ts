/**
 * #22 item 2: an Upgrade header no longer turns the client's connection into a raw
 * tunnel to the app. Before, the balancer spliced the sockets whatever the app
 * answered, so a second request on the same connection reached the app unparsed, with
 * a client-chosen Host and X-Forwarded-*.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { sleep, waitFor } from '../helpers/processes.js';
import { rawExchange, startBalancerProcess, startRecordingBackend, type BalancerProcess, type RecordingBackend } from './balancer-fixtures.js';

const SMUGGLED = 'GET /second HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n';

function assertNothingSmuggled(backend: RecordingBackend): void {
  for (const seen of backend.seen) {
    assert.notEqual(seen.url, '/second', 'the pipelined request never reaches the app');
    assert.ok(!String(seen.headers['x-forwarded-for']).includes('6.6.6.6'), 'no client-chosen X-Forwarded-For');
    assert.notEqual(seen.headers['x-forwarded-proto'], 'https');
    assert.notEqual(seen.headers['host'], 'evil.example');
  }
}

describe('security: the balancer upgrade path (#22 item 2)', () => {
  let plainApp: RecordingBackend;
  let lb: BalancerProcess;
  let wsApp: RecordingBackend;
  let wsLb: BalancerProcess;

  before(async () => {
    plainApp = await startRecordingBackend('plain');
    wsApp = await startRecordingBackend('ws', { websocket: true });
    lb = await startBalancerProcess([plainApp]);
    wsLb = await startBalancerProcess([wsApp]);
  });
  after(async () => {
    await Promise.all([lb?.stop(), wsLb?.stop()]);
    await Promise.all([plainApp?.close(), wsApp?.close()]);
  });

  it('a WebSocket upgrade the app answers 404 is relayed as a response and the connection closed: a pipelined request never reaches the app', async () => {
    plainApp.seen.length = 0;
    const { text, closed } = await rawExchange(lb.port, `GET /missing HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n${SMUGGLED}`);
    assert.match(text, /^HTTP\/1\.1 404 /);
    assert.equal(closed, true, 'the balancer closes a connection it no longer parses');
    assert.equal(plainApp.seen.length, 1, 'only the first request reached the app');
    assert.equal(plainApp.seen[0]!.headers['x-forwarded-for'], '127.0.0.1');
    assertNothingSmuggled(plainApp);
  });

  it('an h2c upgrade is not offered to the app: the request goes as plain HTTP, and nothing follows it', async () => {
    plainApp.seen.length = 0;
    const { text, closed } = await rawExchange(lb.port, `GET /page HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n${SMUGGLED}`);
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.equal(closed, true);
    assert.equal(plainApp.seen.length, 1);
    assert.equal(plainApp.seen[0]!.headers['upgrade'], undefined, 'no Upgrade offered to the app');
    assert.equal(plainApp.seen[0]!.headers['http2-settings'], undefined, 'the Connection-listed header is dropped');
    assertNothingSmuggled(plainApp);
  });

  it('an h2c upgrade with a body is refused with 400, not tunnelled', async () => {
    plainApp.seen.length = 0;
    const { text } = await rawExchange(lb.port, `POST /page HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`);
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.equal(plainApp.seen.length, 0);
  });

  it('a client that drops its WebSocket: the app end of the tunnel is closed too', async () => {
    const openOnApp = (): Promise<number> => new Promise((resolve) => wsApp.server.getConnections((_err, n) => resolve(n)));
    const before = await openOnApp();
    const socket = connect(wsLb.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.write('GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    await waitFor(() => received.includes('\r\n\r\n'), 5_000, 'the 101');
    assert.equal(await openOnApp(), before + 1);
    socket.resetAndDestroy();
    await waitFor(async () => (await openOnApp()) === before, 3_000, 'the app end closed');
  });

  it('SIGTERM with a WebSocket open: the balancer closes it when the grace period ends and exits', { timeout: 30_000 }, async () => {
    const doomed = await startBalancerProcess([wsApp]);
    const socket = connect(doomed.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    try {
      socket.write('GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
      await waitFor(() => received.includes('\r\n\r\n'), 5_000, 'the 101');
      assert.match(received, /^HTTP\/1\.1 101 /);
      const started = performance.now();
      const exit = await Promise.race([doomed.stop('SIGTERM'), sleep(12_000).then(() => undefined)]);
      const ms = performance.now() - started;
      assert.ok(exit, 'the balancer exited');
      assert.equal(exit.code, 0);
      // The grace period is 5 s; the WebSocket gets all of it.
      assert.ok(ms >= 4_500 && ms < 9_000, `exited after ${ms.toFixed(0)} ms`);
      await closed;
    } finally {
      socket.destroy();
      await doomed.kill();
    }
  });

  it('a real WebSocket (101) is still spliced both ways, with the balancer-set X-Forwarded-For', async () => {
    wsApp.seen.length = 0;
    const socket = connect(wsLb.port, '127.0.0.1');
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.write('GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Forwarded-For: 6.6.6.6\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const deadline = Date.now() + 5000;
    while (!received.includes('\r\n\r\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.match(received, /^HTTP\/1\.1 101 /);
    assert.match(received, /X-Backend: ws/i);
    socket.write('ping-through-the-tunnel');
    while (!received.includes('ping-through-the-tunnel') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(received.includes('ping-through-the-tunnel'), 'echoed back through the splice');
    socket.destroy();
    assert.equal(wsApp.seen[0]!.headers['x-forwarded-for'], '127.0.0.1', 'the client could not choose its address');
  });
});
