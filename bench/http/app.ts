/**
 * The one Express app every system of the HTTP benchmark runs: the same routes, only
 * the session middleware differs (BENCH_SYSTEM):
 *   plain          no session at all (the limit)
 *   memory-store   express-session + MemoryStore
 *   connect-redis  express-session + connect-redis 9 (node-redis client)
 *   kiln           kiln/express on BENCH_ENGINE (kiln://… or redis://…)
 * express-session is set up as the reference measurement: resave false,
 * saveUninitialized false, cookie maxAge one day.
 *
 * GET /__bench reports what the process did since the last call: CPU time and what it
 * sent to its store (for stores that live in the process or that we cannot observe
 * from outside).
 */
import { cpuUsage } from 'node:process';
import express, { type Request, type Response, type NextFunction, type RequestHandler } from 'express';
import expressSession from 'express-session';
import { session as kilnSession } from '../../src/adapters/express/index.js';
import { connectEngine } from '../../src/engines/connect.js';
import type { Engine } from '../../src/engines/engine.js';

const system = process.env['BENCH_SYSTEM'] ?? 'plain';
const SECRET = 'bench-secret-0123456789';
const DAY = 24 * 60 * 60 * 1000;

type Session = Record<string, unknown> & { save?: (cb: (err?: unknown) => void) => void };
const sess = (req: Request) => (req as unknown as { session: Session }).session;

/** Calls to a store in the process (MemoryStore): counted by wrapping it. */
const storeTraffic = { calls: 0, bytes: 0 };
let engine: Engine | undefined;
let middleware: RequestHandler | undefined;
let closeStore: () => Promise<void> = async () => undefined;

if (system === 'memory-store') {
  const store = new expressSession.MemoryStore();
  countMemoryStore(store);
  middleware = expressSession({ secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: DAY }, store });
} else if (system === 'connect-redis') {
  const { createClient } = await import('redis');
  const { RedisStore } = await import('connect-redis');
  const client = createClient({ url: process.env['BENCH_REDIS'] });
  await client.connect();
  closeStore = async () => void (await client.quit());
  middleware = expressSession({ secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: DAY }, store: new RedisStore({ client: countRedisCommands(client) }) });
} else if (system === 'kiln') {
  const url = process.env['BENCH_ENGINE'];
  if (!url) throw new Error('BENCH_ENGINE is required for BENCH_SYSTEM=kiln');
  engine = connectEngine(url, { name: process.env['NODE_NAME'] ?? 'bench' });
  middleware = kilnSession({
    secret: SECRET,
    engine,
    cookie: { maxAge: DAY },
    saveUninitialized: false,
    commitMode: 'sync',
    // The balancer routes by the id's suffix only in 'route' mode; the benchmark's
    // no-affinity rows spread requests round-robin on purpose.
    ...(process.env['NODE_NAME'] ? { route: process.env['NODE_NAME'] } : {}),
  });
} else if (system !== 'plain') {
  throw new Error(`unknown BENCH_SYSTEM ${system}`);
}

function countMemoryStore(store: expressSession.MemoryStore): void {
  const s = store as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const method of ['get', 'set', 'touch', 'destroy'] as const) {
    const original = s[method]!.bind(store);
    s[method] = (...args: unknown[]) => {
      storeTraffic.calls++;
      if (method === 'set' || method === 'touch') storeTraffic.bytes += JSON.stringify(args[1]).length;
      return original(...args);
    };
  }
}

/** connect-redis's commands, counted (the bytes are read from redis-server itself). */
function countRedisCommands<T extends object>(client: T): T {
  const commands = new Set(['get', 'set', 'expire', 'del', 'mGet', 'scanIterator']);
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof prop !== 'string' || !commands.has(prop) || typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        storeTraffic.calls++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');
// The balancer's health check, before the session middleware: it carries no cookie.
app.get('/healthz', (_req: Request, res: Response) => void res.send('ok'));
if (middleware) app.use(middleware);

/** A small session (~100 B): a user, a role, a visit counter and a one-line cart. */
function smallSession(s: Session, i: number): void {
  s['user'] = `user-${String(i).padStart(5, '0')}`;
  s['role'] = 'member';
  s['visits'] = 0;
  s['cart'] = [{ sku: 'SKU-1001', qty: 1 }];
}

/** A 20 KB session: an array of 160 small objects (a saved basket, a wizard's state). */
export const BIG_ITEMS = 160;
function bigSession(s: Session, i: number): void {
  s['user'] = `user-${String(i).padStart(5, '0')}`;
  s['items'] = Array.from({ length: BIG_ITEMS }, (_, k) => ({
    sku: `SKU-${String(10_000 + k)}`,
    name: `Catalogue item number ${k} in a long list`,
    qty: 1,
    price: 1250 + k,
    tags: ['seasonal', 'in-stock'],
    addedAt: 1_764_000_000_000 + k,
  }));
}

app.post('/setup', (req: Request, res: Response) => {
  if (system === 'plain') return void res.json({ ok: true });
  const i = Number(req.query['i'] ?? 0);
  if (req.query['shape'] === 'big') bigSession(sess(req), i);
  else smallSession(sess(req), i);
  res.json({ ok: true });
});

app.get('/read', (req: Request, res: Response) => {
  const s = system === 'plain' ? { user: 'user-00000', visits: 0 } : sess(req);
  res.json({ user: s['user'] ?? null, visits: s['visits'] ?? 0 });
});

app.post('/write', (req: Request, res: Response) => {
  if (system === 'plain') return void res.json({ visits: 1 });
  const s = sess(req);
  const visits = ((s['visits'] as number | undefined) ?? 0) + 1;
  s['visits'] = visits;
  res.json({ user: s['user'] ?? null, visits });
});

/** Changes one small field of the 20 KB session. */
let bigCursor = 0;
app.post('/big-write', (req: Request, res: Response) => {
  const k = bigCursor++ % BIG_ITEMS;
  if (system === 'plain') return void res.json({ qty: 1 });
  const items = sess(req)['items'] as { qty: number }[] | undefined;
  if (!items) return void res.status(409).json({ error: 'no big session' });
  items[k]!.qty++;
  res.json({ qty: items[k]!.qty });
});

app.post('/incr', (req: Request, res: Response) => {
  if (system === 'plain') return void res.json({ n: 0 });
  const s = sess(req);
  const n = ((s['n'] as number | undefined) ?? 0) + 1;
  s['n'] = n;
  res.json({ n });
});

app.get('/count', (req: Request, res: Response) => {
  res.json({ n: system === 'plain' ? null : ((sess(req)['n'] as number | undefined) ?? 0) });
});

let lastCpu = cpuUsage();
let lastAt = process.hrtime.bigint();
let lastEngine = { requests: 0, bytes: 0 };
app.get('/__bench', (_req: Request, res: Response) => {
  const cpu = cpuUsage(lastCpu);
  const now = process.hrtime.bigint();
  const wallMs = Number(now - lastAt) / 1e6;
  const traffic = engine?.traffic?.() ?? { requests: 0, bytes: 0 };
  const report = {
    cpuMs: (cpu.user + cpu.system) / 1000,
    wallMs,
    store: engine
      ? { calls: traffic.requests - lastEngine.requests, bytes: traffic.bytes - lastEngine.bytes }
      : { ...storeTraffic },
  };
  lastCpu = cpuUsage();
  lastAt = now;
  lastEngine = traffic;
  storeTraffic.calls = 0;
  storeTraffic.bytes = 0;
  res.json(report);
});

app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
  res.status(500).json({ error: (err as { code?: string }).code ?? String(err) });
});

const server = app.listen(Number(process.env['PORT'] ?? 0), '127.0.0.1', () => {
  const address = server.address();
  console.log(`listening on ${typeof address === 'object' && address ? address.port : 0}`);
});
server.keepAliveTimeout = 60_000;
process.on('SIGTERM', () => {
  server.close();
  void closeStore().finally(() => process.exit(0));
});
