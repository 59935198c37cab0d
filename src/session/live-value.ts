import { KilnError } from '../errors/index.js';
import { copyBytes } from '../util/bytes.js';
import { encodeAttribute } from './codec.js';
import { locateValue } from './msgpack-walk.js';

/**
 * Decoded attribute values kept across requests, with their changes watched as they
 * happen, so that a request changing one field of a 20 KB list neither decodes the list
 * nor re-encodes it: it re-encodes the changed item and splices it into the bytes.
 *
 * Ownership keeps this coherent. A decoded value sits in `idle`, keyed by the exact
 * encoded bytes it equals; a request that reads the attribute takes it out (so no one
 * else can use it meanwhile: requests on a session are serialised by its lock) and
 * puts it back at its end only if the tree still equals the bytes it is then filed
 * under: every change was committed, and the request never held a reference the
 * proxies cannot watch. Anything else leaves the value to the garbage collector, and
 * the next request decodes the bytes again, as it always did.
 *
 * What the request gets is a Proxy per object (made on first access, one per object
 * per request). Writes of strings, numbers, booleans, null and undefined, and
 * deletes, mark the object written to ("dirty"). Anything else (storing an object or
 * array, defining properties, freezing, reaching a Date, Map, Set, typed array or class
 * instance that could change unseen) marks the value "untracked": its commit encodes
 * the whole value and compares, as before, and it is not kept after the request.
 * Proxies of a request that has ended refuse writes (KILN_ERR_CLOSED): the tree they
 * see may belong to the next request by then.
 */

/**
 * A decoded value and how each of its objects handed out so far was reached. `links`
 * is a plain Map: its keys live in the tree anyway, and a WeakMap per session would
 * cost every garbage collection an ephemeron pass.
 */
export interface DecodedValue {
  readonly root: object;
  readonly links: Map<object, Link>;
  /**
   * Where the items of a large top-level array start in `startsOf`, as far as walks have
   * found them (see locateValue). Each commit carries them over to the value it makes,
   * so changing `items[150]` of a 20 KB list does not walk 150 items every time.
   */
  starts: number[];
  startsOf: Uint8Array | undefined;
}

interface Link {
  parent: object;
  key: string;
}

const idle = new WeakMap<Uint8Array, DecodedValue>();

/** Takes the decoded value equal to `bytes` if one is idle; the caller owns it now. */
export function checkOut(bytes: Uint8Array): DecodedValue | undefined {
  const decoded = idle.get(bytes);
  if (decoded) idle.delete(bytes);
  return decoded;
}

/** Whether a decoded value can be watched with proxies (plain objects and arrays). */
export function isPlainContainer(value: object): boolean {
  if (Array.isArray(value)) return true;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

export function decodedValue(root: object): DecodedValue {
  return { root, links: new Map(), starts: [], startsOf: undefined };
}

/** What `encodeChanges` found. */
export const UNCHANGED = Symbol('unchanged');

/** A new encoding spliced together, and the bounds of what may differ from the old one. */
export interface SplicedValue {
  next: Uint8Array;
  changedFrom: number;
  unchangedTail: number;
}

/** The value keeps its length: `bytes` (a copy, empty when nothing differs) replace as many at `at`. */
export interface Overwrite {
  overwrite: true;
  at: number;
  bytes: Uint8Array;
}

const DETACHED = Symbol('detached');

/**
 * Orders a request's writes against its commits. A commit that is not its request's
 * last (an awaited or fire-and-forget save()) is acknowledged after the request may have
 * written again: the acknowledgement clears only the writes the commit carried (stamped
 * up to the one its delta was taken at), never a later one.
 */
let writeClock = 0;

/** The stamp of the latest write: a delta taken now carries every write stamped up to it. */
export function lastWriteStamp(): number {
  return writeClock;
}

/** A stamp for a write happening now. */
export function nextWriteStamp(): number {
  return ++writeClock;
}
/** Size from which a spliced value is allocated without its zero fill (see encodeChanges). */
const UNFILLED_FROM = 4096;
/**
 * Size from which a value that keeps its length is overwritten instead of copied (see
 * encodeChanges): a fresh 20 KB copy per request cost 5-8 µs to allocate and fault in,
 * and its garbage the collector more; a small one costs little.
 */
const OVERWRITE_FROM = 4096;
/** Encoded size from which a top-level array's item starts are remembered (see DecodedValue.starts). */
const INDEXED_FROM = 1024;
const MAX_DEPTH = 1_000;
/** Objects written to, each in its own place, above which the value is encoded whole (see encodeChanges). */
const MAX_SPLICES = 64;

/**
 * One request's view of one decoded attribute value. It is its own Proxy handler (the
 * trap methods below), so watching costs one Proxy per object touched and nothing else.
 */
export class LiveValue implements ProxyHandler<object> {
  readonly proxy: object;
  /** Objects written to since the last commit, each with the stamp of its latest write. */
  dirty: Map<object, number> | undefined;
  /** The request may have changed the value where the proxies cannot see. */
  untracked = false;
  /** The last encodeChanges answered an Overwrite (see committed()). */
  private overwrote = false;
  private active = true;
  private readonly proxies = new Map<object, object>();

  constructor(readonly decoded: DecodedValue) {
    this.proxy = new Proxy(decoded.root, this);
    this.proxies.set(decoded.root, this.proxy);
  }

  /**
   * The value's new encoding, given `old` (the bytes it was decoded from or last
   * committed as): the changed objects re-encoded and spliced in. UNCHANGED when
   * nothing was written; undefined when the whole value must be encoded instead.
   * `changedFrom`/`changedTo` bound the bytes that may differ, for the diff.
   *
   * A large value whose changed objects encode to as many bytes as before (a quantity,
   * a flag, a timestamp) is not spliced into a new copy: the answer is an Overwrite,
   * the few bytes that differ and where. The commit then writes them over the cached
   * bytes themselves when nobody else can see those (see applyDelta), so a request
   * changing one field of a 20 KB list allocates nothing of 20 KB.
   */
  encodeChanges(name: string, old: Uint8Array): SplicedValue | Overwrite | typeof UNCHANGED | undefined {
    this.overwrote = false;
    if (this.untracked) return undefined;
    if (!this.dirty) return UNCHANGED;
    const written: { node: object; path: string[] }[] = [];
    for (const node of this.dirty.keys()) {
      const path = this.pathOf(node);
      if (path === DETACHED) continue; // replaced or deleted: its container is dirty too
      if (path === undefined) return undefined;
      written.push({ node, path });
    }
    // An object inside another written one is encoded with it. Shorter paths first, and
    // each path's ancestors looked up by key: linear in the objects written times their depth.
    written.sort((a, b) => a.path.length - b.path.length);
    const topKeys = new Set<string>();
    const tops: typeof written = [];
    for (const w of written) {
      let key = '';
      let inside = false;
      for (let depth = 0; depth < w.path.length && !inside; depth++) {
        inside = topKeys.has(key);
        const segment = w.path[depth]!;
        key += `${segment.length}:${segment}`; // length-prefixed: no two paths share a key
      }
      if (inside || topKeys.has(key)) continue;
      topKeys.add(key);
      tops.push(w);
    }
    if (tops.length === 0) return UNCHANGED;
    // Each splice walks the bytes to its place: past a few dozen, one whole encoding is cheaper.
    if (tops.length > MAX_SPLICES) return undefined;
    const ranges: { start: number; end: number; bytes: Uint8Array }[] = [];
    const decoded = this.decoded;
    // Checked against the bytes: a commit that failed leaves the starts of a value never adopted.
    const starts = old.length < INDEXED_FROM ? undefined : decoded.startsOf === old ? decoded.starts : [];
    for (const { node, path } of tops) {
      const range = locateValue(old, path, starts);
      if (!range) return undefined;
      ranges.push({ start: range[0], end: range[1], bytes: encodeAttribute(name, node) });
    }
    ranges.sort((a, b) => a.start - b.start);
    if (old.length >= OVERWRITE_FROM && ranges.every((r) => r.bytes.length === r.end - r.start)) {
      const overwrite = overwriteOf(old, ranges);
      // A change as large as a quarter of the value goes whole, as diffAttribute decides.
      if (overwrite.bytes.length <= old.length / 4) {
        if (starts && starts.length > 0) {
          decoded.starts = starts; // the same length: every item starts where it did
          decoded.startsOf = old;
        }
        this.overwrote = true;
        return overwrite;
      }
    }
    let length = old.length;
    for (const r of ranges) length += r.bytes.length - (r.end - r.start);
    // Every byte is written below, so a large value skips the zero fill: allocating a
    // zeroed 20 KB array was three quarters of this method's time under 1,000 sessions.
    const next = length >= UNFILLED_FROM ? Buffer.allocUnsafeSlow(length) : new Uint8Array(length);
    let from = 0;
    let to = 0;
    for (const r of ranges) {
      next.set(old.subarray(from, r.start), to);
      to += r.start - from;
      next.set(r.bytes, to);
      to += r.bytes.length;
      from = r.end;
    }
    next.set(old.subarray(from), to);
    // Nothing learnt (not a top-level list): the next commit starts from [] either way.
    if (starts && starts.length > 0) {
      shiftStartsPastSplice(starts, ranges);
      decoded.starts = starts;
      decoded.startsOf = next;
    }
    return { next, changedFrom: ranges[0]!.start, unchangedTail: old.length - ranges[ranges.length - 1]!.end };
  }

  /**
   * The writes stamped up to `upTo` are in `next`, the value's bytes after the commit
   * (`previous` before it); an object written again since stays dirty for the next
   * commit. An overwrite committed as a copy kept the length, so the item starts learnt
   * for `previous` hold for `next`.
   */
  committed(previous?: Uint8Array, next?: Uint8Array, upTo = Infinity): void {
    if (this.overwrote && next !== undefined && this.decoded.startsOf === previous) this.decoded.startsOf = next;
    this.overwrote = false;
    if (!this.dirty) return;
    for (const [node, stamp] of this.dirty) if (stamp <= upTo) this.dirty.delete(node);
    if (this.dirty.size === 0) this.dirty = undefined;
  }

  /** The request ended: later writes through its proxies are refused. */
  retire(): void {
    this.active = false;
  }

  /** The stamp of the latest write through this request's views (0 when none is pending). */
  get lastWrite(): number {
    let latest = 0;
    if (this.dirty) for (const stamp of this.dirty.values()) if (stamp > latest) latest = stamp;
    return latest;
  }

  /** Whether a write pending through this request's views was made by `upTo` (a commit taken then carried it). */
  wroteBy(upTo: number): boolean {
    if (this.dirty) for (const stamp of this.dirty.values()) if (stamp <= upTo) return true;
    return false;
  }

  /** Whether the tree equals the committed bytes and nothing outside can change it. */
  get reusable(): boolean {
    return !this.untracked && this.dirty === undefined;
  }

  // ---- Proxy traps --------------------------------------------------------------------

  get(target: object, key: string | symbol): unknown {
    const value = (target as Record<string | symbol, unknown>)[key];
    if (typeof value !== 'object' || value === null || typeof key === 'symbol') return value;
    return this.child(target, key, value);
  }

  set(target: object, key: string | symbol, value: unknown): boolean {
    this.assertActive();
    const type = typeof value;
    // What the encoding would not give back as written makes the tree differ from its
    // bytes: a named property of an array (not encoded), a string with a lone surrogate
    // (it comes back as U+FFFD).
    if (typeof key === 'symbol' || (type === 'object' && value !== null) || type === 'function' || type === 'symbol' || type === 'bigint' || (type === 'string' && LONE_SURROGATE.test(value as string)) || (Array.isArray(target) && key !== 'length' && !isArrayIndex(key))) {
      this.untracked = true;
    } else {
      (this.dirty ??= new Map()).set(target, nextWriteStamp());
    }
    return Reflect.set(target, key, value);
  }

  deleteProperty(target: object, key: string | symbol): boolean {
    this.assertActive();
    (this.dirty ??= new Map()).set(target, nextWriteStamp());
    if (typeof key === 'symbol') this.untracked = true;
    return Reflect.deleteProperty(target, key);
  }

  defineProperty(target: object, key: string | symbol, descriptor: PropertyDescriptor): boolean {
    this.assertActive();
    this.untracked = true;
    return Reflect.defineProperty(target, key, descriptor);
  }

  setPrototypeOf(target: object, proto: object | null): boolean {
    this.assertActive();
    this.untracked = true;
    return Reflect.setPrototypeOf(target, proto);
  }

  preventExtensions(target: object): boolean {
    this.assertActive();
    this.untracked = true;
    return Reflect.preventExtensions(target);
  }

  getOwnPropertyDescriptor(target: object, key: string | symbol): PropertyDescriptor | undefined {
    const descriptor = Reflect.getOwnPropertyDescriptor(target, key);
    if (!descriptor || typeof key === 'symbol' || typeof descriptor.value !== 'object' || descriptor.value === null) return descriptor;
    // A proxy may report another value only for a configurable property (its invariant).
    if (!descriptor.configurable) {
      this.untracked = true;
      return descriptor;
    }
    descriptor.value = this.child(target, key, descriptor.value as object);
    return descriptor;
  }

  // ---- internals ----------------------------------------------------------------------

  private child(parent: object, key: string, value: object): unknown {
    let proxy = this.proxies.get(value);
    if (proxy) return proxy;
    if (!isPlainContainer(value)) {
      this.untracked = true;
      return value;
    }
    proxy = new Proxy(value, this);
    this.proxies.set(value, proxy);
    this.decoded.links.set(value, { parent, key });
    return proxy;
  }

  /** Keys from the root to `node`, DETACHED if it is no longer in the tree, undefined if unknown. */
  private pathOf(node: object): string[] | typeof DETACHED | undefined {
    const path: string[] = [];
    const root = this.decoded.root;
    for (let current = node; current !== root; ) {
      const link = this.decoded.links.get(current);
      if (!link || path.length > MAX_DEPTH) return undefined;
      if ((link.parent as Record<string, unknown>)[link.key] !== current) return DETACHED;
      path.push(link.key);
      current = link.parent;
    }
    return path.reverse();
  }

  private assertActive(): void {
    if (!this.active) {
      throw new KilnError('KILN_ERR_CLOSED', 'a session value was changed after the end of its request; change the session inside the request (or copy the value first)');
    }
  }
}

/**
 * Moves item starts past `ranges` (sorted, disjoint) replaced in the bytes; those inside
 * a replaced range are dropped with all after them. In place: a new array per commit
 * outlived its request (it stays with the value) and was promoted, only to die at the
 * next commit, a kilobyte of old-space garbage per request on a 20 KB list.
 */
function shiftStartsPastSplice(starts: number[], ranges: readonly { start: number; end: number; bytes: Uint8Array }[]): void {
  let shift = 0;
  let r = 0;
  let kept = 0;
  for (; kept < starts.length; kept++) {
    const start = starts[kept]!;
    while (r < ranges.length && ranges[r]!.end <= start) {
      shift += ranges[r]!.bytes.length - (ranges[r]!.end - ranges[r]!.start);
      r++;
    }
    if (r < ranges.length && ranges[r]!.start < start) break; // rewritten: unknown from here on
    starts[kept] = start + shift;
  }
  starts.length = kept;
}

/**
 * `ranges` (sorted, disjoint, each as long as what it replaces) as one patch over `old`:
 * the bytes from the first byte that differs to the last, copied (never a view of a
 * value that may be rewritten later). Empty when every range encodes as before.
 */
function overwriteOf(old: Uint8Array, ranges: readonly { start: number; end: number; bytes: Uint8Array }[]): Overwrite {
  const from = ranges[0]!.start;
  const span = copyBytes(old, from, ranges[ranges.length - 1]!.end);
  for (const r of ranges) span.set(r.bytes, r.start - from);
  let first = 0;
  while (first < span.length && span[first] === old[from + first]) first++;
  let last = span.length;
  while (last > first && span[last - 1] === old[from + last - 1]) last--;
  return { overwrite: true, at: from + first, bytes: span.subarray(first, last) };
}

/** Puts a decoded value back for the next request, filed under the bytes it equals. */
export function checkIn(bytes: Uint8Array, decoded: DecodedValue): void {
  idle.set(bytes, decoded);
}

/** A lone UTF-16 surrogate (a pair, an emoji, round-trips through UTF-8; a lone one comes back as U+FFFD). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A canonical array index ("0", "17"; not "01", "-1" or "1e3"). */
function isArrayIndex(key: string): boolean {
  if (key.length === 0 || key.length > 10) return false;
  if (key === '0') return true;
  const first = key.charCodeAt(0);
  if (first < 49 || first > 57) return false;
  for (let i = 1; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return Number(key) < 4294967295;
}
