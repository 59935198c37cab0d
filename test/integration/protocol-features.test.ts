import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { encodeFrame, FrameParser, PROTOCOL_VERSION } from '../../src/protocol/frame.js';
import { BINARY_COMMIT_FEATURE, decodeCommitBody, encodeBody, MessageType } from '../../src/protocol/messages.js';
import { generateSessionId } from '../../src/session/id.js';

/**
 * The client picks the commit's encoding from what the server it is connected to
 * announces. A kiln server of an older version (no `features` in its Welcome) cannot be
 * started here, so a peer answering as one stands in for it; the current server's side
 * is covered by the conformance and bad-input suites.
 */
async function peer(features: string[] | undefined): Promise<{ server: Server; port: number; commits: Uint8Array[] }> {
  const commits: Uint8Array[] = [];
  const server = createServer((socket: Socket) => {
    const parser = new FrameParser();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of parser.push(chunk).frames) {
        if (frame.type === MessageType.Hello) {
          const welcome = { version: PROTOCOL_VERSION, epoch: 'e1', serverId: 's1', maxFrameBytes: 1 << 20, limits: {}, ...(features ? { features } : {}) };
          socket.write(encodeFrame(MessageType.Welcome, frame.requestId, encodeBody(welcome)));
        } else if (frame.type === MessageType.Commit) {
          commits.push(Buffer.from(frame.body));
          socket.write(encodeFrame(MessageType.Ok, frame.requestId, encodeBody({ version: 1, duplicate: false })));
        } else {
          socket.write(encodeFrame(MessageType.Ok, frame.requestId, encodeBody(null)));
        }
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port, commits };
}

describe('kiln protocol: optional encodings', () => {
  for (const [label, features, binary] of [
    ['a server announcing binary-commit gets binary commits', [BINARY_COMMIT_FEATURE], true],
    ['a server of an older version (no features) gets MessagePack commits', undefined, false],
    ['a server announcing other features only gets MessagePack commits', ['something-else'], false],
  ] as const) {
    it(label, async () => {
      const { server, port, commits } = await peer(features ? [...features] : undefined);
      const engine = connect(`kiln://127.0.0.1:${port}`, { token: 't', pingIntervalMs: 60_000 });
      try {
        await engine.connect();
        const request = { sessionId: generateSessionId(), token: 1, commitId: 'c1', baseVersion: 0, lastAccessedAt: 1, set: [['n', Uint8Array.of(7)]] as [string, Uint8Array][], del: [], idleTimeoutMs: 60_000 };
        assert.deepEqual(await engine.commit(request), { version: 1, duplicate: false });
        assert.equal(commits.length, 1);
        assert.equal(commits[0]![0] === 0xc1, binary, binary ? 'binary layout' : 'MessagePack');
        const read = decodeCommitBody(commits[0]!);
        assert.equal(read.sessionId, request.sessionId);
        assert.deepEqual([...read.set[0]![1]], [7]);
      } finally {
        await engine.close();
        server.close();
      }
    });
  }
});
