import type { Socket } from 'node:net';
import { KilnError, toKilnError } from '../errors/index.js';
import { encodeFrame, FrameParser, PROTOCOL_VERSION, type Frame } from '../protocol/frame.js';
import {
  BINARY_COMMIT_FEATURE,
  BINARY_GRANT_FEATURE,
  STORAGE_BEHIND_FEATURE,
  decodeBody,
  decodeCommitBody,
  encodeBody,
  encodeGrantBody,
  EncodedBody,
  grantToWire,
  MessageType,
  PRINCIPAL_PAGES_FEATURE,
  record,
  sessionId,
  snapshotToWire,
  str,
  touchesFromWire,
  uint,
  type HelloBody,
  type WelcomeBody,
} from '../protocol/messages.js';
import { MAX_LIST_LIMIT } from '../engines/engine.js';
import { checkPrincipal, type SessionLimits } from '../session/limits.js';
import type { CommitRequest, SessionEvent, TouchItem } from '../session/model.js';
import type { Tier } from '../tier/tier.js';
import type { PrincipalCursor } from '../tier/session-table.js';
import type { Logger } from '../util/log.js';
import { BatchedWriter } from '../util/net.js';
import type { Namespace } from './namespaces.js';
import { clientStatsFrom } from '../protocol/client-stats.js';

/**
 * The largest frame a peer may send before its handshake: a Hello is a few hundred
 * bytes. Anonymous sockets announcing 8 MiB frames each made the server buffer them
 * (32 sockets took it from 80 to 300 MiB resident).
 */
export const PRE_AUTH_MAX_FRAME_BYTES = 16 * 1024;

/**
 * One client connection: handshake, then requests dispatched to the tier and answered
 * by request id, in any order (pipelined). Everything the peer sends is untrusted: a
 * bad frame or message ends this connection with a clear error and touches nothing
 * else. The connection is one lease owner; when it closes, its leases move on.
 */
export interface ConnectionContext {
  tier: Tier;
  log: Logger;
  serverId: string;
  /** The namespace a token opens, or undefined for a wrong token. */
  checkToken(token: string): Namespace | undefined;
  /** The limits clients are told and held to (the tier's allow principal keys their prefix). */
  limits: SessionLimits;
  maxFrameBytes: number;
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
  maxAcquireTimeoutMs: number;
  /** Requests in flight at which reading pauses until answers drain. */
  maxInflight: number;
  /** Unsent output above which a peer that does not read is disconnected. */
  maxBufferedBytes: number;
  shuttingDown(): boolean;
  onClosed(conn: Connection): void;
  /**
   * The handshake succeeded: whether the server has room for another client. If not,
   * the connection is refused with KILN_ERR_TOO_MANY_CONNECTIONS.
   */
  admit(conn: Connection): boolean;
  /** The peer failed its handshake (wrong token, bad frame, timeout): counted against its address. */
  onHandshakeFailed(conn: Connection): void;
  /** Whether anyone watches requests (console, metrics): if not, onAnswered is never called and nothing is timed. */
  watched?(): boolean;
  /** Every answered request: its type, how long it took, and the error code if it failed. */
  onAnswered?(type: number, ms: number, code: string | undefined): void;
  onReady?(conn: Connection): void;
}

export interface ClientInfo {
  name: string;
  pid: number;
  host: string;
  app: string;
  address: string;
  connectedAt: number;
  /** The namespace its token opened ('?' before the handshake). */
  namespace: string;
}

export class Connection {
  readonly ownerId: string;
  info: ClientInfo;
  subscribed = false;
  /** Set by the handshake: every id and principal this client names lives in it. */
  ns: Namespace | undefined;
  /** The client reads grants in their binary layout (its Hello lists BINARY_GRANT_FEATURE). */
  private binaryGrants = false;
  /** The client knows KILN_ERR_STORAGE_BEHIND (STORAGE_BEHIND_FEATURE); to one that does not, it is KILN_ERR_ENGINE_UNAVAILABLE. */
  private knowsStorageBehind = false;
  /** What the client last reported of itself (near cache, leases, commits). */
  clientStats: Record<string, unknown> | undefined;
  private readonly parser: FrameParser;
  private state: 'handshake' | 'ready' | 'closed' = 'handshake';
  private inflight = 0;
  private paused = false;
  private readonly handshakeTimer: NodeJS.Timeout;
  private readonly out: BatchedWriter;
  readonly counters = { requests: 0, errors: 0 };

  constructor(
    readonly socket: Socket,
    id: number,
    private readonly ctx: ConnectionContext,
  ) {
    this.ownerId = `c${id}`;
    this.info = { name: '?', pid: 0, host: '?', app: '?', address: `${socket.remoteAddress}:${socket.remotePort}`, connectedAt: Date.now(), namespace: '?' };
    this.parser = new FrameParser(Math.min(PRE_AUTH_MAX_FRAME_BYTES, ctx.maxFrameBytes));
    this.out = new BatchedWriter(socket);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => this.onClose());
    if (ctx.idleTimeoutMs > 0) {
      socket.setTimeout(ctx.idleTimeoutMs, () => this.fail(new KilnError('KILN_ERR_IDLE_CONNECTION', `no traffic for ${ctx.idleTimeoutMs} ms`)));
    }
    this.handshakeTimer = setTimeout(() => this.fail(new KilnError('KILN_ERR_AUTH', 'no handshake within the time allowed')), ctx.handshakeTimeoutMs);
  }

  private get open(): boolean {
    return this.state !== 'closed';
  }

  /** Whether the handshake ever completed (a client, not a stray connection). */
  isAttachedOnce = false;

  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** Server push (recall, revoke, event): request id 0. */
  push(type: number, body: unknown): void {
    this.send(type, 0, body);
  }

  sendEvent(event: SessionEvent): void {
    if (this.subscribed && this.state === 'ready' && this.ns!.owns(event.sessionId)) this.push(MessageType.Event, this.ns!.event(event));
  }

  /**
   * Sends an error for this connection only, then closes it. `blame` false: the peer did
   * nothing wrong (the server is full or stopping), so a failed handshake is not counted.
   */
  fail(error: KilnError, blame = true): void {
    if (this.state === 'closed') return;
    if (this.state === 'handshake' && blame) this.ctx.onHandshakeFailed(this);
    this.counters.errors++;
    this.ctx.log.warn('closing client connection', { client: this.info.address, code: error.code, error: error.message });
    this.send(MessageType.Error, 0, error.toJSON());
    this.state = 'closed';
    // Nothing more it sends is read: a peer streaming a refused body costs no more work.
    this.socket.pause();
    this.socket.end();
    // A peer that never reads must not keep the socket: force it shut soon after.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    const { frames, error } = this.parser.push(chunk);
    for (const frame of frames) {
      // A frame may have closed the connection (bad version, failed handshake).
      if (!this.open) return;
      this.onFrame(frame);
    }
    if (error) this.fail(error);
  }

  private onFrame(frame: Frame): void {
    if (frame.version !== PROTOCOL_VERSION) {
      this.fail(new KilnError('KILN_ERR_PROTOCOL_VERSION', `frame of protocol version ${frame.version}; this server speaks version ${PROTOCOL_VERSION}`, { details: { version: frame.version, supported: [PROTOCOL_VERSION] } }));
      return;
    }
    if (this.state === 'handshake') {
      this.handshake(frame);
      return;
    }
    if (frame.requestId === 0) {
      this.fail(new KilnError('KILN_ERR_PROTOCOL', 'request id 0 is reserved for server pushes'));
      return;
    }
    this.counters.requests++;
    this.inflight++;
    if (this.inflight >= this.ctx.maxInflight && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
    // Synchronous handlers answer in this turn; async ones (acquire, commit) later.
    const started = this.ctx.watched?.() ? performance.now() : -1;
    // The answer keeps the request's id and type, not its frame: a commit waiting on a
    // stalled disk would otherwise keep its body (and the read buffer it is a view of).
    const { requestId, type } = frame;
    const done = (err: unknown, value: unknown): void => {
      this.answer(requestId, err, value);
      if (started >= 0) this.ctx.onAnswered?.(type, performance.now() - started, err === undefined ? undefined : toKilnError(err).code);
    };
    let result: unknown;
    try {
      result = this.dispatch(frame.type, frame.body);
    } catch (err) {
      done(err, undefined);
      // A malformed message means a broken or hostile peer: it may be out of step with
      // the framing, so nothing more it sends is trusted.
      if (err instanceof KilnError && err.code === 'KILN_ERR_PROTOCOL') this.fail(err);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (value) => done(undefined, value),
        (err) => done(err, undefined),
      );
    } else {
      done(undefined, result);
    }
  }

  private handshake(frame: Frame): void {
    clearTimeout(this.handshakeTimer);
    if (frame.type !== MessageType.Hello) {
      this.fail(new KilnError('KILN_ERR_PROTOCOL', 'the first message must be a handshake'));
      return;
    }
    let hello: HelloBody;
    try {
      const body = record(decodeBody(frame.body), 'hello');
      const client = record(body['client'] ?? {}, 'hello.client');
      const features = body['features'];
      this.binaryGrants = Array.isArray(features) && features.includes(BINARY_GRANT_FEATURE);
      this.knowsStorageBehind = Array.isArray(features) && features.includes(STORAGE_BEHIND_FEATURE);
      hello = {
        token: typeof body['token'] === 'string' ? body['token'] : '',
        client: {
          name: typeof client['name'] === 'string' ? client['name'].slice(0, 128) : '?',
          pid: typeof client['pid'] === 'number' ? client['pid'] : 0,
          host: typeof client['host'] === 'string' ? client['host'].slice(0, 256) : '?',
          app: typeof client['app'] === 'string' ? client['app'].slice(0, 128) : '?',
        },
      };
    } catch (err) {
      this.fail(toKilnError(err));
      return;
    }
    const ns = this.ctx.checkToken(hello.token);
    if (!ns) {
      this.fail(new KilnError('KILN_ERR_AUTH', 'wrong or missing token'));
      return;
    }
    if (this.ctx.shuttingDown()) {
      this.fail(new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'the server is stopping'), false);
      return;
    }
    this.ns = ns;
    this.info = { ...this.info, ...hello.client, namespace: ns.name };
    if (!this.ctx.admit(this)) {
      this.fail(new KilnError('KILN_ERR_TOO_MANY_CONNECTIONS', 'the server holds its limit of client connections'), false);
      return;
    }
    this.state = 'ready';
    this.parser.setLimit(this.ctx.maxFrameBytes);
    this.isAttachedOnce = true;
    this.ctx.tier.attach({
      id: this.ownerId,
      onRecall: (key, token) => this.push(MessageType.Recall, { id: ns.idOf(key), token }),
      onRevoke: (key, token, reason) => this.push(MessageType.Revoked, { id: ns.idOf(key), token, reason }),
    });
    const welcome: WelcomeBody = {
      version: PROTOCOL_VERSION,
      features: [BINARY_COMMIT_FEATURE, PRINCIPAL_PAGES_FEATURE],
      epoch: this.ctx.tier.epoch,
      serverId: this.ctx.serverId,
      maxFrameBytes: this.ctx.maxFrameBytes,
      limits: { ...this.ctx.limits, idleConnectionTimeoutMs: this.ctx.idleTimeoutMs, touchGraceMs: this.ctx.tier.touchGraceMs },
    };
    this.send(MessageType.Welcome, frame.requestId, welcome);
    this.ctx.onReady?.(this);
  }

  private dispatch(type: number, bytes: Uint8Array): unknown {
    const tier = this.ctx.tier;
    const ns = this.ns!;
    if (this.ctx.shuttingDown() && type !== MessageType.Ping && type !== MessageType.Release) {
      throw new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'the server is stopping');
    }
    // The hottest message may come in its binary layout; every other body is MessagePack.
    if (type === MessageType.Commit) return tier.commit(this.ownerId, this.commitInNamespace(decodeCommitBody(bytes)));
    const body = decodeBody(bytes);
    switch (type) {
      case MessageType.Ping:
        return { t: Date.now() };
      case MessageType.Acquire: {
        const o = record(body, 'acquire');
        const timeoutMs = Math.min(uint(o, 'timeoutMs'), this.ctx.maxAcquireTimeoutMs);
        return tier.acquire(this.ownerId, ns.key(sessionId(o, 'id')), timeoutMs).then((g) => {
          const grant = ns.isDefault ? g : { ...g, snapshot: ns.snapshot(g.snapshot) };
          return this.binaryGrants ? new EncodedBody(encodeGrantBody(grant)) : grantToWire(grant);
        });
      }
      case MessageType.Release: {
        const o = record(body, 'release');
        tier.release(this.ownerId, ns.key(sessionId(o, 'id')), uint(o, 'token'), o['at'] === undefined ? undefined : uint(o, 'at'));
        return null;
      }
      case MessageType.Load: {
        const o = record(body, 'load');
        return snapshotToWire(ns.snapshot(tier.load(this.ownerId, ns.key(sessionId(o, 'id')), uint(o, 'token'))));
      }
      case MessageType.Touch: {
        const items = touchesFromWire(body);
        return { applied: tier.touch(this.ownerId, ns.isDefault ? items : items.map((t): TouchItem => ({ ...t, sessionId: ns.key(t.sessionId) }))) };
      }
      case MessageType.Destroy: {
        const o = record(body, 'destroy');
        const reason = o['reason'] === undefined ? 'request' : str(o, 'reason', 32);
        return tier.destroy(this.ownerId, ns.key(sessionId(o, 'id')), reason);
      }
      // A principal key holds only its own namespace's sessions (see namespaces.ts).
      case MessageType.FindPrincipal: {
        // A page at a time: a principal's sessions all at once outgrew a frame (past ~55,000
        // of them at 8 MiB), and the client closed its connection on the reply.
        const o = record(body, 'find');
        const principal = ns.principalKey(this.principal(str(o, 'principal', this.ctx.limits.maxPrincipalLength)));
        if (o['limit'] === undefined || o['limit'] === null) {
          // A client from before pages reads one array; it gets one while that fits a page.
          const page = tier.findByPrincipalPage(principal, MAX_LIST_LIMIT);
          if (page.next !== null) throw new KilnError('KILN_ERR_ANSWER_TOO_LARGE', `the principal has more than ${MAX_LIST_LIMIT} sessions: ask for them in pages ("limit"), as clients of this version do`, { details: { limit: MAX_LIST_LIMIT } });
          return page.sessions.map((m) => ns.meta(m));
        }
        const limit = Math.min(Math.max(1, uint(o, 'limit')), MAX_LIST_LIMIT);
        let after: PrincipalCursor | undefined;
        if (o['after'] !== undefined && o['after'] !== null) {
          const cursor = record(o['after'], 'find.after');
          after = { id: ns.key(sessionId(cursor, 'id')), join: uint(cursor, 'join') };
        }
        const page = tier.findByPrincipalPage(principal, limit, after);
        return { sessions: page.sessions.map((m) => ns.meta(m)), next: page.next === null ? null : { id: ns.idOf(page.next.id), join: page.next.join }, total: page.total };
      }
      case MessageType.DestroyPrincipal:
        return tier.destroyByPrincipal(ns.principalKey(this.principal(str(record(body, 'destroyPrincipal'), 'principal', this.ctx.limits.maxPrincipalLength))));
      case MessageType.List: {
        const o = record(body, 'list');
        const limit = Math.min(Math.max(1, uint(o, 'limit')), MAX_LIST_LIMIT);
        const after = o['after'] === undefined || o['after'] === null ? undefined : str(o, 'after', 256);
        const prefix = o['prefix'] === undefined || o['prefix'] === null ? undefined : str(o, 'prefix', 256);
        return tier.list({ after: after === undefined ? undefined : ns.key(after), limit, prefix: ns.key(prefix ?? '') }).then((page) => {
          // Other namespaces' keys sort after every default id: the default listing ends at the first.
          const own = page.sessions.filter((m) => ns.owns(m.id));
          const cut = own.length < page.sessions.length;
          return { sessions: own.map((m) => ns.meta(m)), next: cut || page.next === null ? null : ns.idOf(page.next), total: tier.groupSize(ns.name) };
        });
      }
      case MessageType.ClientStats: {
        const o = record(body, 'clientStats');
        // Only plain figures are kept, bounded, whatever the client sends (a 64-bit integer
        // decodes as a BigInt, which JSON refuses: the client's mistake, not the server's).
        let encoded: string;
        try {
          encoded = JSON.stringify(o);
        } catch (err) {
          throw new KilnError('KILN_ERR_PROTOCOL', `client stats are not plain JSON figures: ${(err as Error).message}`, { cause: err });
        }
        if (encoded.length > 16 * 1024) throw new KilnError('KILN_ERR_PROTOCOL', 'client stats above 16 KiB');
        // Figures only, field by field: the console sets gauges from them, and one string
        // where a number belongs made every /metrics scrape of the tier fail.
        this.clientStats = clientStatsFrom(JSON.parse(encoded)) ?? undefined;
        return null;
      }
      case MessageType.Subscribe:
        this.subscribed = record(body, 'subscribe')['events'] === true;
        return null;
      case MessageType.Stats:
        return this.ctx.tier.stats();
      default:
        throw new KilnError('KILN_ERR_PROTOCOL', `unknown message type ${type}`);
    }
  }

  /** A commit with its id and principal as the tier keys them; the principal checked against the client's limits first. */
  private commitInNamespace(req: CommitRequest): CommitRequest {
    const ns = this.ns!;
    if (typeof req.principal === 'string') {
      checkPrincipal(req.principal, this.ctx.limits);
      this.principal(req.principal);
    }
    if (ns.isDefault) return req;
    return { ...req, sessionId: ns.key(req.sessionId), principal: typeof req.principal === 'string' ? ns.principalKey(req.principal) : req.principal };
  }

  /** A principal a client names; `\0` is how namespaces keep their principals apart. */
  private principal(p: string): string {
    if (p.includes('\u0000')) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'a principal may not contain the character U+0000');
    return p;
  }

  private answer(requestId: number, err: unknown, value: unknown): void {
    this.inflight--;
    // A refused connection stays paused: nothing more it sends is read (fail()).
    if (this.paused && this.state !== 'closed' && this.inflight < this.ctx.maxInflight / 2) {
      this.paused = false;
      this.socket.resume();
    }
    if (this.state !== 'ready') return;
    if (err === undefined) {
      this.send(MessageType.Ok, requestId, value);
      return;
    }
    let error = toKilnError(err);
    if (error.code === 'KILN_ERR_INTERNAL') this.ctx.log.error('request failed', { client: this.info.address, error: error.message, stack: (err as Error)?.stack });
    if (error.code === 'KILN_ERR_STORAGE_BEHIND' && !this.knowsStorageBehind) error = new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', error.message, { details: error.details });
    this.send(MessageType.Error, requestId, error.toJSON());
  }

  private send(type: number, requestId: number, body: unknown): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    if (this.socket.writableLength > this.ctx.maxBufferedBytes) {
      this.ctx.log.warn('client does not read its replies; disconnecting', { client: this.info.address });
      this.socket.destroy();
      return;
    }
    // The replies to a batch of requests (the commits of many HTTP requests, sent
    // together) leave in one system call, not one each.
    this.out.write(encodeFrame(type, requestId, body instanceof EncodedBody ? body.bytes : encodeBody(body)));
  }

  private onClose(): void {
    clearTimeout(this.handshakeTimer);
    this.state = 'closed';
    // The owner's leases move on now, without waiting for any timeout: this is how a killed
    // app server's sessions reach another process (those waited for at once, the rest in
    // slices, each sooner if asked for). (No-op before handshake.)
    this.ctx.tier.detach(this.ownerId);
    this.ctx.onClosed(this);
  }
}
