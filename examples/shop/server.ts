/**
 * Kiln shop: a small Express app whose page shows which node served you, your cart and
 * your login. `kiln demo` runs three of these behind `kiln balancer`.
 *
 *   PORT=3001 NODE_NAME=app-1 KILN_ENGINE=kiln://127.0.0.1:9510 KILN_TOKEN=… SESSION_SECRET=… node dist/examples/shop/server.js
 *
 * In your own app the import is `from 'kiln/express'`.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { session, type KilnSessionObject } from '../../src/adapters/express/index.js';
import { SHOP_PAGE } from './page.js';

const port = Number(process.env['PORT'] ?? 3000);
const host = process.env['HOST'] ?? '127.0.0.1';
const node = process.env['NODE_NAME'] ?? `shop-${process.pid}`;
const engine = process.env['KILN_ENGINE'] || undefined;

interface CartLine {
  sku: string;
  qty: number;
}

const sessions = session({
  secret: (process.env['SESSION_SECRET'] ?? 'kiln-shop-demo-secret').split(','),
  engine,
  route: node,
  cookie: { maxAge: 7 * 86_400_000, secure: 'auto' },
  idleTimeout: 24 * 3600_000,
});

const app = express();
app.disable('x-powered-by');
app.set('trust proxy', 'loopback');
app.get('/healthz', (_req, res) => void res.json({ ok: true, node }));
app.use(express.json({ limit: '16kb' }));
app.use(sessions);

const s = (req: Request) => (req as unknown as { session: KilnSessionObject }).session;
const sid = (req: Request) => (req as unknown as { sessionID: string }).sessionID;
const cartOf = (req: Request): CartLine[] => (s(req)?.['cart'] as CartLine[] | undefined) ?? [];
// A visitor who has stored nothing has no session yet (an uninitialized one is never
// saved), so the page shows no id rather than one that will not exist after the next click.
const view = (req: Request) => {
  const current = s(req);
  const stored = current !== undefined && (current['user'] !== undefined || current['cart'] !== undefined);
  return { node, sessionId: stored ? sid(req) : null, data: current ? { user: current['user'] ?? null, cart: cartOf(req) } : { user: null, cart: [] } };
};

app.get('/', (_req, res) => void res.type('html').send(SHOP_PAGE));
app.get('/api/session', (req, res) => void res.json(view(req)));
app.get('/api/cart', (req, res) => void res.json({ node, items: cartOf(req) }));
app.post('/api/cart', (req, res) => {
  const sku = String(req.body?.sku ?? '').slice(0, 64);
  const qty = Math.max(1, Math.min(100, Number(req.body?.qty ?? 1) | 0));
  if (!sku) {
    res.status(400).json({ code: 'BAD_REQUEST', message: 'sku is required' });
    return;
  }
  const cart = s(req)['cart'] as CartLine[] | undefined;
  if (!cart) s(req)['cart'] = [{ sku, qty }];
  else {
    const line = cart.find((l) => l.sku === sku);
    if (line) line.qty += qty;
    else cart.push({ sku, qty });
  }
  res.json({ node, items: cartOf(req) });
});
app.delete('/api/cart', (req, res) => {
  delete s(req)['cart'];
  res.json({ node, items: [] });
});
app.post('/api/login', async (req, res, next) => {
  try {
    const user = String(req.body?.user ?? '').trim().slice(0, 64);
    if (!user) {
      res.status(400).json({ code: 'BAD_REQUEST', message: 'user is required' });
      return;
    }
    await s(req).regenerate({ keep: ['cart'] });
    s(req).principal = user;
    s(req)['user'] = user;
    res.json(view(req));
  } catch (err) {
    next(err);
  }
});
app.post('/api/logout', async (req, res, next) => {
  try {
    await s(req).destroy();
    res.json({ node, ok: true });
  } catch (err) {
    next(err);
  }
});
app.post('/api/logout-everywhere', async (req, res, next) => {
  try {
    const ended = await s(req).logoutEverywhere();
    res.json({ node, ended });
  } catch (err) {
    next(err);
  }
});
app.use((err: Error & { code?: string }, _req: Request, res: Response, _next: NextFunction) => {
  res.status(500).json({ code: err.code ?? 'INTERNAL', message: err.message });
});

const server = app.listen(port, host, () => {
  const address = server.address();
  process.stdout.write(`shop ${node} listening on ${typeof address === 'object' && address ? address.port : port}\n`);
});
const stop = () => {
  server.close(() => void sessions.close().then(() => process.exit(0)));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 3000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
