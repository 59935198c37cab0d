import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyRequest } from 'fastify';
import type { SessionClient } from '../../client/session-client.js';
import { KilnError } from '../../errors/index.js';
import { SessionRuntime, readOnlyPaths, type KilnSessionOptions, type RequestSession } from '../core/runtime.js';
import { createSessionObject, type KilnSessionObject } from '../core/session-object.js';
import type { CookieOptions } from '../core/session-cookie.js';
import { requestIsSecure, type NodeSessionRequest } from '../core/http.js';

/**
 * Fastify 5 plugin with @fastify/session's API and defaults: `request.session.get/set`,
 * `destroy`, `regenerate(keep)`, `reload`, `save`, `touch`, `options`, `isModified`,
 * `isSaved`, `sessionId`, `cookie`; `fastify.decryptSession`, `request.sessionStore`;
 * options `cookieName`, `cookiePrefix`, `idGenerator(request)`, `algorithm`, a signer
 * object as `secret`. Plus property access and Kiln's extras. The session is committed
 * in `onSend`, before the reply goes out; the cookie is set as a header, so
 * @fastify/cookie is optional.
 *
 * Defaults are @fastify/session's (cookie `sessionId`, no value prefix, `secure: true`,
 * `rolling: true`, a string secret of 32 characters or more) except `saveUninitialized`,
 * which is false as everywhere in Kiln. To share sessions with kiln/express apps, give
 * both the same name and secret, and `cookiePrefix: 's:'` here.
 *
 * @example
 * import Fastify from 'fastify';
 * import { kilnSession } from 'kiln/fastify';
 * const app = Fastify();
 * await app.register(kilnSession, { secret: process.env.SESSION_SECRET, engine: 'kiln://127.0.0.1:9510' });
 * app.post('/cart', async (request) => {
 *   const cart = request.session.get('cart') ?? [];
 *   cart.push(request.body.sku);
 *   request.session.set('cart', cart);
 *   return { items: cart.length };
 * });
 */
/**
 * Your session's fields, for TypeScript (as @fastify/session's `Session` interface):
 * `request.session.get('visits')` and `.set('visits', …)` are typed.
 *
 * @example
 * declare module 'kiln/fastify' {
 *   interface SessionData { visits?: number }
 * }
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- filled in by applications (declaration merging)
export interface SessionData {}

/** A field's type: from SessionData when declared there, else what the caller names (or unknown). */
type FieldType<K extends string, T> = [T] extends [never] ? (K extends keyof SessionData ? SessionData[K] : unknown) : T;

export type FastifySessionObject = KilnSessionObject &
  Partial<SessionData> & {
  readonly sessionId: string;
  /** The cookie's value for this session (signed), as @fastify/session names it. */
  readonly encryptedSessionId: string;
  get<T = never, K extends string = string>(key: K): FieldType<K, T> | undefined;
  set<K extends string>(key: K, value: K extends keyof SessionData ? SessionData[K] : unknown): void;
  /** @fastify/session's name for destroy(). */
  delete(callback?: (err?: unknown) => void): Promise<void>;
  /** Cookie attributes for this response (maxAge in milliseconds, domain, sameSite…). */
  options(opts: Partial<CookieOptions>): void;
  /** Whether this request changed the session. */
  isModified(): boolean;
  /** Whether a save() of this request reached the tier. */
  isSaved(): boolean;
};

/** @fastify/session's option names, accepted beside Kiln's. */
export interface FastifySessionOptions<Req = FastifyRequest> extends Omit<KilnSessionOptions<Req>, 'genid'> {
  /** @fastify/session's name for `name`. Default 'sessionId'. */
  cookieName?: string;
  /** Makes new session ids, given the Fastify request (@fastify/session's name for `genid`). */
  idGenerator?: (request: Req) => string;
  genid?: (request: Req) => string;
}

interface FastifyLikeRequest {
  raw: IncomingMessage;
  headers: IncomingMessage['headers'];
  protocol: 'http' | 'https';
  url: string;
  session: FastifySessionObject | null;
  [kilnKey]?: RequestSession<FastifyLikeRequest>;
}

interface FastifyLikeReply {
  header(name: string, value: unknown): unknown;
}

interface FastifyLike {
  decorateRequest(name: string, value: unknown): unknown;
  decorate(name: string, value: unknown): unknown;
  addHook(name: string, hook: (...args: never[]) => unknown): unknown;
}

const kilnKey = Symbol('kiln.requestSession');

/** @fastify/session's refusal of a short string secret. */
const MIN_SECRET_LENGTH = 32;

function runtimeFor(options: FastifySessionOptions<FastifyLikeRequest>): SessionRuntime<FastifyLikeRequest> {
  const owner = 'kiln/fastify kilnSession';
  if (typeof options !== 'object' || options === null) throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner} options must be an object`);
  const { cookieName, idGenerator, ...rest } = options;
  if (typeof options.secret === 'string' && options.secret.length < MIN_SECRET_LENGTH) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${owner}: option "secret" must be at least ${MIN_SECRET_LENGTH} characters (as @fastify/session requires), or an array of secrets, or a signer`, { details: { option: 'secret' } });
  }
  const cookie = options.cookie;
  // @fastify/session's defaults: a Secure cookie, refreshed on every response.
  const withDefaults = typeof cookie === 'function' ? cookie : { ...cookie, secure: cookie?.secure ?? true };
  return new SessionRuntime<FastifyLikeRequest>(
    {
      name: cookieName ?? 'sessionId',
      cookiePrefix: '',
      rolling: true,
      ...rest,
      genid: idGenerator ?? options.genid,
      cookie: withDefaults,
    } as KilnSessionOptions<FastifyLikeRequest>,
    owner,
    'On Fastify, register kiln/fastify instead of @fastify/session and its store.',
  );
}

function plugin(fastify: FastifyLike, options: FastifySessionOptions, done: (err?: Error) => void): void {
  let runtime: SessionRuntime<FastifyLikeRequest>;
  try {
    runtime = runtimeFor(options as unknown as FastifySessionOptions<FastifyLikeRequest>);
  } catch (err) {
    done(err as Error);
    return;
  }
  fastify.decorateRequest('session', null);
  // @fastify/session's request.sessionStore: here the Kiln client (not an express-session Store).
  fastify.decorateRequest('sessionStore', { getter: () => runtime.client });
  fastify.decorate('kiln', runtime.client);

  const attach = (request: FastifyLikeRequest, rs: RequestSession<FastifyLikeRequest>) => {
    request[kilnKey] = rs;
    // As @fastify/session: after destroy(), request.session is null.
    request.session = createSessionObject(rs, { style: 'fastify', onDestroy: () => (request.session = null) }) as FastifySessionObject;
  };

  /**
   * @fastify/session's decryptSession(cookieValue, request, [cookieOptions], callback):
   * loads the session a cookie value names into `request.session`. The request has no
   * end at which to commit, so the session is a read-only snapshot (writes throw). A
   * request that already has its session keeps it (and its lease): decrypting the same
   * session again hands out that one, another one does not replace it.
   */
  fastify.decorate('decryptSession', (cookieValue: string, request: FastifyLikeRequest, cookieOptions: unknown, callback?: (err?: unknown) => void) => {
    const cb = (typeof cookieOptions === 'function' ? cookieOptions : callback) as ((err?: unknown) => void) | undefined;
    const extra = typeof cookieOptions === 'object' && cookieOptions !== null ? (cookieOptions as CookieOptions) : {};
    const opts = { ...runtime.cookieOptions, ...extra };
    const id = runtime.sessionIdFrom(`${runtime.name}=${encodeURIComponent(String(cookieValue))}`);
    const own = request[kilnKey];
    const done = (err?: unknown) => {
      // Outside the promise chain: what the callback throws is the application's, as with @fastify/session.
      if (cb) process.nextTick(cb, err);
    };
    if (own !== undefined && id === own.id) {
      done();
      return;
    }
    runtime.open(request, id, request.protocol === 'https', opts, { readOnly: true }).then(
      (rs) => {
        // A read-only handle holds no lock and no lease: nothing to release, and it stays readable.
        request.session = createSessionObject(rs, { style: 'fastify' }) as FastifySessionObject;
        done();
      },
      (err: unknown) => done(err),
    );
  });

  // Callback-style hooks: sticky traffic (the session in the near cache and free) and a
  // request that changed nothing pass through without a promise, as with kiln/express.
  fastify.addHook('onRequest', ((request: FastifyLikeRequest, reply: { raw: ServerResponse }, done: (err?: unknown) => void) => {
    let opened: RequestSession<FastifyLikeRequest> | undefined;
    let incomingId: string | undefined;
    let cookieOptions: CookieOptions | undefined;
    // The `proxy` option decides as on every framework; left unset, Fastify's request.protocol (trustProxy) does.
    const secure = () => requestIsSecure(runtime, request.raw as NodeSessionRequest, request.protocol === 'https');
    try {
      cookieOptions = runtime.cookieVariesByRequest ? runtime.cookieOptionsFor(request, request.url) : runtime.cookieOptions;
      if (cookieOptions === undefined) {
        // Outside cookie.path: an empty session and no cookie, as with @fastify/session.
        request.session = {} as FastifySessionObject;
        done();
        return;
      }
      incomingId = runtime.sessionIdFrom(request.headers.cookie);
      opened = runtime.openNow(request, incomingId, secure, cookieOptions);
    } catch (err) {
      done(err);
      return;
    }
    if (opened) {
      attach(request, opened);
      done();
      return;
    }
    // What throws after the engine answered (attach) goes to Fastify too, never unhandled.
    runtime
      .open(request, incomingId, secure, cookieOptions)
      .then((rs) => {
        attach(request, rs);
        // The client hung up while the session was being opened (onRequestAbort found no
        // session to release): let it go now; the request commits nothing.
        if (reply.raw.destroyed) rs.abort();
      })
      .then(() => done(), done);
  }) as never);

  // Before the reply is sent: commit, then set the cookie (the commit decides whether one is needed).
  fastify.addHook('onSend', ((request: FastifyLikeRequest, reply: FastifyLikeReply, payload: unknown, done: (err: unknown, payload?: unknown) => void) => {
    const rs = request[kilnKey];
    if (!rs) {
      done(null, payload);
      return;
    }
    const send = () => {
      const cookie = rs.setCookieHeader();
      // Fastify's reply.header() appends to set-cookie: the cookies already on the reply stay, once.
      if (cookie) reply.header('set-cookie', cookie);
      done(null, payload);
    };
    try {
      if (request.session === null && !rs.isDestroyed) rs.unsetByApp = true;
      if (rs.finishIfUnchanged()) {
        send();
        return;
      }
    } catch (err) {
      done(err);
      return;
    }
    // A Set-Cookie refused after the commit (send throws) is an error reply, not a hung request.
    rs.finish()
      .then(send)
      .catch((err: unknown) => done(err));
  }) as never);

  const release = (async (request: FastifyLikeRequest) => {
    request[kilnKey]?.abort();
  }) as never;
  fastify.addHook('onResponse', release);
  fastify.addHook('onRequestAbort', release);
  fastify.addHook('onClose', (async () => runtime.close()) as never);
  done();
}

// Fastify plugin metadata without depending on fastify-plugin: apply to the parent
// scope (so every route sees request.session) and declare the supported version.
Object.assign(plugin, {
  [Symbol.for('skip-override')]: true,
  [Symbol.for('fastify.display-name')]: 'kiln-session',
  [Symbol.for('plugin-meta')]: { name: 'kiln-session', fastify: '5.x' },
});

export const kilnSession = plugin;
export default plugin;

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's Kiln session (kiln/fastify); null only if the plugin is not registered. */
    session: FastifySessionObject;
    /** @fastify/session's request.sessionStore: the Kiln client behind the plugin. */
    readonly sessionStore: SessionClient;
  }
  interface FastifyInstance {
    /** The Kiln client behind the plugin (destroyByPrincipal, stats, events). */
    kiln: SessionClient;
    /** Loads the session a cookie value names into `request.session` (read-only: no request end to commit at). */
    decryptSession(cookieValue: string, request: object, cookieOptions: Partial<CookieOptions> | ((err?: unknown) => void), callback?: (err?: unknown) => void): void;
  }
}
export { readOnlyPaths };
export type { KilnSessionOptions, KilnSessionObject, SessionClient };
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
