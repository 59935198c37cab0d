/**
 * The one Express app every system of the HTTP benchmark runs: the same routes, only
 * the session middleware differs (BENCH_SYSTEM):
 *   plain          no session at all (the limit)
 *   memory-store   express-session + MemoryStore
 *   connect-redis  express-session + connect-redis 9 (node-redis client)
 *   kiln           kiln/express on BENCH_ENGINE (memory, kiln://… or redis://…)
 * express-session is set up as the reference measurement: resave false,
 * saveUninitialized false, cookie maxAge one day.
 *
 * GET /__bench reports what the process did since the last call: CPU time and what it
 * sent to its store (for stores that live in the process or that we cannot observe
 * from outside).
 */
import express, { type Request, type Response, type NextFunction, type RequestHandler } from 'express';
import expressSession from 'express-session';
import { session as kilnSession } from '../../src/adapters/express/index.js';
import { connectEngine } from '../../src/engines/connect.js';
import type { Engine } from '../../src/engines/engine.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { benchCommitMode, benchReporter, profileIfAsked, BIG_ITEMS, bigSession, connectRedisStore, countStoreCalls, DAY, SECRET, smallSession } from './app-common.js';

const system = process.env['BENCH_SYSTEM'] ?? 'plain';
const stopProfile = await profileIfAsked();

type Session = Record<string, unknown> & { save?: (cb: (err?: unknown) => void) => void };
const sess = (req: Request) => (req as unknown as { session: Session }).session;

let engine: Engine | undefined;
let middleware: RequestHandler | undefined;
let closeStore: () => Promise<void> = async () => undefined;

if (system === 'memory-store') {
  middleware = expressSession({ secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: DAY }, store: countStoreCalls(new expressSession.MemoryStore()) });
} else if (system === 'connect-redis') {
  const redis = await connectRedisStore(process.env['BENCH_REDIS']);
  closeStore = redis.close;
  middleware = expressSession({ secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: DAY }, store: redis.store as expressSession.Store });
} else if (system === 'kiln') {
  const url = process.env['BENCH_ENGINE'];
  if (!url) throw new Error('BENCH_ENGINE is required for BENCH_SYSTEM=kiln (memory, kiln://… or redis://…)');
  engine = url === 'memory' ? createMemoryTier().engine() : connectEngine(url, { name: process.env['NODE_NAME'] ?? 'bench' });
  middleware = kilnSession({
    secret: SECRET,
    engine,
    cookie: { maxAge: DAY },
    saveUninitialized: false,
    commitMode: benchCommitMode(),
    // The balancer routes by the id's suffix only in 'route' mode; the benchmark's
    // no-affinity rows spread requests round-robin on purpose.
    ...(process.env['NODE_NAME'] ? { route: process.env['NODE_NAME'] } : {}),
  });
} else if (system !== 'plain') {
  throw new Error(`unknown BENCH_SYSTEM ${system}`);
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');
// The balancer's health check, before the session middleware: it carries no cookie.
app.get('/healthz', (_req: Request, res: Response) => void res.send('ok'));
if (middleware) app.use(middleware);

app.post('/setup', (req: Request, res: Response) => {
  if (system === 'plain') return void res.json({ ok: true });
  const i = Number(req.query['i'] ?? 0);
  Object.assign(sess(req), req.query['shape'] === 'big' ? bigSession(i) : smallSession(i));
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

const report = benchReporter(() => engine);
app.get('/__bench', (_req: Request, res: Response) => void res.json(report()));

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
  void stopProfile()
    .then(() => closeStore())
    .finally(() => process.exit(0));
});
