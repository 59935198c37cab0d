import { KilnError } from '../../errors/index.js';
import { COOKIE_ATTRIBUTE, type RequestSession } from './runtime.js';
import type { SessionCookie } from './session-cookie.js';

/**
 * The `req.session` object of express-session (and koa-session's `ctx.session`):
 * attributes are properties, plus the methods below. Reads decode lazily and writes are
 * tracked, so `req.session.cart.push(x)` commits `cart` and nothing else.
 *
 * Callback methods also return promises: `await req.session.save()`.
 */
export interface KilnSessionObject {
  readonly id: string;
  cookie: SessionCookie;
  /** The user this session belongs to; set it at login for "log out everywhere". */
  principal: string | null;
  /** True when the route declared a read-only lease scope: changes throw. */
  readonly readOnly: boolean;
  regenerate(callback?: (err?: unknown) => void): Promise<void>;
  regenerate(options: { keep?: string[] }, callback?: (err?: unknown) => void): Promise<void>;
  /** @fastify/session's form: the attribute names to keep. */
  regenerate(keep: string[], callback?: (err?: unknown) => void): Promise<void>;
  destroy(callback?: (err?: unknown) => void): Promise<void>;
  reload(callback?: (err?: unknown) => void): Promise<void>;
  save(callback?: (err?: unknown) => void): Promise<void>;
  touch(): KilnSessionObject;
  resetMaxAge(): KilnSessionObject;
  /** Ends every session of this session's principal, on every app server; resolves to how many. */
  logoutEverywhere(callback?: (err: unknown, count?: number) => void): Promise<number>;
  /**
   * Attributes are properties. Declared in your adapter's SessionData, they are typed;
   * any other is `any`, as on a plain object (so JavaScript-style code compiles as is).
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- undeclared attributes, see above
  [attribute: string]: any;
}

const COMMON_METHODS = ['regenerate', 'destroy', 'reload', 'save', 'touch', 'resetMaxAge', 'logoutEverywhere', 'toJSON'];
const COMMON_PROPS = ['id', 'cookie', 'principal', 'readOnly', 'req', 'then'];

/**
 * Each framework's community expects a slightly different object: express-session's
 * (and koa-session's) properties-only session, or @fastify/session's get/set methods.
 */
function style(methods: string[], props: string[]) {
  return { methods: new Set(methods), props: new Set(props), reserved: new Set([...methods, ...props]) };
}
const STYLES = {
  express: style(COMMON_METHODS, COMMON_PROPS),
  fastify: style([...COMMON_METHODS, 'get', 'set', 'delete', 'options', 'isModified', 'isSaved'], [...COMMON_PROPS, 'sessionId', 'encryptedSessionId']),
  koa: style(COMMON_METHODS, [...COMMON_PROPS, 'isNew', 'maxAge']),
} as const;

export type SessionObjectStyle = keyof typeof STYLES;

export interface SessionObjectHooks {
  /** Which framework's idioms the object follows (default 'express'). */
  style?: SessionObjectStyle;
  /** The id changed (regenerate): the adapter updates req.sessionID etc. */
  onIdChange?(id: string): void;
  /** The session was destroyed: express-session removes req.session. */
  onDestroy?(): void;
}

/**
 * A method's promise, also reported to a callback when one is given. Success calls back
 * with no error: `undefined` as express-session's MemoryStore does, `null` in
 * @fastify/session's style. The callback runs outside the promise chain, so what it
 * throws is an uncaught exception, as with the incumbents, not an unhandled rejection.
 */
function withCallback<T>(core: Core, promise: Promise<T>, callback: ((err: unknown, value?: T) => void) | undefined): Promise<T> {
  if (!callback) {
    // Awaited, it rejects as ever; not awaited (`req.session.destroy(); res.redirect('/')`),
    // its failure must not be an unhandled rejection, which ends a Node 20 process. The
    // incumbents drop such an error too.
    promise.catch(() => undefined);
    return promise;
  }
  const ok = core.hooks.style === 'fastify' ? null : undefined;
  promise.then(
    (v) => process.nextTick(callback, ok, v),
    (err: unknown) => process.nextTick(callback, err),
  );
  return promise.catch(() => undefined as T);
}

/**
 * One request's session object: the Proxy's target. The handler and the method table are
 * built once per style (a request allocates this object, its Proxy and the methods it
 * actually calls, nothing more).
 */
class SessionObjectCore<Req = unknown> {
  proxy!: KilnSessionObject;
  bound: Record<string, unknown> | undefined;
  constructor(
    readonly rs: RequestSession<Req>,
    readonly hooks: SessionObjectHooks,
  ) {}
}

type Core = SessionObjectCore<unknown>;

function reservedError(name: string): KilnError {
  return new KilnError('KILN_ERR_INVALID_ARGUMENT', `"${name}" is part of the session's API and cannot be used as an attribute name`, { details: { attribute: name } });
}

function attributeKeys(core: Core): string[] {
  return core.rs.handle.keys().filter((k) => k !== COOKIE_ATTRIBUTE);
}

const METHOD_IMPLS: Record<string, (core: Core, ...args: never[]) => unknown> = {
  // regenerate(cb) | regenerate({ keep }, cb) | regenerate(['keep', 'these'], cb) (@fastify/session)
  regenerate(core: Core, a?: { keep?: string[] } | string[] | ((err?: unknown) => void), b?: (err?: unknown) => void) {
    // koa-session's regenerate() keeps the data under a new id; express-session's starts empty.
    const keepAll = core.hooks.style === 'koa' && (typeof a === 'function' || a === undefined);
    const keep = keepAll ? attributeKeys(core) : typeof a === 'function' || a === undefined ? [] : Array.isArray(a) ? a : (a.keep ?? []);
    const callback = typeof a === 'function' ? a : b;
    return withCallback(
      core,
      core.rs.regenerate(keep).then(() => core.hooks.onIdChange?.(core.rs.id)),
      callback,
    );
  },
  get(core: Core, key: string) {
    return key === COOKIE_ATTRIBUTE ? undefined : core.rs.handle.get(key);
  },
  set(core: Core, key: string, value: unknown) {
    if (STYLES[core.hooks.style ?? 'express'].reserved.has(key) || key === COOKIE_ATTRIBUTE) throw reservedError(key);
    core.rs.handle.set(key, value);
  },
  delete(core: Core, callback?: (err?: unknown) => void) {
    return withCallback(core, core.rs.destroy().then(() => core.hooks.onDestroy?.()), callback);
  },
  destroy(core: Core, callback?: (err?: unknown) => void) {
    return withCallback(core, core.rs.destroy().then(() => core.hooks.onDestroy?.()), callback);
  },
  reload(core: Core, callback?: (err?: unknown) => void) {
    return withCallback(core, Promise.resolve().then(() => core.rs.reload()), callback);
  },
  save(core: Core, callback?: (err?: unknown) => void) {
    return withCallback(core, core.rs.save(), callback);
  },
  touch(core: Core) {
    core.rs.touch();
    return core.proxy;
  },
  // @fastify/session: cookie options for this response ({ maxAge, domain, … }).
  options(core: Core, opts: Record<string, unknown>) {
    core.rs.setCookieOptions(opts ?? {});
  },
  isModified(core: Core) {
    return core.rs.isModified;
  },
  isSaved(core: Core) {
    return core.rs.isSaved;
  },
  resetMaxAge(core: Core) {
    core.rs.touch();
    return core.proxy;
  },
  logoutEverywhere(core: Core, callback?: (err: unknown, count?: number) => void) {
    return withCallback(core, core.rs.destroyAllOfPrincipal().then((n) => {
      core.hooks.onDestroy?.();
      return n;
    }), callback);
  },
  toJSON(core: Core) {
    const out: Record<string, unknown> = { cookie: core.rs.cookie.toJSON() };
    for (const key of attributeKeys(core)) out[key] = core.rs.handle.get(key);
    return out;
  },
};

function handlerFor(styleName: SessionObjectStyle): ProxyHandler<Core> {
  const style = STYLES[styleName];
  const METHODS: ReadonlySet<string> = style.methods;
  const RESERVED: ReadonlySet<string> = style.reserved;
  const PROPS: ReadonlySet<string> = style.props;
  return {
    get(core, prop) {
      if (typeof prop === 'symbol') return undefined;
      const rs = core.rs;
      if (METHODS.has(prop)) {
        const bound = (core.bound ??= {});
        return (bound[prop] ??= METHOD_IMPLS[prop]!.bind(null, core));
      }
      switch (prop) {
        case 'id':
          return rs.id;
        case 'cookie':
          return rs.cookie;
        case 'principal':
          return rs.handle.principal;
        case 'readOnly':
          return rs.readOnly;
        case 'sessionId':
          return PROPS.has('sessionId') ? rs.id : rs.handle.get(prop);
        case 'encryptedSessionId':
          return PROPS.has('encryptedSessionId') ? rs.signedId : rs.handle.get(prop);
        case 'isNew':
          return PROPS.has('isNew') ? rs.handle.isNew : rs.handle.get(prop);
        case 'maxAge':
          // koa-session's maxAge is the cookie's lifetime (an option), not a countdown.
          return PROPS.has('maxAge') ? rs.cookie.originalMaxAge : rs.handle.get(prop);
        case 'req':
        case 'then':
          return undefined;
        default:
          return prop === COOKIE_ATTRIBUTE ? undefined : rs.handle.get(prop);
      }
    },
    set(core, prop, value) {
      if (typeof prop === 'symbol') return false;
      const rs = core.rs;
      if (prop === 'principal') {
        rs.handle.setPrincipal(value === undefined ? null : (value as string | null));
        return true;
      }
      if (prop === 'maxAge' && PROPS.has('maxAge')) {
        rs.cookie.maxAge = value === 'session' ? null : (value as number | null);
        return true;
      }
      if (prop === 'cookie') {
        // express-session apps sometimes assign a whole cookie object: take its lifetime.
        const c = value as { maxAge?: number | null; expires?: Date | null };
        if (c && c.maxAge !== undefined) rs.cookie.maxAge = c.maxAge;
        else if (c && c.expires !== undefined) rs.cookie.expires = c.expires;
        return true;
      }
      if (RESERVED.has(prop) || prop === COOKIE_ATTRIBUTE) throw reservedError(prop);
      rs.handle.set(prop, value);
      return true;
    },
    deleteProperty(core, prop) {
      if (typeof prop === 'symbol') return false;
      if (RESERVED.has(prop) || prop === COOKIE_ATTRIBUTE) throw reservedError(prop);
      core.rs.handle.delete(prop);
      return true;
    },
    has(core, prop) {
      if (typeof prop === 'symbol') return false;
      return RESERVED.has(prop) || (prop !== COOKIE_ATTRIBUTE && core.rs.handle.has(prop));
    },
    ownKeys(core) {
      return ['cookie', ...attributeKeys(core)];
    },
    getOwnPropertyDescriptor(core, prop) {
      if (typeof prop === 'symbol') return undefined;
      const rs = core.rs;
      if (prop === 'cookie') return { value: rs.cookie, enumerable: true, configurable: true, writable: true };
      if (prop === COOKIE_ATTRIBUTE || RESERVED.has(prop) || !rs.handle.has(prop)) return undefined;
      return { value: rs.handle.get(prop), enumerable: true, configurable: true, writable: true };
    },
    // The target's own fields are internal: a defined property is an attribute like any other.
    defineProperty(core, prop, descriptor) {
      if (!('value' in descriptor)) return false;
      return this.set!(core, prop, descriptor.value, core.proxy);
    },
    getPrototypeOf() {
      return Object.prototype;
    },
    // Object.setPrototypeOf(req.session, …) would reach the internal target: refused (a TypeError).
    setPrototypeOf() {
      return false;
    },
  };
}

const HANDLERS: Record<SessionObjectStyle, ProxyHandler<Core>> = {
  express: handlerFor('express'),
  fastify: handlerFor('fastify'),
  koa: handlerFor('koa'),
};

export function createSessionObject<Req>(rs: RequestSession<Req>, hooks: SessionObjectHooks = {}): KilnSessionObject {
  const core = new SessionObjectCore(rs as RequestSession<unknown>, hooks);
  // A login's automatic id rotation (rotateOnLogin) changes the id as regenerate() does.
  if (hooks.onIdChange) rs.onRotate = hooks.onIdChange;
  core.proxy = new Proxy(core, HANDLERS[hooks.style ?? 'express']) as unknown as KilnSessionObject;
  return core.proxy;
}
