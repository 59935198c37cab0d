import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import express from 'express';
import { openResponseBindings } from '../../src/adapters/core/http.js';
import { session } from '../../src/adapters/express/index.js';

/**
 * HTTP/1.1 pipelining: a response queued behind another never gets its 'close' event
 * when the connection dies (Node 20), so nothing of Kiln's may wait for that event alone.
 */
describe('kiln/express with pipelined requests', () => {
  it('a queued response whose connection died keeps no binding and no session lock', async () => {
    const middleware = session({ secret: 'pipelining-secret' });
    const app = express();
    app.use(middleware);
    const sessionOf = (req: unknown): Record<string, unknown> => (req as { session: Record<string, unknown> }).session;
    app.post('/login', (req, res) => {
      sessionOf(req)['user'] = 'ana';
      res.json({ ok: true });
    });
    // The first request is slow, so the second one's response waits in Node's queue.
    // (Its own response closes with the connection: it must not touch the session after.)
    app.get('/slow', (req, res) => {
      const user = sessionOf(req)['user'];
      void sleep(150).then(() => res.json({ user }));
    });
    app.post('/visit', (req, res) => {
      void sleep(60).then(() => {
        const s = sessionOf(req);
        s['visits'] = ((s['visits'] as number | undefined) ?? 0) + 1;
        res.json({ visits: s['visits'] });
      });
    });
    app.get('/visits', (req, res) => void res.json({ visits: sessionOf(req)['visits'] ?? 0 }));
    const server: Server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const login = await fetch(`${base}/login`, { method: 'POST' });
      const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
      assert.equal(openResponseBindings(), 0);

      const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
      socket.on('error', () => undefined);
      await once(socket, 'connect');
      socket.write(`GET /slow HTTP/1.1\r\nHost: x\r\nCookie: ${cookie}\r\n\r\nPOST /visit HTTP/1.1\r\nHost: x\r\nCookie: ${cookie}\r\nContent-Length: 0\r\n\r\n`);
      await sleep(30);
      socket.destroy();
      // Both handlers run to their end after the connection is gone.
      await sleep(400);
      assert.equal(openResponseBindings(), 0, 'no binding left behind the dead connection');

      // The session is free at once, and the queued request's commit is there.
      const started = Date.now();
      const after = await fetch(`${base}/visits`, { headers: { cookie } });
      assert.ok(Date.now() - started < 1000, `the session was held for ${Date.now() - started} ms`);
      assert.deepEqual(await after.json(), { visits: 1 });
      assert.equal(openResponseBindings(), 0);
    } finally {
      server.close();
      await middleware.close();
    }
  });
});
