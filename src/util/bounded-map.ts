/**
 * Sets `key` in a Map used as a bounded memory, the oldest entry (insertion order) out
 * first once it holds `max`: caches and notes that a hostile or busy peer could
 * otherwise grow without limit.
 *
 * @example
 * rememberBounded(verified, cookieValue, sessionId, 10_000);
 */
export function rememberBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  if (map.size >= max && !map.has(key)) map.delete(map.keys().next().value as K);
  map.set(key, value);
}
