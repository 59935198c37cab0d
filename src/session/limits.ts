import { KilnError } from '../errors/index.js';
import { OptionReader } from '../util/options.js';
import type { AttributeDelta, AttributePatch } from './model.js';

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
 * The `limits` option of a server or engine, checked up front and merged over the
 * defaults: an unknown name, or a value that is not a whole number in range, is
 * KILN_ERR_INVALID_OPTION naming it (a limit of 0, or a string, made every commit fail
 * under load instead of at start).
 *
 * @example
 * const limits = sessionLimitsOption({ maxSessionBytes: 65_536 }, 'KilnServer');
 */
export function sessionLimitsOption(value: unknown, scope: string): SessionLimits {
  const o = new OptionReader(`${scope} limits`, value as Partial<SessionLimits> | undefined, Object.keys(DEFAULT_SESSION_LIMITS));
  const GIB = 1024 * 1024 * 1024;
  return {
    maxAttributeBytes: o.int('maxAttributeBytes', DEFAULT_SESSION_LIMITS.maxAttributeBytes, 1, GIB),
    maxSessionBytes: o.int('maxSessionBytes', DEFAULT_SESSION_LIMITS.maxSessionBytes, 1, GIB),
    maxAttributes: o.int('maxAttributes', DEFAULT_SESSION_LIMITS.maxAttributes, 1, 1_000_000),
    maxAttributeNameLength: o.int('maxAttributeNameLength', DEFAULT_SESSION_LIMITS.maxAttributeNameLength, 1, 65_535),
    maxPrincipalLength: o.int('maxPrincipalLength', DEFAULT_SESSION_LIMITS.maxPrincipalLength, 1, 65_535),
  };
}

/**
 * Refuses a delta that names one attribute twice: twice among `set` and `patch`, twice in
 * `del`, or both patched and deleted. Each engine counts a session's bytes and attributes
 * from the delta before applying it, so a repeated name would be counted twice and the
 * session's byte count would stay wrong after the value is gone; and the engines would
 * not agree on which of two values wins. (A name both deleted and set is allowed: the
 * delete applies first.) Every engine calls this before it counts; the client's own
 * deltas come from a Map and never repeat a name.
 */
export function checkDeltaNames(delta: AttributeDelta): void {
  const { set, del } = delta;
  const patch = delta.patch ?? NO_PATCHES;
  const named = set.length + patch.length;
  if (named > 1) {
    const repeated = firstRepeated(named, (i) => (i < set.length ? set[i]![0] : patch[i - set.length]!.name));
    if (repeated !== undefined) throw repeatedName(repeated, 'is set or patched twice in one commit');
  }
  if (del.length > 1) {
    const repeated = firstRepeated(del.length, (i) => del[i]!);
    if (repeated !== undefined) throw repeatedName(repeated, 'is deleted twice in one commit');
  }
  if (patch.length > 0 && del.length > 0) {
    const deleted = patch.length * del.length > 64 ? new Set(del) : undefined;
    for (const p of patch) {
      if (deleted ? deleted.has(p.name) : del.includes(p.name)) throw repeatedName(p.name, 'is both patched and deleted in one commit');
    }
  }
}

const NO_PATCHES: readonly AttributePatch[] = Object.freeze([]);

function repeatedName(name: string, what: string): KilnError {
  const shown = String(name).slice(0, 64);
  return new KilnError('KILN_ERR_INVALID_ARGUMENT', `session attribute "${shown}" ${what}`, { details: { attribute: shown } });
}

/** The first name seen twice among `count`; a pairwise scan for the usual handful, a Set beyond. */
export function firstRepeated(count: number, nameAt: (i: number) => string): string | undefined {
  if (count <= 8) {
    for (let i = 1; i < count; i++) {
      const name = nameAt(i);
      for (let j = 0; j < i; j++) if (nameAt(j) === name) return name;
    }
    return undefined;
  }
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const name = nameAt(i);
    if (seen.has(name)) return name;
    seen.add(name);
  }
  return undefined;
}

/**
 * Checks a delta against the limits, given the current attribute sizes. The delta names
 * each attribute once (checkDeltaNames).
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
  // Deletes are checked per set name: a Set keeps a long list of both linear.
  const deleted = delta.del.length > 8 && delta.set.length > 0 ? new Set(delta.del) : undefined;
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
    if (old && !(deleted ? deleted.has(name) : delta.del.includes(name))) {
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
