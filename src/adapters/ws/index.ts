import type { IncomingMessage } from 'node:http';
import { SocketSessions, type ClosableSocket, type SocketSession, type SocketSessionOptions, type SocketSessionRunOptions } from '../realtime/socket-sessions.js';
import type { SessionClient } from '../../client/session-client.js';
import type { KilnSessionObject } from '../core/session-object.js';

/**
 * The HTTP session in `ws` handlers (and anything built on `ws`), on any node.
 *
 * @example
 * import { WebSocketServer } from 'ws';
 * import { session } from 'kiln/express';
 * import { createWebSocketSessions } from 'kiln/ws';
 *
 * const http = session({ secret, engine: 'kiln://127.0.0.1:9510' });
 * app.use(http);
 * // Same cookie name and secret as the HTTP sessions; sharing their client shares leases and cache.
 * const sockets = createWebSocketSessions({ secret, engine: http.client, requireSession: true });
 * const wss = new WebSocketServer({ server, verifyClient: sockets.verifyClient });
 * wss.on('connection', (ws, req) => {
 *   sockets.attach(ws, req);
 *   ws.on('message', async () => {
 *     const visits = await ws.session((s) => (s.visits = (s.visits ?? 0) + 1));
 *     ws.send(JSON.stringify({ visits }));
 *   });
 * });
 */
export interface WebSocketLike extends ClosableSocket {
  on(event: 'message' | 'close', listener: () => void): unknown;
  readonly readyState: number;
}

/** What attach() adds to the socket. */
export interface SessionSocket {
  /** The session id of the upgrade request's cookie, or undefined. */
  readonly sessionId: string | undefined;
  /** Runs fn under the session's lease with the `req.session` API; commits what changed. */
  session<T>(fn: (session: KilnSessionObject) => T | Promise<T>, options?: SocketSessionRunOptions): Promise<Awaited<T>>;
}

export interface WebSocketSessions {
  /** ws's `verifyClient` (its callback form): with requireSession, an upgrade whose cookie names no live session gets 401. */
  verifyClient: (info: { req: IncomingMessage }, callback: (ok: boolean, code?: number, message?: string) => void) => void;
  /** Ties a connected socket to its session (call it in `wss.on('connection')`); returns the socket with `session()` and `sessionId`. */
  attach<W extends WebSocketLike>(ws: W, req: IncomingMessage): W & SessionSocket;
  /** Open sockets of a session on this node (all sessions without an id). */
  socketCount(sessionId?: string): number;
  /** The Kiln client (shared with the HTTP sessions when `engine` was their client). */
  readonly client: SessionClient;
  /** Stops keep-alive and event delivery; closes the client if these sessions made it. */
  close(): Promise<void>;
}

export function createWebSocketSessions(options: SocketSessionOptions): WebSocketSessions {
  const core = new SocketSessions(options, 'kiln/ws createWebSocketSessions()');
  return {
    client: core.runtime.client,
    close: () => core.close(),
    socketCount: (id) => core.socketCount(id),
    verifyClient(info, callback) {
      if (!core.requireSession) return callback(true);
      core.isLive(info.req).then(
        (live) => (live ? callback(true) : callback(false, 401, 'no session')),
        () => callback(false, 503, 'session tier unavailable'),
      );
    },
    attach<W extends WebSocketLike>(ws: W, req: IncomingMessage): W & SessionSocket {
      const handle: SocketSession = core.attach(ws, req);
      const socket = Object.defineProperties(ws, {
        sessionId: { value: handle.id, configurable: true },
        session: { value: handle.session, configurable: true },
      }) as W & SessionSocket;
      ws.on('message', () => handle.active());
      ws.on('close', () => core.detach(ws, req));
      if (core.requireSession && handle.id === undefined) ws.close(core.closeCode, 'no session');
      return socket;
    },
  };
}

export type { SocketSessionOptions, SocketSessionRunOptions, KilnSessionObject };
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
