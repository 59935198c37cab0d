/**
 * Reading what Redis (and other processes, through it) answers, and bounding how long we
 * wait for it. Pure: no state, no I/O. It keeps two rules: everything another process
 * wrote is untrusted until checked (anyone can publish on a channel or write a key), and
 * every failure reaches the caller as a KilnError with a stable code, because the lease
 * machinery decides between "ask again" and "give up" on the code alone (TRANSIENT_CODES).
 */
import { withTimeout } from '../../util/deadline.js';
import { KilnError } from '../../errors/index.js';
import type { SessionMeta, SessionSnapshot } from '../../session/model.js';
import type { RoleView } from './replica-guard.js';
import { copyBytes } from '../../util/bytes.js';
import { redactCredentials } from '../../util/log.js';

/** One element of a RESP reply as node-redis returns it (bulk strings are Buffers). */
export type Reply = unknown;

/** Failures of reaching Redis, not refusals: the same call may succeed shortly. */
export const TRANSIENT_CODES: ReadonlySet<string> = new Set(['KILN_ERR_TIMEOUT', 'KILN_ERR_ENGINE_UNAVAILABLE', 'KILN_ERR_CONNECTION_LOST']);

export function text(value: unknown): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return value === null || value === undefined ? '' : String(value);
}

export function num(value: unknown): number {
  if (typeof value === 'number') return value;
  return Number(text(value));
}

/**
 * ROLE on a master: its offset and its online replicas' acknowledged ones; undefined when
 * the node is not a master or the offset is not a number. An offset that is not a number
 * counts as acknowledging nothing (a shortage is never ended on it).
 */
export function roleView(role: Reply[]): RoleView | undefined {
  if (text(role[0]) !== 'master' || !Array.isArray(role[2])) return undefined;
  const masterOffset = num(role[1]);
  if (!Number.isFinite(masterOffset)) return undefined;
  const replicaOffsets = role[2].map((replica) => {
    const offset = Array.isArray(replica) ? num(replica[2]) : Number.NaN;
    return Number.isFinite(offset) ? offset : -1;
  });
  return { masterOffset, replicaOffsets };
}

/** A reply element that is nil (null) or the text it holds. */
export function textOrNull(value: unknown): string | null {
  return value === null ? null : text(value);
}

/** A session's metadata hash (HGETALL, flat) as SessionMeta. */
export function metaFrom(sessionId: string, flat: Reply[]): SessionMeta {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(text(flat[i]), text(flat[i + 1]));
  const n = (k: string) => Number(fields.get(k) ?? '0');
  return {
    id: sessionId,
    createdAt: n('ca'),
    lastAccessedAt: n('la'),
    idleTimeoutMs: n('it'),
    absoluteExpiresAt: n('ae'),
    principal: fields.get('p') ?? null,
    version: n('v'),
  };
}

/** The scripts' snapshot() reply ({metadata, attributes}), or null for no session. */
export function snapshotFrom(sessionId: string, reply: unknown): SessionSnapshot | null {
  if (!Array.isArray(reply) || reply.length < 2) return null;
  const meta = metaFrom(sessionId, reply[0] as Reply[]);
  const flat = reply[1] as Reply[];
  const attributes = new Map<string, Uint8Array>();
  // Copied out of node-redis's read buffer so a cached session does not pin it.
  for (let i = 0; i + 1 < flat.length; i += 2) attributes.set(text(flat[i]), copyBytes(flat[i + 1] as Buffer));
  return { meta, attributes };
}

/**
 * JSON that another process wrote (anyone can publish on a channel or write a key), or
 * undefined when it does not parse or fails `valid`.
 */
export function parseUntrusted<T>(json: string, valid: (value: object) => boolean): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  return typeof value === 'object' && value !== null && valid(value) ? (value as T) : undefined;
}

/** Waits for `promise` until the deadline at most; past it the promise carries on unwatched. */
export function settleBy(promise: Promise<unknown>, deadline: number | undefined): Promise<unknown> {
  if (deadline === undefined) return promise;
  return withTimeout(promise, Math.max(0, deadline - Date.now()), () => new KilnError('KILN_ERR_TIMEOUT', 'past the deadline')).catch(() => undefined);
}


/**
 * Redis passing through a state that waiting ends (a failover, a load, memory full, a
 * busy or killed script), whether as the command's own error or raised inside a script.
 * Redis 6.2 and earlier wrap the latter (`ERR Error running script (call to f_…):
 * @user_script:4: @user_script: 4: -READONLY …`), which DAMAGED would take for a runtime
 * error of the script, so this is looked for first: retryable, as it always was.
 */
const UNAVAILABLE = /^(?:ERR Error running script\b.*?[\s:]-?)?(READONLY|OOM|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|NOREPLICAS|MISCONF|BUSY)\b|\bScript killed by user\b/s;

/** node-redis errors and script refusals as KilnErrors with stable codes. */
const TLS_REFUSAL = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ERR_TLS_|ERR_SSL_|ERR_OSSL_)/;

/** Errors of connecting that waiting cannot fix: an untrusted certificate, a wrong password. */
export function refusalOf(error: Error, address: string): KilnError | undefined {
  const code = String((error as NodeJS.ErrnoException).code ?? '');
  if (TLS_REFUSAL.test(code) || /certificate|handshake failure|alert/i.test(error.message)) {
    return new KilnError('KILN_ERR_TLS', `TLS to Redis at ${address} failed: ${redactCredentials(error.message)}${code ? ` [${code}]` : ''}`, { cause: error });
  }
  if (/^(WRONGPASS|NOAUTH|NOPERM)\b/.test(error.message)) return new KilnError('KILN_ERR_AUTH', `Redis at ${address} refused the credentials: ${error.message}`, { cause: error });
  return undefined;
}

/**
 * Redis's answers to data Kiln did not write: a key of another type, a Lua runtime error
 * in a script (a field read as a number that is not one), a counter that is not one.
 * Retrying cannot help, and retrying in a loop is what a retryable code would bring.
 */
const DAMAGED = /^(WRONGTYPE|ERR (user_script:\d+:|Error running script|value is not an integer|value is not a valid float|hash value is not an integer))/;
/** A script's own damage report, raised with error() from inside a helper (Redis prefixes ERR and appends where). */
const DAMAGE_REPORT = /\bKILN_ERR_STORAGE_DAMAGED (.*?)(?: script: [0-9a-f]+, on @user_script:\d+\.)?$/s;

export function toEngineError(err: unknown, address: string): KilnError {
  if (err instanceof KilnError) return err;
  const error = err instanceof Error ? err : new Error(String(err));
  const message = error.message ?? '';
  const refusal = /^(KILN_ERR_[A-Z_]+) (.*)$/s.exec(message);
  if (refusal) return new KilnError(refusal[1] as 'KILN_ERR_CONFLICT', refusal[2]!);
  const report = DAMAGE_REPORT.exec(message);
  if (report) return new KilnError('KILN_ERR_STORAGE_DAMAGED', `Redis at ${address}: ${report[1]!}`, { cause: error });
  if (UNAVAILABLE.test(message)) return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `Redis at ${address}: ${message}`, { cause: error });
  if (DAMAGED.test(message)) return new KilnError('KILN_ERR_STORAGE_DAMAGED', `Redis at ${address} holds data Kiln did not write: ${message}`, { cause: error });
  if (message.startsWith('NOSCRIPT')) return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', message, { cause: error });
  if (/closed|socket|ECONNRESET|ECONNREFUSED|EPIPE|disconnect/i.test(`${error.name} ${message}`)) {
    return new KilnError('KILN_ERR_CONNECTION_LOST', `connection to Redis at ${address} lost: ${message}`, { cause: error });
  }
  return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `Redis at ${address}: ${message}`, { cause: error });
}

/**
 * The oldest Redis the engine is written for: the re-file of a retried commit uses
 * ZADD … LT (6.2). Older servers refuse that command (a session whose commit reply was
 * lost can be left out of the expiry index, until Redis's TTL on its keys), and wrap
 * errors raised in scripts (see UNAVAILABLE).
 */
export const MIN_REDIS_VERSION: readonly [number, number] = [6, 2];

/** The `redis_version` of an INFO server reply when it is below MIN_REDIS_VERSION (Valkey reports its Redis compatibility there too), else undefined. */
export function redisVersionBelowMinimum(info: unknown): string | undefined {
  const match = /^redis_version:(\d+)\.(\d+)\S*/m.exec(Buffer.isBuffer(info) ? info.toString() : String(info));
  if (!match) return undefined;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  const [needMajor, needMinor] = MIN_REDIS_VERSION;
  return major < needMajor || (major === needMajor && minor < needMinor) ? match[0].slice('redis_version:'.length) : undefined;
}

/** Size of a command in RESP, as it goes on the wire (for traffic()). */
export function respBytes(args: readonly (string | Buffer)[]): number {
  let n = 3 + String(args.length).length;
  for (const a of args) {
    const len = typeof a === 'string' ? Buffer.byteLength(a) : a.length;
    n += 5 + String(len).length + len;
  }
  return n;
}
