import { applyDelta, type CommittedValues } from '../session/delta.js';
import { attributeBytes, type AttributeDelta, type SessionMeta, type SessionSnapshot } from '../session/model.js';
import type { CachedSession, MetaChanges } from './session-handle.js';

/**
 * Pure arithmetic of what a session looks like after a commit, kept apart so the commit
 * path and write-behind compute it the same way and tests can check it alone. A cached
 * copy is replaced whole: a request still reading the old one, or a pipelined request
 * reading the expected one, sees a consistent session. One exception, asked for by the
 * commit path alone (`committed.inPlace`, see applyDelta): a large value that kept its
 * length is overwritten where no one but the session's next request can read it.
 */

/** The cached session after a delta (and metadata changes) applied at `version`. */
export function applyCommitted(base: CachedSession, changes: MetaChanges, delta: AttributeDelta, version: number, now: number, created: boolean, committed?: CommittedValues): CachedSession {
  const attributes = applyDelta(base.attributes, delta, committed);
  const meta: SessionMeta = { ...base.meta, version, lastAccessedAt: now, createdAt: created ? now : base.meta.createdAt };
  if (changes.principal !== undefined) meta.principal = changes.principal;
  if (changes.idleTimeoutMs !== undefined) meta.idleTimeoutMs = changes.idleTimeoutMs;
  if (changes.absoluteExpiresAt !== undefined) meta.absoluteExpiresAt = changes.absoluteExpiresAt;
  return { meta, attributes, bytes: attributeBytes(attributes) };
}

export function toCached(snapshot: SessionSnapshot): CachedSession {
  return { meta: snapshot.meta, attributes: snapshot.attributes, bytes: attributeBytes(snapshot.attributes) };
}

/** Changes of several requests waiting to be sent together (write-behind). */
export type PendingChanges = AttributeDelta & { meta: MetaChanges; lastAccessedAt: number };

/**
 * Merges one request's changes into those not yet sent: a later set or delete of an
 * attribute replaces an earlier one, metadata changes merge, the access time is the last.
 * Whole values only: a patch is relative to a base the merge no longer has.
 */
export function mergeDelta(into: PendingChanges | undefined, delta: AttributeDelta, meta: MetaChanges, now: number): PendingChanges {
  const set = new Map(into?.set ?? []);
  const del = new Set(into?.del ?? []);
  for (const name of delta.del) {
    set.delete(name);
    del.add(name);
  }
  for (const [name, value] of delta.set) {
    del.delete(name);
    set.set(name, value);
  }
  return { set: [...set], del: [...del], meta: { ...into?.meta, ...meta }, lastAccessedAt: now };
}
