import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Engine } from '../../src/engines/engine.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { errorFromWire } from '../../src/errors/index.js';
import { MessageType } from '../../src/protocol/messages.js';
import { generateSessionId } from '../../src/session/id.js';
import { startKilnServer, type ServerProcess } from '../helpers/processes.js';
import { RawClient } from '../helpers/raw-client.js';
import { commitOf, createSession } from '../security/server-fixtures.js';

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
  const login = async (principal: string, n: number, batch = 100): Promise<string[]> => {
    const ids: string[] = [];
    for (let done = 0; done < n; done += batch) {
      const made = await Promise.all(Array.from({ length: Math.min(batch, n - done) }, () => createSession(app, { user: principal }, { principal })));
      await Promise.all(made.map((s) => app.release(s.id, s.token)));
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
