import { Packr } from 'msgpackr';
import { KilnError } from '../errors/index.js';

/**
 * Attribute values are encoded one by one with MessagePack (msgpackr). Compared with
 * express-session's JSON this keeps Date, BigInt, Set, typed arrays and RegExp. A Map
 * comes back as a plain object with string keys (JSON would have dropped its entries),
 * and class instances as plain objects, as with JSON.
 *
 * Values that cannot round-trip are refused up front with KILN_ERR_UNSERIALIZABLE
 * naming the attribute and the path inside it, rather than silently dropped:
 * functions, symbols and circular structures.
 */
const packr = new Packr({ useRecords: false, moreTypes: true });
/**
 * The same format for values made of plain objects, arrays, strings, numbers, booleans,
 * null and Dates only (nearly all sessions): about twice as fast, because it skips the
 * per-object search for the extra types. Both write identical bytes for such values, so
 * patches between them stay small, and `packr` decodes everything.
 */
const plainPackr = new Packr({ useRecords: false });
/**
 * The two above write every object's key count in 16 bits (their fast path), so an
 * object with 65,536 keys or more needs the variable-size header. Only values that hold
 * such an object use this one: everything else keeps the fast path and its exact bytes.
 */
const widePackr = new Packr({ useRecords: false, moreTypes: true, variableMapSize: true });
const FAST_MAP_MAX_KEYS = 0xffff;

export type EncodedAttribute = Uint8Array;

/** Encodes one attribute value; throws KILN_ERR_UNSERIALIZABLE naming `name`. */
export function encodeAttribute(name: string, value: unknown): EncodedAttribute {
  const shape = assertEncodable(name, value);
  try {
    return (shape === WIDE ? widePackr : shape === PLAIN ? plainPackr : packr).pack(value);
  } catch (err) {
    throw new KilnError('KILN_ERR_UNSERIALIZABLE', `session attribute "${name}" cannot be encoded: ${(err as Error).message}`, { cause: err, details: { attribute: name } });
  }
}

export function decodeAttribute(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

/** What the walk found: plain data only, extra types, or an object too wide for the fast path. */
const PLAIN = 0;
const EXTRA_TYPES = 1;
const WIDE = 2;
type Shape = typeof PLAIN | typeof EXTRA_TYPES | typeof WIDE;

/** Throws on what cannot round-trip; returns which encoder the value needs. */
function assertEncodable(name: string, value: unknown): Shape {
  const type = typeof value;
  if (type === 'function' || type === 'symbol') fail(name, [], type);
  if (type === 'bigint') return EXTRA_TYPES;
  if (type !== 'object' || value === null) return PLAIN;
  const found = { plain: true, wide: false };
  walk(name, value as object, [], new Set(), found);
  return found.wide ? WIDE : found.plain ? PLAIN : EXTRA_TYPES;
}

// Only containers can hide functions or cycles; scalars return at once, so the walk
// costs one visit per object or array. The path is a stack of keys, turned into text
// only when something is wrong.
function walk(name: string, value: object, path: (string | number)[], ancestors: Set<object>, found: { plain: boolean; wide: boolean }): void {
  if (ancestors.has(value)) fail(name, path, 'a circular reference');
  if (value instanceof Date) return;
  if (ArrayBuffer.isView(value) || value instanceof RegExp) {
    found.plain = false;
    return;
  }
  ancestors.add(value);
  const visit = (child: unknown, key: string | number): void => {
    const type = typeof child;
    if (type === 'object' && child !== null) {
      path.push(key);
      walk(name, child as object, path, ancestors, found);
      path.pop();
    } else if (type === 'function' || type === 'symbol') {
      path.push(key);
      fail(name, path, type);
    } else if (type === 'bigint') {
      found.plain = false;
    }
  };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) visit(value[i], i);
  } else if (value instanceof Map) {
    found.plain = false;
    for (const [k, v] of value) {
      visit(k, '<key>');
      visit(v, `.get(${String(k)})`);
    }
  } else if (value instanceof Set) {
    found.plain = false;
    for (const v of value) visit(v, '<member>');
  } else {
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) found.plain = false;
    let keys = 0;
    for (const key in value) {
      if (!Object.hasOwn(value, key)) continue;
      keys++;
      visit((value as Record<string, unknown>)[key], key);
    }
    if (keys > FAST_MAP_MAX_KEYS) found.wide = true;
  }
  ancestors.delete(value);
}

/** `cart[2].sku`, `prefs.get(theme)`, … from the stack of keys. */
function pathText(name: string, path: readonly (string | number)[]): string {
  let out = name;
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : key.startsWith('<') || key.startsWith('.get(') ? key : `.${key}`;
  return out;
}

function fail(name: string, path: readonly (string | number)[], what: string): never {
  const where = pathText(name, path);
  throw new KilnError('KILN_ERR_UNSERIALIZABLE', `session attribute "${name}" cannot be encoded: ${where} is ${what}`, { details: { attribute: name, path: where } });
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
