import { ERROR_REGISTRY, isKilnErrorCode, type KilnErrorCode } from './registry.js';

export { ERROR_REGISTRY, isKilnErrorCode, type KilnErrorCode };

/**
 * The one error class Kiln throws. Match on `code`:
 *
 * @example
 * try { await session.commit(); }
 * catch (err) { if (err instanceof KilnError && err.code === 'KILN_ERR_SESSION_TOO_LARGE') … }
 */
/**
 * The HTTP status an error means to a web framework. Express (finalhandler), Koa,
 * Fastify and Hono error handlers read `status`/`statusCode`, `expose` and `headers` (or,
 * Hono, `getResponse()`), so an unavailable tier answers 503 with Retry-After and a
 * session over its limits 413 without any code in the application. Codes not listed are
 * 500: KILN_ERR_INVALID_ARGUMENT included, since what reaches an app as one is the app's
 * own call (a bad genid, a reserved attribute name); a client's bad cookie or id never
 * raises, it gets a fresh session.
 */
export const HTTP_STATUS: Partial<Record<KilnErrorCode, number>> = {
  KILN_ERR_ATTRIBUTE_TOO_LARGE: 413,
  KILN_ERR_SESSION_TOO_LARGE: 413,
  KILN_ERR_TOO_MANY_ATTRIBUTES: 413,
  KILN_ERR_SESSION_NOT_FOUND: 404,
  KILN_ERR_CONFLICT: 409,
  KILN_ERR_ENGINE_UNAVAILABLE: 503,
  KILN_ERR_STORAGE_BEHIND: 503,
  KILN_ERR_LEASE_TIMEOUT: 503,
  KILN_ERR_LEASE_LOST: 503,
  KILN_ERR_TIMEOUT: 503,
  KILN_ERR_CONNECTION_LOST: 503,
  KILN_ERR_TOO_MANY_CONNECTIONS: 503,
  KILN_ERR_HANDSHAKE_THROTTLED: 503,
  KILN_ERR_IDLE_CONNECTION: 503,
  KILN_ERR_SERVER_SHUTTING_DOWN: 503,
  KILN_ERR_SESSION_LIMIT: 503,
  KILN_ERR_PRINCIPAL_SESSION_LIMIT: 429,
  KILN_ERR_LEASE_LIMIT: 503,
  KILN_ERR_NO_NODE: 503,
  KILN_ERR_BAD_GATEWAY: 502,
  KILN_ERR_UPSTREAM_BUSY: 503,
  KILN_ERR_CLIENT_LIMIT: 503,
  KILN_ERR_REQUEST_TIMEOUT: 408,
};

/** Seconds a client should wait before trying a 503 again. */
export const RETRY_AFTER_SECONDS = 1;

export function httpStatusOf(code: KilnErrorCode): number {
  return HTTP_STATUS[code] ?? 500;
}

/** Marks KilnErrors across copies of Kiln (ESM and CommonJS builds): a registered symbol is the same in both. */
const KILN_ERROR_BRAND = Symbol.for('kiln.KilnError');

export class KilnError extends Error {
  override readonly name = 'KilnError';
  readonly code: KilnErrorCode;
  /** Extra machine-readable facts (attribute name, limit, session id…). */
  readonly details: Readonly<Record<string, unknown>> | undefined;
  /** The HTTP status this error means (HTTP_STATUS); web frameworks' error handlers answer with it. */
  status: number;
  /** The same, under the name Fastify and some Express middleware read. */
  statusCode: number;
  /** Whether the message may be shown to the client (Koa's and http-errors' convention: 4xx only). */
  expose: boolean;
  /** Headers an error handler adds to the answer: Retry-After on a 503. */
  headers: Record<string, string> | undefined;

  constructor(code: KilnErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options?.details;
    this.status = this.statusCode = httpStatusOf(code);
    this.expose = this.status < 500;
    this.headers = this.status === 503 ? { 'Retry-After': String(RETRY_AFTER_SECONDS) } : undefined;
  }

  /** Hono's default error handler answers with this: the status, Retry-After, and `{ code, message }` (the message for 4xx only). */
  getResponse(): Response {
    const body = JSON.stringify(this.expose ? { code: this.code, message: this.message } : { code: this.code });
    return new Response(body, { status: this.status, headers: { 'content-type': 'application/json', ...(this.headers ?? {}) } });
  }

  /**
   * `instanceof KilnError` holds for a KilnError of any copy of Kiln in the process: an
   * app that imports kiln (ESM) and requires kiln/express (CommonJS) has two, and an
   * error of one must still be recognised by the other.
   */
  static override [Symbol.hasInstance](this: unknown, value: unknown): boolean {
    // A subclass (or anything else inheriting this) keeps the ordinary prototype check.
    if (this !== KilnError) return typeof this === 'function' && Function.prototype[Symbol.hasInstance].call(this, value);
    return value instanceof Error && (value as unknown as Record<symbol, unknown>)[KILN_ERROR_BRAND] === true && isKilnErrorCode((value as { code?: unknown }).code);
  }

  /** Whether the same operation may succeed if tried again (see the registry). */
  get retryable(): boolean {
    return ERROR_REGISTRY[this.code].retryable;
  }

  /** @internal the cross-copy brand (see Symbol.hasInstance). */
  get [KILN_ERROR_BRAND](): true {
    return true;
  }

  toJSON(): { code: KilnErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: { ...this.details } } : { code: this.code, message: this.message };
  }
}

export function kilnError(code: KilnErrorCode, message: string, details?: Record<string, unknown>, cause?: unknown): KilnError {
  return new KilnError(code, message, { details, cause });
}

export function isKilnError(err: unknown, code?: KilnErrorCode): err is KilnError {
  return err instanceof KilnError && (code === undefined || err.code === code);
}

/** Rebuilds an error that crossed the wire; unknown codes become KILN_ERR_INTERNAL rather than trusted. */
export function errorFromWire(wire: unknown): KilnError {
  if (wire && typeof wire === 'object') {
    const { code, message, details } = wire as { code?: unknown; message?: unknown; details?: unknown };
    const text = typeof message === 'string' ? message : 'server error';
    const extra = details && typeof details === 'object' ? (details as Record<string, unknown>) : undefined;
    if (isKilnErrorCode(code)) return new KilnError(code, text, { details: extra });
    return new KilnError('KILN_ERR_INTERNAL', `unknown error code ${String(code)}: ${text}`);
  }
  return new KilnError('KILN_ERR_PROTOCOL', 'malformed error reply');
}

/** Wraps anything thrown into a KilnError so it can cross the wire or reach an adapter. */
export function toKilnError(err: unknown): KilnError {
  if (err instanceof KilnError) return err;
  return new KilnError('KILN_ERR_INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
}
