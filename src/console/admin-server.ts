import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { MAX_LIST_LIMIT } from '../engines/engine.js';
import { KilnError } from '../errors/index.js';
import { decodeAttribute } from '../session/codec.js';
import { isValidSessionId } from '../session/id.js';
import { attributeBytes } from '../session/model.js';
import { listen } from '../util/net.js';
import { ServerMetrics } from './metrics.js';
import { CONSOLE_PAGE } from './page.js';
import type { ConsoleSource } from './source.js';

/**
 * The admin HTTP API of a session tier, on its own port: JSON endpoints, Server-Sent
 * Events, a time series of the last hour, and Prometheus /metrics. The same API for a
 * kiln server (served by the server, KilnServerSource) and for Redis (served by
 * `kiln console`, RedisSource). Two bearer tokens: the admin
 * token may invalidate sessions; the read-only token may only look.
 *
 *   GET    /api/overview                       server, storage, sessions, leases, clients
 *   GET    /api/sessions?after=&limit=&prefix=&principal=
 *   GET    /api/sessions/:id                   metadata and attributes with sizes
 *   DELETE /api/sessions/:id                   (admin)
 *   DELETE /api/principals/:principal/sessions (admin) "log out everywhere"
 *   GET    /api/events                         SSE: clients, lease recalls/revocations, expiries, destroys, errors
 *   GET    /api/timeseries                     10-second samples of the last hour
 *   GET    /metrics                            Prometheus text format
 *   GET    /                                   the web console (asks for the token)
 */
export interface AdminOptions {
  host?: string;
  port: number;
  adminToken: string;
  readToken?: string;
  version: string;
}

type Role = 'admin' | 'read';

export interface Sample {
  t: number;
  sessions: number;
  leases: number;
  connections: number;
  commits: number;
  requests: number;
  recalls: number;
  errors: number;
  commitMsP50: number;
}

const SAMPLE_MS = 10_000;
const SAMPLES = 360;

export class AdminServer {
  readonly metrics: ServerMetrics;
  private readonly http: Server;
  private readonly adminDigest: Buffer;
  private readonly readDigest: Buffer | undefined;
  private readonly streams = new Set<ServerResponse>();
  private readonly samples: Sample[] = [];
  private readonly unsubscribe: () => void;
  private readonly sampler: NodeJS.Timeout;
  private last: { commits: number; requests: number; recalls: number; errors: number } | undefined;
  private boundPort = 0;

  /**
   * @example
   * const admin = new AdminServer(new KilnServerSource(server), { port: 9511, adminToken, version: packageVersion() });
   * await admin.start();
   */
  constructor(
    private readonly source: ConsoleSource,
    private readonly options: AdminOptions,
  ) {
    this.adminDigest = digest(options.adminToken);
    this.readDigest = options.readToken ? digest(options.readToken) : undefined;
    this.metrics = new ServerMetrics(source);
    this.http = createServer((req, res) => {
      this.route(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.unsubscribe = source.onEvent((e) => this.broadcast(e.type, e.data));
    this.sampler = setInterval(() => void this.sample().catch(() => undefined), SAMPLE_MS);
    this.sampler.unref();
    void this.sample().catch(() => undefined);
  }

  async start(): Promise<number> {
    this.boundPort = await listen(this.http, this.options.port, this.options.host ?? '127.0.0.1');
    return this.boundPort;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Stops serving; the source stays open (whoever made it closes it). */
  async stop(): Promise<void> {
    clearInterval(this.sampler);
    this.unsubscribe();
    for (const s of this.streams) s.end();
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }

  async overview(): Promise<Record<string, unknown>> {
    const d = this.source.describe();
    const f = await this.source.figures();
    return {
      server: { role: d.role, version: this.options.version, host: hostname(), pid: process.pid, address: d.address, epoch: this.source.epoch, startedAt: d.startedAt, uptimeMs: Date.now() - d.startedAt, tls: d.tls },
      storage: { ...d.storage, bytesOnDisk: f.storageBytes },
      sessions: { count: f.sessions, bytes: f.sessionBytes, tombstones: f.tombstones },
      leases: { held: f.leases, waiting: f.leaseWaiters },
      counters: f.counters,
      connections: f.connections,
      clients: f.clients,
      recent: { leaseWaitMsP50: f.recent.leaseWaitMsP50, commitMsP50: f.recent.commitMsP50 },
    };
  }

  private async sample(): Promise<void> {
    const f = await this.source.figures(SAMPLE_MS);
    const now = {
      commits: f.counters['commits'] ?? 0,
      requests: f.requests,
      recalls: f.counters['leaseRecalls'] ?? 0,
      errors: Object.values(f.errors).reduce((a, b) => a + b, 0),
    };
    const since = this.last ?? now;
    this.samples.push({
      t: Date.now(),
      sessions: f.sessions,
      leases: f.leases,
      connections: f.connections,
      commits: Math.max(0, now.commits - since.commits),
      requests: Math.max(0, now.requests - since.requests),
      recalls: Math.max(0, now.recalls - since.recalls),
      errors: Math.max(0, now.errors - since.errors),
      commitMsP50: f.recent.commitMsP50,
    });
    if (this.samples.length > SAMPLES) this.samples.shift();
    this.last = now;
  }

  private broadcast(type: string, data: unknown): void {
    if (this.streams.size === 0) return;
    const frame = `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const s of this.streams) s.write(frame);
  }

  private role(req: IncomingMessage): Role | undefined {
    const header = req.headers.authorization ?? '';
    const token = header.startsWith('Bearer ') ? header.slice(7) : new URL(req.url ?? '/', 'http://x').searchParams.get('token');
    if (!token) return undefined;
    const given = digest(token);
    if (timingSafeEqual(given, this.adminDigest)) return 'admin';
    if (this.readDigest && timingSafeEqual(given, this.readDigest)) return 'read';
    return undefined;
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    // The console page itself holds no data; it asks for the token and calls the API with it.
    if (req.method === 'GET' && (path === '/' || path === '/index.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'" });
      res.end(CONSOLE_PAGE);
      return;
    }
    const role = this.role(req);
    if (!role) {
      this.json(res, 401, { code: 'KILN_ERR_AUTH', message: 'a bearer token is required (admin or read-only)' }, { 'www-authenticate': 'Bearer realm="kiln"' });
      return;
    }
    const needAdmin = (): boolean => {
      if (role === 'admin') return true;
      this.json(res, 403, { code: 'KILN_ERR_AUTH', message: 'the read-only token cannot change sessions' });
      return false;
    };
    const source = this.source;
    if (req.method === 'GET' && path === '/metrics') {
      res.writeHead(200, { 'content-type': this.metrics.contentType });
      res.end(await this.metrics.text());
      return;
    }
    if (req.method === 'GET' && path === '/api/overview') return this.json(res, 200, await this.overview());
    if (req.method === 'GET' && path === '/api/timeseries') return this.json(res, 200, { intervalMs: SAMPLE_MS, samples: this.samples });
    if (req.method === 'GET' && path === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(`event: hello\ndata: ${JSON.stringify({ epoch: source.epoch, at: Date.now() })}\n\n`);
      this.streams.add(res);
      req.on('close', () => this.streams.delete(res));
      return;
    }
    if (req.method === 'GET' && path === '/api/sessions') {
      const limit = Math.min(Math.max(1, Number(url.searchParams.get('limit') ?? 50) || 50), MAX_LIST_LIMIT);
      const principal = url.searchParams.get('principal');
      if (principal) {
        const sessions = (await source.findByPrincipal(principal)).sort((a, b) => (a.id < b.id ? -1 : 1));
        return this.json(res, 200, { sessions, next: null, total: sessions.length });
      }
      return this.json(res, 200, await source.list({ after: url.searchParams.get('after') ?? undefined, prefix: url.searchParams.get('prefix') ?? undefined, limit }));
    }
    const one = /^\/api\/sessions\/([^/]+)$/.exec(path);
    if (one) {
      const id = decodeURIComponent(one[1]!);
      if (!isValidSessionId(id)) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'not a session id' });
      if (req.method === 'GET') {
        const detail = await this.sessionDetail(id);
        return detail ? this.json(res, 200, detail) : this.json(res, 404, { code: 'KILN_ERR_SESSION_NOT_FOUND', message: 'no such session' });
      }
      if (req.method === 'DELETE') {
        if (!needAdmin()) return;
        return this.json(res, 200, { destroyed: await source.destroy(id) });
      }
    }
    const byPrincipal = /^\/api\/principals\/([^/]+)\/sessions$/.exec(path);
    if (byPrincipal && req.method === 'DELETE') {
      if (!needAdmin()) return;
      return this.json(res, 200, { destroyed: await source.destroyByPrincipal(decodeURIComponent(byPrincipal[1]!)) });
    }
    this.json(res, 404, { code: 'KILN_ERR_INVALID_ARGUMENT', message: `no endpoint ${req.method} ${path}` });
  }

  private async sessionDetail(id: string): Promise<Record<string, unknown> | undefined> {
    const snapshot = await this.source.snapshot(id);
    if (!snapshot) return undefined;
    const attributes = [...snapshot.attributes].map(([name, bytes]) => {
      let preview: string;
      try {
        preview = JSON.stringify(decodeAttribute(bytes), (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)) ?? 'undefined';
      } catch {
        preview = '(undecodable)';
      }
      return { name, bytes: bytes.length, preview: preview.length > 200 ? `${preview.slice(0, 200)}…` : preview };
    });
    return { meta: snapshot.meta, attributes, bytes: attributeBytes(snapshot.attributes) };
  }

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  }

  private fail(res: ServerResponse, err: unknown): void {
    const e = err instanceof KilnError ? err : new KilnError('KILN_ERR_INTERNAL', String((err as Error)?.message ?? err));
    if (!res.headersSent) this.json(res, e.code === 'KILN_ERR_INTERNAL' ? 500 : 400, e.toJSON());
    else res.end();
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
