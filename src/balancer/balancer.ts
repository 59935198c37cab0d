import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, request, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { KilnError } from '../errors/index.js';
import { createLogger, type Logger } from '../util/log.js';
import { listen } from '../util/net.js';
import { OptionReader } from '../util/options.js';
import { chooseNode, routeFromCookie, type AffinityMode } from './affinity.js';
import { HealthChecker } from './health.js';
import { closeAfterAnswer, cookieValue, firstValue, hasBody, isLingering, rawAnswer, stripHopByHop } from './http-util.js';
import { ConnectionLimiter, DEFAULT_LIMITS, LIMIT_RANGES, type BalancerLimits } from './limits.js';
import { BackendNode, checkNodeName } from './node-table.js';
import { newProxyCounters, proxyRequest, type ProxyHost } from './proxy.js';
import { TrustedProxies } from './trusted-proxies.js';
import { checkTokenStrength } from '../util/secret-file.js';

/**
 * `kiln balancer`: an HTTP/1.1 reverse proxy with session affinity. A request goes to
 * the node named by its session id's route suffix (or the balancer's own cookie), a new
 * session to the least busy healthy node; a dead or draining node's sessions go to a
 * live node (the same one each time, so the session's lease settles there) and follow
 * through the session engine, nothing lost. Bodies stream both ways.
 *
 * @example
 * const lb = new KilnBalancer({ port: 8080, nodes: [{ name: 'app-1', url: 'http://127.0.0.1:3001' }] });
 * await lb.start();
 */
export interface BalancerOptions {
  host?: string;
  port?: number;
  nodes: { name: string; url: string; pid?: number }[];
  /** 'route' (default): by the session id's route suffix; 'cookie': a balancer cookie; 'none': round-robin. */
  affinity?: AffinityMode;
  /** Session cookie the route is read from. Default connect.sid. */
  cookieName?: string;
  /** Balancer cookie in 'cookie' mode. Default kiln_lb. */
  balancerCookie?: string;
  healthPath?: string;
  healthIntervalMs?: number;
  healthTimeoutMs?: number;
  healthFall?: number;
  /**
   * Bearer token (32 bytes at least) for the status JSON and the drain actions, sent in
   * the Authorization header. Without one the admin endpoints answer 404 to everybody:
   * nothing is ever authorised by source address, since behind a TLS terminator on the
   * same host every public request comes from 127.0.0.1.
   */
  adminToken?: string;
  /**
   * Peers whose X-Forwarded-Proto/-Host/-For (and other forwarding headers) are kept
   * (addresses, CIDRs, or 'loopback'), e.g. a TLS terminator in front, with the peer's
   * address appended to X-Forwarded-For; from anyone else those three are overwritten
   * and the others dropped.
   */
  trustProxy?: string | string[];
  logger?: Logger;
}

/** Plus the bounds of limits.ts (headersTimeoutMs, queueTimeoutMs, maxConnectionsPerClient, …), each optional. */
export type KilnBalancerOptions = BalancerOptions & Partial<BalancerLimits>;

const ADMIN_PREFIX = '/_kiln/balancer';
/** How often Node checks open connections against headersTimeout (its default, 30 s, would let a slow header live 40 s). */
const CONNECTION_CHECK_MS = 1_000;

export class KilnBalancer {
  readonly nodes: BackendNode[];
  private readonly server: Server;
  private readonly health: HealthChecker;
  private readonly affinity: AffinityMode;
  private readonly cookieName: string;
  private readonly balancerCookie: string;
  private readonly adminDigest: Buffer | undefined;
  private readonly trusted: TrustedProxies;
  private readonly host: string;
  private readonly port: number;
  private readonly log: Logger;
  private turn = 0;
  private boundPort = 0;
  private readonly startedAt = Date.now();
  readonly limits: BalancerLimits;
  private readonly connections: ConnectionLimiter;
  /** Sockets over a connection limit: answered 503 and closed, never proxied. */
  private readonly refused = new WeakSet<Socket>();
  /**
   * Both ends of every upgrade, from the request on: sockets the HTTP server has let go
   * of, so its closeAllConnections() does not reach them, and a WebSocket may stay open
   * for hours.
   */
  private readonly upgraded = new Set<Socket>();
  private readonly proxyHost: ProxyHost;
  readonly counters = { requests: 0, upgrades: 0, ...newProxyCounters() };

  constructor(options: KilnBalancerOptions) {
    const limitNames = Object.keys(DEFAULT_LIMITS) as (keyof BalancerLimits)[];
    const o = new OptionReader('kiln balancer', options, ['host', 'port', 'nodes', 'affinity', 'cookieName', 'balancerCookie', 'healthPath', 'healthIntervalMs', 'healthTimeoutMs', 'healthFall', 'adminToken', 'trustProxy', 'logger', ...limitNames]);
    this.limits = Object.fromEntries(limitNames.map((name) => [name, o.int(name, DEFAULT_LIMITS[name], ...LIMIT_RANGES[name])])) as unknown as BalancerLimits;
    this.host = o.string('host', '127.0.0.1');
    this.port = o.int('port', 8080, 0, 65535);
    this.affinity = o.oneOf('affinity', ['route', 'cookie', 'none'], 'route');
    this.cookieName = o.string('cookieName', 'connect.sid');
    this.balancerCookie = o.string('balancerCookie', 'kiln_lb');
    const adminToken = o.any('adminToken');
    if (adminToken !== undefined) checkTokenStrength(adminToken, 'kiln balancer: option "adminToken"');
    this.adminDigest = adminToken === undefined ? undefined : digest(adminToken);
    this.trusted = new TrustedProxies(o.any('trustProxy') as string | string[] | undefined);
    this.connections = new ConnectionLimiter(this.limits.maxConnectionsPerClient, this.limits.maxConnections, (address) => this.trusted.has(address));
    this.log = (o.any('logger') as Logger | undefined) ?? createLogger('kiln-balancer');
    const nodes = o.any('nodes');
    if (!Array.isArray(nodes) || nodes.length === 0) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnBalancer: option "nodes" needs at least one node (--node name=http://host:port)', { details: { option: 'nodes' } });
    this.nodes = nodes.map((n: { name: string; url: string; pid?: number }) => Object.assign(new BackendNode(checkNodeName(n?.name, 'kiln balancer: node name'), n.url, this.limits.upstreamSockets), { pid: n.pid }));
    const names = new Set(this.nodes.map((n) => n.name));
    if (names.size !== this.nodes.length) throw new KilnError('KILN_ERR_INVALID_OPTION', 'kiln balancer: node names must be unique');
    this.health = new HealthChecker(
      this.nodes,
      { path: o.string('healthPath', '/healthz'), intervalMs: o.int('healthIntervalMs', 1000, 50), timeoutMs: o.int('healthTimeoutMs', 1000, 10), fall: o.int('healthFall', 2, 1, 100) },
      (node, healthy) => this.log.warn(healthy ? 'node up' : 'node down', { node: node.name, reason: node.lastError }),
    );
    this.proxyHost = {
      limits: this.limits,
      counters: this.counters,
      log: this.log,
      pick: (req, tried) => this.pick(req, tried),
      upstreamHeaders: (req) => this.forwardedHeaders(req),
      adjustResponse: (req, node, headers) => {
        if (this.affinity === 'cookie' && cookieValue(req.headers.cookie, this.balancerCookie) !== node.name) {
          headers['set-cookie'] = [...(headers['set-cookie'] ?? []), `${this.balancerCookie}=${node.name}; Path=/; HttpOnly; SameSite=Lax`];
        }
      },
      suspect: (node) => this.health.probe(node),
    };
    // Bodies have their own deadlines (request-body.ts); requestTimeout 0 leaves them to it.
    this.server = createServer({ headersTimeout: this.limits.headersTimeoutMs, requestTimeout: 0, keepAliveTimeout: this.limits.keepAliveTimeoutMs, connectionsCheckingInterval: CONNECTION_CHECK_MS }, (req, res) => this.onRequest(req, res));
    // Before the HTTP parser's own listener, so a refused socket is answered before anything is parsed.
    this.server.prependListener('connection', (socket: Socket) => this.onConnection(socket));
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket as Socket, head));
  }

  async start(): Promise<{ host: string; port: number }> {
    this.boundPort = await listen(this.server, this.port, this.host, 'the balancer (port, --port)');
    this.health.start();
    this.log.info('balancing', { port: this.boundPort, affinity: this.affinity, nodes: this.nodes.map((n) => `${n.name}=${n.url}`) });
    return { host: this.host, port: this.boundPort };
  }

  get url(): string {
    return `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.boundPort}`;
  }

  /** Stops accepting, lets in-flight requests and WebSockets finish (up to graceMs), closes. */
  async stop(graceMs = 5000): Promise<void> {
    this.health.stop();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.closeAllConnections();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.close(() => {
        clearTimeout(timer);
        resolve();
      });
      this.server.closeIdleConnections();
    });
    // WebSockets still open at the end of the grace period (closeAllConnections() does not
    // reach them) would keep the process alive after SIGTERM.
    for (const socket of this.upgraded) socket.destroy();
    for (const node of this.nodes) node.agent.destroy();
  }

  node(name: string): BackendNode | undefined {
    return this.nodes.find((n) => n.name === name);
  }

  /** No new sessions go to the node; its sessions move to others on their next request. */
  drain(name: string, draining = true): boolean {
    const node = this.node(name);
    if (!node) return false;
    node.draining = draining;
    this.log.info(draining ? 'draining node' : 'node back in rotation', { node: name });
    return true;
  }

  status(): Record<string, unknown> {
    return {
      affinity: this.affinity,
      cookie: this.affinity === 'cookie' ? this.balancerCookie : this.cookieName,
      uptimeMs: Date.now() - this.startedAt,
      pid: process.pid,
      ...this.counters,
      connections: this.connections.stats(),
      limits: this.limits,
      nodes: this.nodes.map((n) => n.toJSON()),
    };
  }

  // ---- routing ----------------------------------------------------------------------

  private pick(req: IncomingMessage, tried: ReadonlySet<string>): BackendNode | undefined {
    const cookieHeader = req.headers.cookie;
    const wanted = this.affinity === 'route' ? routeFromCookie(cookieHeader, this.cookieName) : this.affinity === 'cookie' ? cookieValue(cookieHeader, this.balancerCookie) : undefined;
    const sessionKey = this.affinity === 'none' ? undefined : cookieValue(cookieHeader, this.cookieName) ?? wanted;
    return chooseNode(this.nodes, { mode: this.affinity, wanted, sessionKey, exclude: tried, turn: this.turn++ });
  }

  /** Over a limit: a 503 right away and the connection closed, whatever the client sends next. */
  private onConnection(socket: Socket): void {
    if (this.connections.admit(socket)) return;
    this.refused.add(socket);
    socket.on('error', () => undefined);
    rawAnswer(socket, 503, { code: 'KILN_ERR_CLIENT_LIMIT', message: 'too many connections from this address (or in all) to the balancer' }, { 'retry-after': '1' });
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.refused.has(req.socket) || isLingering(req.socket)) {
      res.destroy();
      return;
    }
    if (req.url?.startsWith(ADMIN_PREFIX)) {
      this.admin(req, res);
      return;
    }
    this.counters.requests++;
    proxyRequest(this.proxyHost, req, res);
  }

  /**
   * X-Forwarded-* as the app should see them: a trusted proxy's are kept (its client
   * address appended to X-Forwarded-For); from anyone else every forwarding claim is
   * dropped (CLIENT_CLAIMS, any X-Forwarded-*) and our three set, so a client cannot claim
   * to have come over TLS, from another address, host or path prefix.
   */
  private forwardedHeaders(req: IncomingMessage): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = stripHopByHop(req.headers);
    const remote = req.socket.remoteAddress ?? '';
    const own = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
    if (this.trusted.has(remote)) {
      const prior = req.headers['x-forwarded-for'];
      headers['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${remote}` : remote;
      headers['x-forwarded-proto'] = firstValue(req.headers['x-forwarded-proto']) ?? own;
      const host = firstValue(req.headers['x-forwarded-host']) ?? req.headers.host;
      if (host) headers['x-forwarded-host'] = host;
      else delete headers['x-forwarded-host'];
    } else {
      for (const name of Object.keys(headers)) if (CLIENT_CLAIMS.has(name) || name.startsWith('x-forwarded-')) delete headers[name];
      headers['x-forwarded-for'] = remote;
      headers['x-forwarded-proto'] = own;
      if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
      else delete headers['x-forwarded-host'];
    }
    return headers;
  }

  /**
   * An Upgrade request. Only a WebSocket upgrade is offered to the node, and the two
   * sockets are spliced only once the node answered 101 Switching Protocols. Any other
   * answer is relayed as an ordinary response and the client's connection is closed:
   * a socket the balancer no longer parses must never carry further requests to the app
   * (they would skip the balancer's routes and keep client-chosen X-Forwarded-*
   * headers). Other protocols (h2c) are not offered: the request goes as plain HTTP.
   */
  private onUpgrade(req: IncomingMessage, client: Socket, head: Buffer): void {
    client.on('error', () => undefined);
    if (this.refused.has(client)) {
      client.destroy();
      return;
    }
    this.trackUpgraded(client);
    const websocket = String(req.headers.upgrade ?? '').trim().toLowerCase() === 'websocket' && req.method === 'GET';
    if (!websocket && hasBody(req)) {
      // The body would have to be read from a socket the HTTP parser has let go of.
      rawAnswer(client, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: 'an Upgrade other than websocket cannot carry a body through the balancer' });
      return;
    }
    const node = this.pick(req, new Set());
    if (!node) {
      this.counters.noNode++;
      rawAnswer(client, 503, { code: 'KILN_ERR_NO_NODE', message: 'no healthy app server' }, { 'retry-after': '1' });
      return;
    }
    const headers = this.forwardedHeaders(req);
    if (websocket) Object.assign(headers, { connection: 'Upgrade', upgrade: 'websocket' });
    let upstream: ClientRequest;
    try {
      upstream = request({ host: node.host, port: node.port, method: req.method, path: req.url, headers, agent: false });
    } catch (err) {
      // Node refuses a request line or header it cannot send: an uncaught throw in this
      // event handler would end the process.
      rawAnswer(client, 400, { code: 'KILN_ERR_INVALID_ARGUMENT', message: `the request cannot be forwarded as it is: ${(err as Error).message}` });
      return;
    }
    if (websocket) this.counters.upgrades++;
    else this.counters.requests++;
    node.requests++;
    node.active++;
    let released = false;
    /** The app's end once spliced: the request no longer owns it, so upstream.destroy() leaves it open. */
    let spliced: Socket | undefined;
    const close = (): void => {
      if (!released) {
        released = true;
        node.active--;
      }
      upstream.destroy();
      spliced?.destroy();
      client.destroy();
    };
    client.on('close', close);
    upstream.on('upgrade', (upRes, upSocket, upHead) => {
      spliced = upSocket;
      this.trackUpgraded(upSocket);
      upSocket.on('error', () => client.destroy());
      upSocket.on('close', close);
      client.write(`HTTP/1.1 101 ${upRes.statusMessage || 'Switching Protocols'}\r\n${headerLines(upRes.rawHeaders)}\r\n`);
      if (upHead.length > 0) client.write(upHead);
      if (head.length > 0) upSocket.write(head);
      upSocket.pipe(client);
      client.pipe(upSocket);
    });
    upstream.on('response', (upRes) => {
      // Not upgraded: relay as HTTP/1.1 delimited by the close, then close.
      const headersOut = stripHopByHop(upRes.headers);
      delete headersOut['content-length'];
      const lines = Object.entries(headersOut).flatMap(([name, value]) => (Array.isArray(value) ? value : [value]).map((v) => `${name}: ${String(v)}`));
      client.write(`HTTP/1.1 ${upRes.statusCode ?? 502} ${upRes.statusMessage ?? ''}\r\n${lines.join('\r\n')}${lines.length ? '\r\n' : ''}connection: close\r\n\r\n`);
      upRes.pipe(client);
      upRes.on('error', close);
    });
    // The app's answer to an upgrade has a deadline; once spliced, the WebSocket has none.
    upstream.setTimeout(UPGRADE_ANSWER_TIMEOUT_MS, () => {
      if (!client.destroyed && client.bytesWritten === 0) rawAnswer(client, 504, { code: 'KILN_ERR_TIMEOUT', message: `app server ${node.name} did not answer the upgrade within ${UPGRADE_ANSWER_TIMEOUT_MS} ms` });
      close();
    });
    upstream.on('upgrade', () => upstream.setTimeout(0));
    upstream.on('response', () => upstream.setTimeout(0));
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') node.markDown(err.message);
      if (!client.destroyed && client.bytesWritten === 0) rawAnswer(client, 502, { code: 'KILN_ERR_BAD_GATEWAY', message: `app server ${node.name} failed` });
      close();
    });
    upstream.end();
  }

  private trackUpgraded(socket: Socket): void {
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
  }

  // ---- admin ------------------------------------------------------------------------

  private admin(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://balancer');
    // No admin endpoint reads a body: the connection closes after the answer rather than
    // wait, with no deadline, for a body nobody wants.
    const closing: Record<string, string> = {};
    if (hasBody(req)) closeAfterAnswer(req, closing);
    const send = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...closing });
      res.end(JSON.stringify(body));
    };
    if (!this.adminAllowed(req)) {
      // The same answer whether or not a token is set, and no hint of what is there.
      send(this.adminDigest ? 401 : 404, { code: this.adminDigest ? 'KILN_ERR_AUTH' : 'KILN_ERR_INVALID_ARGUMENT', message: this.adminDigest ? 'the balancer admin endpoints need its admin token (Authorization: Bearer)' : 'not found' });
      return;
    }
    if (req.method === 'GET' && (url.pathname === ADMIN_PREFIX || url.pathname === `${ADMIN_PREFIX}/`)) {
      send(200, this.status());
      return;
    }
    const action = /^\/_kiln\/balancer\/nodes\/([A-Za-z0-9_-]+)\/(drain|undrain)$/.exec(url.pathname);
    if (action && req.method === 'POST') {
      if (!this.drain(action[1]!, action[2] === 'drain')) send(404, { code: 'KILN_ERR_INVALID_ARGUMENT', message: `no node ${action[1]}` });
      else send(200, this.node(action[1]!)!.toJSON());
      return;
    }
    send(404, { code: 'KILN_ERR_INVALID_ARGUMENT', message: `unknown balancer endpoint ${req.method} ${url.pathname}` });
  }

  /** The admin token in the Authorization header, compared in constant time; never the source address, never the URL. */
  private adminAllowed(req: IncomingMessage): boolean {
    if (!this.adminDigest) return false;
    const header = req.headers.authorization ?? '';
    if (!header.startsWith('Bearer ')) return false;
    return timingSafeEqual(digest(header.slice(7)), this.adminDigest);
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** Header lines as the node sent them (names' case kept), for the 101 relayed verbatim. */
function headerLines(raw: string[]): string {
  let out = '';
  for (let i = 0; i + 1 < raw.length; i += 2) out += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return out;
}

const UPGRADE_ANSWER_TIMEOUT_MS = 30_000;

/**
 * Headers a proxy or CDN sets to say who the client is and how it came, besides
 * X-Forwarded-*, each believed by some framework (Rack, Spring, ASP.NET, Express
 * plugins) or app: from an untrusted peer they are the client's own claims.
 */
const CLIENT_CLAIMS = new Set([
  'forwarded',
  'x-forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'cf-visitor',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'x-original-forwarded-for',
  'x-original-host',
  'x-original-proto',
  'front-end-https',
  'x-url-scheme',
  'x-scheme',
  'x-arr-ssl',
]);
