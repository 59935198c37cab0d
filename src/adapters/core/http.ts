import { IncomingMessage, OutgoingMessage, ServerResponse } from 'node:http';
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
 * Each response's binding while it is open, removed when the response closes. Not a
 * property on `res`: Express (4 and 5) gives every request and response its app's
 * prototype with Object.setPrototypeOf, and V8 then takes its slow path for every
 * property written to them (about 3 µs to add one, 1 µs to overwrite one, measured on
 * Node 20); a Map entry costs a tenth of that. Not a WeakMap either: V8's young-generation
 * collector keeps an ephemeron's value alive while its key is, and the binding reaches
 * the response, so every bound response survived scavenges until the next full
 * collection (scavenges took twice as long).
 */
const bindings = new Map<ServerResponse, ResponseBinding<unknown>>();

const hookedPrototypes = new WeakSet<object>();
const hookedRequestPrototypes = new WeakSet<object>();

/** @internal Responses bound now (tests: nothing may stay behind a response). */
export function openResponseBindings(): number {
  return bindings.size;
}

/** Ends a response's binding: a response that closes without ending releases its session without committing. */
function closeBinding(res: ServerResponse): void {
  const binding = bindings.get(res);
  if (binding === undefined) return;
  bindings.delete(res);
  binding.rs.abort();
}

function abortOnClose(this: ServerResponse): void {
  closeBinding(this);
}

/**
 * Express gives each app its own response prototype: hooking writeHead, end and emit
 * there once spares every request its own wrappers and its 'close' listener, all of
 * them property writes on a response V8 handles slowly (see `bindings`).
 * node:http's shared ServerResponse.prototype is never touched.
 */
function hookPrototype(res: ServerResponse): boolean {
  const proto = Object.getPrototypeOf(res) as Record<string, unknown> | null;
  if (proto === null || proto === (ServerResponse.prototype as object) || proto === (OutgoingMessage.prototype as object)) return false;
  if (hookedPrototypes.has(proto)) return true;
  const writeHead = proto['writeHead'] as WriteHeadFn;
  const end = proto['end'] as EndFn;
  const emit = proto['emit'] as (...args: unknown[]) => boolean;
  Object.defineProperty(proto, 'writeHead', {
    configurable: true,
    writable: true,
    value: function kilnWriteHead(this: ServerResponse, ...args: unknown[]) {
      const binding = bindings.get(this);
      if (binding && !binding.onInstance) binding.beforeHeaders();
      return writeHead.apply(this, args);
    },
  });
  Object.defineProperty(proto, 'end', {
    configurable: true,
    writable: true,
    value: function kilnEnd(this: ServerResponse, ...args: unknown[]) {
      const binding = bindings.get(this);
      return binding && !binding.ending && !binding.onInstance ? binding.end(end, args) : end.apply(this, args);
    },
  });
  Object.defineProperty(proto, 'emit', {
    configurable: true,
    writable: true,
    value: function kilnEmit(this: ServerResponse, event: unknown) {
      // 'close' comes once per response, after 'finish' or when the connection drops.
      if (event === 'close') closeBinding(this);
      // eslint-disable-next-line prefer-rest-params -- passes the arguments on untouched, without copying them
      return Reflect.apply(emit, this, arguments);
    },
  });
  hookedPrototypes.add(proto);
  // This request's res may already carry another middleware's own end/writeHead that
  // captured the unhooked methods: patch the instance too, this once.
  return false;
}

/**
 * Session ids of requests whose prototype carries the `sessionID` accessor. The value is
 * a string, which cannot reach its key, so this WeakMap keeps nothing alive; and the id
 * stays readable after the response closed (a logger's 'close' listener).
 */
const sessionIds = new WeakMap<object, string>();

/**
 * `req.sessionID` as an accessor on Express's request prototype, for the same reason as
 * `bindings`. An application that assigns it gets its own property, as before. Returns
 * false for node:http's shared prototype: there the adapter writes an own property.
 */
function hookRequestPrototype(req: NodeSessionRequest): boolean {
  const proto = Object.getPrototypeOf(req) as object | null;
  if (proto === null || proto === (IncomingMessage.prototype as object)) return false;
  if (hookedRequestPrototypes.has(proto)) return true;
  if (Object.getOwnPropertyDescriptor(proto, 'sessionID') !== undefined) return false;
  Object.defineProperty(proto, 'sessionID', {
    configurable: true,
    enumerable: false,
    get(this: NodeSessionRequest) {
      return sessionIds.get(this);
    },
    set(this: NodeSessionRequest, value: unknown) {
      Object.defineProperty(this, 'sessionID', { value, writable: true, enumerable: true, configurable: true });
    },
  });
  hookedRequestPrototypes.add(proto);
  return true;
}

/**
 * One request's session tied to its response: the cookie goes out with the headers,
 * `res.end()` waits for the commit. A class, not closures: one object per request.
 */
class ResponseBinding<Req> implements SessionObjectHooks {
  ending = false;
  /** This response got its own hooks (the prototype's stand aside). */
  onInstance = false;
  /** req.sessionID is an own property of the request (not the prototype's accessor). */
  ownSessionId = false;
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
    if (this.ownSessionId) this.req.sessionID = id;
    else sessionIds.set(this.req, id);
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
    // end() noted it already: headers usually go from inside it (each read of a property
    // of Express's req misses V8's caches, about 0.5 µs).
    if (!this.ending) this.noteUnset();
    const cookie = this.rs.setCookieHeader();
    if (cookie) appendSetCookie(this.res, cookie);
  }

  /**
   * res.end(): commit first (unless nothing changed), then end with the same arguments.
   * The binding goes once the response has ended, not only at 'close': Node never emits
   * 'close' for a pipelined response still queued behind another when the connection
   * dies, and its binding would stay in `bindings` for good.
   */
  end(original: EndFn, args: unknown[]): ServerResponse {
    this.ending = true;
    this.noteUnset();
    const res = this.res;
    if (this.rs.finishIfUnchanged()) {
      original.apply(res, args);
      bindings.delete(res);
      return res;
    }
    this.rs.finish().then(
      () => {
        original.apply(res, args);
        bindings.delete(res);
      },
      (err: unknown) => {
        bindings.delete(res);
        if (res.headersSent) res.destroy(err as Error);
        else this.onCommitError(err);
      },
    );
    return res;
  }
}

/**
 * The node:http response side, shared by kiln/express and kiln/http: the cookie goes
 * out with the headers, `res.end()` waits for the commit, and a response that closes
 * without ending releases the session without committing.
 */
export function bindToResponse<Req>(rs: RequestSession<Req>, req: NodeSessionRequest, res: ServerResponse, onCommitError: (err: unknown) => void): KilnSessionObject {
  const binding = new ResponseBinding(rs, req, res, onCommitError);
  req.session = binding.sessionObject;
  if (hookRequestPrototype(req)) {
    sessionIds.set(req, rs.id);
  } else {
    binding.ownSessionId = true;
    req.sessionID = rs.id;
  }
  bindings.set(res, binding as ResponseBinding<unknown>);
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
    // 'close' is emitted once: on() spares the wrapper once() would allocate.
    res.on('close', abortOnClose);
  }
  return binding.sessionObject;
}
