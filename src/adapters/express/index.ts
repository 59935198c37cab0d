import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SessionClient } from '../../client/session-client.js';
import { RequestSession, SessionRuntime, readOnlyPaths, type KilnSessionOptions } from '../core/runtime.js';
import type { KilnSessionObject } from '../core/session-object.js';
import { bindToResponse, openNodeRequest } from '../core/http.js';

/**
 * Express (4 and 5) / Connect middleware with express-session's API. Replacing
 * `require('express-session')` by this is the whole migration:
 *
 * @example
 * import { session } from 'kiln/express';
 * app.use(session({
 *   secret: [process.env.SESSION_SECRET],          // an array rotates: first signs, all verify
 *   engine: 'kiln://127.0.0.1:9510',              // omitted: in-process memory engine
 *   cookie: { maxAge: 86_400_000, secure: 'auto' },
 * }));
 * app.post('/login', (req, res, next) => req.session.regenerate((err) => {
 *   if (err) return next(err);
 *   req.session.principal = user.id;               // "log out everywhere" finds it
 *   res.redirect('/');
 * }));
 *
 * The response is held until the session's commit is acknowledged (commitMode 'sync'),
 * so nothing a browser was told is lost if this process dies a moment later.
 */
/**
 * Your session's fields, for TypeScript: declare them once and `req.session.cart` is
 * typed (as express-session's SessionData). Importing kiln/express types Express's
 * `req.session` and `req.sessionID` by itself.
 *
 * @example
 * declare module 'kiln/express' {
 *   interface SessionData { cart?: string[]; user?: { id: string } }
 * }
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by applications (declaration merging)
export interface SessionData {}

/** `req.session`: Kiln's session object with your SessionData fields. */
export type Session = KilnSessionObject & Partial<SessionData>;

export interface KilnRequest extends IncomingMessage {
  /** Express's (and other middleware's) own request fields: genid and scope get the request as it is. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- typed by Express, which kiln/express does not require
  [field: string]: any;
  session?: Session;
  sessionID?: string;
  secure?: boolean;
  path?: string;
  originalUrl?: string;
  signedCookies?: Record<string, unknown>;
  cookies?: Record<string, unknown>;
}

// Typed on IncomingMessage so it mounts on Express, Connect or plain http alike, and does
// not clash with @types/express-session's augmentation of Express.Request.
export type KilnMiddleware = ((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void) & {
  /** The Kiln client behind the middleware (destroyByPrincipal, stats, events). */
  client: SessionClient;
  /** Flushes and releases everything; closes the engine if the middleware created it. */
  close(): Promise<void>;
};

/**
 * Ties the session to the response and passes on. A commit that fails at the end of the
 * request goes to Express's error handler; so does a throw while binding (which has let
 * the session go), here as on the synchronous path: after an asynchronous open it would
 * otherwise be an unhandled rejection and a hung request.
 */
function bindAndGo(rs: RequestSession<KilnRequest>, req: KilnRequest, res: ServerResponse, next: (err?: unknown) => void): void {
  try {
    bindToResponse(rs, req, res, next);
  } catch (err) {
    next(err);
    return;
  }
  next();
}

export function session(options: KilnSessionOptions<KilnRequest>): KilnMiddleware {
  const runtime = new SessionRuntime<KilnRequest>(options, 'kiln/express session()');

  const middleware = (incoming: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    const req = incoming as KilnRequest;
    // Mounted twice, or behind another session middleware: the first one wins.
    if (req.session) {
      next();
      return;
    }
    let opened: ReturnType<typeof openNodeRequest<KilnRequest>>;
    try {
      opened = openNodeRequest(runtime, req);
    } catch (err) {
      next(err);
      return;
    }
    if (opened === undefined) {
      // Outside cookie.path: no session, as with express-session.
      next();
    } else if (opened instanceof RequestSession) {
      // Sticky traffic: the session was in the near cache and free, no waiting at all.
      bindAndGo(opened, req, res, next);
    } else {
      opened.then((rs) => bindAndGo(rs, req, res, next), next);
    }
  };

  return Object.assign(middleware, { client: runtime.client, close: () => runtime.close() });
}

export { readOnlyPaths };
export type { KilnSessionOptions, KilnSessionObject };
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
