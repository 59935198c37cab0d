import { OutgoingMessage, ServerResponse, type IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { RequestSession, SessionRuntime } from './runtime.js';
import { createSessionObject, type KilnSessionObject, type SessionObjectHooks } from './session-object.js';

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
export function requestIsSecure(runtime: Pick<SessionRuntime, 'isSecure' | 'secureMatters'>, req: NodeSessionRequest): boolean {
  // Express's req.secure walks the trust-proxy settings: skip it when no answer is needed.
  if (!runtime.secureMatters) return false;
  const direct = (req.socket as TLSSocket).encrypted === true;
  const forwarded = req.headers['x-forwarded-proto'];
  return runtime.isSecure(direct, Array.isArray(forwarded) ? forwarded[0] : forwarded, typeof req.secure === 'boolean' ? req.secure : undefined);
}

type EndFn = (...args: unknown[]) => ServerResponse;
type WriteHeadFn = (...args: unknown[]) => ServerResponse;

/**
 * The response's binding, on the response itself. Not a WeakMap: V8's young-generation
 * collector keeps an ephemeron's value alive while its key is, and the binding reaches
 * the response, so every response with a binding survived each scavenge until the next
 * full collection (measured: scavenges took twice as long, about 60 µs of CPU per
 * request on this benchmark's app).
 */
const BINDING = Symbol('kiln.responseBinding');
type BoundResponse = ServerResponse & { [BINDING]?: ResponseBinding<unknown> };

const hookedPrototypes = new WeakSet<object>();

/**
 * Express gives each app its own response prototype: hooking writeHead and end there once
 * spares every request two own properties on `res`. Those extra properties push V8 to
 * turn the response into a dictionary-mode object (kilobytes allocated per request, every
 * later property access slower): measured, it was the largest cost of Kiln's middleware.
 * node:http's shared ServerResponse.prototype is never touched.
 */
function hookPrototype(res: ServerResponse): boolean {
  const proto = Object.getPrototypeOf(res) as Record<string, unknown> | null;
  if (proto === null || proto === (ServerResponse.prototype as object) || proto === (OutgoingMessage.prototype as object)) return false;
  if (hookedPrototypes.has(proto)) return true;
  const writeHead = proto['writeHead'] as WriteHeadFn;
  const end = proto['end'] as EndFn;
  Object.defineProperty(proto, 'writeHead', {
    configurable: true,
    writable: true,
    value: function kilnWriteHead(this: ServerResponse, ...args: unknown[]) {
      const binding = (this as BoundResponse)[BINDING];
      if (binding && !binding.onInstance) binding.beforeHeaders();
      return writeHead.apply(this, args);
    },
  });
  Object.defineProperty(proto, 'end', {
    configurable: true,
    writable: true,
    value: function kilnEnd(this: ServerResponse, ...args: unknown[]) {
      const binding = (this as BoundResponse)[BINDING];
      return binding && !binding.ending && !binding.onInstance ? binding.end(end, args) : end.apply(this, args);
    },
  });
  hookedPrototypes.add(proto);
  // This request's res may already carry another middleware's own end/writeHead that
  // captured the unhooked methods: patch the instance too, this once.
  return false;
}

/**
 * One request's session tied to its response: the cookie goes out with the headers,
 * `res.end()` waits for the commit. A class, not closures: one object per request.
 */
class ResponseBinding<Req> implements SessionObjectHooks {
  ending = false;
  /** This response got its own hooks (the prototype's stand aside). */
  onInstance = false;
  readonly sessionObject: KilnSessionObject;

  constructor(
    readonly rs: RequestSession<Req>,
    private readonly req: NodeSessionRequest,
    private readonly res: ServerResponse,
    private readonly onCommitError: (err: unknown) => void,
  ) {
    this.sessionObject = createSessionObject(rs, this);
  }

  onIdChange(id: string): void {
    this.req.sessionID = id;
    this.req.session = this.sessionObject;
  }

  onDestroy(): void {
    delete this.req.session;
  }

  /** `delete req.session` / `req.session = null` by the application. */
  private noteUnset(): void {
    if (this.req.session !== this.sessionObject && !this.rs.isDestroyed) this.rs.unsetByApp = true;
  }

  /** Headers are about to go: add the cookie. */
  beforeHeaders(): void {
    this.noteUnset();
    const cookie = this.rs.setCookieHeader();
    if (cookie) appendSetCookie(this.res, cookie);
  }

  /** res.end(): commit first (unless nothing changed), then end with the same arguments. */
  end(original: EndFn, args: unknown[]): ServerResponse {
    this.ending = true;
    this.noteUnset();
    const res = this.res;
    if (this.rs.finishIfUnchanged()) return original.apply(res, args);
    this.rs.finish().then(
      () => original.apply(res, args),
      (err: unknown) => {
        if (res.headersSent) res.destroy(err as Error);
        else this.onCommitError(err);
      },
    );
    return res;
  }
}

/** A response that closes without ending releases its session without committing. */
function abortOnClose(this: ServerResponse): void {
  (this as BoundResponse)[BINDING]?.rs.abort();
}

/**
 * The node:http response side, shared by kiln/express and kiln/http: the cookie goes
 * out with the headers, `res.end()` waits for the commit, and a response that closes
 * without ending releases the session without committing.
 */
export function bindToResponse<Req>(rs: RequestSession<Req>, req: NodeSessionRequest, res: ServerResponse, onCommitError: (err: unknown) => void): KilnSessionObject {
  const binding = new ResponseBinding(rs, req, res, onCommitError);
  req.session = binding.sessionObject;
  req.sessionID = rs.id;
  (res as BoundResponse)[BINDING] = binding as ResponseBinding<unknown>;
  if (!hookPrototype(res)) {
    binding.onInstance = true;
    const writeHead = res.writeHead as WriteHeadFn;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      binding.beforeHeaders();
      return writeHead.apply(this, args);
    } as ServerResponse['writeHead'];
    const end = res.end as EndFn;
    res.end = function (this: ServerResponse, ...args: unknown[]) {
      return binding.ending ? end.apply(this, args) : binding.end(end, args);
    } as ServerResponse['end'];
  }
  // 'close' is emitted once: on() spares the wrapper once() would allocate.
  res.on('close', abortOnClose);
  return binding.sessionObject;
}
