import { bytesEqual, decodeAttribute, encodeAttribute } from './codec.js';
import type { AttributeDelta } from './model.js';

/**
 * What one request did to a session's attributes. Values are decoded lazily, once, on
 * first read, and the same object is handed out again, so in-place mutation
 * (`get('cart').push(x)`) is caught at commit time by re-encoding what was read and
 * comparing bytes with what was loaded. Attributes never read are never decoded nor
 * sent: the commit of a request that changed one field of a 20 KB session carries that
 * field alone.
 */
export class DeltaTracker {
  private readonly values = new Map<string, unknown>();
  private readonly written = new Set<string>();
  private readonly deleted = new Set<string>();

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
    this.written.add(name);
    this.deleted.delete(name);
  }

  delete(name: string): void {
    this.values.delete(name);
    this.written.delete(name);
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
    for (const [name, value] of this.values) {
      // A primitive that was only read cannot have changed: skip its re-encode.
      if (!this.written.has(name) && (typeof value !== 'object' || value === null)) continue;
      const bytes = encodeAttribute(name, value);
      const old = this.base.get(name);
      if (old === undefined || !bytesEqual(old, bytes)) set.push([name, bytes]);
    }
    const del: string[] = [];
    for (const name of this.deleted) if (this.base.has(name)) del.push(name);
    return { set, del };
  }

  /** After a commit: the committed state is the new base, live values stay handed out. */
  rebase(base: ReadonlyMap<string, Uint8Array>): void {
    this.base = base;
    this.written.clear();
    this.deleted.clear();
  }
}

export function applyDelta(base: ReadonlyMap<string, Uint8Array>, delta: AttributeDelta): Map<string, Uint8Array> {
  const next = new Map(base);
  for (const name of delta.del) next.delete(name);
  for (const [name, value] of delta.set) next.set(name, value);
  return next;
}
