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
const packr = new Packr({ useRecords: false, moreTypes: true, variableMapSize: true });

export type EncodedAttribute = Uint8Array;

/** Encodes one attribute value; throws KILN_ERR_UNSERIALIZABLE naming `name`. */
export function encodeAttribute(name: string, value: unknown): EncodedAttribute {
  assertEncodable(name, value);
  try {
    return packr.pack(value);
  } catch (err) {
    throw new KilnError('KILN_ERR_UNSERIALIZABLE', `session attribute "${name}" cannot be encoded: ${(err as Error).message}`, { cause: err, details: { attribute: name } });
  }
}

export function decodeAttribute(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

function assertEncodable(name: string, value: unknown): void {
  const type = typeof value;
  if (type === 'function' || type === 'symbol') fail(name, '', type);
  if (type !== 'object' || value === null) return;
  walk(name, value as object, '', new Set());
}

// Only containers can hide functions or cycles; scalars return at once, so the walk
// costs one visit per object or array.
function walk(name: string, value: object, path: string, ancestors: Set<object>): void {
  if (ancestors.has(value)) fail(name, path, 'a circular reference');
  if (ArrayBuffer.isView(value) || value instanceof Date || value instanceof RegExp) return;
  ancestors.add(value);
  const visit = (child: unknown, key: string): void => {
    const type = typeof child;
    if (type === 'function' || type === 'symbol') fail(name, key, type);
    if (type === 'object' && child !== null) walk(name, child as object, key, ancestors);
  };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) visit(value[i], `${path}[${i}]`);
  } else if (value instanceof Map) {
    for (const [k, v] of value) {
      visit(k, `${path}<key>`);
      visit(v, `${path}.get(${String(k)})`);
    }
  } else if (value instanceof Set) {
    for (const v of value) visit(v, `${path}<member>`);
  } else {
    for (const key of Object.keys(value)) visit((value as Record<string, unknown>)[key], path ? `${path}.${key}` : key);
  }
  ancestors.delete(value);
}

function fail(name: string, path: string, what: string): never {
  const where = path ? `${name}.${path}`.replace('.[', '[') : name;
  throw new KilnError('KILN_ERR_UNSERIALIZABLE', `session attribute "${name}" cannot be encoded: ${where} is ${what}`, { details: { attribute: name, path: where } });
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
