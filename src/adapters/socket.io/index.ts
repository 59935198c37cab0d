import type { IncomingMessage } from 'node:http';
import { KilnError } from '../../errors/index.js';
import type { SessionClient } from '../../client/session-client.js';
import type { KilnSessionObject } from '../core/session-object.js';
import { SocketSessions, type SocketSessionOptions, type SocketSessionRunOptions } from '../realtime/socket-sessions.js';

/**
 * The HTTP session in socket.io handlers, on any node: a socket.io middleware.
 *
 * @example
 * import { Server } from 'socket.io';
 * import { session } from 'kiln/express';
 * import { socketSessions } from 'kiln/socket.io';
 *
 * const http = session({ secret, engine: 'kiln://127.0.0.1:9510' });
 * app.use(http);
 * const io = new Server(server);
 * io.use(socketSessions({ secret, engine: http.client, requireSession: true }));
 * io.on('connection', (socket) => {
 *   socket.on('add', async (sku, reply) => {
 *     reply(await socket.session((s) => (s.cart = [...(s.cart ?? []), sku]).length));
 *   });
 * });
 *
 * When the session ends, each of its sockets gets a `kiln:session-ended` event
 * (`{ code, reason }`) and is disconnected.
 */
export interface SocketIoSocketLike {
  readonly request: IncomingMessage;
  emit(event: string, ...args: unknown[]): unknown;
  disconnect(close?: boolean): unknown;
  use(fn: (packet: unknown[], next: (err?: Error) => void) => void): unknown;
  on(event: 'disconnect', listener: () => void): unknown;
  /** The engine.io connection under the socket (socket.io's `socket.conn`). */
  readonly conn?: { readonly readyState?: string; once(event: 'close', listener: () => void): unknown };
}

export interface SessionSocketFields {
  /** The session id of the handshake's cookie, or undefined. */
  sessionId: string | undefined;
  /** Runs fn under the session's lease with the `req.session` API; commits what changed. */
  session<T>(fn: (session: KilnSessionObject) => T | Promise<T>, options?: SocketSessionRunOptions): Promise<Awaited<T>>;
}

export type SocketSessionsMiddleware = ((socket: SocketIoSocketLike, next: (err?: Error) => void) => void) & {
  /** Open sockets of a session on this node (all sessions without an id). */
  socketCount(sessionId?: string): number;
  readonly client: SessionClient;
  close(): Promise<void>;
};

/** The event a socket receives before it is disconnected because its session ended. */
export const SESSION_ENDED_EVENT = 'kiln:session-ended';

export function socketSessions(options: SocketSessionOptions): SocketSessionsMiddleware {
  const core = new SocketSessions(options, 'kiln/socket.io socketSessions()');
  const middleware = (socket: SocketIoSocketLike, next: (err?: Error) => void): void => {
    const req = socket.request;
    const closable = {
      close(code: number, reason: string) {
        socket.emit(SESSION_ENDED_EVENT, { code, reason });
        socket.disconnect(true);
      },
    };
    const bind = (): void => {
      // The client left while its session was being checked: nothing to keep.
      if (socket.conn?.readyState !== undefined && socket.conn.readyState !== 'open') {
        next(new KilnError('KILN_ERR_CLOSED', 'the connection closed before its session was bound'));
        return;
      }
      const handle = core.attach(closable, req);
      Object.assign(socket, { sessionId: handle.id, session: handle.session } satisfies SessionSocketFields);
      socket.use((_packet, go) => {
        handle.active();
        go();
      });
      const detach = (): void => core.detach(closable, req);
      socket.on('disconnect', detach);
      // A socket a later middleware refuses never connects, so it never disconnects
      // either: its connection's close lets it go (detach twice is harmless).
      socket.conn?.once('close', detach);
      next();
    };
    if (!core.requireSession) return bind();
    core.isLive(req).then(
      (live) => (live ? bind() : next(Object.assign(new KilnError('KILN_ERR_SESSION_NOT_FOUND', 'no session: this connection needs a live session cookie'), { data: { code: 'KILN_ERR_SESSION_NOT_FOUND' } }))),
      (err: unknown) => next(err as Error),
    );
  };
  return Object.assign(middleware, { client: core.runtime.client, close: () => core.close(), socketCount: (id?: string) => core.socketCount(id) });
}

/** For TypeScript: `declare module 'socket.io' { interface Socket extends SessionSocketFields {} }` types socket.session(). */
export type { SocketSessionOptions, SocketSessionRunOptions, KilnSessionObject };
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
