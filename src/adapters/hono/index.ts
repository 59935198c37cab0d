import type { MiddlewareHandler } from 'hono';
import type { IncomingMessage } from 'node:http';
import type { SessionClient } from '../../client/session-client.js';
import { SessionRuntime, readOnlyPaths, type KilnSessionOptions } from '../core/runtime.js';
import { createSessionObject, type KilnSessionObject } from '../core/session-object.js';
import { requestIsSecure, type NodeSessionRequest } from '../core/http.js';

/**
 * Hono middleware (on @hono/node-server or any runtime Hono runs on): the session is a
 * typed context variable, committed after the handler, before the response is returned.
 *
 * @example
 * import { Hono } from 'hono';
 * import { kilnSession, type KilnVariables } from 'kiln/hono';
 * const app = new Hono<{ Variables: KilnVariables }>();
 * app.use(kilnSession({ secret, engine: 'kiln://127.0.0.1:9510' }));
 * app.post('/cart', (c) => {
 *   const session = c.get('session');      // typed: KilnSessionObject
 *   session.cart = [...((session.cart as string[]) ?? []), 'mug'];
 *   return c.json({ items: (session.cart as string[]).length });
 * });
 */
/**
 * Your session's fields, for TypeScript (as express-session's SessionData):
 * `c.get('session').visits` is typed.
 *
 * @example
 * declare module 'kiln/hono' {
 *   interface SessionData { visits?: number }
 * }
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by applications (declaration merging)
export interface SessionData {}

/** The context variables kiln/hono sets: `new Hono<{ Variables: KilnVariables }>()`. */
export interface KilnVariables {
  session: KilnSessionObject & Partial<SessionData>;
  sessionId: string;
}

interface HonoLikeContext {
  req: { url: string; path: string; header(name: string): string | undefined; raw?: { signal?: AbortSignal } };
  /** @hono/node-server's bindings: the node:http request. */
  env?: { incoming?: IncomingMessage };
  get(key: string): unknown;
  set(key: string, value: unknown): void;
  header(name: string, value: string, options?: { append?: boolean }): void;
}

export interface HonoRequestInfo {
  url: string;
  path: string;
}

export type KilnHonoMiddleware = MiddlewareHandler<{ Variables: KilnVariables }> & { client: SessionClient; close(): Promise<void> };

export function kilnSession(options: KilnSessionOptions<HonoRequestInfo>): KilnHonoMiddleware {
  const runtime = new SessionRuntime<HonoRequestInfo>(options, 'kiln/hono kilnSession()');
  const middleware: MiddlewareHandler<{ Variables: KilnVariables }> = async (context, next) => {
    const c = context as unknown as HonoLikeContext;
    const info = { url: c.req.url, path: c.req.path };
    const cookieOptions = runtime.cookieOptionsFor(info, c.req.path);
    if (cookieOptions === undefined) {
      // Outside cookie.path: no session and no cookie.
      await next();
      return;
    }
    // On @hono/node-server the socket says whether the request came over TLS: its URL's
    // scheme can be the client's own (an absolute-form request target), not the connection's.
    const incoming = c.env?.incoming;
    const secure = () => (incoming?.socket ? requestIsSecure(runtime, incoming as NodeSessionRequest, undefined) : runtime.isSecure(new URL(c.req.url).protocol === 'https:', c.req.header('x-forwarded-proto'), undefined));
    const rs = await runtime.open(info, runtime.sessionIdFrom(c.req.header('cookie')), secure, cookieOptions);
    const session = createSessionObject(rs, {
      onIdChange: (id) => c.set('sessionId', id),
      onDestroy: () => c.set('session', undefined),
    });
    c.set('session', session);
    c.set('sessionId', rs.id);
    // A client that hangs up (the runtime aborts the request's signal) releases the
    // session at once, and the request commits nothing.
    // (Also one that hung up while the session was being opened: the signal fired already.)
    const signal = c.req.raw?.signal;
    if (signal?.aborted) rs.abort();
    else signal?.addEventListener('abort', () => rs.abort(), { once: true });
    try {
      await next();
      if (c.get('session') !== session && !rs.isDestroyed) rs.unsetByApp = true;
      await rs.finish();
    } finally {
      rs.abort();
    }
    const cookie = rs.setCookieHeader();
    if (cookie) c.header('Set-Cookie', cookie, { append: true });
  };
  return Object.assign(middleware, { client: runtime.client, close: () => runtime.close() });
}

export default kilnSession;
export { readOnlyPaths };
export type { KilnSessionOptions, KilnSessionObject };
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
