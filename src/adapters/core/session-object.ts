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
  [attribute: string]: unknown;
}

const COMMON_METHODS = ['regenerate', 'destroy', 'reload', 'save', 'touch', 'resetMaxAge', 'logoutEverywhere', 'toJSON'];
const COMMON_PROPS = ['id', 'cookie', 'principal', 'readOnly', 'req', 'then'];

/**
 * Each framework's community expects a slightly different object: express-session's
 * (and koa-session's) properties-only session, or @fastify/session's get/set methods.
 */
const STYLES = {
  express: { methods: new Set(COMMON_METHODS), props: new Set(COMMON_PROPS) },
  fastify: { methods: new Set([...COMMON_METHODS, 'get', 'set', 'delete']), props: new Set([...COMMON_PROPS, 'sessionId']) },
  koa: { methods: new Set(COMMON_METHODS), props: new Set([...COMMON_PROPS, 'isNew', 'maxAge']) },
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

function withCallback<T>(promise: Promise<T>, callback: ((err: unknown, value?: T) => void) | undefined): Promise<T> {
  if (callback) promise.then((v) => callback(undefined, v), (err) => callback(err));
  return callback ? promise.catch(() => undefined as T) : promise;
}

export function createSessionObject<Req>(rs: RequestSession<Req>, hooks: SessionObjectHooks = {}): KilnSessionObject {
  const style = STYLES[hooks.style ?? 'express'];
  const METHODS: ReadonlySet<string> = style.methods;
  const RESERVED: ReadonlySet<string> = new Set([...style.methods, ...style.props]);
  const methods: Record<string, unknown> = {
    // regenerate(cb) | regenerate({ keep }, cb) | regenerate(['keep', 'these'], cb) (@fastify/session)
    regenerate(a?: { keep?: string[] } | string[] | ((err?: unknown) => void), b?: (err?: unknown) => void) {
      const keep = typeof a === 'function' || a === undefined ? [] : Array.isArray(a) ? a : (a.keep ?? []);
      const callback = typeof a === 'function' ? a : b;
      return withCallback(
        rs.regenerate(keep).then(() => hooks.onIdChange?.(rs.id)),
        callback,
      );
    },
    get(key: string) {
      return key === COOKIE_ATTRIBUTE ? undefined : rs.handle.get(key);
    },
    set(key: string, value: unknown) {
      if (RESERVED.has(key) || key === COOKIE_ATTRIBUTE) throw reservedError(key);
      rs.handle.set(key, value);
    },
    delete(callback?: (err?: unknown) => void) {
      return withCallback(rs.destroy().then(() => hooks.onDestroy?.()), callback);
    },
    destroy(callback?: (err?: unknown) => void) {
      return withCallback(rs.destroy().then(() => hooks.onDestroy?.()), callback);
    },
    reload(callback?: (err?: unknown) => void) {
      return withCallback(Promise.resolve().then(() => rs.reload()), callback);
    },
    save(callback?: (err?: unknown) => void) {
      return withCallback(rs.save(), callback);
    },
    touch() {
      rs.touch();
      return proxy;
    },
    resetMaxAge() {
      rs.touch();
      return proxy;
    },
    logoutEverywhere(callback?: (err: unknown, count?: number) => void) {
      return withCallback(rs.destroyAllOfPrincipal().then((n) => {
        hooks.onDestroy?.();
        return n;
      }), callback);
    },
    toJSON() {
      const out: Record<string, unknown> = { cookie: rs.cookie.toJSON() };
      for (const key of attributeKeys()) out[key] = rs.handle.get(key);
      return out;
    },
  };

  const attributeKeys = (): string[] => rs.handle.keys().filter((k) => k !== COOKIE_ATTRIBUTE);

  const reservedError = (name: string): KilnError =>
    new KilnError('KILN_ERR_INVALID_ARGUMENT', `"${name}" is part of the session's API and cannot be used as an attribute name`, { details: { attribute: name } });

  const proxy: KilnSessionObject = new Proxy({} as KilnSessionObject, {
    get(_target, prop) {
      if (typeof prop === 'symbol') return undefined;
      if (METHODS.has(prop)) return methods[prop];
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
          return style.props.has('sessionId') ? rs.id : rs.handle.get(prop);
        case 'isNew':
          return style.props.has('isNew') ? rs.handle.isNew : rs.handle.get(prop);
        case 'maxAge':
          return style.props.has('maxAge') ? rs.cookie.maxAge : rs.handle.get(prop);
        case 'req':
        case 'then':
          return undefined;
        default:
          return prop === COOKIE_ATTRIBUTE ? undefined : rs.handle.get(prop);
      }
    },
    set(_target, prop, value) {
      if (typeof prop === 'symbol') return false;
      if (prop === 'principal') {
        rs.handle.setPrincipal(value === undefined ? null : (value as string | null));
        return true;
      }
      if (prop === 'maxAge' && style.props.has('maxAge')) {
        rs.cookie.maxAge = value as number | null;
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
    deleteProperty(_target, prop) {
      if (typeof prop === 'symbol') return false;
      if (RESERVED.has(prop) || prop === COOKIE_ATTRIBUTE) throw reservedError(prop);
      rs.handle.delete(prop);
      return true;
    },
    has(_target, prop) {
      if (typeof prop === 'symbol') return false;
      return RESERVED.has(prop) || (prop !== COOKIE_ATTRIBUTE && rs.handle.has(prop));
    },
    ownKeys() {
      return ['cookie', ...attributeKeys()];
    },
    getOwnPropertyDescriptor(_target, prop) {
      if (typeof prop === 'symbol') return undefined;
      if (prop === 'cookie') return { value: rs.cookie, enumerable: true, configurable: true, writable: true };
      if (prop === COOKIE_ATTRIBUTE || RESERVED.has(prop) || !rs.handle.has(prop)) return undefined;
      return { value: rs.handle.get(prop), enumerable: true, configurable: true, writable: true };
    },
  });
  return proxy;
}
