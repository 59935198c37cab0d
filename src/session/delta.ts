import { bytesEqual, decodeAttribute, encodeAttribute } from './codec.js';
import { applyPatch, diffAttribute, type AttributeDelta, type AttributePatch } from './model.js';

/**
 * What one request did to a session's attributes. Values are decoded lazily, once, on
 * first read, and the same object is handed out again, so in-place mutation
 * (`get('cart').push(x)`) is caught at commit time by re-encoding what was read and
 * comparing bytes with what was loaded. Attributes never read are never decoded nor
 * sent: the commit of a request that changed one field of a 20 KB session carries that
 * field alone.
 */
/** The empty set every tracker starts with; never added to (see set/delete). */
const NONE: Set<string> = new Set();

export class DeltaTracker {
  private readonly values = new Map<string, unknown>();
  // Most requests write nothing: these stay empty shared sets until the first write.
  private written: Set<string> = NONE;
  private deleted: Set<string> = NONE;

  constructor(private base: ReadonlyMap<string, Uint8Array>) {}

  get(name: string): unknown {
    if (this.values.has(name)) return this.values.get(name);
    if (this.deleted.has(name)) return undefined;
    const bytes = this.base.get(name);
    if (bytes === undefined) return undefined;
    const value = decodeAttribute(bytes);
    this.values.set(name, value);
    return value;
  }

  set(name: string, value: unknown): void {
    if (value === undefined) {
      this.delete(name);
      return;
    }
    this.values.set(name, value);
    if (this.written === NONE) this.written = new Set();
    this.written.add(name);
    this.deleted.delete(name);
  }

  delete(name: string): void {
    this.values.delete(name);
    this.written.delete(name);
    if (this.deleted === NONE) this.deleted = new Set();
    this.deleted.add(name);
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

  /** True when nothing could have changed: no write, no delete, no object read. */
  get pristine(): boolean {
    if (this.written.size > 0 || this.deleted.size > 0) return false;
    for (const value of this.values.values()) if (typeof value === 'object' && value !== null) return false;
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
      const bytes = encodeAttribute(name, value);
      const old = this.base.get(name);
      if (old === undefined) set.push([name, bytes]);
      else if (!bytesEqual(old, bytes)) {
        // A large value changed in one place (a field of one item of a list) sends that place only.
        const p = diffAttribute(name, old, bytes);
        if (p) (patch ??= []).push(p);
        else set.push([name, bytes]);
      }
    }
    const del: string[] = [];
    for (const name of this.deleted) if (this.base.has(name)) del.push(name);
    return patch ? { set, del, patch } : { set, del };
  }

  /** After a commit: the committed state is the new base, live values stay handed out. */
  rebase(base: ReadonlyMap<string, Uint8Array>): void {
    this.base = base;
    this.written = NONE;
    this.deleted = NONE;
  }
}

export function applyDelta(base: ReadonlyMap<string, Uint8Array>, delta: AttributeDelta): Map<string, Uint8Array> {
  const next = new Map(base);
  for (const name of delta.del) next.delete(name);
  for (const [name, value] of delta.set) next.set(name, value);
  for (const p of delta.patch ?? []) next.set(p.name, p.value ?? applyPatch(base.get(p.name)!, p));
  return next;
}

/** The same change with every patch turned into a whole value (to merge deltas, or where patches cannot go). */
export function withoutPatches(delta: AttributeDelta, base: ReadonlyMap<string, Uint8Array>): AttributeDelta {
  if (!delta.patch?.length) return delta;
  return { set: [...delta.set, ...delta.patch.map((p): [string, Uint8Array] => [p.name, p.value ?? applyPatch(base.get(p.name)!, p)])], del: delta.del };
}
