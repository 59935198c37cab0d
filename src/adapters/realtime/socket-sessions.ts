import type { IncomingMessage } from 'node:http';
import { KilnError, isKilnError } from '../../errors/index.js';
import type { SessionEvent } from '../../session/model.js';
import { requestIsSecure, type NodeSessionRequest } from '../core/http.js';
import { RequestSession, SessionRuntime, type KilnSessionOptions } from '../core/runtime.js';
import { createSessionObject, type KilnSessionObject } from '../core/session-object.js';
import { OptionReader } from '../../util/options.js';

/**
 * The HTTP session inside WebSocket and socket.io handlers, framework-neutral (kiln/ws
 * and kiln/socket.io are thin glue over it).
 *
 * A socket is tied to the session its upgrade request's cookie names (signed and
 * verified as for HTTP). It holds no lease while idle: each `session(fn)` opens the
 * session under its lease exactly as an HTTP request does, so what another node committed
 * a moment ago is what fn sees, and fn's changes commit before the lease moves on (lease
 * rules 1–3: no lost update against HTTP requests or other sockets).
 *
 * Ends: every socket of a session is closed (closeCode) when the tier reports the
 * session destroyed or expired — a logout, a "log out everywhere", a regenerate() that
 * moved the data to a new id, the admin, or its timeout — on whichever node the sockets
 * live, since every node receives the tier's events. Sockets keep their session alive:
 * one that received anything since the last round touches it (batched, every
 * keepAliveMs), so a user chatting for an hour is not logged out by the idle timeout.
 */
export interface SocketSessionOptions extends KilnSessionOptions<IncomingMessage> {
  /** Refuse the connection (HTTP 401 before the upgrade) when the cookie names no live session. Default false: it connects, and session() rejects with KILN_ERR_SESSION_NOT_FOUND. */
  requireSession?: boolean;
  /** WebSocket close code sent when the session ends (4000–4999). Default 4001. */
  closeCode?: number;
  /** How often sockets that were active keep their session alive. Default 30 s (keep it under a third of the idle timeout). */
  keepAliveMs?: number;
}

/** What the glue needs of a socket: a way to close it with a code and a reason. */
export interface ClosableSocket {
  close(code: number, reason: string): void;
}

/** One socket's session: `session(fn)` runs fn under the session's lease and commits what it changed. */
export interface SocketSession {
  /** The session id the upgrade request's cookie named, or undefined (no cookie, or a bad one). */
  readonly id: string | undefined;
  /**
   * Runs fn with the session object (the same API as `req.session`), commits what fn
   * changed when it settles, then lets the next request or socket event on the session
   * run. Rejects with KILN_ERR_SESSION_NOT_FOUND when there is no live session (the
   * socket is then closed with closeCode).
   */
  session<T>(fn: (session: KilnSessionObject) => T | Promise<T>, options?: SocketSessionRunOptions): Promise<Awaited<T>>;
  /** Counts as activity for keep-alive (the glue calls it for every message received). */
  active(): void;
}

export interface SocketSessionRunOptions {
  /** A snapshot, without taking the lease: other requests on the session go on meanwhile; a change throws KILN_ERR_READ_ONLY_SESSION. */
  readOnly?: boolean;
}

const SOCKET_KEYS = ['requireSession', 'closeCode', 'keepAliveMs'] as const;
const DEFAULT_CLOSE_CODE = 4001;
const DEFAULT_KEEP_ALIVE_MS = 30_000;
/** Sessions kept alive per turn of the event loop, so a node with 100,000 sockets never stalls. */
const KEEP_ALIVE_SLICE = 256;

/** A socket session refuses what would need a new cookie, which only an HTTP response can carry. */
class SocketRequestSession extends RequestSession<IncomingMessage> {
  override regenerate(): Promise<void> {
    return Promise.reject(new KilnError('KILN_ERR_INVALID_ARGUMENT', 'regenerate() cannot run in a socket handler: the new id could not reach the browser\'s cookie. Regenerate in an HTTP request; the sockets of the old id are then closed.'));
  }
}

export class SocketSessions {
  readonly runtime: SessionRuntime<IncomingMessage>;
  readonly requireSession: boolean;
  readonly closeCode: number;
  private readonly keepAliveMs: number;
  /** Session id → its open sockets on this node. */
  private readonly sockets = new Map<string, Set<ClosableSocket>>();
  /** Sessions whose sockets received something since the last keep-alive round. */
  private activeIds = new Set<string>();
  private readonly unsubscribe: () => void;
  private readonly keepAliveTimer: NodeJS.Timeout;
  private closed = false;

  constructor(options: SocketSessionOptions, adapter: string) {
    const rest: Record<string, unknown> = { ...options };
    const own: Record<string, unknown> = {};
    for (const key of SOCKET_KEYS) {
      if (key in rest) own[key] = rest[key];
      delete rest[key];
    }
    const o = new OptionReader(adapter, own, SOCKET_KEYS);
    // A socket cannot carry a new cookie: a login in a socket handler is refused instead (see run()).
    this.runtime = new SessionRuntime<IncomingMessage>({ ...(rest as unknown as KilnSessionOptions<IncomingMessage>), rotateOnLogin: false }, adapter);
    this.requireSession = o.bool('requireSession', false);
    this.closeCode = o.int('closeCode', DEFAULT_CLOSE_CODE, 4000, 4999);
    this.keepAliveMs = o.int('keepAliveMs', DEFAULT_KEEP_ALIVE_MS, 100, 24 * 3600_000);
    this.unsubscribe = this.runtime.client.onEvent((event) => this.onSessionEvent(event));
    this.keepAliveTimer = setInterval(() => void this.keepAlive(), this.keepAliveMs);
    this.keepAliveTimer.unref();
  }

  /** The verified session id of an upgrade request's cookie, if any (no tier call). */
  idOf(req: IncomingMessage): string | undefined {
    return this.runtime.sessionIdFrom(req.headers.cookie);
  }

  /** Whether the upgrade request names a live session (asks the tier: for requireSession, before the upgrade). */
  async isLive(req: IncomingMessage): Promise<boolean> {
    const id = this.idOf(req);
    if (id === undefined) return false;
    const handle = await this.runtime.client.open(id, { readOnly: true });
    const live = !handle.isNew;
    handle.close();
    return live;
  }

  /** Ties a connected socket to its session; `onEnd` runs when it must close. */
  attach(socket: ClosableSocket, req: IncomingMessage): SocketSession {
    const id = this.idOf(req);
    if (id !== undefined) {
      let set = this.sockets.get(id);
      if (!set) this.sockets.set(id, (set = new Set()));
      set.add(socket);
    }
    return {
      id,
      session: <T>(fn: (session: KilnSessionObject) => T | Promise<T>, options?: SocketSessionRunOptions) => this.run(socket, req, id, fn, options?.readOnly === true),
      active: () => {
        if (id !== undefined) this.activeIds.add(id);
      },
    };
  }

  /** The socket is gone (closed by either side). */
  detach(socket: ClosableSocket, req: IncomingMessage): void {
    const id = this.idOf(req);
    if (id === undefined) return;
    const set = this.sockets.get(id);
    if (!set) return;
    set.delete(socket);
    if (set.size === 0) this.sockets.delete(id);
  }

  /** Open sockets of a session on this node (tests, metrics). */
  socketCount(id?: string): number {
    if (id !== undefined) return this.sockets.get(id)?.size ?? 0;
    let n = 0;
    for (const set of this.sockets.values()) n += set.size;
    return n;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepAliveTimer);
    this.unsubscribe();
    await this.runtime.close();
  }

  private async run<T>(socket: ClosableSocket, req: IncomingMessage, id: string | undefined, fn: (session: KilnSessionObject) => T | Promise<T>, readOnly: boolean): Promise<Awaited<T>> {
    if (id === undefined) throw new KilnError('KILN_ERR_SESSION_NOT_FOUND', 'this socket\'s upgrade request carried no valid session cookie');
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'the socket sessions were closed');
    this.activeIds.add(id);
    const handle = await this.runtime.client.open(id, { readOnly });
    if (handle.isNew) {
      // The cookie's session is gone (expired or destroyed before we heard): nothing is stored, the sockets close.
      handle.close();
      this.endSockets(id, 'gone');
      socket.close(this.closeCode, 'session ended: gone');
      throw new KilnError('KILN_ERR_SESSION_NOT_FOUND', 'the session of this socket no longer exists', { details: { sessionId: id } });
    }
    const rs = new SocketRequestSession(this.runtime, req, handle, id, () => requestIsSecure(this.runtime, req as NodeSessionRequest), false);
    let result: Awaited<T>;
    try {
      result = await fn(createSessionObject(rs));
      const principalBefore = handle.base.meta.principal;
      // A login is the principal becoming a user, from none or from another user (as rotateOnLogin sees it).
      if (typeof handle.principal === 'string' && handle.principal !== principalBefore) {
        throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'a login (setting the principal of a session to a user) cannot happen in a socket handler: the id must change and only an HTTP response can carry the new cookie. Log in over HTTP.');
      }
    } catch (err) {
      rs.abort();
      throw err;
    }
    await rs.finish();
    return result;
  }

  private onSessionEvent(event: SessionEvent): void {
    if (this.sockets.has(event.sessionId)) this.endSockets(event.sessionId, event.type);
  }

  private endSockets(id: string, why: string): void {
    const set = this.sockets.get(id);
    if (!set) return;
    this.sockets.delete(id);
    this.activeIds.delete(id);
    for (const socket of set) {
      try {
        socket.close(this.closeCode, `session ended: ${why}`);
      } catch {
        // already closing
      }
    }
  }

  /** Touches the sessions of sockets that were active, a slice per turn of the event loop. */
  private async keepAlive(): Promise<void> {
    const ids = [...this.activeIds];
    this.activeIds = new Set();
    for (let i = 0; i < ids.length && !this.closed; i++) {
      if (i > 0 && i % KEEP_ALIVE_SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const id = ids[i]!;
      if (!this.sockets.has(id)) continue;
      try {
        const handle = await this.runtime.client.open(id);
        if (handle.isNew) this.endSockets(id, 'gone');
        // Closing an unchanged handle records the access (batched), as a request that only read the session does.
        handle.close();
      } catch (err) {
        // The tier is away for a moment: the next round tries again.
        if (isKilnError(err) && err.retryable) this.activeIds.add(id);
      }
    }
  }
}
