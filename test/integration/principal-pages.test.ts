import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Engine } from '../../src/engines/engine.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { errorFromWire } from '../../src/errors/index.js';
import { MessageType } from '../../src/protocol/messages.js';
import { generateSessionId } from '../../src/session/id.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDir, startKilnServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { RawClient } from '../helpers/raw-client.js';
import { commitOf, createSession, engineFor, newToken } from '../security/server-fixtures.js';

/**
 * A principal's sessions cross the wire a page at a time. They used to go in one answer,
 * which outgrew a frame past ~55,000 sessions (8 MiB frames): the client refused the
 * frame and closed its connection, losing every lease it held. Here a client with 4 KiB
 * frames meets the same past 30 sessions.
 */
describe('kiln server: a principal\'s sessions in pages (FindPrincipal)', () => {
  let server: ServerProcess;
  let app: Engine;
  let small: Engine;

  before(async () => {
    server = await startKilnServer();
    app = connect(server.url, { token: server.token, operationTimeoutMs: 10_000 });
    small = connect(server.url, { token: server.token, operationTimeoutMs: 10_000, maxFrameBytes: 4096 });
    await Promise.all([app.connect(), small.connect()]);
  });
  after(async () => {
    await Promise.all([app?.close(), small?.close()]);
    await server?.kill();
  });

  /** `n` sessions of `principal`, made `batch` at a time; their leases let go. */
  const login = async (principal: string, n: number, batch = 100, engine = app): Promise<string[]> => {
    const ids: string[] = [];
    for (let done = 0; done < n; done += batch) {
      const made = await Promise.all(Array.from({ length: Math.min(batch, n - done) }, () => createSession(engine, { user: principal }, { principal })));
      await Promise.all(made.map((s) => engine.release(s.id, s.token)));
      ids.push(...made.map((s) => s.id));
    }
    return ids;
  };

  it('a client whose frames hold 3 sessions reads all 40 in pages, and keeps its connection and its leases', async () => {
    const ids = await login('many', 40);
    await login('someone-else', 3);
    const held = await createSession(small, { n: 1 });
    const found = await small.findByPrincipal('many');
    assert.equal(found.length, 40, 'every session, none twice');
    assert.deepEqual(found.map((m) => m.id).sort(), [...ids].sort());
    assert.ok(found.every((m) => m.principal === 'many'));
    // The lease taken before is still good: the connection was not lost on the way.
    const ack = await small.commit(commitOf(held.id, held.token, 1, { n: 2 }));
    assert.equal(ack.version, 2);
    await small.release(held.id, held.token);
  });

  /** A raw peer past its handshake; `ask` sends one FindPrincipal and reads its answer. */
  const rawPeer = async (port: number, token: string) => {
    const raw = await RawClient.open(port);
    raw.hello(token);
    assert.equal((await raw.reply(1)).type, MessageType.Welcome);
    let requestId = 1;
    const ask = async (body: Record<string, unknown>): Promise<{ sessions: { id: string; principal: string }[]; next: { id: string; join: number } | null; total: number }> => {
      raw.send(MessageType.FindPrincipal, ++requestId, body);
      const reply = await raw.reply(requestId, 10_000);
      assert.equal(reply.type, MessageType.Ok, JSON.stringify(reply.body));
      return reply.body as never;
    };
    return { raw, ask };
  };

  it("goes on past a cursor whose session logged out between pages (over the wire)", async () => {
    const ids = await login('stale', 30);
    const { raw, ask } = await rawPeer(server.port, server.token);
    try {
      const first = await ask({ principal: 'stale', limit: 10 });
      assert.deepEqual(first.sessions.map((m) => m.id), ids.slice(20).reverse());
      assert.equal(first.total, 30);
      assert.equal(first.next?.id, ids[20], "the cursor names the page's last session");
      assert.equal(await app.destroy(ids[20]!), true);
      const second = await ask({ principal: 'stale', limit: 10, after: first.next });
      assert.deepEqual(second.sessions.map((m) => m.id), ids.slice(10, 20).reverse());
      assert.equal(second.total, 29);
    } finally {
      raw.destroy();
    }
  });

  it("in a namespace: 5,000 sessions in pages of 500, each page in one step from the last (an empty page would be a cut walk from the head), cursors in the namespace's ids, other namespaces' sessions of that principal apart", async () => {
    const dir = tempDir('kiln-pages-ns-');
    const tokenA = newToken();
    writeFileSync(join(dir, 'tokens'), `app-a ${tokenA}\n`);
    const nsServer = await startKilnServer({ args: ['--tokens-file', join(dir, 'tokens')] });
    const a = await engineFor(nsServer.url, tokenA);
    const other = await engineFor(nsServer.url, nsServer.token);
    const { raw, ask } = await rawPeer(nsServer.port, tokenA);
    try {
      const ids = await login('crowd', 5000, 250, a);
      await login('crowd', 20, 20, other); // the default namespace's 'crowd'
      const seen: string[] = [];
      let after: { id: string; join: number } | null = null;
      let pages = 0;
      do {
        // Past 4,096 sessions a walk from the head is cut: the last pages would come back empty.
        const page = await ask({ principal: 'crowd', limit: 500, after });
        assert.equal(page.total, 5000);
        assert.ok(page.sessions.length > 0, `page ${pages + 1} is not empty: it went on from the cursor, not from the head`);
        seen.push(...page.sessions.map((m) => m.id));
        if (page.next) assert.equal(page.next.id, seen[seen.length - 1], "the cursor is the namespace's own id of the page's last session");
        after = page.next;
        pages++;
      } while (after !== null);
      assert.equal(pages, 10);
      assert.deepEqual(seen, [...ids].reverse(), 'newest first, every one once, none of the other namespace');

      // Page 9's last session logs out before page 10 is asked for: the walk from the head
      // past 4,499 sessions stops at 4,096 steps with an empty page going on from there.
      let cursor: { id: string; join: number } | null = null;
      for (let page = 0; page < 9; page++) cursor = (await ask({ principal: 'crowd', limit: 500, after: cursor })).next;
      assert.equal(cursor?.id, ids[500]);
      assert.equal(await a.destroy(ids[500]!), true);
      const cut = await ask({ principal: 'crowd', limit: 500, after: cursor });
      assert.deepEqual(cut.sessions, [], 'a cut walk');
      assert.equal(cut.next?.join, cursor!.join, 'going on with the same join');
      const rest = await ask({ principal: 'crowd', limit: 500, after: cut.next });
      assert.deepEqual(rest.sessions.map((m) => m.id), ids.slice(0, 500).reverse());
      assert.equal(rest.next, null);
      assert.equal((await a.findByPrincipal('crowd')).length, 4999, 'through the client, one logged out');
      assert.equal((await other.findByPrincipal('crowd')).length, 20);
    } finally {
      raw.destroy();
      await Promise.all([a.close(), other.close()]);
      await nsServer.kill();
      removeDir(dir);
    }
  });

  it('newest login first, across pages', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(...(await login('ordered', 1)));
    assert.deepEqual((await small.findByPrincipal('ordered')).map((m) => m.id), [...ids].reverse());
  });

  it('a client of before pages (no "limit") gets one array while it fits a page of 1,000, and a clear error past it, on a connection that stays up', async () => {
    const raw = await RawClient.open(server.port);
    try {
      raw.hello(server.token);
      assert.equal((await raw.reply(1)).type, MessageType.Welcome);
      await login('thousand', 1000);
      raw.send(MessageType.FindPrincipal, 2, { principal: 'thousand' });
      const all = await raw.reply(2, 10_000);
      assert.equal(all.type, MessageType.Ok);
      assert.ok(Array.isArray(all.body) && all.body.length === 1000, 'one array of the 1,000');

      await login('thousand', 1);
      raw.send(MessageType.FindPrincipal, 3, { principal: 'thousand' });
      const refused = await raw.reply(3, 10_000);
      assert.equal(refused.type, MessageType.Error);
      const error = errorFromWire(refused.body);
      assert.equal(error.code, 'KILN_ERR_ANSWER_TOO_LARGE');
      assert.match(error.message, /more than 1000 sessions: ask for them in pages/);

      raw.send(MessageType.FindPrincipal, 4, { principal: 'thousand', limit: 1000 });
      const page = (await raw.reply(4, 10_000)).body as { sessions: unknown[]; next: { id: string; join: number } | null };
      assert.equal(page.sessions.length, 1000);
      assert.ok(page.next !== null, 'a cursor for the 1,001st');
      raw.send(MessageType.FindPrincipal, 5, { principal: 'thousand', limit: 1000, after: page.next });
      const rest = (await raw.reply(5, 10_000)).body as { sessions: { id: string }[]; next: unknown };
      assert.equal(rest.sessions.length, 1);
      assert.equal(rest.next, null);
      assert.equal(await raw.closedWithin(50), false, 'the connection stays up');
    } finally {
      raw.destroy();
    }
  });

  it('a malformed page request is refused with KILN_ERR_PROTOCOL naming the field (and, as any malformed message, closes that connection); a page limit above 1,000 is cut to 1,000', async () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ principal: 'many', limit: -1 }, 'limit'],
      [{ principal: 'many', limit: 1.5 }, 'limit'],
      [{ principal: 'many', limit: 5, after: 'a cursor' }, 'find.after'],
      [{ principal: 'many', limit: 5, after: { id: 'not an id!', join: 3 } }, 'id'],
      [{ principal: 'many', limit: 5, after: { id: generateSessionId(), join: -3 } }, 'join'],
      [{ principal: 'many', limit: 5, after: { id: generateSessionId() } }, 'join'],
    ];
    for (const [body, field] of bad) {
      const raw = await RawClient.open(server.port);
      try {
        raw.hello(server.token);
        await raw.reply(1);
        raw.send(MessageType.FindPrincipal, 2, body);
        const reply = await raw.reply(2);
        assert.equal(reply.type, MessageType.Error, JSON.stringify(body));
        const error = errorFromWire(reply.body);
        assert.equal(error.code, 'KILN_ERR_PROTOCOL', JSON.stringify(body));
        assert.ok(error.message.includes(field), `${JSON.stringify(body)}: ${error.message}`);
      } finally {
        raw.destroy();
      }
    }
    const raw = await RawClient.open(server.port);
    try {
      raw.hello(server.token);
      await raw.reply(1);
      raw.send(MessageType.FindPrincipal, 2, { principal: 'thousand', limit: 5000 });
      const page = (await raw.reply(2, 10_000)).body as { sessions: unknown[]; next: unknown };
      assert.equal(page.sessions.length, 1000);
      assert.equal(await raw.closedWithin(50), false);
    } finally {
      raw.destroy();
    }
  });
});
