import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SessionClient } from '../../client/session-client.js';
import { toKilnError } from '../../errors/index.js';
import { bindToResponse, openNodeRequest, type NodeSessionRequest } from '../core/http.js';
import { SessionRuntime, readOnlyPaths, type KilnSessionOptions } from '../core/runtime.js';
import type { KilnSessionObject } from '../core/session-object.js';

/**
 * Sessions for a plain `node:http` server (or a Next.js-style custom server): load before
 * the handler, commit before the response ends.
 *
 * @example
 * import { createServer } from 'node:http';
 * import { createSessions } from 'kiln/http';
 * const sessions = createSessions({ secret, engine: 'kiln://127.0.0.1:9510' });
 * createServer(async (req, res) => {
 *   const session = await sessions.load(req, res);
 *   session.visits = ((session.visits as number) ?? 0) + 1;
 *   res.end(`visit ${session.visits}`);          // waits for the commit, sets the cookie
 * }).listen(3000);
 */
export interface HttpSessionOptions extends KilnSessionOptions<IncomingMessage> {
  /** A commit that fails when the response ends; default: the error's status (503 + Retry-After when the tier is away) with `{ code, message }`. */
  onCommitError?: (err: unknown, req: IncomingMessage, res: ServerResponse) => void;
}

export interface HttpSessions {
  /**
   * Loads the request's session (also set as `req.session`); undefined for a request
   * outside cookie.path. Throws KilnError when the tier cannot be reached (unless
   * onUnavailable: 'continue').
   */
  load(req: IncomingMessage, res: ServerResponse): Promise<KilnSessionObject | undefined>;
  client: SessionClient;
  close(): Promise<void>;
}

export function createSessions(options: HttpSessionOptions): HttpSessions {
  const { onCommitError, ...rest } = options;
  const runtime = new SessionRuntime<IncomingMessage>(rest, 'kiln/http createSessions()');
  const fail =
    onCommitError ??
    ((err: unknown, _req: IncomingMessage, res: ServerResponse) => {
      const e = toKilnError(err);
      res.statusCode = e.status;
      for (const [name, value] of Object.entries(e.headers ?? {})) res.setHeader(name, value);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ code: e.code, message: e.message }));
    });
  return {
    client: runtime.client,
    close: () => runtime.close(),
    async load(incoming, res) {
      const req = incoming as NodeSessionRequest;
      if (req.session) return req.session;
      const rs = await openNodeRequest(runtime, req);
      // Outside cookie.path: no session (and no cookie).
      if (rs === undefined) return undefined;
      // A throw while binding has let the session go; the caller gets the error.
      return bindToResponse(rs, req, res, (err) => fail(err, req, res));
    },
  };
}

export { readOnlyPaths };
export type { KilnSessionOptions, KilnSessionObject };
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
