import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { encodeCommitBody, MessageType } from '../../src/protocol/messages.js';
import { generateSessionId } from '../../src/session/id.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';
import { RawClient } from '../helpers/raw-client.js';

/**
 * Whatever a peer sends, the server answers that peer with a clear error, closes that
 * connection only, and keeps serving everyone else.
 */
describe('kiln server: bad input', () => {
  let server: ServerProcess;
  let kiln: SessionClient;
  let sessionId: string;
  let healthy: Promise<number>;
  let stopHealthy = false;

  before(async () => {
    server = await startKilnServer({ args: ['--max-frame-bytes', String(5 * 1024 * 1024)] });
    kiln = createSessionClient({ engine: connect(server.url, { token: server.token }) });
    sessionId = await kiln.withSession(null, (s) => {
      s.set('n', 0);
      return s.id;
    });
    // A well-behaved client keeps working through every test below.
    healthy = (async () => {
      let n = 0;
      while (!stopHealthy) {
        await kiln.withSession(sessionId, (s) => s.set('n', s.get<number>('n')! + 1));
        n++;
        await new Promise((r) => setTimeout(r, 2));
      }
      return n;
    })();
  });

  after(async () => {
    stopHealthy = true;
    const n = await healthy;
    const final = await kiln.withSession(sessionId, (s) => s.get<number>('n'));
    assert.equal(final, n, 'the healthy client lost nothing');
    assert.ok(n > 10, `the healthy client kept working (${n} increments)`);
    await kiln.close();
    assert.equal(server.child.exitCode, null, 'server alive');
    await server.kill();
  });

  async function expectClosedWith(raw: RawClient, code: string): Promise<void> {
    assert.equal(await raw.closedWithin(3000), true, 'the connection is closed');
    assert.equal(raw.lastError()?.code, code);
  }

  it('garbage bytes: protocol error, connection closed', async () => {
    const raw = await RawClient.open(server.port);
    raw.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    // "GET " read as a length is ~1.2 GB: refused before any body is read.
    await expectClosedWith(raw, 'KILN_ERR_FRAME_TOO_LARGE');
  });

  it('an oversized frame: refused from its header, connection closed', async () => {
    const raw = await RawClient.open(server.port);
    raw.hello(server.token);
    const header = Buffer.alloc(10);
    header.writeUInt32BE(6 * 1024 * 1024);
    header[4] = 1;
    header[5] = MessageType.Commit;
    raw.write(header);
    await expectClosedWith(raw, 'KILN_ERR_FRAME_TOO_LARGE');
  });

  it('a wrong token: auth error, connection closed; the engine reports it and stops retrying', async () => {
    const raw = await RawClient.open(server.port);
    raw.hello('wrong-token');
    await expectClosedWith(raw, 'KILN_ERR_AUTH');
    const engine = connect(server.url, { token: 'a-wrong-token-of-the-right-length-32' });
    await assert.rejects(engine.connect(), (err) => isKilnError(err, 'KILN_ERR_AUTH'));
    await assert.rejects(engine.stats(), (err) => isKilnError(err, 'KILN_ERR_AUTH'));
    await engine.close();
  });

  it('a frame from a newer protocol version: version error, connection closed', async () => {
    const raw = await RawClient.open(server.port);
    raw.send(MessageType.Hello, 1, { token: server.token }, 2);
    await expectClosedWith(raw, 'KILN_ERR_PROTOCOL_VERSION');
  });

  it('requests before the handshake, and malformed messages after it', async () => {
    const early = await RawClient.open(server.port);
    early.send(MessageType.Stats, 5, {});
    await expectClosedWith(early, 'KILN_ERR_PROTOCOL');
    const late = await RawClient.open(server.port);
    late.hello(server.token);
    late.send(MessageType.Commit, 7, { id: 42, tk: 'x' });
    await expectClosedWith(late, 'KILN_ERR_PROTOCOL');
    const unknown = await RawClient.open(server.port);
    unknown.hello(server.token);
    unknown.send(200, 9, {});
    await expectClosedWith(unknown, 'KILN_ERR_PROTOCOL');
  });

  it('client stats that are not plain JSON figures (a 64-bit integer decodes as a BigInt): a protocol error, not an internal one', async () => {
    const raw = await RawClient.open(server.port);
    raw.hello(server.token);
    raw.send(MessageType.ClientStats, 11, { requests: 2n ** 63n - 1n });
    const answer = await Promise.race([raw.reply(11), raw.closed.then(() => undefined)]);
    const code = answer ? (answer.body as { code?: string }).code : raw.lastError()?.code;
    assert.equal(code, 'KILN_ERR_PROTOCOL');
    raw.destroy();
  });

  it('commits in the binary layout: applied when whole, a protocol error when malformed', async () => {
    const raw = await RawClient.open(server.port);
    raw.hello(server.token);
    const id = generateSessionId();
    raw.send(MessageType.Acquire, 2, { id, timeoutMs: 1000 });
    const grant = await raw.reply(2);
    assert.equal(grant.type, MessageType.Ok);
    const token = (grant.body as { token: number }).token;
    const commit = { sessionId: id, token, commitId: 'raw-1', baseVersion: 0, lastAccessedAt: Date.now(), set: [['n', Uint8Array.of(7)]] as [string, Uint8Array][], del: [], idleTimeoutMs: 60_000, absoluteExpiresAt: 0 };
    raw.write(encodeFrame(MessageType.Commit, 3, encodeCommitBody(commit)));
    assert.deepEqual(await raw.reply(3), { type: MessageType.Ok, body: { version: 1, duplicate: false } });
    raw.send(MessageType.Load, 4, { id, token });
    const loaded = (await raw.reply(4)).body as { attrs: [string, Uint8Array][] };
    assert.deepEqual(loaded.attrs.map(([k, v]) => [k, [...v]]), [['n', [7]]]);
    // Announcing more set entries than the body can hold.
    const overCounted = Buffer.from(encodeCommitBody({ ...commit, commitId: 'raw-2', baseVersion: 1 }));
    overCounted.writeUInt32BE(1_000_000, overCounted.length - 4 - 8 - 4);
    raw.write(encodeFrame(MessageType.Commit, 5, overCounted));
    await expectClosedWith(raw, 'KILN_ERR_PROTOCOL');
    assert.match(raw.lastError()!.message, /"set"/);
  });

  it('fuzz: 150 connections of random bytes (raw, and inside valid frames after a handshake) never hurt the server', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ minLength: 1, maxLength: 2000 }), async (framed, type, bytes) => {
        const raw = await RawClient.open(server.port);
        if (framed) {
          raw.hello(server.token);
          // One in four a commit in the binary layout, so its decoder is fuzzed too.
          raw.write(type % 4 === 0 ? encodeFrame(MessageType.Commit, 3, Buffer.concat([Buffer.of(0xc1), bytes])) : encodeFrame(type, 3, bytes));
        } else {
          raw.write(bytes);
        }
        await raw.closedWithin(150);
        raw.destroy();
      }),
      { numRuns: 150 },
    );
    const raw = await RawClient.open(server.port);
    raw.hello(server.token);
    raw.send(MessageType.Ping, 2, {});
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(raw.frames.some((f) => f.type === MessageType.Ok && f.requestId === 2), 'server still answers');
    raw.destroy();
  });
});

describe('kiln server: connection limits', () => {
  it('refuses clients above --max-connections with a clear error', async () => {
    const server = await startKilnServer({ args: ['--max-connections', '2'] });
    try {
      // The cap counts authenticated clients (anonymous sockets have their own: see test/security).
      const first = await RawClient.open(server.port);
      first.hello(server.token);
      const second = await RawClient.open(server.port);
      second.hello(server.token);
      await Promise.all([first.reply(1), second.reply(1)]);
      const third = await RawClient.open(server.port);
      third.hello(server.token);
      assert.equal(await third.closedWithin(3000), true);
      assert.equal(third.lastError()?.code, 'KILN_ERR_TOO_MANY_CONNECTIONS');
      first.destroy();
      second.destroy();
    } finally {
      await server.kill();
    }
  });

  it('closes connections idle past --idle-connection-ms, while pinging clients stay', async () => {
    const server = await startKilnServer({ args: ['--idle-connection-ms', '400'] });
    try {
      const raw = await RawClient.open(server.port);
      raw.hello(server.token);
      const engine = connect(server.url, { token: server.token });
      await engine.connect();
      assert.equal(await raw.closedWithin(3000), true);
      assert.equal(raw.lastError()?.code, 'KILN_ERR_IDLE_CONNECTION');
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(engine.connected, true, 'heartbeats keep a live client connected');
      assert.equal(engine.counters.disconnects, 0);
      await engine.close();
    } finally {
      await server.kill();
    }
  });
});
