import { Agent } from 'node:http';
import { KilnError } from '../errors/index.js';
import { ROUTE_PATTERN } from '../session/id.js';

/** Below Node's default keepAliveTimeout (5 s), the usual app server's. */
const IDLE_SOCKET_MS = 4_000;

/** One app server behind the balancer, and what the balancer knows of it. */
export class BackendNode {
  healthy = true;
  draining = false;
  /** Requests being proxied to the node, those waiting for a pool socket included. */
  active = 0;
  /** Of those, the ones still waiting for a socket of the pool. */
  queued = 0;
  requests = 0;
  failures = 0;
  consecutiveFailures = 0;
  lastCheckAt = 0;
  lastError: string | undefined;
  pid: number | undefined;
  readonly host: string;
  readonly port: number;
  /**
   * Idle sockets to the app server are closed by the balancer before the app server
   * would close them: a request sent on a socket the app server is closing at that
   * instant fails with "socket hang up", and one with a body cannot be retried. Node 20
   * closes an idle socket a second before the `Keep-Alive: timeout=N` the app announces
   * only when the agent has a timeout of its own (with none, it kept sockets until the
   * app server closed them); IDLE_SOCKET_MS also covers apps that announce nothing.
   */
  readonly agent: Agent;

  constructor(
    readonly name: string,
    readonly url: string,
    maxSockets = 256,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: Math.min(64, maxSockets), timeout: IDLE_SOCKET_MS });
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `node ${name}: ${JSON.stringify(url)} is not a URL`);
    }
    if (parsed.protocol !== 'http:') throw new KilnError('KILN_ERR_INVALID_OPTION', `node ${name}: only http:// app servers are supported (got ${parsed.protocol})`);
    this.host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = Number(parsed.port || 80);
  }

  markDown(reason: string): void {
    if (this.healthy) this.closeIdleSockets();
    this.healthy = false;
    this.lastError = reason;
  }

  /**
   * The pool's idle sockets, likely dead with the node, so none is reused when it comes
   * back. Not the sockets of requests in flight (agent.destroy() closed those too): a node
   * that refuses new connections may be shutting down gracefully and still answering
   * them, and a stuck one is bounded by upstreamIdleTimeoutMs.
   */
  private closeIdleSockets(): void {
    for (const sockets of Object.values(this.agent.freeSockets)) for (const socket of [...(sockets ?? [])]) socket.destroy();
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      url: this.url,
      healthy: this.healthy,
      draining: this.draining,
      pid: this.pid ?? null,
      requests: this.requests,
      active: this.active,
      queued: this.queued,
      failures: this.failures,
      lastError: this.lastError ?? null,
      lastCheckAt: this.lastCheckAt || null,
    };
  }
}

/** `app-1=http://127.0.0.1:3001` */
export function parseNodeSpec(spec: string): { name: string; url: string } {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw new KilnError('KILN_ERR_INVALID_OPTION', `--node ${JSON.stringify(spec)}: expected name=http://host:port`);
  const name = checkNodeName(spec.slice(0, eq), '--node name');
  return { name, url: spec.slice(eq + 1) };
}

/**
 * A node's name is the route suffix of its sessions' ids (a dot would end it) and the
 * value of the balancer cookie (a `;` or a line break would be header injection), so
 * every name is held to this rule, wherever it comes from. `where` says which option.
 */
export function checkNodeName(name: unknown, where: string): string {
  if (typeof name !== 'string' || !ROUTE_PATTERN.test(name)) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${where} ${JSON.stringify(name) ?? String(name)}: letters, digits, _ and - only, 1 to 64 of them (it is the session route)`, { details: { option: 'nodes' } });
  }
  return name;
}
