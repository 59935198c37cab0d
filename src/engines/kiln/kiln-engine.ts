import { connect as netConnect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { errorFromWire, isKilnError, KilnError, toKilnError } from '../../errors/index.js';
import { encodeFrame, FrameParser, PROTOCOL_VERSION } from '../../protocol/frame.js';
import {
  BINARY_COMMIT_FEATURE,
  BINARY_GRANT_FEATURE, STORAGE_BEHIND_FEATURE,
  commitToWire,
  decodeBody,
  encodeBody,
  encodeCommitBody,
  grantFromWire,
  metaFromWire,
  MessageType,
  PRINCIPAL_PAGES_FEATURE,
  record,
  snapshotFromWire,
  touchesToWire,
  type HelloBody,
  type WelcomeBody,
} from '../../protocol/messages.js';
import type { CommitAck, CommitRequest, LeaseGrant, SessionEvent, SessionMeta, SessionSnapshot, TouchItem } from '../../session/model.js';
import { defaultReconnect } from '../../util/backoff.js';
import { BINARY_MARK } from '../../util/binary.js';
import { BatchedWriter } from '../../util/net.js';
import { MAX_SESSION_ID_LENGTH } from '../../session/id.js';
import { StatusStream } from '../../util/status.js';
import { within } from '../../util/deadline.js';
import { MAX_LIST_LIMIT, type ListOptions, type ListPage, type Engine, type EngineLimits, type EngineStats, type EngineStatus, type EngineTraffic, type LeaseHandler, type CallOptions } from '../engine.js';
import { resolveKilnOptions, type KilnEngineOptions, type ResolvedKilnOptions } from './kiln-options.js';
import { limitsFromWelcome, listPageFromWire, pingIntervalFor, PrincipalPageReader, type PrincipalPageCursor } from './kiln-wire.js';
import { PendingRequests } from './pending-requests.js';
import { ReadyWaiters } from './ready-waiters.js';

export type { KilnEngineOptions } from './kiln-options.js';

export { defaultReconnect };

/**
 * The engine that talks to a kiln server over TCP: pipelined requests matched by id,
 * a handshake that authenticates and announces the server's epoch, heartbeats, and
 * reconnect with capped exponential backoff and jitter. Every call is bounded by a
 * timeout, including calls made while the connection is down (they wait for it up to
 * their timeout, then fail with KILN_ERR_ENGINE_UNAVAILABLE).
 *
 * Leases are tied to the connection: when it drops, the server frees them and this
 * engine tells its LeaseHandler that all are lost.
 *
 * @example
 * const engine = connect('kiln://127.0.0.1:9510', { token: process.env.KILN_TOKEN });
 * engine.status.on((s) => console.log('kiln', s.type));
 *
 * This file keeps the connection's lifecycle (dial, handshake, heartbeat, reconnect)
 * and the Engine methods; requests in flight are PendingRequests, calls waiting for the
 * connection ReadyWaiters, options kiln-options and what answers imply kiln-wire.
 */
export class KilnEngine implements Engine {
  readonly kind = 'kiln';
  readonly ownerId: string;
  readonly status = new StatusStream<EngineStatus>();
  epoch: string | undefined;
  limits: EngineLimits | undefined;
  private readonly options: ResolvedKilnOptions;
  private readonly host: string;
  private readonly port: number;
  private readonly operationTimeoutMs: number;
  private readonly acquireTimeoutMs: number;
  /** Whether the server connected now reads commits in their binary layout (its Welcome says so). */
  private binaryCommits = false;
  /** Whether the server answers FindPrincipal a page at a time (PRINCIPAL_PAGES_FEATURE). */
  private principalPages = false;
  private socket: Socket | undefined;
  private state: 'idle' | 'connecting' | 'ready' | 'waiting' | 'failed' | 'closed' = 'idle';
  private fatal: KilnError | undefined;
  private readonly pending = new PendingRequests(() => this.counters.timeouts++);
  private readonly waiting = new ReadyWaiters();
  private handler: LeaseHandler | undefined;
  private readonly eventListeners = new Set<(event: SessionEvent) => void>();
  private reconnectAttempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  /** Writes to the current socket (set and cleared with it), gathered per turn of the event loop. */
  private out: BatchedWriter | undefined;
  readonly counters = { requests: 0, reconnects: 0, disconnects: 0, timeouts: 0, bytesOut: 0, bytesIn: 0 };

  constructor(url: string, options: KilnEngineOptions = {}) {
    this.options = resolveKilnOptions(url, options);
    this.ownerId = this.options.ownerId;
    this.host = this.options.host;
    this.port = this.options.port;
    this.operationTimeoutMs = this.options.operationTimeoutMs;
    this.acquireTimeoutMs = this.options.acquireTimeoutMs;
  }

  get connected(): boolean {
    return this.state === 'ready';
  }

  /** Resolves once connected (first attempt, or after reconnecting); rejects on a fatal error or timeout. */
  async connect(): Promise<void> {
    await this.ready(this.options.connectTimeoutMs);
  }

  setLeaseHandler(handler: LeaseHandler): void {
    this.handler = handler;
  }

  async acquire(sessionId: string, options?: { timeoutMs?: number } & CallOptions): Promise<LeaseGrant> {
    const callMs = within((options?.timeoutMs ?? this.acquireTimeoutMs) + this.operationTimeoutMs, options?.deadline);
    // The server gives up on the lease a little before we give up on its answer: its
    // refusal then arrives in time, rather than a grant we no longer wait for (which
    // would hold the lease for nobody until a recall took it back).
    const margin = Math.min(this.operationTimeoutMs, Math.max(50, Math.floor(callMs / 10)));
    const waitMs = Math.max(1, Math.min(options?.timeoutMs ?? this.acquireTimeoutMs, callMs - margin));
    return grantFromWire(await this.request(MessageType.Acquire, { id: sessionId, timeoutMs: waitMs }, callMs), sessionId);
  }

  async release(sessionId: string, token: number, lastAccessedAt?: number): Promise<void> {
    await this.request(MessageType.Release, lastAccessedAt === undefined ? { id: sessionId, token } : { id: sessionId, token, at: lastAccessedAt });
  }

  async load(sessionId: string, token: number, options?: CallOptions): Promise<SessionSnapshot | null> {
    return snapshotFromWire(await this.request(MessageType.Load, { id: sessionId, token }, within(this.operationTimeoutMs, options?.deadline)));
  }

  async commit(request: CommitRequest, options?: CallOptions): Promise<CommitAck> {
    const body = record(await this.request(MessageType.Commit, request, within(this.operationTimeoutMs, options?.deadline), this.encodeCommit), 'ack');
    return { version: body['version'] as number, duplicate: body['duplicate'] === true };
  }

  async touch(items: readonly TouchItem[]): Promise<void> {
    if (items.length === 0) return;
    await this.request(MessageType.Touch, touchesToWire(items));
  }

  async destroy(sessionId: string, options?: { reason?: string } & CallOptions): Promise<boolean> {
    return (await this.request(MessageType.Destroy, { id: sessionId, reason: options?.reason }, within(this.operationTimeoutMs, options?.deadline))) === true;
  }

  /**
   * Every session of a principal, newest login first, read a page at a time (one answer
   * of every session outgrew a frame past ~55,000 sessions, and the client closed its
   * connection on it). Sessions that log in while the pages are read are not listed;
   * each session logged in throughout is listed once. Should the server restart between
   * pages (its epoch changes), the reading starts again.
   */
  async findByPrincipal(principal: string): Promise<SessionMeta[]> {
    for (let attempt = 0; ; attempt++) {
      if (this.state !== 'ready') await this.ready(this.operationTimeoutMs);
      const epoch = this.epoch;
      if (!this.principalPages) {
        // A server of before pages answers one array.
        const list = await this.request(MessageType.FindPrincipal, { principal });
        if (!Array.isArray(list)) throw new KilnError('KILN_ERR_PROTOCOL', 'malformed principal listing');
        return list.map(metaFromWire);
      }
      // Pages that fit a frame: a session's meta on the wire is its id, its principal (up
      // to maxPrincipalLength characters of up to 3 bytes), five numbers and the keys.
      const metaBytes = MAX_SESSION_ID_LENGTH + 256 + 3 * (this.limits?.maxPrincipalLength ?? 256);
      const limit = Math.max(1, Math.min(MAX_LIST_LIMIT, Math.floor((this.options.maxFrameBytes - 1024) / metaBytes)));
      const read = new PrincipalPageReader();
      let after: PrincipalPageCursor | null = null;
      let lost: unknown;
      do {
        let body: unknown;
        try {
          body = await this.request(MessageType.FindPrincipal, { principal, limit, after });
        } catch (err) {
          // The connection dropped between pages: the server may have restarted, which
          // renumbers joins. Read again once it is back (request() waits for it).
          if (!isKilnError(err) || err.code !== 'KILN_ERR_CONNECTION_LOST') throw err;
          lost = err;
          break;
        }
        if (this.epoch !== epoch) break;
        after = read.page(body);
      } while (after !== null && !read.tooManyEmptyPages);
      if (lost === undefined && this.epoch === epoch && after === null) return read.sessions;
      // The server restarted or the connection dropped, or so many logins and logouts went
      // on meanwhile that the walks past them never reached the rest: read again.
      if (attempt >= 2) {
        const why = lost !== undefined ? 'the connection kept dropping' : this.epoch !== epoch ? 'the kiln server restarted' : 'its sessions kept changing';
        throw new KilnError('KILN_ERR_TIMEOUT', `a principal's sessions could not be read to the end in three tries (${why})`, { cause: lost });
      }
    }
  }

  async list(options: ListOptions): Promise<ListPage> {
    return listPageFromWire(await this.request(MessageType.List, { after: options.after, limit: options.limit, prefix: options.prefix }));
  }

  async destroyByPrincipal(principal: string): Promise<number> {
    return (await this.request(MessageType.DestroyPrincipal, { principal })) as number;
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    this.eventListeners.add(listener);
    if (this.eventListeners.size === 1 && this.state === 'ready') void this.request(MessageType.Subscribe, { events: true }).catch(() => undefined);
    return () => {
      this.eventListeners.delete(listener);
      if (this.eventListeners.size === 0 && this.state === 'ready') void this.request(MessageType.Subscribe, { events: false }).catch(() => undefined);
    };
  }

  async stats(): Promise<EngineStats> {
    const s = record(await this.request(MessageType.Stats, {}), 'stats');
    return { ...(s as unknown as EngineStats), kind: this.kind };
  }

  async reportClientStats(stats: Record<string, unknown>): Promise<void> {
    if (this.state !== 'ready') return;
    await this.request(MessageType.ClientStats, stats);
  }

  async ping(): Promise<number> {
    const started = Date.now();
    await this.request(MessageType.Ping, {});
    return Date.now() - started;
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    const error = new KilnError('KILN_ERR_CLOSED', 'the engine was closed');
    this.rejectAll(error);
    const socket = this.socket;
    this.socket = undefined;
    this.out = undefined;
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.end();
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 500).unref();
      });
    }
    this.status.push({ type: 'closed' });
    this.status.end();
  }

  // ---- requests -----------------------------------------------------------------------

  traffic(): EngineTraffic {
    return { requests: this.counters.requests, bytes: this.counters.bytesOut };
  }

  /** A commit's body, encoded when sent: for the server connected then (see binaryCommits). */
  private readonly encodeCommit = (request: CommitRequest): Uint8Array => (this.binaryCommits ? encodeCommitBody(request) : encodeBody(commitToWire(request)));

  private async request<B>(type: number, body: B, timeoutMs = this.operationTimeoutMs, encode: (body: B) => Uint8Array = encodeBody): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    if (this.state !== 'ready') await this.ready(timeoutMs);
    const remaining = Math.max(1, deadline - Date.now());
    return new Promise<unknown>((resolve, reject) => {
      const id = this.pending.nextId();
      const out = this.out;
      if (this.state !== 'ready' || !out) {
        reject(new KilnError('KILN_ERR_CONNECTION_LOST', 'connection to the kiln server was lost'));
        return;
      }
      const due = Date.now() + remaining;
      this.pending.add(id, type, timeoutMs, due, resolve, reject);
      this.counters.requests++;
      this.write(out, encodeFrame(type, id, encode(body)));
    });
  }

  /**
   * Requests made while the event loop handles one batch of I/O leave in one write
   * (BatchedWriter): the commits of the HTTP requests that arrived together on different
   * connections share a system call (about 30 µs each on the benchmark's VM).
   */
  private write(out: BatchedWriter, frame: Buffer): void {
    this.counters.bytesOut += frame.length;
    out.write(frame);
  }

  /** Waits until connected, starting the connection if nobody has. */
  private ready(timeoutMs: number): Promise<void> {
    if (this.state === 'ready') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new KilnError('KILN_ERR_CLOSED', 'the engine was closed'));
    if (this.state === 'failed') return Promise.reject(this.fatal!);
    if (this.state === 'idle') this.dial();
    return this.waiting.wait(timeoutMs, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `kiln server at ${this.host}:${this.port} not reachable within ${timeoutMs} ms`, { details: { host: this.host, port: this.port } }));
  }

  // ---- connection lifecycle ---------------------------------------------------------------

  private dial(): void {
    this.state = 'connecting';
    const parser = new FrameParser(this.options.maxFrameBytes);
    const secure = this.options.secure;
    const socket = secure
      ? tlsConnect({ host: this.host, port: this.port, servername: this.host, ...this.options.tls })
      : netConnect({ host: this.host, port: this.port });
    this.socket = socket;
    this.out = new BatchedWriter(socket);
    socket.setNoDelay(true);
    let handshaken = false;
    let lastError: Error | undefined;
    const connectTimer = setTimeout(() => {
      lastError = new KilnError('KILN_ERR_TIMEOUT', 'connect/handshake timed out');
      socket.destroy();
    }, this.options.connectTimeoutMs);
    const onOpen = (): void => {
      const hello: HelloBody = { token: this.options.token, client: { name: this.ownerId, pid: process.pid, host: hostname(), app: this.options.app }, features: [BINARY_GRANT_FEATURE, STORAGE_BEHIND_FEATURE] };
      socket.write(encodeFrame(MessageType.Hello, 1, encodeBody(hello)));
    };
    socket.once(secure ? 'secureConnect' : 'connect', onOpen);
    socket.on('data', (chunk: Buffer) => {
      this.counters.bytesIn += chunk.length;
      const { frames, error } = parser.push(chunk);
      for (const frame of frames) {
        if (frame.version !== PROTOCOL_VERSION) {
          lastError = this.failFatal(new KilnError('KILN_ERR_PROTOCOL_VERSION', `server sent protocol version ${frame.version}; this client speaks ${PROTOCOL_VERSION}`));
          socket.destroy();
          return;
        }
        let body: unknown;
        try {
          // A reply in a binary layout (a grant: see the Hello's features) is read by the
          // request that asked for it; MessagePack never starts with this byte.
          body = frame.type === MessageType.Ok && frame.body[0] === BINARY_MARK ? frame.body : decodeBody(frame.body);
        } catch (err) {
          lastError = toKilnError(err);
          socket.destroy();
          return;
        }
        if (!handshaken) {
          clearTimeout(connectTimer);
          if (frame.type === MessageType.Welcome) {
            handshaken = true;
            this.onWelcome(body as WelcomeBody);
          } else {
            const err = errorFromWire(body);
            lastError = err.code === 'KILN_ERR_AUTH' || err.code === 'KILN_ERR_PROTOCOL_VERSION' ? this.failFatal(err) : err;
            socket.destroy();
            return;
          }
          continue;
        }
        this.onFrame(frame.type, frame.requestId, body);
      }
      if (error) {
        lastError = error;
        socket.destroy();
      }
    });
    socket.on('error', (err) => {
      lastError = err;
    });
    socket.on('close', () => {
      clearTimeout(connectTimer);
      if (this.socket === socket) {
        this.socket = undefined;
        this.out = undefined;
      }
      this.onDisconnect(handshaken, lastError);
    });
  }

  private onWelcome(welcome: WelcomeBody): void {
    const previous = this.epoch;
    this.epoch = welcome.epoch;
    // Per connection: a server of an older version, reached after a reconnect, reads only MessagePack.
    this.binaryCommits = Array.isArray(welcome.features) && welcome.features.includes(BINARY_COMMIT_FEATURE);
    this.principalPages = Array.isArray(welcome.features) && welcome.features.includes(PRINCIPAL_PAGES_FEATURE);
    this.limits = limitsFromWelcome(welcome.limits);
    this.state = 'ready';
    this.reconnectAttempt = 0;
    if (previous !== undefined && previous !== welcome.epoch) this.status.push({ type: 'epochChanged', from: previous, to: welcome.epoch });
    this.status.push({ type: 'connected', epoch: welcome.epoch });
    const interval = pingIntervalFor(welcome.limits, this.options.pingIntervalMs);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      // A ping that goes unanswered means a dead peer the kernel has not noticed: drop it and reconnect.
      this.ping().catch((err: KilnError) => {
        if (err.code === 'KILN_ERR_TIMEOUT') this.socket?.destroy();
      });
    }, interval);
    this.pingTimer.unref();
    if (this.eventListeners.size > 0) void this.request(MessageType.Subscribe, { events: true }).catch(() => undefined);
    this.waiting.resolveAll();
  }

  private onFrame(type: number, requestId: number, body: unknown): void {
    switch (type) {
      case MessageType.Ok:
      case MessageType.Error: {
        if (requestId === 0) {
          // The server is closing this connection and says why.
          this.status.push({ type: 'error', error: errorFromWire(body) });
          return;
        }
        this.pending.settle(requestId, type === MessageType.Ok, body, errorFromWire);
        return;
      }
      case MessageType.Recall: {
        const o = body as { id?: unknown; token?: unknown };
        if (typeof o?.id === 'string' && typeof o.token === 'number') this.handler?.recall(o.id, o.token);
        return;
      }
      case MessageType.Revoked: {
        const o = body as { id?: unknown; token?: unknown; reason?: unknown };
        if (typeof o?.id === 'string' && typeof o.token === 'number') this.handler?.revoked(o.id, o.token, String(o.reason));
        return;
      }
      case MessageType.Event: {
        const event = body as SessionEvent;
        for (const listener of this.eventListeners) {
          try {
            listener(event);
          } catch {
            // A listener's failure is its own.
          }
        }
        return;
      }
      default:
        return;
    }
  }

  private onDisconnect(wasReady: boolean, cause: Error | undefined): void {
    clearInterval(this.pingTimer);
    if (wasReady) {
      this.counters.disconnects++;
      this.rejectAll(new KilnError('KILN_ERR_CONNECTION_LOST', 'connection to the kiln server was lost', { cause }), false);
      this.handler?.lost('disconnected');
      this.status.push({ type: 'disconnected', error: cause });
    }
    if (this.state === 'closed' || this.state === 'failed') return;
    this.state = 'waiting';
    const attempt = ++this.reconnectAttempt;
    const delay = this.options.reconnect(attempt, cause);
    if (delay === false) {
      this.failFatal(new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `gave up reconnecting to ${this.host}:${this.port} after ${attempt - 1} attempts`, { cause }));
      return;
    }
    this.counters.reconnects++;
    this.status.push({ type: 'reconnecting', attempt, delayMs: delay });
    this.reconnectTimer = setTimeout(() => {
      if (this.state === 'waiting') this.dial();
    }, delay);
    this.reconnectTimer.unref();
  }

  private failFatal(error: KilnError): KilnError {
    this.fatal = error;
    this.state = 'failed';
    this.status.push({ type: 'error', error });
    this.rejectAll(error);
    return error;
  }

  private rejectAll(error: KilnError, includeWaiting = true): void {
    this.pending.rejectAll(error);
    if (!includeWaiting) return;
    this.waiting.rejectAll(error);
  }
}

/**
 * Connects to a kiln server.
 *
 * @example
 * const engine = connect('kiln://127.0.0.1:9510', { token: process.env.KILN_TOKEN });
 */
export function connect(url: string, options: KilnEngineOptions = {}): KilnEngine {
  return new KilnEngine(url, options);
}
