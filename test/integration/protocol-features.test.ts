import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { encodeFrame, FrameParser, PROTOCOL_VERSION } from '../../src/protocol/frame.js';
import { BINARY_COMMIT_FEATURE, BINARY_GRANT_FEATURE, PRINCIPAL_PAGES_FEATURE, STORAGE_BEHIND_FEATURE, decodeBody, decodeCommitBody, encodeBody, encodeGrantBody, grantFromWire, grantToWire, MessageType, record } from '../../src/protocol/messages.js';
import { encodeAttribute } from '../../src/session/codec.js';
import { generateSessionId } from '../../src/session/id.js';
import type { LeaseGrant } from '../../src/session/model.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';
import { RawClient } from '../helpers/raw-client.js';

/**
 * Each side uses an optional encoding only when the other announced it: the client's
 * commits follow the server's Welcome, the server's grants follow the client's Hello.
 * A kiln server or client of an older version (no `features`) cannot be started here,
 * so a peer answering as one stands in for it; the current server's side is checked on
 * a real server below, and by the conformance and bad-input suites.
 */
const id = generateSessionId();
/** The peer here answers any hello; the client still refuses a token shorter than any kiln server takes. */
const PEER_TOKEN = 'a-peer-token-of-the-length-a-kiln-server-takes';
const snapshot = { meta: { id, createdAt: 1, lastAccessedAt: 2, idleTimeoutMs: 60_000, absoluteExpiresAt: 0, principal: 'alice', version: 3 }, attributes: new Map([['cart', encodeAttribute('cart', ['book'])]]) };
const grant = { token: 5, epoch: 'e1', snapshot, releaseAfterUse: true };

async function peer(features: string[] | undefined, grantIn: 'binary' | 'msgpack' = 'msgpack'): Promise<{ server: Server; port: number; commits: Uint8Array[]; hellos: Record<string, unknown>[]; finds: Record<string, unknown>[] }> {
  const commits: Uint8Array[] = [];
  const hellos: Record<string, unknown>[] = [];
  const finds: Record<string, unknown>[] = [];
  const server = createServer((socket: Socket) => {
    const parser = new FrameParser();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of parser.push(chunk).frames) {
        if (frame.type === MessageType.Acquire) {
          socket.write(encodeFrame(MessageType.Ok, frame.requestId, grantIn === 'binary' ? encodeGrantBody(grant) : encodeBody(grantToWire(grant))));
        } else if (frame.type === MessageType.Hello) {
          hellos.push(record(decodeBody(frame.body), 'hello'));
          const welcome = { version: PROTOCOL_VERSION, epoch: 'e1', serverId: 's1', maxFrameBytes: 1 << 20, limits: {}, ...(features ? { features } : {}) };
          socket.write(encodeFrame(MessageType.Welcome, frame.requestId, encodeBody(welcome)));
        } else if (frame.type === MessageType.FindPrincipal) {
          // As a server of either version answers: pages when it announced them, else one array.
          finds.push(record(decodeBody(frame.body), 'find'));
          const sessions = [snapshot.meta];
          socket.write(encodeFrame(MessageType.Ok, frame.requestId, encodeBody(features?.includes(PRINCIPAL_PAGES_FEATURE) ? { sessions, next: null, total: 1 } : sessions)));
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
  return { server, port: (server.address() as { port: number }).port, commits, hellos, finds };
}

/** A client engine connected to a fresh peer, closed with it after `use`. */
async function withPeer(features: string[] | undefined, grantIn: 'binary' | 'msgpack', use: (engine: ReturnType<typeof connect>, seen: { commits: Uint8Array[]; hellos: Record<string, unknown>[]; finds: Record<string, unknown>[] }) => Promise<void>): Promise<void> {
  const { server, port, commits, hellos, finds } = await peer(features, grantIn);
  const engine = connect(`kiln://127.0.0.1:${port}`, { token: PEER_TOKEN, pingIntervalMs: 60_000 });
  try {
    await engine.connect();
    await use(engine, { commits, hellos, finds });
  } finally {
    await engine.close();
    server.close();
  }
}

const plainGrant = (g: LeaseGrant) => ({ ...g, snapshot: g.snapshot && { meta: g.snapshot.meta, attributes: [...g.snapshot.attributes].map(([k, v]) => [k, [...v]]) } });

describe("kiln protocol: a principal's sessions, from a server with pages and from one of before", () => {
  it('asks a server announcing principal-pages a page at a time, and one of before (no features) for one array', async () => {
    await withPeer([BINARY_COMMIT_FEATURE, PRINCIPAL_PAGES_FEATURE], 'msgpack', async (engine, { finds }) => {
      assert.deepEqual((await engine.findByPrincipal('alice')).map((m) => m.id), [id]);
      assert.equal(finds.length, 1);
      assert.equal(finds[0]!['principal'], 'alice');
      assert.equal(finds[0]!['limit'], 1000, '8 MiB frames hold 1,000 sessions of 256-character principals');
    });
    await withPeer(undefined, 'msgpack', async (engine, { finds }) => {
      assert.deepEqual((await engine.findByPrincipal('alice')).map((m) => m.id), [id]);
      assert.deepEqual(finds, [{ principal: 'alice' }], 'the request of before: no limit, no cursor');
    });
  });
});

describe('kiln protocol: optional encodings', () => {
  for (const [label, features, binary] of [
    ['a server announcing binary-commit gets binary commits', [BINARY_COMMIT_FEATURE], true],
    ['a server of an older version (no features) gets MessagePack commits', undefined, false],
    ['a server announcing other features only gets MessagePack commits', ['something-else'], false],
  ] as const) {
    it(label, async () => {
      await withPeer(features ? [...features] : undefined, 'msgpack', async (engine, { commits }) => {
        const request = { sessionId: generateSessionId(), token: 1, commitId: 'c1', baseVersion: 0, lastAccessedAt: 1, set: [['n', Uint8Array.of(7)]] as [string, Uint8Array][], del: [], idleTimeoutMs: 60_000 };
        assert.deepEqual(await engine.commit(request), { version: 1, duplicate: false });
        assert.equal(commits.length, 1);
        assert.equal(commits[0]![0] === 0xc1, binary, binary ? 'binary layout' : 'MessagePack');
        const read = decodeCommitBody(commits[0]!);
        assert.equal(read.sessionId, request.sessionId);
        assert.deepEqual([...read.set[0]![1]], [7]);
      });
    });
  }

  it('the client announces binary grants and reads a grant in either form', async () => {
    for (const form of ['binary', 'msgpack'] as const) {
      await withPeer([BINARY_COMMIT_FEATURE], form, async (engine, { hellos }) => {
        assert.deepEqual(hellos[0]!['features'], [BINARY_GRANT_FEATURE, STORAGE_BEHIND_FEATURE]);
        assert.deepEqual(plainGrant(await engine.acquire(id)), plainGrant({ sessionId: id, ...grant }), `${form} grant`);
      });
    }
  });
});

describe('kiln server: grants in the encoding the client asked for', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startKilnServer();
  });
  after(async () => {
    await server?.stop();
  });

  for (const [label, features, binary] of [
    ['a client announcing binary-grant gets binary grants', [BINARY_GRANT_FEATURE], true],
    ['a client of an older version (no features) gets MessagePack grants', undefined, false],
    ['a client announcing other features only gets MessagePack grants', ['something-else'], false],
  ] as const) {
    it(label, async () => {
      const client = await RawClient.open(server.port);
      try {
        client.hello(server.token, features ? [...features] : undefined);
        assert.equal((await client.rawReply(1)).type, MessageType.Welcome);
        const sessionId = generateSessionId();
        // The first grant has no session yet; commit one, give the lease back, take it again.
        client.send(MessageType.Acquire, 2, { id: sessionId, timeoutMs: 1000 });
        const first = await client.rawReply(2);
        assert.equal(first.type, MessageType.Ok);
        assert.equal(first.body[0] === 0xc1, binary, binary ? 'binary layout' : 'MessagePack');
        const lease = grantFromWire(binary ? first.body : decodeBody(first.body), sessionId);
        assert.equal(lease.snapshot, null);
        client.send(MessageType.Commit, 3, { id: sessionId, tk: lease.token, cid: 'c1', base: 0, la: Date.now(), set: [['cart', encodeAttribute('cart', ['book'])]], del: [], p: 'alice', it: 60_000, rel: true });
        assert.equal((await client.reply(3)).type, MessageType.Ok);
        client.send(MessageType.Acquire, 4, { id: sessionId, timeoutMs: 1000 });
        const second = await client.rawReply(4);
        assert.equal(second.body[0] === 0xc1, binary);
        const again = grantFromWire(binary ? second.body : decodeBody(second.body), sessionId);
        assert.equal(again.snapshot?.meta.version, 1);
        assert.equal(again.snapshot?.meta.principal, 'alice');
        assert.deepEqual([...again.snapshot!.attributes.get('cart')!], [...encodeAttribute('cart', ['book'])]);
      } finally {
        client.destroy();
      }
    });
  }
});

/**
 * A peer answering FindPrincipal as `answer` says, per connection (numbered from 1), with
 * a Welcome of that connection's epoch and limits; it may drop a connection instead of answering.
 */
async function principalPeer(welcome: (connection: number) => { epoch: string; limits?: Record<string, number> }, answer: (find: Record<string, unknown>, connection: number) => { body: unknown; drop?: boolean }): Promise<{ server: Server; port: number; finds: { connection: number; find: Record<string, unknown> }[] }> {
  const finds: { connection: number; find: Record<string, unknown> }[] = [];
  let connections = 0;
  const server = createServer((socket: Socket) => {
    const connection = ++connections;
    const parser = new FrameParser();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of parser.push(chunk).frames) {
        if (frame.type === MessageType.Hello) {
          const w = welcome(connection);
          socket.write(encodeFrame(MessageType.Welcome, frame.requestId, encodeBody({ version: PROTOCOL_VERSION, epoch: w.epoch, serverId: 's1', maxFrameBytes: 1 << 20, limits: w.limits ?? {}, features: [PRINCIPAL_PAGES_FEATURE] })));
        } else if (frame.type === MessageType.FindPrincipal) {
          const find = record(decodeBody(frame.body), 'find');
          finds.push({ connection, find });
          const { body, drop } = answer(find, connection);
          if (drop) socket.destroy();
          else socket.write(encodeFrame(MessageType.Ok, frame.requestId, encodeBody(body)));
        } else {
          socket.write(encodeFrame(MessageType.Ok, frame.requestId, encodeBody(null)));
        }
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port, finds };
}

describe("kiln protocol: a principal's pages, sized and read again", () => {
  const metaOf = (n: number) => ({ ...snapshot.meta, id: `${'p'.repeat(20)}${String(n).padStart(4, '0')}` });

  it('sizes its pages by the frame and the longest principal the server allows', async () => {
    const { server, port, finds } = await principalPeer(() => ({ epoch: 'e1', limits: { maxPrincipalLength: 4096 } }), () => ({ body: { sessions: [], next: null, total: 0 } }));
    const engine = connect(`kiln://127.0.0.1:${port}`, { token: PEER_TOKEN, pingIntervalMs: 60_000 });
    try {
      await engine.connect();
      await engine.findByPrincipal('alice');
      // (8 MiB − 1 KiB) ÷ (193 id + 256 + 3 × 4,096 principal bytes): 658 a page, where 256-character principals allow 1,000.
      assert.equal(finds[0]!.find['limit'], 658);
    } finally {
      await engine.close();
      server.close();
    }
  });

  it('reads again from the start when the server restarted between pages (its joins are renumbered)', async () => {
    const { server, port, finds } = await principalPeer(
      (connection) => ({ epoch: `e${connection}` }),
      (find, connection) => {
        // The first server answers page 1, then goes down before it answers page 2.
        if (connection === 1) return find['after'] === null ? { body: { sessions: [metaOf(1)], next: { id: metaOf(1).id, join: 5 }, total: 3 } } : { body: undefined, drop: true };
        // The restarted server: a cursor of before names joins it never made; from the start, all three.
        if (find['after'] !== null) return { body: { sessions: [metaOf(9)], next: null, total: 3 } };
        return { body: { sessions: [metaOf(1), metaOf(2), metaOf(3)], next: null, total: 3 } };
      },
    );
    const engine = connect(`kiln://127.0.0.1:${port}`, { token: PEER_TOKEN, pingIntervalMs: 60_000, operationTimeoutMs: 5000 });
    try {
      await engine.connect();
      const found = await engine.findByPrincipal('alice');
      assert.deepEqual(found.map((m) => m.id), [1, 2, 3].map((n) => metaOf(n).id), 'only the restarted server\'s answer from the start');
      assert.deepEqual(finds.map((f) => [f.connection, f.find['after'] === null]), [[1, true], [1, false], [2, true]]);
    } finally {
      await engine.close();
      server.close();
    }
  });
});
