import { KilnError } from '../errors/index.js';
import type { AttributeDelta } from './model.js';

/**
 * Hard limits on what a session may hold. The client checks them before sending (so
 * the error names the attribute at once) and the server checks them again (it trusts
 * no client). A commit that breaks any limit changes nothing.
 */
export interface SessionLimits {
  /** Largest encoded attribute value, bytes. */
  maxAttributeBytes: number;
  /** Largest session: sum of attribute names and encoded values, bytes. */
  maxSessionBytes: number;
  /** Most attributes one session may hold. */
  maxAttributes: number;
  /** Longest attribute name, characters. */
  maxAttributeNameLength: number;
  /** Longest principal, characters. */
  maxPrincipalLength: number;
}

export const DEFAULT_SESSION_LIMITS: Readonly<SessionLimits> = Object.freeze({
  maxAttributeBytes: 1024 * 1024,
  maxSessionBytes: 4 * 1024 * 1024,
  maxAttributes: 1000,
  maxAttributeNameLength: 256,
  maxPrincipalLength: 256,
});

/**
 * Checks a delta against the limits, given the current attribute sizes.
 * Returns the session's byte size after the delta.
 */
export function checkDeltaLimits(
  current: ReadonlyMap<string, { length: number }>,
  currentBytes: number,
  delta: AttributeDelta,
  limits: SessionLimits,
): number {
  let bytes = currentBytes;
  let count = current.size;
  for (const name of delta.del) {
    const old = current.get(name);
    if (old) {
      bytes -= name.length + old.length;
      count--;
    }
  }
  for (const [name, value] of delta.set) {
    checkAttributeName(name, limits);
    if (value.length > limits.maxAttributeBytes) {
      throw new KilnError('KILN_ERR_ATTRIBUTE_TOO_LARGE', `session attribute "${name}" is ${value.length} bytes encoded, above maxAttributeBytes ${limits.maxAttributeBytes}`, { details: { attribute: name, bytes: value.length, limit: limits.maxAttributeBytes } });
    }
    const old = current.get(name);
    if (old && !delta.del.includes(name)) {
      bytes -= name.length + old.length;
    } else {
      count++;
    }
    bytes += name.length + value.length;
  }
  for (const p of delta.patch ?? []) {
    checkAttributeName(p.name, limits);
    const length = p.baseLength - p.cut + p.bytes.length;
    if (length > limits.maxAttributeBytes) {
      throw new KilnError('KILN_ERR_ATTRIBUTE_TOO_LARGE', `session attribute "${p.name}" would be ${length} bytes encoded, above maxAttributeBytes ${limits.maxAttributeBytes}`, { details: { attribute: p.name, bytes: length, limit: limits.maxAttributeBytes } });
    }
    bytes += length - p.baseLength;
  }
  if (count > limits.maxAttributes) {
    throw new KilnError('KILN_ERR_TOO_MANY_ATTRIBUTES', `session would hold ${count} attributes, above maxAttributes ${limits.maxAttributes}`, { details: { count, limit: limits.maxAttributes } });
  }
  if (bytes > limits.maxSessionBytes) {
    throw new KilnError('KILN_ERR_SESSION_TOO_LARGE', `session would be ${bytes} bytes, above maxSessionBytes ${limits.maxSessionBytes}`, { details: { bytes, limit: limits.maxSessionBytes } });
  }
  return bytes;
}

/** An attribute name within maxAttributeNameLength and not a prototype path (every engine checks it before storing). */
export function checkAttributeName(name: unknown, limits: SessionLimits): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > limits.maxAttributeNameLength) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `attribute name must be 1 to ${limits.maxAttributeNameLength} characters`, { details: { attribute: String(name).slice(0, 64) } });
  }
  if (LONE_SURROGATE.test(name)) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'attribute name must be well-formed Unicode (it holds a lone surrogate)', { details: { attribute: name.slice(0, 64) } });
  assertSafeAttributeName(name);
}

/**
 * A UTF-16 surrogate without its pair. Such a string has no UTF-8 form: stored as bytes
 * (the tier keeps names, principals and ids as UTF-8) it would come back as another
 * string, and an index keyed by the original would no longer find it.
 */
const LONE_SURROGATE = /\p{Surrogate}/u;

/**
 * Names that, as keys of an object built from a session (express-session's Session,
 * toJSON(), a store's get()), give it a prototype: `Object.assign(req.session, req.body)`
 * with a JSON body `{"__proto__": {"isAdmin": true}}` would otherwise store one that
 * every later request inherits from.
 */
const PROTOTYPE_PATHS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

export function isPrototypePath(name: string): boolean {
  return PROTOTYPE_PATHS.has(name);
}

/** Refuses `__proto__`, `constructor` and `prototype` as attribute names (client and server alike). */
export function assertSafeAttributeName(name: string): void {
  if (PROTOTYPE_PATHS.has(name)) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `"${name}" cannot be a session attribute name: objects built from the session would take it as their prototype`, { details: { attribute: name } });
  }
}

/** A commit's principal: undefined (unchanged), null (cleared) or 1 to maxPrincipalLength characters. */
export function checkPrincipal(principal: string | null | undefined, limits: SessionLimits): void {
  if (typeof principal === 'string' && (principal.length === 0 || principal.length > limits.maxPrincipalLength)) {
    throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `principal must be 1 to ${limits.maxPrincipalLength} characters`);
  }
  if (typeof principal === 'string' && LONE_SURROGATE.test(principal)) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'principal must be well-formed Unicode (it holds a lone surrogate)');
}
