import type { CommitAck, CommitRequest, LeaseGrant, SessionEvent, SessionMeta, SessionSnapshot, TouchItem } from '../session/model.js';
import type { StatusStream } from '../util/status.js';
import type { ListOptions, ListPage } from '../tier/tier.js';

export type { ListOptions, ListPage };

/**
 * The one interface between the Kiln client and a server tier. An Engine instance is
 * one "process" in the lease rules: it holds leases, receives recalls for them, and
 * loses all of them when it disconnects. Every engine passes test/conformance.
 *
 * Everything here is low level: applications use SessionClient (client/), which keeps
 * leases greedily, caches sessions and computes deltas on top of an engine.
 *
 * @example
 * const engine = connectKiln('kiln://127.0.0.1:9510', { token });
 * await engine.connect();
 * const grant = await engine.acquire(id);
 * await engine.commit({ sessionId: id, token: grant.token, commitId, baseVersion: 0, set, del: [], lastAccessedAt: Date.now() });
 * await engine.release(id, grant.token);
 */
export interface Engine {
  /** 'memory', 'kiln', 'redis'… */
  readonly kind: string;
  /** This process's identity as a lease owner, unique per connection. */
  readonly ownerId: string;
  /** The tier's epoch from the last handshake: grants from another epoch are void. */
  readonly epoch: string | undefined;
  /** Limits the tier enforces (the client checks them before sending). */
  readonly limits: EngineLimits | undefined;
  readonly status: StatusStream<EngineStatus>;

  connect(): Promise<void>;
  /**
   * Resolves when this owner holds the lease (granted at once if free, else after a
   * recall). `timeoutMs` bounds the wait for the lease; `deadline` bounds the whole call.
   */
  acquire(sessionId: string, options?: { timeoutMs?: number } & CallOptions): Promise<LeaseGrant>;
  /**
   * Gives the lease back. `lastAccessedAt`, when given, is applied first as a touch
   * would be (a request that used the session and changed nothing ends in one call).
   */
  release(sessionId: string, token: number, lastAccessedAt?: number): Promise<void>;
  load(sessionId: string, token: number, options?: CallOptions): Promise<SessionSnapshot | null>;
  commit(request: CommitRequest, options?: CallOptions): Promise<CommitAck>;
  touch(items: readonly TouchItem[]): Promise<void>;
  /** Destroys the session wherever it is held; a tombstone keeps late commits out. */
  destroy(sessionId: string, options?: { reason?: string } & CallOptions): Promise<boolean>;
  findByPrincipal(principal: string): Promise<SessionMeta[]>;
  /** Sessions in id order, a page at a time (admin, console, KilnStore.all). */
  list(options: ListOptions): Promise<ListPage>;
  destroyByPrincipal(principal: string): Promise<number>;
  /** Server-side expiry and destroy events; the first subscriber turns delivery on. */
  onEvent(listener: (event: SessionEvent) => void): () => void;
  /** Who to tell when the tier takes a lease back. The SessionClient sets this. */
  setLeaseHandler(handler: LeaseHandler): void;
  stats(): Promise<EngineStats>;
  /** Sends this process's client figures to the tier, where the console shows them (optional). */
  reportClientStats?(stats: Record<string, unknown>): Promise<void>;
  /** What this process has sent to the tier so far (engines that talk over a socket). */
  traffic?(): EngineTraffic;
  close(): Promise<void>;
}

/**
 * Bounds one call from outside: `deadline` (Date.now() milliseconds) is when the calling
 * request's time runs out. The engine's own timeouts still apply; the deadline only cuts
 * them shorter, every wait inside the call included (connecting, replicas, retries).
 */
export interface CallOptions {
  deadline?: number;
}

/** Requests and bytes sent to the tier since the engine was made; for benchmarks and metrics. */
export interface EngineTraffic {
  requests: number;
  bytes: number;
}

export interface LeaseHandler {
  /** Another process wants the session: let in-flight work finish, flush, release. */
  recall(sessionId: string, token: number): void;
  /** The lease ended without a release (deadline overrun, destroyed, expired). */
  revoked(sessionId: string, token: number, reason: string): void;
  /** Every lease is gone (disconnect, new epoch): drop every cached copy. */
  lost(reason: string): void;
}

export interface EngineLimits {
  maxAttributeBytes: number;
  maxSessionBytes: number;
  maxAttributes: number;
  maxAttributeNameLength: number;
  maxPrincipalLength: number;
  /** Slack the tier gives a lease holder's batched touches: clients touch at least twice within it. */
  touchGraceMs?: number;
}

export type EngineStatus =
  | { type: 'connected'; epoch: string }
  | { type: 'disconnected'; error?: Error }
  | { type: 'reconnecting'; attempt: number; delayMs: number }
  | { type: 'epochChanged'; from: string; to: string }
  | { type: 'error'; error: Error }
  | { type: 'closed' };

export interface EngineStats {
  kind: string;
  epoch: string | undefined;
  sessions: number;
  sessionBytes: number;
  leases: number;
  leaseWaiters: number;
  owners: number;
  counters: Record<string, number>;
  [extra: string]: unknown;
}

/** Default time bounds; every engine applies them so no call can hang. */
export const DEFAULT_OPERATION_TIMEOUT_MS = 5000;
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 10_000;
/** Largest page list() returns. */
export const MAX_LIST_LIMIT = 1000;
