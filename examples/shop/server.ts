/**
 * Kiln shop: a small app whose page shows which node served you, your cart and your
 * login. `kiln demo` runs three of these behind `kiln balancer`.
 *
 *   PORT=3001 NODE_NAME=app-1 KILN_ENGINE=kiln://127.0.0.1:9510 KILN_TOKEN=… SESSION_SECRET=… node dist/examples/shop/server.js
 *
 * It is written on `node:http` with `kiln/http`, so the demo runs from an installed
 * package with nothing else to install; with Express the same routes are
 * `app.use(session(…))` from `kiln/express` and `req.session` (see the README).
 * In your own app the import is `from 'kiln/http'`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSessions, type KilnSessionObject } from '../../src/adapters/http/index.js';
import { toKilnError } from '../../src/errors/index.js';
import { attachLiveCart } from './live-cart.js';
import { SHOP_PAGE } from './page.js';

const port = Number(process.env['PORT'] ?? 3000);
const host = process.env['HOST'] ?? '127.0.0.1';
const node = process.env['NODE_NAME'] ?? `shop-${process.pid}`;
const engine = process.env['KILN_ENGINE'] || undefined;
const MAX_BODY_BYTES = 16 * 1024;

interface CartLine {
  sku: string;
  qty: number;
}

const sessionOptions = {
  secret: (process.env['SESSION_SECRET'] ?? 'kiln-shop-demo-secret').split(','),
  route: node,
  cookie: { maxAge: 7 * 86_400_000, secure: 'auto' as const },
  idleTimeout: 24 * 3600_000,
  // The shop listens on loopback behind kiln balancer, whose X-Forwarded-Proto says whether the visitor used TLS.
  proxy: true,
};
const sessions = createSessions({ ...sessionOptions, engine });

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.end(JSON.stringify(body));
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    return body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
  } catch {
    throw new HttpError(400, 'BAD_REQUEST', 'the body is not JSON');
  }
}

const cartOf = (session: KilnSessionObject): CartLine[] => (session['cart'] as CartLine[] | undefined) ?? [];

// A visitor who has stored nothing has no session yet (an uninitialized one is never
// saved), so the page shows no id rather than one that will not exist after the next click.
const view = (session: KilnSessionObject) => {
  const stored = session['user'] !== undefined || session['cart'] !== undefined;
  return { node, sessionId: stored ? session.id : null, data: { user: session['user'] ?? null, cart: cartOf(session) } };
};

async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const method = req.method ?? 'GET';
  // Health checks and the page itself need no session (and must not create one).
  if (method === 'GET' && path === '/healthz') return send(res, 200, { ok: true, node });
  if (method === 'GET' && path === '/') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(live ? SHOP_PAGE : SHOP_PAGE.replace('data-live="ws"', 'data-live="poll"'));
    return;
  }
  if (!path?.startsWith('/api/')) return send(res, 404, { code: 'NOT_FOUND', message: `${method} ${path} is not a route` });
  const body = method === 'POST' ? await readJson(req) : {};
  const session = (await sessions.load(req, res))!;
  switch (`${method} ${path}`) {
    case 'GET /api/session':
      return send(res, 200, view(session));
    case 'GET /api/cart':
      return send(res, 200, { node, items: cartOf(session) });
    case 'POST /api/cart': {
      const sku = String(body['sku'] ?? '').slice(0, 64);
      const qty = Math.max(1, Math.min(100, Number(body['qty'] ?? 1) | 0));
      if (!sku) throw new HttpError(400, 'BAD_REQUEST', 'sku is required');
      const cart = session['cart'] as CartLine[] | undefined;
      if (!cart) session['cart'] = [{ sku, qty }];
      else {
        const line = cart.find((l) => l.sku === sku);
        if (line) line.qty += qty;
        else cart.push({ sku, qty });
      }
      return send(res, 200, { node, items: cartOf(session) });
    }
    case 'DELETE /api/cart':
      delete session['cart'];
      return send(res, 200, { node, items: [] });
    case 'POST /api/login': {
      const user = String(body['user'] ?? '').trim().slice(0, 64);
      if (!user) throw new HttpError(400, 'BAD_REQUEST', 'user is required');
      await session.regenerate({ keep: ['cart'] });
      session.principal = user;
      session['user'] = user;
      return send(res, 200, view(session));
    }
    case 'POST /api/logout':
      await session.destroy();
      return send(res, 200, { node, ok: true });
    case 'POST /api/logout-everywhere':
      return send(res, 200, { node, ended: await session.logoutEverywhere() });
    default:
      return send(res, 404, { code: 'NOT_FOUND', message: `${method} ${path} is not a route` });
  }
}

const server = createServer((req, res) => {
  route(req, res).catch((err: unknown) => {
    if (res.headersSent) return void res.destroy();
    if (err instanceof HttpError) return send(res, err.status, { code: err.code, message: err.message });
    // The status of the errors table (503 + Retry-After while the tier is away, 409 for a
    // conflict…), so browsers and balancers know what to do with it.
    const e = toKilnError(err);
    for (const [name, value] of Object.entries(e.headers ?? {})) res.setHeader(name, value);
    send(res, e.status, { code: e.code, message: e.message });
  });
});
// The live cart shares the HTTP sessions' client (one set of leases and one near cache per node).
const live = await attachLiveCart(server, { ...sessionOptions, engine: sessions.client }, node);
server.listen(port, host, () => {
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
