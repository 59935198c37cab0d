/**
 * The benchmark's Fastify app: the routes of bench/http/app.ts on Fastify 5, with only
 * the session plugin differing (BENCH_SYSTEM):
 *   plain          no session at all (the limit)
 *   memory-store   @fastify/session with its default store (an in-process MemoryStore)
 *   connect-redis  @fastify/session with connect-redis 9 as its store (node-redis client)
 *   kiln           kiln/fastify on BENCH_ENGINE (memory, kiln://… or redis://…)
 * Both plugins keep @fastify/session's defaults (rolling cookie) except
 * saveUninitialized false and a plain-HTTP cookie; cookie maxAge one day. Session fields
 * are read and written with `get`/`set`, the API both plugins share.
 */
import Fastify, { type FastifyRequest } from 'fastify';
import { kilnSession } from '../../src/adapters/fastify/index.js';
import { connectEngine } from '../../src/engines/connect.js';
import type { Engine } from '../../src/engines/engine.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { benchCommitMode, benchReporter, profileIfAsked, BIG_ITEMS, bigSession, connectRedisStore, countStoreCalls, DAY, SECRET, smallSession } from './app-common.js';

const system = process.env['BENCH_SYSTEM'] ?? 'plain';
const stopProfile = await profileIfAsked();
const app = Fastify({ keepAliveTimeout: 60_000 });
let engine: Engine | undefined;
let closeStore: () => Promise<void> = async () => undefined;

interface BenchSession {
  get(key: string): unknown;
  set(key: string, value: unknown): void;
}
type FastifyPluginLike = (...args: never[]) => unknown;
const sess = (request: FastifyRequest) => (request as unknown as { session: BenchSession }).session;

if (system === 'memory-store' || system === 'connect-redis') {
  // Loaded by a name TypeScript does not follow: @fastify/session's declarations of
  // FastifyRequest.session would clash with kiln/fastify's in this one program.
  const load = async (name: string) => ((await import(name)) as { default: FastifyPluginLike & { MemoryStore: new () => object } }).default;
  const fastifyCookie = await load('@fastify/cookie');
  const fastifySession = await load('@fastify/session');
  let store: object;
  if (system === 'connect-redis') {
    const redis = await connectRedisStore(process.env['BENCH_REDIS']);
    closeStore = redis.close;
    store = redis.store;
  } else {
    store = countStoreCalls(new fastifySession.MemoryStore());
  }
  await app.register(fastifyCookie as never);
  await app.register(fastifySession as never, { secret: SECRET, saveUninitialized: false, cookie: { maxAge: DAY, secure: false }, store } as never);
} else if (system === 'kiln') {
  const url = process.env['BENCH_ENGINE'];
  if (!url) throw new Error('BENCH_ENGINE is required for BENCH_SYSTEM=kiln (memory, kiln://… or redis://…)');
  engine = url === 'memory' ? createMemoryTier().engine() : connectEngine(url, { name: 'bench' });
  await app.register(kilnSession, { secret: SECRET, engine, saveUninitialized: false, cookie: { maxAge: DAY, secure: false }, commitMode: benchCommitMode() });
} else if (system !== 'plain') {
  throw new Error(`unknown BENCH_SYSTEM ${system}`);
}

const plain = system === 'plain';
app.get('/healthz', async () => 'ok');

app.post('/setup', async (request) => {
  if (plain) return { ok: true };
  const i = Number((request.query as Record<string, string>)['i'] ?? 0);
  const values = (request.query as Record<string, string>)['shape'] === 'big' ? bigSession(i) : smallSession(i);
  for (const [k, v] of Object.entries(values)) sess(request).set(k, v);
  return { ok: true };
});

app.get('/read', async (request) => {
  if (plain) return { user: 'user-00000', visits: 0 };
  const s = sess(request);
  return { user: s.get('user') ?? null, visits: s.get('visits') ?? 0 };
});

app.post('/write', async (request) => {
  if (plain) return { visits: 1 };
  const s = sess(request);
  const visits = ((s.get('visits') as number | undefined) ?? 0) + 1;
  s.set('visits', visits);
  return { user: s.get('user') ?? null, visits };
});

/** Changes one small field of the 20 KB session, in place (both plugins see the change). */
let bigCursor = 0;
app.post('/big-write', async (request, reply) => {
  const k = bigCursor++ % BIG_ITEMS;
  if (plain) return { qty: 1 };
  const items = sess(request).get('items') as { qty: number }[] | undefined;
  if (!items) return reply.status(409).send({ error: 'no big session' });
  items[k]!.qty++;
  return { qty: items[k]!.qty };
});

app.post('/incr', async (request) => {
  if (plain) return { n: 0 };
  const s = sess(request);
  const n = ((s.get('n') as number | undefined) ?? 0) + 1;
  s.set('n', n);
  return { n };
});

app.get('/count', async (request) => ({ n: plain ? null : ((sess(request).get('n') as number | undefined) ?? 0) }));

const report = benchReporter(() => engine);
app.get('/__bench', async () => report());

app.setErrorHandler((err, _request, reply) => void reply.status(500).send({ error: (err as { code?: string }).code ?? String(err) }));

const address = await app.listen({ port: Number(process.env['PORT'] ?? 0), host: '127.0.0.1' });
console.log(`listening on ${new URL(address).port}`);
process.on('SIGTERM', () => {
  void stopProfile()
    .then(() => app.close())
    .then(() => closeStore())
    .finally(() => process.exit(0));
});
