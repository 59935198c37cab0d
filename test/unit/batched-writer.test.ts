import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { BatchedWriter, listen } from '../../src/util/net.js';

/**
 * Counts how the socket hands bytes to the system: one `_write` per lone chunk, one
 * `_writev` per gathered batch (Node's Writable calls exactly one of them per flush).
 */
function countFlushes(socket: Socket): { flushes: () => number } {
  let flushes = 0;
  const target = socket as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>;
  for (const method of ['_write', '_writev'] as const) {
    const original = target[method].bind(socket);
    target[method] = (...args: unknown[]) => {
      flushes++;
      return original(...args);
    };
  }
  return { flushes: () => flushes };
}

async function socketPair(): Promise<{ client: Socket; received: () => Buffer; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const server = createServer((peer) => peer.on('data', (chunk: Buffer) => chunks.push(chunk)));
  const port = await listen(server, 0, '127.0.0.1');
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  return {
    client,
    received: () => Buffer.concat(chunks),
    close: async () => {
      client.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

const frame = (i: number): Buffer => Buffer.from(`frame ${i};`);

describe('BatchedWriter', () => {
  it('sends the writes of one turn of the event loop in one system call, in order', async () => {
    const { client, received, close } = await socketPair();
    try {
      const { flushes } = countFlushes(client);
      const out = new BatchedWriter(client);
      for (let i = 0; i < 50; i++) out.write(frame(i));
      assert.equal(flushes(), 0, 'nothing leaves before the turn ends');
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(flushes(), 1, 'one flush for the whole turn');

      // A later turn is a batch of its own.
      for (let i = 50; i < 60; i++) out.write(frame(i));
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(flushes(), 2);

      const expected = Buffer.concat(Array.from({ length: 60 }, (_, i) => frame(i)));
      const deadline = Date.now() + 5_000;
      while (received().length < expected.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.equal(received().toString(), expected.toString());
    } finally {
      await close();
    }
  });

  it('writes that a promise makes later in the same turn join the batch', async () => {
    const { client, close } = await socketPair();
    try {
      const { flushes } = countFlushes(client);
      const out = new BatchedWriter(client);
      out.write(frame(0));
      await Promise.resolve();
      out.write(frame(1)); // a microtask of the same turn: an awaited commit's next frame
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(flushes(), 1);
    } finally {
      await close();
    }
  });
});
