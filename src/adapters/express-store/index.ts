import expressSession from 'express-session';
import type { SessionClient } from '../../client/session-client.js';
import type { Engine } from '../../engines/engine.js';
import { createHash } from 'node:crypto';
import { KilnError, toKilnError } from '../../errors/index.js';
import { isValidSessionId } from '../../session/id.js';
import { OptionReader } from '../../util/options.js';
import { clientFromOption } from '../core/runtime.js';

/**
 * An express-session Store over any Kiln engine, for apps that keep express-session
 * itself.
 *
 * @example
 * import session from 'express-session';
 * import { KilnStore } from 'kiln/express-store';
 * app.use(session({ secret, resave: false, saveUninitialized: false,
 *   store: new KilnStore({ engine: 'kiln://127.0.0.1:9510' }) }));
 *
 * What it gains over connect-redis: each top-level property is its own attribute and
 * only those whose bytes changed are written (not the whole session per request); a
 * destroyed session is tombstoned, so a request still in flight cannot write it back;
 * sticky traffic reads from the near cache. What it cannot give: express-session reads
 * the session at the start of a request and writes it at the end as two separate calls,
 * so two concurrent requests on one session can still overwrite each other's changes.
 * For no lost updates, use Kiln's own middleware (kiln/express).
 */
type Callback<T = void> = (err?: unknown, value?: T) => void;
type SessionData = expressSession.SessionData & Record<string, unknown>;

export interface KilnStoreOptions {
  /** A SessionClient, an Engine, or a kiln:// URL. Omitted: in-process memory engine. */
  engine?: SessionClient | Engine | string | undefined;
  /** Lifetime of sessions whose cookie has no maxAge. Default 24 h. */
  defaultTtlMs?: number | undefined;
  /** Longest a call waits. Default 10 s. */
  timeoutMs?: number | undefined;
}

const Store = expressSession.Store;

export class KilnStore extends Store {
  readonly client: SessionClient;
  private readonly ownsClient: boolean;
  private readonly defaultTtlMs: number;

  constructor(options: KilnStoreOptions = {}) {
    super();
    const o = new OptionReader('KilnStore', options, ['engine', 'defaultTtlMs', 'timeoutMs']);
    this.defaultTtlMs = o.int('defaultTtlMs', 24 * 3600_000, 1);
    const timeoutMs = o.int('timeoutMs', 10_000, 1);
    const { client, owned } = clientFromOption(o.any('engine'), 'KilnStore', { idleTimeoutMs: this.defaultTtlMs, absoluteTimeoutMs: 0, acquireTimeoutMs: timeoutMs, requestTimeoutMs: timeoutMs, commitMode: 'sync', route: undefined });
    this.client = client;
    this.ownsClient = owned;
  }

  override get(sid: string, callback: Callback<SessionData | null>): void {
    settle(() => this.read(storedId(sid)), callback);
  }

  override set(sid: string, session: expressSession.SessionData, callback?: Callback): void {
    settle(() => this.write(storedId(sid), session), callback);
  }

  override destroy(sid: string, callback?: Callback): void {
    settle(() => this.client.destroy(storedId(sid)).then(() => undefined), callback);
  }

  /**
   * express-session calls this for a request that changed nothing: the session's idle
   * timer restarts, and the stored cookie takes the expiry express-session computed,
   * so the next request's req.session.cookie.maxAge counts from now (as with MemoryStore).
   */
  override touch(sid: string, session: expressSession.SessionData, callback?: Callback): void {
    settle(async () => {
      const handle = await this.client.open(storedId(sid));
      try {
        if (handle.isNew) return;
        const cookie = JSON.parse(JSON.stringify(session.cookie ?? null)) as unknown;
        if (cookie !== null) handle.set('cookie', cookie);
        const ttl = this.ttl(session);
        if (ttl !== handle.meta.idleTimeoutMs) handle.setIdleTimeout(ttl);
        await handle.commit();
      } finally {
        handle.close();
      }
    }, callback);
  }

  override all(callback: Callback<SessionData[]>): void {
    settle(async () => {
      const out: SessionData[] = [];
      for await (const id of this.ids()) {
        const s = await this.read(id);
        if (s) out.push(Object.assign(s, { id: expressId(id) }));
      }
      return out;
    }, callback);
  }

  override length(callback: Callback<number>): void {
    settle(() => this.client.engine.list({ limit: 1 }).then((page) => page.total), callback);
  }

  override clear(callback?: Callback): void {
    settle(async () => {
      const ids: string[] = [];
      for await (const id of this.ids()) ids.push(id);
      for (const id of ids) await this.client.destroy(id);
    }, callback);
  }

  /** Releases leases and closes the engine if the store created it. */
  async close(): Promise<void> {
    if (this.ownsClient) await this.client.close();
  }

  private async *ids(): AsyncGenerator<string> {
    let after: string | undefined;
    for (;;) {
      const page = await this.client.engine.list({ after, limit: 500 });
      for (const m of page.sessions) yield m.id;
      if (!page.next) return;
      after = page.next;
    }
  }

  private async read(sid: string): Promise<SessionData | null> {
    const handle = await this.client.open(sid, { readOnly: true });
    try {
      if (handle.isNew) return null;
      return handle.toObject() as SessionData;
    } finally {
      handle.close();
    }
  }

  private async write(sid: string, session: expressSession.SessionData): Promise<void> {
    // What express-session would put in Redis: the session as JSON (cookie included).
    const data = JSON.parse(JSON.stringify(session)) as Record<string, unknown>;
    const handle = await this.client.open(sid, { newId: () => sid });
    try {
      for (const key of handle.keys()) if (!(key in data)) handle.delete(key);
      for (const [key, value] of Object.entries(data)) handle.set(key, value);
      const ttl = this.ttl(session);
      if (handle.isNew || ttl !== handle.meta.idleTimeoutMs) handle.setIdleTimeout(ttl);
      await handle.commit({ force: true });
    } finally {
      handle.close();
    }
  }

  private ttl(session: expressSession.SessionData): number {
    const cookie = session.cookie as { originalMaxAge?: number | null; expires?: Date | string | null } | undefined;
    if (cookie?.expires) {
      const left = new Date(cookie.expires).getTime() - Date.now();
      if (left > 0) return left;
    }
    if (typeof cookie?.originalMaxAge === 'number' && cookie.originalMaxAge > 0) return cookie.originalMaxAge;
    return this.defaultTtlMs;
  }
}

/**
 * Runs a store operation and calls express-session back outside the promise chain (on
 * the next tick), so an exception thrown by the callback surfaces as it does with
 * MemoryStore, an uncaught exception, never as an unhandled rejection. A call that
 * throws at once (a bad id) is reported through the callback too.
 */
function settle<T>(operation: () => Promise<T>, callback: Callback<T> | undefined): void {
  let promise: Promise<T>;
  try {
    promise = operation();
  } catch (err) {
    promise = Promise.reject(err);
  }
  promise.then(
    (value) => {
      if (callback) process.nextTick(callback, null, value);
    },
    (err: unknown) => {
      if (callback) process.nextTick(callback, toKilnError(err));
    },
  );
}

/**
 * express-session ids are any string its generator or an app's genid returns
 * (`user:1`, `%`, `/foo`); Kiln's are 16–128 base64url characters. An id that is
 * already a Kiln id is stored as it is (so existing stores keep their keys); any other
 * is stored under its UTF-16 code units in hex (lossless, lone surrogates included),
 * padded with '_' (not a hex digit) to 16 characters and marked by the route suffix
 * `.xs`; one too long for that, under the SHA-256 of those units, marked `.xsh`. Only the
 * hashed form cannot be turned back: all() lists it as stored, and destroy() takes it so.
 */
export function storedId(sid: string): string {
  if (typeof sid !== 'string') throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'a session id must be a string');
  if (isValidSessionId(sid) && !sid.endsWith('.xs')) return sid;
  const units = Buffer.from(sid, 'utf16le');
  const hex = units.toString('hex');
  if (hex.length <= 128) return `${hex.padEnd(16, '_')}.xs`;
  return `${createHash('sha256').update(units).digest('base64url')}.xsh`;
}

/** The express-session id behind a stored id (see storedId). */
export function expressId(id: string): string {
  if (!id.endsWith('.xs')) return id;
  return Buffer.from(id.slice(0, -3).replace(/_+$/, ''), 'hex').toString('utf16le');
}
/** Kiln's error class and check, the same as kiln's own (one implementation behind every entry point). */
export { KilnError, isKilnError, type KilnErrorCode } from '../../errors/index.js';
