import type { Socket } from 'node:net';

/**
 * The balancer's bounds on what one client can hold: connections per source address
 * and in all, and how long headers and bodies may take. Defaults here, checked once in
 * the balancer's constructor, reported in its status.
 *
 * The per-client count keys on the socket's own remote address, never on
 * X-Forwarded-For: a header is the client's claim. A peer the balancer trusts
 * (`--trust-proxy`, a TLS terminator in front) has no per-address cap: every client
 * behind it shares its address, so one attacker's slow bodies through it would use up
 * everybody's share. The terminator's own per-client limits stand in for it, and the
 * total cap still counts its connections.
 */
export interface BalancerLimits {
  /** Request headers must be complete within this (Node's headersTimeout); 408 after. */
  headersTimeoutMs: number;
  /** A request body that sends nothing for this long is ended with 408. */
  bodyIdleTimeoutMs: number;
  /** A request body must be complete within this from its headers; 408 after. */
  bodyTimeoutMs: number;
  /** An idle keep-alive client connection is closed after this. */
  keepAliveTimeoutMs: number;
  /** How long a request may wait for a socket of its node's upstream pool; 503 after. */
  queueTimeoutMs: number;
  /** Requests waiting for one node's pool at most; 503 at once beyond. */
  maxQueue: number;
  /** Sockets to each app server (the upstream pool). */
  upstreamSockets: number;
  /**
   * How long the app server's connection may stay silent while a request is on it: no
   * answer yet, or a response the client does not read (backpressure). 504 before the
   * response began, the client's connection cut after.
   */
  upstreamIdleTimeoutMs: number;
  /** Bytes of a request body read before the node is picked (the rest streams). */
  bodyBufferBytes: number;
  maxConnectionsPerClient: number;
  maxConnections: number;
}

export const DEFAULT_LIMITS: BalancerLimits = {
  headersTimeoutMs: 10_000,
  bodyIdleTimeoutMs: 10_000,
  bodyTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5_000,
  queueTimeoutMs: 5_000,
  maxQueue: 1_024,
  upstreamSockets: 256,
  upstreamIdleTimeoutMs: 60_000,
  bodyBufferBytes: 64 * 1024,
  maxConnectionsPerClient: 256,
  maxConnections: 10_000,
};

/** The bounds an option bag may set: name → [min, max]. */
export const LIMIT_RANGES: Record<keyof BalancerLimits, [number, number]> = {
  headersTimeoutMs: [100, 3_600_000],
  bodyIdleTimeoutMs: [100, 3_600_000],
  bodyTimeoutMs: [100, 86_400_000],
  keepAliveTimeoutMs: [0, 3_600_000],
  queueTimeoutMs: [1, 600_000],
  maxQueue: [0, 1_000_000],
  upstreamSockets: [1, 65_536],
  upstreamIdleTimeoutMs: [100, 86_400_000],
  bodyBufferBytes: [0, 64 * 1024 * 1024],
  maxConnectionsPerClient: [1, 1_000_000],
  maxConnections: [1, 1_000_000],
};

/** Open client connections per source address and in all; refuses beyond the limits. */
export class ConnectionLimiter {
  private readonly perAddress = new Map<string, number>();
  private open = 0;
  refused = 0;

  /** `uncapped`: addresses with no per-address cap (trusted proxies); the total counts them. */
  constructor(
    private readonly maxPerClient: number,
    private readonly maxTotal: number,
    private readonly uncapped: (address: string) => boolean = () => false,
  ) {}

  /** Counts the socket until it closes; false (and not counted) when a limit is reached. */
  admit(socket: Socket): boolean {
    const address = socket.remoteAddress ?? '';
    const mine = this.perAddress.get(address) ?? 0;
    if ((mine >= this.maxPerClient && !this.uncapped(address)) || this.open >= this.maxTotal) {
      this.refused++;
      return false;
    }
    this.perAddress.set(address, mine + 1);
    this.open++;
    socket.once('close', () => {
      this.open--;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left > 0) this.perAddress.set(address, left);
      else this.perAddress.delete(address);
    });
    return true;
  }

  stats(): { open: number; clients: number; refused: number } {
    return { open: this.open, clients: this.perAddress.size, refused: this.refused };
  }
}
