import { IncomingMessage, OutgoingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { RequestSession, SessionRuntime } from './runtime.js';
import type { CookieOptions } from './session-cookie.js';
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
  /** Express: the URL before routers stripped their mount path. */
  originalUrl?: string;
  /** cookie-parser's parsed cookies (express-session reads them when the header was consumed). */
  signedCookies?: Record<string, unknown>;
  cookies?: Record<string, unknown>;
}

/**
 * Whether the request came over TLS, directly or (when trusted) through a proxy. Pass it
 * to the runtime as a function: Express's req.secure walks the trust-proxy settings, and
 * most requests never need the answer.
 */
export function requestIsSecure(runtime: Pick<SessionRuntime, 'isSecure'>, req: NodeSessionRequest): boolean {
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
      if (binding && !binding.onInstance) return writeHead.apply(this, binding.beforeWriteHead(args));
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

  /**
   * What the application did to the request: `delete req.session` / `req.session = null`
   * (express-session's unset), or req.sessionID assigned something else (then, as with
   * express-session, nothing is saved and no cookie is sent).
   */
  private noteRequestChanges(): void {
    const req = this.req;
    if (req.session !== this.sessionObject && !this.rs.isDestroyed) this.rs.unsetByApp = true;
    if ((this.ownSessionId || Object.prototype.hasOwnProperty.call(req, 'sessionID')) && req.sessionID !== this.rs.id) this.rs.abandoned = true;
  }

  /**
   * writeHead(status, [message], headers): the headers given are set first, so the
   * cookie joins them instead of being replaced by them (on-headers does the same for
   * express-session).
   */
  beforeWriteHead(args: unknown[]): unknown[] {
    const res = this.res;
    if (res.headersSent) return args;
    const at = typeof args[1] === 'string' ? 2 : 1;
    const headers = args[at];
    if (headers !== undefined && headers !== null && typeof headers === 'object') {
      if (Array.isArray(headers)) {
        // [name, value, name, value, …] (or [[name, value], …]) as Node accepts
        const flat = (Array.isArray(headers[0]) ? (headers as unknown[][]).flat() : headers) as string[];
        for (let i = 0; i + 1 < flat.length; i += 2) res.appendHeader(flat[i]!, flat[i + 1]!);
      } else {
        for (const [name, value] of Object.entries(headers as Record<string, string | string[] | number>)) {
          if (name.toLowerCase() === 'set-cookie') res.appendHeader(name, value as string | string[]);
          else res.setHeader(name, value);
        }
      }
      args = args.slice(0, at);
    }
    this.beforeHeaders();
    return args;
  }

  /** Headers are about to go: add the cookie. */
  beforeHeaders(): void {
    // end() noted it already: headers usually go from inside it (each read of a property
    // of Express's req misses V8's caches, about 0.5 µs).
    if (!this.ending) this.noteRequestChanges();
    const cookie = this.rs.setCookieHeader();
    if (cookie) appendSetCookie(this.res, cookie);
  }

  /**
   * res.end(): commit first (unless nothing changed), then end with the same arguments.
   * While the commit is in flight the response acts as one that has ended (see
   * holdResponse), so an application's later calls do what Node does after end().
   * The binding goes once the response has ended, not only at 'close': Node never emits
   * 'close' for a pipelined response still queued behind another when the connection
   * dies, and its binding would stay in `bindings` for good.
   */
  end(original: EndFn, args: unknown[]): ServerResponse {
    this.ending = true;
    this.noteRequestChanges();
    const res = this.res;
    if (this.rs.finishIfUnchanged()) {
      original.apply(res, args);
      bindings.delete(res);
      return res;
    }
    const release = holdResponse(res);
    this.rs.finish().then(
      () => {
        const late = release();
        original.apply(res, args);
        bindings.delete(res);
        late();
      },
      (err: unknown) => {
        const late = release();
        bindings.delete(res);
        if (res.headersSent) res.destroy(err as Error);
        else this.onCommitError(err);
        late();
      },
    );
    return res;
  }
}

/** The error Node throws for a header change after the headers went. */
function headersSentError(): Error {
  return Object.assign(new Error('Cannot set headers after they are sent to the client'), { code: 'ERR_HTTP_HEADERS_SENT' });
}

const HELD_METHODS = ['setHeader', 'appendHeader', 'removeHeader', 'writeHead', 'flushHeaders', 'write', 'end'] as const;

/**
 * Makes a response whose end() Kiln holds for its commit act as one that has ended:
 * header changes throw as Node throws them, headersSent and writableEnded are true,
 * write() calls are kept and replayed once the real end() has run, where Node answers
 * them as it answers any write after end(), and a second end() is dropped (the first
 * end wins, as with express-session). Own properties, only for the
 * time of a commit: the common path never pays for them. Returns a function that puts
 * the response back and returns the replay.
 */
function holdResponse(res: ServerResponse): () => () => void {
  const target = res as unknown as Record<string, unknown>;
  const saved = new Map<string, PropertyDescriptor | undefined>();
  const late: [method: 'write', args: unknown[]][] = [];
  for (const name of [...HELD_METHODS, 'headersSent', 'writableEnded']) saved.set(name, Object.getOwnPropertyDescriptor(res, name));
  const define = (name: string, descriptor: PropertyDescriptor) => Object.defineProperty(res, name, { configurable: true, ...descriptor });
  for (const name of ['setHeader', 'appendHeader', 'removeHeader', 'writeHead'] as const) {
    define(name, { writable: true, value: () => {
      throw headersSentError();
    } });
  }
  define('flushHeaders', { writable: true, value: () => undefined });
  define('write', { writable: true, value: (...args: unknown[]) => {
    late.push(['write', args]);
    return false;
  } });
  // A second end() is dropped, as express-session drops it: the first end wins.
  define('end', { writable: true, value: () => res });
  define('headersSent', { get: () => true });
  define('writableEnded', { get: () => true });
  return () => {
    for (const [name, descriptor] of saved) {
      if (descriptor) Object.defineProperty(res, name, descriptor);
      else delete target[name];
    }
    return () => {
      for (const [method, args] of late) (target[method] as (...a: unknown[]) => unknown).apply(res, args);
    };
  };
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
      return writeHead.apply(this, binding.beforeWriteHead(args));
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

/**
 * Opens a node:http request's session (kiln/express, kiln/http): its cookie options (a
 * request outside cookie.path gets none: undefined), the session id from the Cookie
 * header or, when a middleware consumed it, from cookie-parser's results; at once from
 * the near cache when it can, else through the engine.
 */
export function openNodeRequest<Req extends NodeSessionRequest>(runtime: SessionRuntime<Req>, req: Req): RequestSession<Req> | Promise<RequestSession<Req>> | undefined {
  const options: CookieOptions | undefined = runtime.cookieOptionsFor(req, req.originalUrl ?? req.url ?? '/');
  if (options === undefined) return undefined;
  let cookieHeader = req.headers.cookie;
  if ((req.signedCookies !== undefined || req.cookies !== undefined) && runtime.sessionIdFrom(cookieHeader) === undefined) {
    cookieHeader = runtime.cookieHeaderFromParsed(req.signedCookies, req.cookies) ?? cookieHeader;
  }
  const secure = () => requestIsSecure(runtime, req);
  return runtime.openNow(req, cookieHeader, secure, options) ?? runtime.open(req, cookieHeader, secure, options);
}
