import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { hostname } from 'node:os';
import { MAX_LIST_LIMIT } from '../engines/engine.js';
import { KilnError, toKilnError } from '../errors/index.js';
import { isValidSessionId } from '../session/id.js';
import { attributeBytes } from '../session/model.js';
import { listen } from '../util/net.js';
import { OptionReader } from '../util/options.js';
import { digest, HANDLE_PREFIX, type Role, sameDigest, SessionHandles, SHORT_ID_CHARS, shortId, TICKET_TTL_MS, Tickets } from './admin-access.js';
import { checkTokenStrength, tlsCredentials } from '../util/secret-file.js';
import { recentEvents, largestView } from './admin-views.js';
import { BalancerWatch, type BalancerOptions } from './balancer-watch.js';
import { EventHistory } from './event-history.js';
import { LargestSessions } from './largest-sessions.js';
import { ServerMetrics } from './metrics.js';
import { mirroredCounter, readGauge } from './prometheus.js';
import { consolePage } from './page.js';
import { ClientRoster } from './roster.js';
import { SAMPLE_MS, TimeSeries } from './timeseries.js';
import { DEFAULT_REDACT, previewValue, REDACTED, redactor, type Redactor, valueType } from './preview.js';
import type { ConsoleSessionMeta, ConsoleSource } from './source.js';
import { NAMESPACE_PATTERN } from '../server/namespaces.js';

/**
 * The admin HTTP API of a session tier, on its own port: JSON endpoints, Server-Sent
 * Events, a time series of the last hour, and Prometheus /metrics. The same API for a
 * kiln server (served by the server, KilnServerSource) and for Redis (served by
 * `kiln console`, RedisSource). HTTPS when given a certificate.
 *
 * Two bearer tokens, in the Authorization header only (a URL ends up in logs, histories
 * and Referer headers): the admin token may see session ids and values and invalidate
 * sessions; the read-only token sees attribute names, types and sizes, and ids shortened
 * with an opaque handle to open them by (admin-access.ts). Values whose name matches the
 * redaction list are hidden from both.
 *
 *   GET    /api/overview                       server, storage, sessions, leases, clients
 *   GET    /api/sessions?after=&limit=&prefix=&principal=&namespace=
 *   GET    /api/sessions/:id-or-handle?namespace=  metadata and attributes with sizes (and previews: admin)
 *   DELETE /api/sessions/:id-or-handle?namespace=  (admin)
 *   DELETE /api/principals/:principal/sessions?namespace= (admin) "log out everywhere"
 *   POST   /api/tickets                        a 60-second, single-use ticket for /api/events
 *   GET    /api/events[?ticket=]               SSE: clients, lease recalls/revocations, expiries, destroys, errors
 *   GET    /api/events/recent?type=&q=&limit=  the last events (event-history.ts), oldest first
 *   GET    /api/sessions/largest               top sessions and attributes by size, size histogram (largest-sessions.ts)
 *   GET    /api/timeseries                     10-second samples of the last hour
 *   GET    /metrics                            Prometheus text format
 *   GET    /                                   the web console (asks for the token)
 *
 * `namespace=` is a kiln server's token namespace (ids repeat across them; an id held in
 * several is refused without one); a read role's handle holds its session's namespace.
 */
export interface AdminOptions {
  host?: string;
  port: number;
  /** At least 32 bytes; never the client token (see admin-token.ts). */
  adminToken: string;
  /** At least 32 bytes. */
  readToken?: string;
  version: string;
  /** Serve HTTPS: PEM text or file paths (the kiln server passes its own certificate). */
  tls?: { cert: string; key: string };
  /**
   * Attribute and key names whose values nobody sees, matched case-insensitively as
   * substrings (default DEFAULT_REDACT; [] shows every value to the admin role).
   */
  redact?: readonly string[];
  /** How long an events ticket may wait for its use (default 60 s). */
  ticketTtlMs?: number;
  /** A `kiln balancer` in front of the app servers, drawn in the console (balancer-watch.ts). */
  balancer?: BalancerOptions;
}

const KNOWN_OPTIONS = ['host', 'port', 'adminToken', 'readToken', 'version', 'tls', 'redact', 'ticketTtlMs', 'balancer'];


export class AdminServer {
  readonly metrics: ServerMetrics;
  private readonly http: Server;
  private readonly secure: boolean;
  private readonly adminDigest: Buffer;
  private readonly readDigest: Buffer | undefined;
  private readonly redact: Redactor;
  private readonly handles = new SessionHandles();
  private readonly tickets: Tickets;
  /** Each open events stream and the view it gets. */
  private readonly streams = new Map<ServerResponse, Role>();
  /** Event streams cut because their reader fell MAX_STREAM_BUFFER behind. */
  private streamsCut = 0;
  /** A comment line on every stream now and then: a peer that vanished is found by the write failing. */
  private readonly pinger: NodeJS.Timeout;
  private readonly series: TimeSeries;
  private readonly unsubscribe: () => void;
  private readonly sampler: NodeJS.Timeout;
  private readonly roster = new ClientRoster();
  private readonly history = new EventHistory();
  private readonly largest: LargestSessions;
  private readonly balancer: BalancerWatch | undefined;
  private boundPort = 0;
  private inspecting = 0;
  private inspectTail: Promise<void> = Promise.resolve();

  /**
   * @example
   * const admin = new AdminServer(new KilnServerSource(server), { port: 9511, adminToken, version: packageVersion() });
   * await admin.start();
   */
  constructor(
    private readonly source: ConsoleSource,
    private readonly options: AdminOptions,
  ) {
    const o = new OptionReader('AdminServer', options, KNOWN_OPTIONS);
    o.string('host', undefined);
    o.int('port', 0, 0, 65535);
    o.string('version', 'unknown');
    this.tickets = new Tickets(o.int('ticketTtlMs', TICKET_TTL_MS, 100, 600_000));
    // Checked without OptionReader, whose messages quote the value.
    checkTokenStrength(o.any('adminToken'), 'AdminServer: option "adminToken"');
    if (options.readToken !== undefined) checkTokenStrength(options.readToken, 'AdminServer: option "readToken"');
    const tls = o.any('tls') as AdminOptions['tls'];
    if (tls !== undefined && (typeof tls?.cert !== 'string' || typeof tls?.key !== 'string')) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'AdminServer: option "tls" must be { cert, key } (PEM text or file paths)', { details: { option: 'tls' } });
    }
    const redact = o.any('redact') ?? DEFAULT_REDACT;
    if (!Array.isArray(redact) || !redact.every((r) => typeof r === 'string')) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'AdminServer: option "redact" must be an array of strings', { details: { option: 'redact' } });
    }
    this.redact = redactor(redact as string[]);
    this.adminDigest = digest(options.adminToken);
    this.readDigest = options.readToken ? digest(options.readToken) : undefined;
    this.metrics = new ServerMetrics(source);
    this.largest = new LargestSessions(source);
    const balancer = o.any('balancer') as BalancerOptions | undefined;
    if (balancer !== undefined && (typeof balancer !== 'object' || balancer === null)) throw new KilnError('KILN_ERR_INVALID_OPTION', 'AdminServer: option "balancer" must be { url, token }', { details: { option: 'balancer' } });
    this.balancer = balancer ? new BalancerWatch(balancer) : undefined;
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      this.route(req, res).catch((err: unknown) => this.fail(res, err));
    };
    this.secure = tls !== undefined;
    // Bounds of their own: the admin port may be reached from an operations network, and
    // Node's defaults allow any number of connections and a minute for slow headers.
    // requestTimeout counts until a request is read, so it does not cut event streams.
    const limits = { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1000, maxRequestsPerSocket: MAX_REQUESTS_PER_SOCKET };
    this.http = tls ? createHttpsServer({ ...tlsCredentials(tls, 'AdminServer'), ...limits }, handler) : createServer(limits, handler);
    this.http.maxConnections = MAX_CONNECTIONS;
    // What Node's parser refuses still gets an answer in the API's format.
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => refuseMalformed(err, socket));
    this.unsubscribe = source.onEvent((e) => {
      if (e.type === 'client' && e.data.type === 'client-left') this.roster.left(e.data.client, e.data.at);
      this.broadcast(e.type, e.data);
    });
    readGauge(this.metrics.registry, 'kiln_admin_event_streams', `Event streams open on the admin port (at most ${MAX_STREAMS})`, () => this.streams.size);
    mirroredCounter(this.metrics.registry, 'kiln_admin_event_streams_cut_total', `Event streams closed because their reader fell ${MAX_STREAM_BUFFER} bytes behind`, () => this.streamsCut);
    this.pinger = setInterval(() => {
      for (const s of [...this.streams.keys()]) this.send(s, ': ping\n\n');
    }, PING_MS);
    this.pinger.unref();
    this.series = new TimeSeries(source);
    this.sampler = setInterval(() => void this.series.sample().catch(() => undefined), SAMPLE_MS);
    this.sampler.unref();
    void this.series.sample().catch(() => undefined);
  }

  async start(): Promise<number> {
    this.boundPort = await listen(this.http, this.options.port, this.options.host ?? '127.0.0.1', 'the admin server (port, --admin-port or --port)');
    return this.boundPort;
  }

  get port(): number {
    return this.boundPort;
  }

  /** http://host:port or https://host:port. */
  get url(): string {
    const host = this.options.host ?? '127.0.0.1';
    return `${this.secure ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${this.boundPort}`;
  }

  /** Stops serving; the source stays open (whoever made it closes it). */
  async stop(): Promise<void> {
    clearInterval(this.sampler);
    clearInterval(this.pinger);
    this.balancer?.stop();
    this.unsubscribe();
    for (const s of this.streams.keys()) s.end();
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }

  async overview(): Promise<Record<string, unknown>> {
    const d = this.source.describe();
    const f = await this.source.figures();
    const roster = this.roster.update(f.clients);
    return {
      server: { role: d.role, version: this.options.version, host: hostname(), pid: process.pid, address: d.address, epoch: this.source.epoch, startedAt: d.startedAt, uptimeMs: Date.now() - d.startedAt, tls: d.tls },
      storage: { ...d.storage, bytesOnDisk: f.storageBytes, ...(f.storageBacklog ? { backlog: f.storageBacklog } : {}) },
      sessions: { count: f.sessions, bytes: f.sessionBytes, tombstones: f.tombstones },
      leases: { held: f.leases, waiting: f.leaseWaiters },
      counters: f.counters,
      connections: f.connections,
      clients: roster.live,
      /** App servers whose connection dropped in the last minute, with their last figures. */
      departed: roster.gone,
      recent: { leaseWaitMsP50: f.recent.leaseWaitMsP50, commitMsP50: f.recent.commitMsP50, leaseWaits: f.recent.leaseWaits ?? null, commits: f.recent.commits ?? null },
      ...(this.balancer ? { balancer: this.balancer.current() } : {}),
    };
  }

  private broadcast(type: string, data: unknown): void {
    const { seq } = this.history.record(type, data);
    if (this.streams.size === 0) return;
    let full: string | undefined;
    let read: string | undefined;
    // The id lets a page that loaded the history first skip what it already shows.
    // send() may cut a stream (deleting it from the map): a Map iterates safely past that.
    for (const [s, view] of this.streams) {
      if (view === 'admin') this.send(s, (full ??= `id: ${seq}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`));
      else this.send(s, (read ??= `id: ${seq}\nevent: ${type}\ndata: ${JSON.stringify(this.readView(data))}\n\n`));
    }
  }

  /**
   * Writes to one event stream, and cuts it once its reader is MAX_STREAM_BUFFER behind:
   * Node queues what the socket cannot take in this process's memory, so a client that
   * stops reading would otherwise hold every event from then on (and one of the
   * MAX_STREAMS slots). EventSource reconnects; the page fetches a new ticket for it.
   */
  private send(s: ServerResponse, text: string): void {
    if (s.destroyed) {
      this.streams.delete(s);
      return;
    }
    s.write(text);
    if (s.writableLength > MAX_STREAM_BUFFER) {
      this.streams.delete(s);
      this.streamsCut++;
      s.destroy();
    }
  }

  /** An event as the read-only role sees it: the session id shortened, a handle beside it. */
  private readView(data: unknown): unknown {
    if (typeof data !== 'object' || data === null) return data;
    const { sessionId: id, namespace } = data as { sessionId?: unknown; namespace?: unknown };
    if (typeof id !== 'string') return data;
    return { ...data, sessionId: shortId(id), ref: this.handles.handle(qualified(id, typeof namespace === 'string' ? namespace : undefined)) };
  }

  private role(req: IncomingMessage): Role | undefined {
    const match = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
    if (!match) return undefined;
    const given = digest(match[1]!);
    if (sameDigest(given, this.adminDigest)) return 'admin';
    if (this.readDigest && sameDigest(given, this.readDigest)) return 'read';
    return undefined;
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('referrer-policy', 'no-referrer');
    res.setHeader('cache-control', 'no-store');
    const target = req.url ?? '/';
    // Origin-form only: an absolute or authority-form target names no endpoint here.
    if (!target.startsWith('/')) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'the request target must be a path' });
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : target.slice(q + 1));
    const method = req.method ?? 'GET';
    // The console page itself holds no data; it asks for the token and calls the API with it.
    if (method === 'GET' && (path === '/' || path === '/index.html')) return this.page(res);
    if (query.has('token') || query.has('access_token')) {
      return this.json(res, 401, { code: 'KILN_ERR_AUTH', message: 'tokens are not accepted in URLs: send "Authorization: Bearer <token>" (events: POST /api/tickets, then /api/events?ticket=)' });
    }
    if (method === 'GET' && path === '/api/events' && query.has('ticket')) {
      if (!this.tickets.redeem(query.get('ticket')!)) return this.json(res, 401, { code: 'KILN_ERR_AUTH', message: 'unknown, used or expired ticket (POST /api/tickets for a new one)' });
      return this.events(req, res, 'read');
    }
    const role = this.role(req);
    if (!role) {
      this.json(res, 401, { code: 'KILN_ERR_AUTH', message: 'a bearer token is required (admin or read-only) in the Authorization header' }, { 'www-authenticate': 'Bearer realm="kiln"' });
      return;
    }
    const needAdmin = (): boolean => {
      if (role === 'admin') return true;
      this.json(res, 403, { code: 'KILN_ERR_AUTH', message: 'the read-only token cannot change sessions' });
      return false;
    };
    const source = this.source;
    if (method === 'GET' && path === '/metrics') {
      // The body first: a status sent before it could only be 200, and a scrape that failed
      // would read as an empty, successful one (Prometheus must see it fail: `up` 0).
      let text: string;
      try {
        text = await this.metrics.text();
      } catch (err) {
        const e = toKilnError(err);
        return this.json(res, 503, { ...e.toJSON(), message: `cannot collect the metrics: ${e.message}` });
      }
      res.writeHead(200, { 'content-type': this.metrics.contentType });
      res.end(text);
      return;
    }
    if (method === 'GET' && path === '/api/overview') return this.json(res, 200, await this.overview());
    if (method === 'GET' && path === '/api/timeseries') return this.json(res, 200, { intervalMs: SAMPLE_MS, samples: this.series.samples });
    if (method === 'POST' && path === '/api/tickets') return this.json(res, 200, this.tickets.issue());
    if (method === 'GET' && path === '/api/events') return this.events(req, res, role);
    if (method === 'GET' && path === '/api/events/recent') return this.json(res, 200, { events: recentEvents(this.history, query, role === 'admin' ? undefined : (d) => this.readView(d)) });
    if (method === 'GET' && path === '/api/sessions/largest') return this.json(res, 200, largestView(await this.largest.report(), (m) => this.metaView(m, role)));
    // Session ids repeat across a kiln server's token namespaces: `namespace=` says which.
    const namespace = query.get('namespace') ?? undefined;
    if (namespace !== undefined && !NAMESPACE_PATTERN.test(namespace)) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'namespace= must be 1 to 64 characters of A-Z a-z 0-9 _ -' });
    if (method === 'GET' && path === '/api/sessions') return this.list(res, query, role, namespace);
    const one = /^\/api\/sessions\/([^/]+)$/.exec(path);
    if (one) {
      const ref = this.sessionRef(one[1]!);
      if (!ref) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'not a session id or handle (handles end when the admin server restarts)' });
      if (namespace !== undefined && ref.namespace !== undefined && ref.namespace !== namespace) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'namespace= names another namespace than the handle' });
      const { id } = ref;
      const ns = ref.namespace ?? namespace;
      if (method === 'GET') {
        if (this.inspecting >= MAX_INSPECTING) return this.json(res, 429, { code: 'KILN_ERR_TOO_MANY_CONNECTIONS', message: 'the inspector is busy; try again' });
        const detail = await this.inspect(() => this.sessionDetail(id, ns, role));
        return detail ? this.json(res, 200, detail) : this.json(res, 404, { code: 'KILN_ERR_SESSION_NOT_FOUND', message: 'no such session' });
      }
      if (method === 'DELETE') {
        if (!needAdmin()) return;
        return this.json(res, 200, { destroyed: await source.destroy(id, ns) });
      }
    }
    const byPrincipal = /^\/api\/principals\/([^/]+)\/sessions$/.exec(path);
    if (byPrincipal && method === 'DELETE') {
      if (!needAdmin()) return;
      const principal = decode(byPrincipal[1]!);
      if (principal === undefined || principal.length === 0) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'not a principal (percent-encoded UTF-8)' });
      return this.json(res, 200, { destroyed: await source.destroyByPrincipal(principal, namespace) });
    }
    this.json(res, 404, { code: 'KILN_ERR_INVALID_ARGUMENT', message: `no endpoint ${method.slice(0, 16)} ${path.slice(0, 100)}` });
  }

  private page(res: ServerResponse): void {
    // A fresh nonce per answer: the page's one script and one style run, nothing injected does.
    const nonce = randomBytes(16).toString('base64');
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      'x-frame-options': 'DENY',
    });
    res.end(consolePage(nonce));
  }

  private events(req: IncomingMessage, res: ServerResponse, view: Role): void {
    if (this.streams.size >= MAX_STREAMS) return this.json(res, 429, { code: 'KILN_ERR_TOO_MANY_CONNECTIONS', message: `at most ${MAX_STREAMS} event streams at once` });
    // TCP keep-alive finds a peer that vanished while nothing is written; the pings, one
    // whose socket stopped acknowledging (the write then fails after the kernel's retries).
    req.socket.setKeepAlive(true, KEEPALIVE_MS);
    res.writeHead(200, { 'content-type': 'text/event-stream', connection: 'keep-alive' });
    res.write(`event: hello\ndata: ${JSON.stringify({ epoch: this.source.epoch, at: Date.now(), view })}\n\n`);
    this.streams.set(res, view);
    res.on('close', () => this.streams.delete(res));
  }

  private async list(res: ServerResponse, query: URLSearchParams, role: Role, namespace: string | undefined): Promise<void> {
    const limit = Math.min(Math.max(1, Math.floor(Number(query.get('limit') ?? 50)) || 50), MAX_LIST_LIMIT);
    const principal = query.get('principal');
    const prefix = query.get('prefix') ?? undefined;
    let after = query.get('after') ?? undefined;
    if (role === 'read') {
      // Longer prefixes, or a cursor of one's choosing, would let the read role find a whole id one character at a time.
      if (prefix !== undefined && prefix.length > SHORT_ID_CHARS) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: `the read-only role searches by at most ${SHORT_ID_CHARS} characters of id` });
      if (after !== undefined && (!after.startsWith(HANDLE_PREFIX) || NAMESPACED_KEY.test(after))) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'the read-only role pages with the "next" handle it was given' });
    }
    // An admin's `next` past the default namespace is a tier key, `~<namespace>~<id>`; a
    // handle is `~` and base64url, never a second `~`.
    if (after?.startsWith(HANDLE_PREFIX) && !NAMESPACED_KEY.test(after)) {
      after = this.handles.open(after);
      if (after === undefined) return this.json(res, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'not a handle of this admin server (handles end when it restarts)' });
    }
    // A principal's sessions: newest login first on a kiln server, `total` how many it has in all.
    const page = principal ? await this.source.findByPrincipal(principal, { limit, after, namespace }) : await this.source.list({ after, prefix, limit, namespace });
    return this.json(res, 200, {
      sessions: page.sessions.map((m) => this.metaView(m, role)),
      next: page.next === null || role === 'admin' ? page.next : this.handles.handle(page.next),
      total: page.total,
    });
  }

  /**
   * A session's metadata for a role, with `ref`: what to open it by. The admin role's is
   * the id, opened with the session's `namespace` beside it (`?namespace=`); the read
   * role's a handle, which holds the namespace too.
   */
  private metaView(meta: ConsoleSessionMeta, role: Role): ConsoleSessionMeta & { ref: string } {
    return role === 'admin' ? { ...meta, ref: meta.id } : { ...meta, id: shortId(meta.id), ref: this.handles.handle(qualified(meta.id, meta.namespace)) };
  }

  /**
   * The session a path segment names: a session id, a namespaced key `~<namespace>~<id>`
   * (an admin's listing cursor), or a handle this server gave out (which may hold either).
   */
  private sessionRef(segment: string): { id: string; namespace?: string } | undefined {
    const ref = decode(segment);
    if (ref === undefined) return undefined;
    const opened = ref.startsWith(HANDLE_PREFIX) && !NAMESPACED_KEY.test(ref) ? this.handles.open(ref) : ref;
    if (opened === undefined) return undefined;
    const key = NAMESPACED_KEY.exec(opened);
    const ns = key ? { id: opened.slice(key[0].length), namespace: key[1]! } : { id: opened };
    return isValidSessionId(ns.id) ? ns : undefined;
  }

  /**
   * One session read at a time, each in its own turn of the event loop: a snapshot
   * copies the session's bytes (O(size)), and several at once in one turn would hold the
   * app servers' commits back for all of them together.
   */
  private inspect<T>(work: () => Promise<T>): Promise<T> {
    this.inspecting++;
    const run = this.inspectTail.then(() => new Promise<void>((resolve) => setImmediate(resolve))).then(work);
    this.inspectTail = run.then(
      () => void this.inspecting--,
      () => void this.inspecting--,
    );
    return run;
  }

  private async sessionDetail(id: string, namespace: string | undefined, role: Role): Promise<Record<string, unknown> | undefined> {
    const snapshot = await this.source.snapshot(id, namespace);
    if (!snapshot) return undefined;
    const attributes = [...snapshot.attributes].map(([name, bytes]) => {
      const shown = { name, type: valueType(bytes), bytes: bytes.length };
      if (role !== 'admin') return shown;
      return { ...shown, preview: this.redact(name) ? REDACTED : previewValue(bytes, this.redact) };
    });
    return { meta: this.metaView(snapshot.meta, role), attributes, bytes: attributeBytes(snapshot.attributes) };
  }

  /** The body is made before the status goes out: one that cannot be made is an error answer, not a 200 cut short. */
  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(text);
  }

  private fail(res: ServerResponse, err: unknown): void {
    const e = err instanceof KilnError ? err : new KilnError('KILN_ERR_INTERNAL', String((err as Error)?.message ?? err));
    const status = e.code === 'KILN_ERR_INTERNAL' ? 500 : e.code === 'KILN_ERR_ENGINE_UNAVAILABLE' || e.code === 'KILN_ERR_TIMEOUT' ? 503 : 400;
    if (!res.headersSent) this.json(res, status, e.toJSON());
    // An answer already begun (an event stream): cut, so that it cannot pass for a whole one.
    else res.destroy();
  }
}

/** A namespaced session key, `~<namespace>~…`: what an admin's cursor past the default namespace is, and what a read role's handle may seal. */
const NAMESPACED_KEY = /^~([A-Za-z0-9_-]{1,64})~/;

/** A session named with its namespace, as a handle seals it: `~<namespace>~<id>`, or the bare id where the source has none. */
function qualified(id: string, namespace: string | undefined): string {
  return namespace === undefined ? id : `~${namespace}~${id}`;
}

const MAX_STREAMS = 64;
/** Connections the admin port holds at once (event streams included); more are closed as they come. */
const MAX_CONNECTIONS = 256;
/** Time a connection has to send a request's headers, and the whole request (bodies here are empty). */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;
/** Requests on one keep-alive connection before it is closed (the console polls once a second). */
const MAX_REQUESTS_PER_SOCKET = 1000;
/** Bytes an event stream's reader may fall behind (queued in this process) before the stream is cut. */
const MAX_STREAM_BUFFER = 1024 * 1024;
/** How often every event stream gets a comment line (`: ping`), so an idle tier still writes to it. */
const PING_MS = 20_000;
/** Idle time before TCP keep-alive probes an event stream's peer. */
const KEEPALIVE_MS = 20_000;
/** Session reads queued at once; more are refused (429) rather than queued without end. */
const MAX_INSPECTING = 32;

/** decodeURIComponent, undefined on a malformed escape. */
function decode(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

function refuseMalformed(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    const late = JSON.stringify({ code: 'KILN_ERR_TIMEOUT', message: `the request did not arrive within ${HEADERS_TIMEOUT_MS / 1000} s (headers) or ${REQUEST_TIMEOUT_MS / 1000} s (whole)` });
    socket.end(`HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(late)}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n${late}`);
    return;
  }
  const [status, reason] = err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large'] : [400, 'Bad Request'];
  const body = JSON.stringify({ code: 'KILN_ERR_INVALID_ARGUMENT', message: `malformed HTTP request (${err.code ?? 'parse error'})` });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n${body}`);
}

export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
