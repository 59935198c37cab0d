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
  /** cookie-parser's secret, with which it verified signedCookies. */
  secret?: string;
}

/**
 * Whether the request came over TLS, directly or (when trusted) through a proxy. Pass it
 * to the runtime as a function: Express's req.secure walks the trust-proxy settings, and
 * most requests never need the answer.
 */
export function requestIsSecure(runtime: Pick<SessionRuntime, 'isSecure'>, req: NodeSessionRequest, frameworkSecure: boolean | undefined = typeof req.secure === 'boolean' ? req.secure : undefined): boolean {
  const direct = (req.socket as TLSSocket | undefined)?.encrypted === true;
  const forwarded = req.headers['x-forwarded-proto'];
  return runtime.isSecure(direct, Array.isArray(forwarded) ? forwarded[0] : forwarded, frameworkSecure);
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
  define(proto, 'writeHead', function kilnWriteHead(this: ServerResponse, ...args: unknown[]) {
    const binding = bindings.get(this);
    if (binding === undefined || binding.onInstance) return writeHead.apply(this, args);
    if (binding.held) throw headersSentError();
    return writeHead.apply(this, binding.beforeWriteHead(args));
  });
  define(proto, 'end', function kilnEnd(this: ServerResponse, ...args: unknown[]) {
    const binding = bindings.get(this);
    if (binding === undefined || binding.onInstance) return end.apply(this, args);
    if (binding.held) return heldEnd(this, args);
    return binding.ending ? end.apply(this, args) : binding.end(end, args);
  });
  // While a commit holds the end, the response acts as one that has ended (see
  // ResponseBinding.end): one Map lookup per call on every response of the app, instead
  // of own properties on the held ones (defining and deleting them on Express's
  // responses cost 0.1-0.2 ms a request). The arguments pass on uncopied.
  for (const name of ['setHeader', 'appendHeader', 'removeHeader'] as const) {
    const original = proto[name] as (...args: unknown[]) => unknown;
    define(proto, name, function kilnHeaderChange(this: ServerResponse) {
      if (isHeld(this)) throw headersSentError();
      // eslint-disable-next-line prefer-rest-params -- see above
      return Reflect.apply(original, this, arguments);
    });
  }
  const write = proto['write'] as (...args: unknown[]) => boolean;
  define(proto, 'write', function kilnWrite(this: ServerResponse, ...args: unknown[]) {
    return isHeld(this) ? bindings.get(this)!.holdWrite(args) : write.apply(this, args);
  });
  const flushHeaders = proto['flushHeaders'] as () => void;
  define(proto, 'flushHeaders', function kilnFlushHeaders(this: ServerResponse) {
    if (!isHeld(this)) flushHeaders.call(this);
  });
  for (const name of ['headersSent', 'writableEnded'] as const) {
    const getter = getterOf(proto, name);
    Object.defineProperty(proto, name, {
      configurable: true,
      get(this: ServerResponse) {
        return isHeld(this) || getter.call(this);
      },
    });
  }
  define(proto, 'emit', function kilnEmit(this: ServerResponse, event: unknown) {
    // 'close' comes once per response, after 'finish' or when the connection drops.
    if (event === 'close') closeBinding(this);
    // eslint-disable-next-line prefer-rest-params -- passes the arguments on untouched, without copying them
    return Reflect.apply(emit, this, arguments);
  });
  hookedPrototypes.add(proto);
  // This request's res may already carry another middleware's own end/writeHead that
  // captured the unhooked methods: patch the instance too, this once.
  return false;
}

function define(target: object, name: string, value: unknown): void {
  Object.defineProperty(target, name, { configurable: true, writable: true, value });
}

/** Whether a response whose hooks are its prototype's is held for its commit (see ResponseBinding.end). */
function isHeld(res: ServerResponse): boolean {
  const binding = bindings.get(res);
  return binding !== undefined && binding.held && !binding.onInstance;
}

/** The getter of an accessor property, found up the prototype chain. */
function getterOf(proto: object, name: string): () => boolean {
  for (let o: object | null = proto; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const descriptor = Object.getOwnPropertyDescriptor(o, name);
    if (descriptor?.get) return descriptor.get as () => boolean;
  }
  throw new Error(`no getter ${name} on the response prototype`);
}

/**
 * Session ids of requests whose prototype carries the `sessionID` accessor. The value is
 * a string, which cannot reach its key, so this WeakMap keeps nothing alive; and the id
 * stays readable after the response closed (a logger's 'close' listener).
 */
const sessionIds = new WeakMap<object, string>();
/** Requests whose application assigned req.sessionID (the accessor's setter saw it): a lookup here is cheaper than asking Express's request for an own property. */
const reassignedIds = new WeakSet<object>();

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
      reassignedIds.add(this);
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
    if ((this.ownSessionId || reassignedIds.has(req)) && req.sessionID !== this.rs.id) this.rs.abandoned = true;
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
   * While the commit is in flight the response is held: it acts as one that has ended,
   * so an application's later calls do what Node does after end(): header changes throw
   * ERR_HTTP_HEADERS_SENT, headersSent and writableEnded are true, a second end() is
   * dropped as express-session drops it (its callback runs at 'finish'), and a write()
   * is checked as Node checks it, then replayed after the real end for Node to answer.
   * The binding goes once the response has ended, not only at 'close': Node never emits
   * 'close' for a pipelined response still queued behind another when the connection
   * dies, and its binding would stay in `bindings` for good.
   */
  end(original: EndFn, args: unknown[]): ServerResponse {
    checkChunk(args[0], true);
    this.ending = true;
    this.noteRequestChanges();
    const res = this.res;
    if (this.rs.finishIfUnchanged()) {
      original.apply(res, args);
      bindings.delete(res);
      return res;
    }
    this.held = true;
    const restore = this.onInstance ? holdInstance(res, this) : undefined;
    this.rs.finish().then(
      () => {
        this.release(restore);
        // What Node throws here it would have thrown to the caller of end(); that caller
        // has gone on, so the response ends in error instead of an unhandled rejection.
        try {
          original.apply(res, args);
        } catch (err) {
          res.destroy(err as Error);
        }
        bindings.delete(res);
        this.replayLateWrites();
      },
      (err: unknown) => {
        this.release(restore);
        bindings.delete(res);
        if (res.headersSent) res.destroy(err as Error);
        else this.onCommitError(err);
        this.replayLateWrites();
      },
    );
    return res;
  }

  /** A response is held while its end waits for the commit (see end()). */
  held = false;
  private lateWrites: unknown[][] | undefined;

  /** write() on a held response: checked now as Node checks it, answered after the real end. */
  holdWrite(args: unknown[]): boolean {
    checkChunk(args[0], false);
    (this.lateWrites ??= []).push(args);
    return false;
  }

  private release(restore: (() => void) | undefined): void {
    this.held = false;
    restore?.();
  }

  private replayLateWrites(): void {
    const late = this.lateWrites;
    if (late === undefined) return;
    this.lateWrites = undefined;
    for (const args of late) {
      try {
        this.res.write(...(args as Parameters<ServerResponse['write']>));
      } catch (err) {
        this.res.destroy(err as Error);
      }
    }
  }
}

/** The error Node throws for a header change after the headers went. */
function headersSentError(): Error {
  return Object.assign(new Error('Cannot set headers after they are sent to the client'), { code: 'ERR_HTTP_HEADERS_SENT' });
}

/**
 * Throws what Node's write()/end() throw at once for a chunk they refuse, so a held
 * response refuses it to its caller too instead of failing later in a callback.
 */
function checkChunk(chunk: unknown, forEnd: boolean): void {
  if (chunk === null && !forEnd) throw Object.assign(new TypeError('May not write null values to stream'), { code: 'ERR_STREAM_NULL_VALUES' });
  if (chunk === undefined || chunk === null || typeof chunk === 'string' || typeof chunk === 'function' || chunk instanceof Uint8Array) return;
  throw Object.assign(new TypeError(`The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received ${typeof chunk}`), { code: 'ERR_INVALID_ARG_TYPE' });
}

/** A second end() on a held response: dropped (the first end wins); its callback runs when the response finishes. */
function heldEnd(res: ServerResponse, args: unknown[]): ServerResponse {
  const callback = args.findLast((a) => typeof a === 'function') as (() => void) | undefined;
  if (callback) res.once('finish', callback);
  return res;
}

/**
 * The held state for a response whose hooks are its own (node:http's shared prototype is
 * never touched): own properties for the time of the commit. Returns the restore.
 */
function holdInstance(res: ServerResponse, binding: { holdWrite(args: unknown[]): boolean }): () => void {
  const target = res as unknown as Record<string, unknown>;
  const names = ['setHeader', 'appendHeader', 'removeHeader', 'writeHead', 'flushHeaders', 'write', 'end', 'headersSent', 'writableEnded'];
  const saved = names.map((name) => [name, Object.getOwnPropertyDescriptor(res, name)] as const);
  const define = (name: string, descriptor: PropertyDescriptor) => Object.defineProperty(res, name, { configurable: true, ...descriptor });
  const refuse = () => {
    throw headersSentError();
  };
  for (const name of ['setHeader', 'appendHeader', 'removeHeader', 'writeHead']) define(name, { writable: true, value: refuse });
  define('flushHeaders', { writable: true, value: () => undefined });
  define('write', { writable: true, value: (...args: unknown[]) => binding.holdWrite(args) });
  define('end', { writable: true, value: (...args: unknown[]) => heldEnd(res, args) });
  define('headersSent', { get: () => true });
  define('writableEnded', { get: () => true });
  return () => {
    for (const [name, descriptor] of saved) {
      if (descriptor) Object.defineProperty(res, name, descriptor);
      else delete target[name];
    }
  };
}

/**
 * The node:http response side, shared by kiln/express and kiln/http: the cookie goes
 * out with the headers, `res.end()` waits for the commit, and a response that closes
 * without ending releases the session without committing.
 */
export function bindToResponse<Req>(rs: RequestSession<Req>, req: NodeSessionRequest, res: ServerResponse, onCommitError: (err: unknown) => void): KilnSessionObject {
  const binding = new ResponseBinding(rs, req, res, onCommitError);
  try {
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
  } catch (err) {
    // Another middleware's req.session or req.sessionID setter threw: nothing of the
    // half-made binding stays, and the session is let go now, not when the request
    // times out. The caller routes the error (Express's next, kiln/http's load()).
    if (req.session === binding.sessionObject) delete req.session;
    if (bindings.get(res) === binding) bindings.delete(res);
    rs.abort();
    throw err;
  }
  // The client hung up before the binding (while the session was being opened, or during
  // an asynchronous middleware before ours): its 'close' has come and gone, so the
  // request is let go now and commits nothing, as after a later hang-up.
  if (res.destroyed) closeBinding(res);
  return binding.sessionObject;
}

/**
 * Opens a node:http request's session (kiln/express, kiln/http): its cookie options (a
 * request outside cookie.path gets none: undefined), the session id from the Cookie
 * header or, when a middleware consumed it, from cookie-parser's results; at once from
 * the near cache when it can, else through the engine.
 */
export function openNodeRequest<Req extends NodeSessionRequest>(runtime: SessionRuntime<Req>, req: Req): RequestSession<Req> | Promise<RequestSession<Req>> | undefined {
  // Each property read of Express's req misses V8's caches (see `bindings`): the URL is
  // read only when a path or a cookie function needs it, cookie-parser's results only
  // when the Cookie header names no session.
  const options: CookieOptions | undefined = runtime.cookieVariesByRequest ? runtime.cookieOptionsFor(req, req.originalUrl ?? req.url ?? '/') : runtime.cookieOptions;
  if (options === undefined) return undefined;
  let incomingId = runtime.sessionIdFrom(req.headers.cookie);
  if (incomingId === undefined && (req.signedCookies !== undefined || req.cookies !== undefined)) {
    incomingId = runtime.sessionIdFromParsed(req.signedCookies, req.cookies, req.secret);
  }
  const secure = () => requestIsSecure(runtime, req);
  return runtime.openNow(req, incomingId, secure, options) ?? runtime.open(req, incomingId, secure, options);
}
