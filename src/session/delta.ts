import { bytesEqual, decodeAttribute, encodeAttribute } from './codec.js';
import { checkIn, checkOut, decodedValue, isPlainContainer, LiveValue, nextWriteStamp, UNCHANGED } from './live-value.js';
import { applyPatch, diffAttribute, type AttributeDelta, type AttributePatch } from './model.js';

/**
 * What one request did to a session's attributes. Values are decoded lazily, once, on
 * first read, and the same object is handed out again. Attributes never read are never
 * decoded nor sent: the commit of a request that changed one field of a 20 KB session
 * carries that field alone.
 *
 * In-place changes (`get('cart').push(x)`) are caught in one of two ways. A tracker
 * that owns the session (`live`: the request holds the session's lock) hands out
 * objects and arrays as watched views (see live-value.ts): the decoded value is kept
 * for the next request, and the commit re-encodes only the objects written to. A
 * read-only tracker, and any value the views cannot watch, re-encode what was read at
 * commit and compare bytes with what was loaded.
 */
/**
 * Strings, numbers, booleans and null decoded from a base's bytes, by those bytes: they
 * cannot be changed in place, so every request reading `user` or `visits` of a cached
 * session shares one decoding. Bytes filed here are never written to (applyDelta
 * overwrites only those of objects, and takes the tree live-value.ts files by them out
 * first), and the entries go with them.
 */
const decodedScalars = new WeakMap<Uint8Array, string | number | boolean | null>();

/** Any UTF-16 surrogate: a lone one would come back from UTF-8 as U+FFFD. */
const SURROGATE = /[\uD800-\uDFFF]/;

/** @internal For tests: what a base's bytes decode to, if it is known without decoding them. */
export function knownScalar(bytes: Uint8Array): string | number | boolean | null | undefined {
  return decodedScalars.get(bytes);
}

/**
 * Files a scalar a request wrote by the bytes it was just encoded to: those bytes become
 * the session's after the commit, so the next request reads the value without decoding
 * it (a counter written by every request was decoded by every request). Only values
 * that decode to themselves: -0 comes back as 0, and a string with a lone surrogate
 * differently (strings with any surrogate are left to decoding).
 */
function rememberEncodedScalar(bytes: Uint8Array, value: unknown): void {
  if (value === null || typeof value === 'boolean' || (typeof value === 'number' && !Object.is(value, -0)) || (typeof value === 'string' && !SURROGATE.test(value))) {
    decodedScalars.set(bytes, value);
  }
}

/** The empty map every tracker starts with; never added to (see set/delete). */
const NONE: Map<string, number> = new Map();

export class DeltaTracker {
  private readonly values = new Map<string, unknown>();
  // Names written and deleted, each with the stamp of its latest write (see rebase).
  // Most requests write nothing: these stay the empty shared map until the first write.
  private written: Map<string, number> = NONE;
  private deleted: Map<string, number> = NONE;
  /** Watched values by attribute name (live trackers only). */
  private watched: Map<string, LiveValue> | undefined;

  constructor(
    private base: ReadonlyMap<string, Uint8Array>,
    private readonly live = false,
  ) {}

  get(name: string): unknown {
    if (this.values.has(name)) return this.values.get(name);
    if (this.deleted.has(name)) return undefined;
    const bytes = this.base.get(name);
    if (bytes === undefined) return undefined;
    let value: unknown = decodedScalars.get(bytes);
    if (value !== undefined) {
      this.values.set(name, value);
      return value;
    }
    let decoded = this.live ? checkOut(bytes) : undefined;
    if (!decoded) {
      value = decodeAttribute(bytes);
      const type = typeof value;
      if (type === 'string' || type === 'number' || type === 'boolean' || value === null) decodedScalars.set(bytes, value as string | number | boolean | null);
      else if (this.live && type === 'object' && isPlainContainer(value as object)) decoded = decodedValue(value as object);
    }
    if (decoded) {
      const watched = new LiveValue(decoded);
      (this.watched ??= new Map()).set(name, watched);
      value = watched.proxy;
    }
    this.values.set(name, value);
    return value;
  }

  set(name: string, value: unknown): void {
    if (value === undefined) {
      this.delete(name);
      return;
    }
    this.values.set(name, value);
    // The old value is no longer the attribute: it is not watched nor kept.
    this.watched?.delete(name);
    if (this.written === NONE) this.written = new Map();
    this.written.set(name, nextWriteStamp());
    this.deleted.delete(name);
  }

  delete(name: string): void {
    this.values.delete(name);
    this.watched?.delete(name);
    this.written.delete(name);
    if (this.deleted === NONE) this.deleted = new Map();
    this.deleted.set(name, nextWriteStamp());
  }

  /** Forgets this request's change to one attribute: it reads as the base again. */
  revert(name: string): void {
    this.values.delete(name);
    this.watched?.delete(name);
    this.written.delete(name);
    this.deleted.delete(name);
  }

  /** Whether anything was written after `upTo` (the request went on after a commit was taken). */
  changedAfter(upTo: number): boolean {
    for (const stamp of this.written.values()) if (stamp > upTo) return true;
    for (const stamp of this.deleted.values()) if (stamp > upTo) return true;
    if (this.watched) for (const watched of this.watched.values()) if (watched.lastWrite > upTo) return true;
    return false;
  }

  /**
   * Forgets one attribute's change if it was made by `upTo` (what a refused commit
   * carried); one made after stays. A watched value written both before and after goes
   * whole: its tree cannot be split.
   */
  revertUpTo(name: string, upTo: number): void {
    const written = this.written.get(name) ?? this.deleted.get(name);
    if (written !== undefined) {
      if (written <= upTo) this.revert(name);
      return;
    }
    const watched = this.watched?.get(name);
    if (!watched) return;
    // A change the views could not stamp (an object stored in the value) counts as carried.
    const carried = watched.dirty ? watched.wroteBy(upTo) : watched.untracked;
    if (carried) this.revert(name);
  }

  /** The attributes this request changed (written, deleted, or written to through a view). */
  changedNames(): string[] {
    const names = new Set<string>([...this.written.keys(), ...this.deleted.keys()]);
    if (this.watched) for (const [name, watched] of this.watched) if (watched.dirty || watched.untracked) names.add(name);
    return [...names];
  }

  has(name: string): boolean {
    return this.values.has(name) || (!this.deleted.has(name) && this.base.has(name));
  }

  keys(): string[] {
    const names = new Set<string>();
    for (const name of this.base.keys()) if (!this.deleted.has(name)) names.add(name);
    for (const name of this.values.keys()) names.add(name);
    return [...names];
  }

  /** True when nothing could have changed: no write, no delete, no object read unwatched or written to. */
  get pristine(): boolean {
    if (this.written.size > 0 || this.deleted.size > 0) return false;
    for (const [name, value] of this.values) {
      if (typeof value !== 'object' || value === null) continue;
      const watched = this.watched?.get(name);
      if (!watched || !watched.reusable) return false;
    }
    return true;
  }

  /**
   * Encodes what changed. Throws KILN_ERR_UNSERIALIZABLE naming the attribute when a
   * value cannot be encoded.
   */
  delta(): AttributeDelta {
    const set: [string, Uint8Array][] = [];
    let patch: AttributePatch[] | undefined;
    for (const [name, value] of this.values) {
      // A primitive that was only read cannot have changed: skip its re-encode.
      if (!this.written.has(name) && (typeof value !== 'object' || value === null)) continue;
      const old = this.base.get(name);
      const watched = this.watched?.get(name);
      if (watched && old) {
        const changed = watched.encodeChanges(name, old);
        if (changed === UNCHANGED) continue;
        if (changed && 'overwrite' in changed) {
          if (changed.bytes.length === 0) {
            watched.committed(); // written to, but back to what it was
            continue;
          }
          // No value: applyDelta makes it (see there), after the commit is on its way.
          (patch ??= []).push({ name, at: changed.at, cut: changed.bytes.length, bytes: changed.bytes, baseLength: old.length });
          continue;
        }
        if (changed) {
          if (bytesEqual(old, changed.next)) {
            watched.committed(); // written to, but back to what it was
            continue;
          }
          const p = diffAttribute(name, old, changed.next, changed.changedFrom, changed.unchangedTail);
          if (p) (patch ??= []).push(p);
          else set.push([name, changed.next]);
          continue;
        }
      }
      // Encode the tree itself, not through its proxies (the same bytes, faster).
      const bytes = encodeAttribute(name, watched ? watched.decoded.root : value);
      if (old !== undefined && bytesEqual(old, bytes)) continue;
      // These bytes become the session's, whole or through the patch's value.
      if (!watched) rememberEncodedScalar(bytes, value);
      if (old === undefined) set.push([name, bytes]);
      else {
        // A large value changed in one place (a field of one item of a list) sends that place only.
        const p = diffAttribute(name, old, bytes);
        if (p) (patch ??= []).push(p);
        else set.push([name, bytes]);
      }
    }
    const del: string[] = [];
    for (const name of this.deleted.keys()) if (this.base.has(name)) del.push(name);
    return patch ? { set, del, patch } : { set, del };
  }

  /**
   * After a commit: the committed state is the new base, live values stay handed out.
   * `upTo` is the write stamp the commit's delta was taken at (lastWriteStamp()): a write
   * made after it, while the commit was on its way, was not in it and stays to be sent.
   */
  rebase(base: ReadonlyMap<string, Uint8Array>, upTo = Infinity): void {
    if (this.watched) for (const [name, watched] of this.watched) watched.committed(this.base.get(name), base.get(name), upTo);
    this.base = base;
    this.written = keptAfter(this.written, upTo);
    this.deleted = keptAfter(this.deleted, upTo);
  }

  /**
   * The request ended (`keep`) or its tracker is being replaced. Each watched value
   * that equals its committed bytes is kept for the next request, and its views
   * refuse writes from then on (the next request owns the tree). Values not kept stay
   * writable through old views, harmlessly: nobody else will see that tree.
   */
  retire(keep: boolean): void {
    if (!this.watched) return;
    for (const [name, watched] of this.watched) {
      const bytes = this.base.get(name);
      if (keep && bytes && watched.reusable) {
        watched.retire();
        checkIn(bytes, watched.decoded);
      }
    }
    this.watched = undefined;
  }
}

/** The entries of `stamps` written after `upTo` (the shared empty map when none is). */
function keptAfter(stamps: Map<string, number>, upTo: number): Map<string, number> {
  if (stamps === NONE) return NONE;
  for (const [name, stamp] of stamps) if (stamp <= upTo) stamps.delete(name);
  return stamps.size === 0 ? NONE : stamps;
}

/**
 * Values a client's commits made (a splice or a patch applied) that nothing but its
 * cached copies of one session refers to: no request sends them (patches carry copies
 * of their bytes), no engine keeps them, and they are not filed as a decoded scalar.
 * Only such bytes may be overwritten in place (see applyDelta).
 */
const privateValues = new WeakSet<Uint8Array>();

/** How a commit's patches become the cached copy's values (see applyDelta). */
export interface CommittedValues {
  /**
   * Overwrites may write over the base's own bytes: the commit is pipelined (the cache is
   * dropped if it fails) and no read-only request is reading this session's copy.
   */
  inPlace: boolean;
  /** Counts the values overwritten in place. */
  overwrittenInPlace: number;
}

/**
 * The attributes after a delta. With `committed` (a sync commit of this client), patched
 * values are filed as private, and an overwrite of a private value writes over it in
 * place when `committed.inPlace` allows: the value's previous bytes are gone then, so
 * only the client's commit path, which knows no one else reads them, asks for it.
 */
export function applyDelta(base: ReadonlyMap<string, Uint8Array>, delta: AttributeDelta, committed?: CommittedValues): Map<string, Uint8Array> {
  const next = new Map(base);
  for (const name of delta.del) next.delete(name);
  for (const [name, value] of delta.set) next.set(name, value);
  for (const p of delta.patch ?? []) {
    const old = base.get(p.name)!;
    let value = p.value;
    if (value === undefined) {
      if (committed?.inPlace && p.cut === p.bytes.length && privateValues.has(old) && !decodedScalars.has(old)) {
        // A tree filed under these bytes equals what they were: it goes (the committing
        // request checks its own in again at its end, equal to what they become).
        checkOut(old);
        old.set(p.bytes, p.at);
        value = old;
        committed.overwrittenInPlace++;
      } else {
        value = applyPatch(old, p);
      }
    }
    if (committed) privateValues.add(value);
    next.set(p.name, value);
  }
  return next;
}

/** The same change with every patch turned into a whole value (to merge deltas, or where patches cannot go). */
export function withoutPatches(delta: AttributeDelta, base: ReadonlyMap<string, Uint8Array>): AttributeDelta {
  if (!delta.patch?.length) return delta;
  return { set: [...delta.set, ...delta.patch.map((p): [string, Uint8Array] => [p.name, p.value ?? applyPatch(base.get(p.name)!, p)])], del: delta.del };
}
