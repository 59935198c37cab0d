import type { IncomingMessage } from 'node:http';
import type { SessionClient } from '../../client/session-client.js';
import { SessionRuntime, readOnlyPaths, type KilnSessionOptions } from '../core/runtime.js';
import { createSessionObject, type KilnSessionObject } from '../core/session-object.js';
import { requestIsSecure, type NodeSessionRequest } from '../core/http.js';

/**
 * Koa (2 and 3) middleware: `ctx.session` as koa-session users know it (attributes as
 * properties, `ctx.session = null` to log out, `ctx.session.isNew`, `ctx.session.maxAge`,
 * `await ctx.session.save()`), plus Kiln's extras (`principal`, `regenerate({ keep })`,
 * `logoutEverywhere()`, read-only routes). The session is committed after the downstream
 * middleware, before Koa writes the response.
 *
 * @example
 * import Koa from 'koa';
 * import { kilnSession } from 'kiln/koa';
 * const app = new Koa();
 * app.use(kilnSession({ secret, engine: 'kiln://127.0.0.1:9510' }));
 * app.use((ctx) => { ctx.session.views = (ctx.session.views ?? 0) + 1; ctx.body = ctx.session.views; });
 */
export type KoaSessionObject = KilnSessionObject & { isNew: boolean; maxAge: number | 'session' | null };

/**
 * Your session's fields, for TypeScript (as express-session's SessionData). Importing
 * kiln/koa types Koa's `ctx.session` and `ctx.sessionId` by itself.
 *
 * @example
 * declare module 'kiln/koa' {
 *   interface SessionData { visits?: number }
 * }
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by applications (declaration merging)
export interface SessionData {}

interface KoaLikeContext {
  req: IncomingMessage;
  path: string;
  url: string;
  secure: boolean;
  get(name: string): string;
  append(name: string, value: string | string[]): void;
  state: Record<string, unknown>;
  /** node:http's response (absent in some test harnesses). */
  res?: { once(event: 'close', listener: () => void): unknown; destroyed?: boolean };
  session?: KoaSessionObject | null;
  sessionId?: string;
}

// The context is typed loosely on purpose: Koa's types live in @types/koa, which a
// JavaScript Koa app may not install, and koa-session augments the same context.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KilnKoaMiddleware = ((ctx: any, next: () => Promise<unknown>) => Promise<void>) & { client: SessionClient; close(): Promise<void> };

/** koa-session's option names, accepted beside Kiln's. */
export interface KoaSessionOptions extends KilnSessionOptions<KoaLikeContext> {
  /** koa-session's name for the cookie name (`name`). Default 'koa.sess'. */
  key?: string;
  /** koa-session's cookie lifetime: milliseconds, or 'session' (the default: a browser-session cookie; the session itself idles out after a day). */
  maxAge?: number | 'session';
}

export function kilnSession(options: KoaSessionOptions): KilnKoaMiddleware {
  const { key, maxAge, ...rest } = options ?? ({} as KoaSessionOptions);
  const cookie = rest.cookie;
  let withLifetime = cookie;
  // koa-session's maxAge: a cookie lifetime in ms, or 'session' (its default: a
  // browser-session cookie, whose session the store keeps a day).
  if (typeof cookie !== 'function' && maxAge !== undefined) withLifetime = { ...cookie, maxAge: maxAge === 'session' ? undefined : maxAge };
  // koa-session's defaults: its cookie name, and `ctx.session = null` logs out.
  const runtime = new SessionRuntime<KoaLikeContext>({ name: key ?? 'koa.sess', unset: 'destroy', ...rest, cookie: withLifetime }, 'kiln/koa kilnSession()', 'On Koa, use kiln/koa in place of koa-session and its store.');

  const middleware = async (context: unknown, next: () => Promise<unknown>): Promise<void> => {
    const ctx = context as KoaLikeContext;
    const cookieOptions = runtime.cookieOptionsFor(ctx, ctx.url);
    if (cookieOptions === undefined) {
      // Outside cookie.path: no session and no cookie.
      await next();
      return;
    }
    // The `proxy` option decides as on every framework; left unset, Koa's ctx.secure (app.proxy) does.
    const rs = await runtime.open(ctx, runtime.sessionIdFrom(ctx.get('cookie') || undefined), () => requestIsSecure(runtime, ctx.req as NodeSessionRequest, ctx.secure), cookieOptions);
    let current: KoaSessionObject | null = createSessionObject(rs, {
      style: 'koa',
      onIdChange: (id) => (ctx.sessionId = id),
      onDestroy: () => (current = null),
    }) as KoaSessionObject;
    const own = current;
    Object.defineProperty(ctx, 'session', {
      configurable: true,
      enumerable: true,
      get: () => current,
      // `ctx.session = null`: the `unset` option decides (default 'destroy', as koa-session).
      set: (value: unknown) => {
        if (value === null) {
          if (!rs.isDestroyed) rs.unsetByApp = true;
          current = null;
        } else if (value && typeof value === 'object' && value !== own) {
          // As koa-session: the object becomes the session (what it lacks is removed).
          const next = value as Record<string, unknown>;
          for (const k of Object.keys(own)) if (k !== 'cookie' && !(k in next)) delete (own as Record<string, unknown>)[k];
          for (const [k, v] of Object.entries(next)) if (k !== 'cookie' && k !== 'isNew' && k !== 'maxAge') (own as Record<string, unknown>)[k] = v;
          current = own;
        }
      },
    });
    ctx.sessionId = rs.id;
    // A client that hangs up releases the session at once, and the request commits nothing
    // (also one that hung up while the session was being opened: its 'close' has gone by).
    if (ctx.res?.destroyed) rs.abort();
    else ctx.res?.once('close', () => rs.abort());
    try {
      await next();
    } finally {
      await rs.finish();
      const cookie = rs.setCookieHeader();
      if (cookie) ctx.append('Set-Cookie', cookie);
    }
  };
  return Object.assign(middleware, { client: runtime.client, close: () => runtime.close() });
}

export default kilnSession;
export { readOnlyPaths };
export type { KilnSessionOptions, KilnSessionObject };
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
