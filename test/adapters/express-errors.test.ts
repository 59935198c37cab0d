import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import { session } from '../../src/adapters/express/index.js';
import { createSessions } from '../../src/adapters/http/index.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';

const SECRET = 'express-errors-secret-0123456789';

async function listen(app: express.Express | Server): Promise<{ server: Server; base: string }> {
  const server = app.listen(0, '127.0.0.1') as Server;
  await once(server, 'listening');
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: the request hung`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Another middleware's req.session that refuses to be set, while `guarded()`. */
function refuseSession(req: object, guarded: () => boolean): void {
  if (!guarded()) return;
  Object.defineProperty(req, 'session', {
    configurable: true,
    get: () => undefined,
    set: () => {
      throw Object.assign(new Error('req.session is read-only in this app'), { status: 418 });
    },
  });
}

/**
 * kiln/express binds the session to the response after the engine answered when the
 * session was not in this process's near cache. A throw there (here another
 * middleware's req.session setter) must reach Express's error handler and let the
 * session go, as it does when the session opens at once: not become an unhandled
 * rejection with the request hanging and the session locked.
 */
describe('kiln/express errors while binding a session opened asynchronously', () => {
  it("a throwing req.session setter answers through Express's error handler, and the session stays usable", async () => {
    const tier = createMemoryTier();
    const writer = session({ secret: SECRET, engine: tier.engine(), cookie: { secure: false } });
    const reader = session({ secret: SECRET, engine: tier.engine(), cookie: { secure: false } });
    const sessionOf = (req: Request) => (req as unknown as { session: Record<string, unknown> }).session;

    const a = express();
    a.use(writer);
    a.post('/write', (req: Request, res: Response) => {
      sessionOf(req)['n'] = 1;
      res.json({ ok: true });
    });
    a.get('/read', (req: Request, res: Response) => void res.json({ n: sessionOf(req)['n'] ?? null }));

    const b = express();
    let guarded = true;
    b.use((req: Request, _res: Response, next: NextFunction) => {
      refuseSession(req, () => guarded);
      next();
    });
    b.use(reader);
    b.get('/read', (req: Request, res: Response) => void res.json({ n: sessionOf(req)['n'] ?? null }));
    b.use((err: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => void res.status(err.status ?? 500).json({ message: err.message }));

    const [sa, sb] = await Promise.all([listen(a), listen(b)]);
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const write = await fetch(`${sa.base}/write`, { method: 'POST' });
      const cookie = write.headers.get('set-cookie')!.split(';')[0]!;
      // b has never seen this session: its open waits for the engine (a lease recall from a).
      const refused = await withDeadline(fetch(`${sb.base}/read`, { headers: { cookie } }), 5_000);
      assert.equal(refused.status, 418);
      assert.deepEqual(await refused.json(), { message: 'req.session is read-only in this app' });
      // The session was let go: the next request on it, here and there, runs at once.
      guarded = false;
      const again = await withDeadline(fetch(`${sb.base}/read`, { headers: { cookie } }), 2_000);
      assert.deepEqual(await again.json(), { n: 1 });
      const back = await withDeadline(fetch(`${sa.base}/read`, { headers: { cookie } }), 2_000);
      assert.deepEqual(await back.json(), { n: 1 });
      assert.deepEqual(rejections, []);
    } finally {
      process.off('unhandledRejection', onRejection);
      await Promise.all([sa, sb].map(({ server }) => new Promise((resolve) => server.close(resolve))));
      await Promise.all([writer.close(), reader.close()]);
    }
  });
  it("kiln/http: load() rejects with the setter's error, and the session stays usable", async () => {
    const tier = createMemoryTier();
    const writer = session({ secret: SECRET, engine: tier.engine(), cookie: { secure: false } });
    const sessions = createSessions({ secret: SECRET, engine: tier.engine(), cookie: { secure: false } });
    const a = express();
    a.use(writer);
    a.post('/write', (req: Request, res: Response) => {
      (req as unknown as { session: Record<string, unknown> }).session['n'] = 1;
      res.json({ ok: true });
    });
    let guarded = true;
    const b = createServer((req, res) => {
      refuseSession(req, () => guarded);
      const reply = (status: number, body: unknown) => {
        res.statusCode = status;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(body));
      };
      sessions.load(req, res).then(
        (s) => reply(200, { n: (s as Record<string, unknown> | undefined)?.['n'] ?? null }),
        (err: Error & { status?: number }) => reply(err.status ?? 500, { message: err.message }),
      );
    });
    const [sa, sb] = await Promise.all([listen(a), listen(b)]);
    try {
      const write = await fetch(`${sa.base}/write`, { method: 'POST' });
      const cookie = write.headers.get('set-cookie')!.split(';')[0]!;
      const refused = await withDeadline(fetch(`${sb.base}/`, { headers: { cookie } }), 5_000);
      assert.equal(refused.status, 418);
      guarded = false;
      const again = await withDeadline(fetch(`${sb.base}/`, { headers: { cookie } }), 2_000);
      assert.deepEqual(await again.json(), { n: 1 }, 'the session was let go at the refusal, not held until a timeout');
    } finally {
      await Promise.all([sa, sb].map(({ server }) => new Promise((resolve) => server.close(resolve))));
      await Promise.all([writer.close(), sessions.close()]);
    }
  });
});
