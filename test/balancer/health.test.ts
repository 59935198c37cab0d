import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { HealthChecker } from '../../src/balancer/health.js';
import { BackendNode } from '../../src/balancer/node-table.js';
import { sleep, waitFor } from '../helpers/processes.js';

/** A raw TCP node on loopback: `onSocket` per connection; stop() destroys what is open and closes it. */
async function rawNode(onSocket: (socket: Socket) => void): Promise<{ url: string; stop: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`,
    stop: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A node being SIGKILLed can accept a connection for a moment and then reset it: not a
 * refusal. A probe after a failed request must still take the node out; a routine check
 * must not (one reset is not `fall` failures).
 */
describe('balancer health checks on a node that accepts and resets', () => {
  let server: Server;
  let url: string;
  before(async () => {
    server = createServer((socket) => socket.resetAndDestroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const checker = (node: BackendNode, changes: boolean[]) => new HealthChecker([node], { path: '/healthz', intervalMs: 60_000, timeoutMs: 1_000, fall: 3 }, (_n, healthy) => changes.push(healthy));

  it('a routine check counts one failure and keeps the node', async () => {
    const node = new BackendNode('app-1', url);
    const changes: boolean[] = [];
    await checker(node, changes).checkAll();
    assert.equal(node.consecutiveFailures, 1);
    assert.equal(node.healthy, true);
    assert.deepEqual(changes, []);
  });

  it('a probe after a failed request marks the node down at once', async () => {
    const node = new BackendNode('app-1', url);
    const changes: boolean[] = [];
    checker(node, changes).probe(node);
    await waitFor(() => changes.length > 0, 2_000, 'the probe ended');
    assert.equal(node.healthy, false);
    assert.deepEqual(changes, [false]);
  });
});

/**
 * A node that accepts and never answers, checked more often than a check may last
 * (healthIntervalMs below healthTimeoutMs): checks must not pile up, one per node at a time.
 */
describe('balancer health checks on a node slower than the interval', () => {
  let url: string;
  let stop: () => Promise<void>;
  let accepted = 0;
  before(async () => {
    ({ url, stop } = await rawNode(() => void accepted++));
  });
  after(() => stop());

  it('a routine check still running is not started again', async () => {
    accepted = 0;
    const node = new BackendNode('app-1', url);
    const checker = new HealthChecker([node], { path: '/healthz', intervalMs: 50, timeoutMs: 1_000, fall: 3 }, () => undefined);
    checker.start();
    try {
      await sleep(700);
      assert.equal(accepted, 1, `${accepted} checks under way at once`);
      await waitFor(() => accepted === 2, 2_000, 'the next check once the first timed out');
    } finally {
      checker.stop();
    }
  });

  it('a probe while a routine check runs starts none, and makes that check count as the probe', async () => {
    accepted = 0;
    const node = new BackendNode('app-1', url);
    const changes: boolean[] = [];
    const checker = new HealthChecker([node], { path: '/healthz', intervalMs: 60_000, timeoutMs: 300, fall: 3 }, (_n, healthy) => changes.push(healthy));
    const routine = checker.checkAll();
    checker.probe(node);
    await routine;
    assert.equal(accepted, 1);
    assert.equal(node.healthy, false, 'one failure after a failed request marks the node down');
    assert.deepEqual(changes, [false]);
  });
});

/**
 * A check answered well just before the node died: a probe that came meanwhile folded
 * into it, and its success must not swallow the probe (the node would stay in the
 * rotation until `fall` routine failures).
 */
describe('balancer health checks: a probe during a check that then succeeds', () => {
  let url: string;
  let stop: () => Promise<void>;
  let accepted = 0;
  before(async () => {
    ({ url, stop } = await rawNode((socket) => {
      // The first check is answered, late; then the node is gone (it resets).
      if (++accepted > 1) {
        socket.resetAndDestroy();
        return;
      }
      setTimeout(() => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'), 300);
    }));
  });
  after(() => stop());

  it('runs the probe once more after the check it folded into succeeded', async () => {
    const node = new BackendNode('app-1', url);
    const changes: boolean[] = [];
    const checker = new HealthChecker([node], { path: '/healthz', intervalMs: 60_000, timeoutMs: 1_000, fall: 3 }, (_n, healthy) => changes.push(healthy));
    const routine = checker.checkAll();
    await waitFor(() => accepted === 1, 2_000, 'the routine check to reach the node');
    checker.probe(node);
    await routine;
    assert.equal(node.healthy, true, 'the routine check was answered 200');
    await waitFor(() => changes.length > 0, 2_000, 'the probe to run after it');
    assert.equal(accepted, 2);
    assert.equal(node.healthy, false, 'the probe found the node gone');
    assert.deepEqual(changes, [false]);
  });
});
