import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { RequestSession, SessionRuntime } from './runtime.js';
import { createSessionObject, type KilnSessionObject } from './session-object.js';

/** Adds a Set-Cookie header without dropping the ones the application set. */
export function appendSetCookie(res: ServerResponse, cookie: string): void {
  const existing = res.getHeader('set-cookie');
  if (existing === undefined) res.setHeader('Set-Cookie', cookie);
  else res.setHeader('Set-Cookie', Array.isArray(existing) ? [...existing, cookie] : [String(existing), cookie]);
}

export interface NodeSessionRequest extends IncomingMessage {
  session?: KilnSessionObject | null;
  sessionID?: string;
  secure?: boolean;
}

/** Whether the request came over TLS, directly or (when trusted) through a proxy. */
export function requestIsSecure(runtime: { isSecure: SessionRuntime["isSecure"] }, req: NodeSessionRequest): boolean {
  const direct = (req.socket as TLSSocket).encrypted === true;
  const forwarded = req.headers['x-forwarded-proto'];
  return runtime.isSecure(direct, Array.isArray(forwarded) ? forwarded[0] : forwarded, typeof req.secure === 'boolean' ? req.secure : undefined);
}

/**
 * The node:http response side, shared by kiln/express and kiln/http: the cookie goes
 * out with the headers, `res.end()` waits for the commit, and a response that closes
 * without ending releases the session without committing.
 */
export function bindToResponse<Req>(rs: RequestSession<Req>, req: NodeSessionRequest, res: ServerResponse, onCommitError: (err: unknown) => void): KilnSessionObject {
  const sessionObject = createSessionObject(rs, {
    onIdChange: (id) => {
      req.sessionID = id;
      req.session = sessionObject;
    },
    onDestroy: () => {
      delete req.session;
    },
  });
  req.session = sessionObject;
  req.sessionID = rs.id;
  const noteUnset = (): void => {
    if (req.session !== sessionObject && !rs.isDestroyed) rs.unsetByApp = true;
  };

  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    noteUnset();
    const cookie = rs.setCookieHeader();
    if (cookie) appendSetCookie(res, cookie);
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as ServerResponse['writeHead'];

  const end = res.end;
  let ending = false;
  res.end = function (this: ServerResponse, ...args: unknown[]) {
    if (ending) return (end as (...a: unknown[]) => ServerResponse).apply(this, args);
    ending = true;
    noteUnset();
    rs.finish().then(
      () => (end as (...a: unknown[]) => ServerResponse).apply(res, args),
      (err: unknown) => {
        if (res.headersSent) res.destroy(err as Error);
        else onCommitError(err);
      },
    );
    return res;
  } as ServerResponse['end'];

  res.once('close', () => rs.abort());
  return sessionObject;
}
