import { copyBytes } from '../util/bytes.js';

/**
 * The session as the server tier stores it and as engines exchange it. Attribute
 * values are opaque encoded bytes here: only the client decodes them.
 */
export interface SessionMeta {
  id: string;
  createdAt: number;
  lastAccessedAt: number;
  /** Milliseconds of inactivity after which the session expires; 0 = never. */
  idleTimeoutMs: number;
  /** Epoch milliseconds at which the session expires whatever its activity; 0 = never. */
  absoluteExpiresAt: number;
  principal: string | null;
  /** Starts at 1 with the create and grows by exactly 1 per applied commit. */
  version: number;
}

export interface SessionSnapshot {
  meta: SessionMeta;
  attributes: Map<string, Uint8Array>;
}

/** What one request changed, already encoded. */
export interface AttributeDelta {
  set: [name: string, value: Uint8Array][];
  del: string[];
  /**
   * Large attributes changed in a small place: only the changed bytes travel (see
   * AttributePatch). Absent or empty when there are none.
   */
  patch?: AttributePatch[] | undefined;
}

/**
 * "Replace `cut` bytes at offset `at` of attribute `name`, which is `baseLength` bytes
 * long, by `bytes`". Applies only to the exact encoded value the commit was computed
 * from (the lease and the base version guarantee the tier still holds it; `baseLength`
 * is checked as well). One field changed in a 20 KB list sends a few bytes, not 20 KB.
 */
export interface AttributePatch {
  name: string;
  at: number;
  cut: number;
  bytes: Uint8Array;
  baseLength: number;
  /** The whole new value: kept by the client for its own cache, never sent. */
  value?: Uint8Array | undefined;
}

/**
 * An idempotent, fenced change to one session. `baseVersion` 0 means "create": it is
 * refused if the id exists or was destroyed.
 */
export interface CommitRequest extends AttributeDelta {
  sessionId: string;
  /** Fencing token of the lease the commit was computed under. */
  token: number;
  /** Unique per commit; a retry with an id already applied is acknowledged, not reapplied. */
  commitId: string;
  baseVersion: number;
  lastAccessedAt: number;
  /** undefined = unchanged; null = clear. */
  principal?: string | null | undefined;
  /** Set on create; on later commits only when it changes ("remember me"). */
  idleTimeoutMs?: number | undefined;
  /** Set on create; on later commits only when it changes. */
  absoluteExpiresAt?: number | undefined;
  /** Give the lease back once applied (one round trip instead of two, used under ping-pong). */
  release?: boolean | undefined;
}

export interface CommitAck {
  version: number;
  /** True when the commit id had been applied before and this is the remembered answer. */
  duplicate: boolean;
}

export interface LeaseGrant {
  sessionId: string;
  token: number;
  /** Engine epoch: a grant from an older epoch is worthless. */
  epoch: string;
  /** The session when it exists (acquire loads in the same round trip), else null. */
  snapshot: SessionSnapshot | null;
  /**
   * The engine saw this session bounce between processes (no affinity): give the lease
   * back after each use instead of keeping it, so the next process is not made to wait
   * for a recall.
   */
  releaseAfterUse: boolean;
}

export interface TouchItem {
  sessionId: string;
  token: number;
  at: number;
}

export type SessionEventType = 'expired' | 'destroyed';

export interface SessionEvent {
  type: SessionEventType;
  sessionId: string;
  principal: string | null;
  at: number;
  /** Why a destroy happened: 'request', 'principal', 'admin'. */
  reason?: string | undefined;
}

/** What a set of attributes weighs against the limits: names plus encoded values. */
export function attributeBytes(attributes: Iterable<readonly [string, Uint8Array]>): number {
  let bytes = 0;
  for (const [name, value] of attributes) bytes += name.length + value.length;
  return bytes;
}

/** The value a patch makes of `base`. */
export function applyPatch(base: Uint8Array, patch: AttributePatch): Uint8Array {
  return applyPatchInto(base, patch, new Uint8Array(base.length - patch.cut + patch.bytes.length));
}

/** applyPatch into `out`, which holds exactly the new value's length. */
export function applyPatchInto(base: Uint8Array, patch: AttributePatch, out: Uint8Array): Uint8Array {
  out.set(base.subarray(0, patch.at), 0);
  out.set(patch.bytes, patch.at);
  out.set(base.subarray(patch.at + patch.cut), patch.at + patch.bytes.length);
  return out;
}

/**
 * Smallest patch turning `base` into `next` (common prefix and suffix kept), or
 * undefined when the change is not small enough to be worth it. A caller that knows
 * the first `samePrefix` and last `sameSuffix` bytes are equal spares the scan of them.
 */
export function diffAttribute(name: string, base: Uint8Array, next: Uint8Array, samePrefix = 0, sameSuffix = 0): AttributePatch | undefined {
  if (base.length < PATCH_MIN_BYTES || next.length < PATCH_MIN_BYTES) return undefined;
  const limit = Math.min(base.length, next.length);
  let prefix = Math.min(samePrefix, limit);
  while (prefix < limit && base[prefix] === next[prefix]) prefix++;
  let suffix = Math.min(sameSuffix, limit - prefix);
  while (suffix < limit - prefix && base[base.length - 1 - suffix] === next[next.length - 1 - suffix]) suffix++;
  if (next.length - suffix - prefix > next.length / 4) return undefined;
  // A copy, not a view: the client may later overwrite `next` in place (see applyDelta)
  // while this patch waits to be sent or retried.
  const bytes = copyBytes(next, prefix, next.length - suffix);
  return { name, at: prefix, cut: base.length - prefix - suffix, bytes, baseLength: base.length, value: next };
}

/** Attributes smaller than this are always sent whole (a patch would save next to nothing). */
export const PATCH_MIN_BYTES = 256;

/** Bytes of attribute data a delta sends: names plus whole values plus patch bytes. */
export function deltaBytes(delta: AttributeDelta): number {
  let bytes = attributeBytes(delta.set);
  for (const p of delta.patch ?? []) bytes += p.name.length + p.bytes.length;
  return bytes;
}

/** When the session dies if nobody touches it again; Infinity for never. */
export function expiryDeadline(meta: Pick<SessionMeta, 'lastAccessedAt' | 'idleTimeoutMs' | 'absoluteExpiresAt'>, idleGraceMs = 0): number {
  const idle = meta.idleTimeoutMs > 0 ? meta.lastAccessedAt + meta.idleTimeoutMs + idleGraceMs : Infinity;
  const absolute = meta.absoluteExpiresAt > 0 ? meta.absoluteExpiresAt : Infinity;
  return Math.min(idle, absolute);
}
