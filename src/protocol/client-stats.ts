/**
 * An app server's report of its own figures (SessionClient.stats(): owner id, leases,
 * near cache, counters), as the console keeps it. The report is another process's
 * writing, sent to the kiln server (ClientStats) or stored in Redis, and the console
 * hands it to /metrics (where prom-client throws on a gauge that is not a number, failing
 * every scrape of the tier), the page and the CLI. So only its shape is kept: at the top,
 * finite numbers, booleans and strings of at most MAX_TEXT characters; one level below
 * (`cache`, `counters`), finite numbers only; at most MAX_KEYS keys at each level.
 * Anything else is dropped, not refused: the report is figures to show, and the rest of
 * it still is.
 *
 * In protocol/, with no imports: the kiln server's connection applies it where a report
 * arrives (ClientStats), as the Redis console does where it reads one.
 */
const MAX_KEYS = 64;
const MAX_KEY_CHARS = 64;
const MAX_TEXT = 256;

/** The report's figures, or null when it is not an object at all. */
export function clientStatsFrom(value: unknown): Record<string, unknown> | null {
  if (!isRecord(value)) return null;
  const out: Record<string, unknown> = {};
  let kept = 0;
  for (const [key, v] of Object.entries(value)) {
    if (kept >= MAX_KEYS) break;
    if (key.length > MAX_KEY_CHARS) continue;
    let shown: unknown;
    if (isFigure(v) || typeof v === 'boolean') shown = v;
    else if (typeof v === 'string') shown = v.slice(0, MAX_TEXT);
    else if (isRecord(v)) shown = figuresOf(v);
    else continue;
    // Defined as own properties: a key named __proto__ stays a key.
    Object.defineProperty(out, key, { value: shown, enumerable: true, writable: true, configurable: true });
    kept++;
  }
  return out;
}

/** A finite number, else 0: what a gauge may be set to. */
export function figure(value: unknown): number {
  return isFigure(value) ? value : 0;
}

function figuresOf(record: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  let kept = 0;
  for (const [key, v] of Object.entries(record)) {
    if (kept >= MAX_KEYS) break;
    if (key.length > MAX_KEY_CHARS || !isFigure(v)) continue;
    Object.defineProperty(out, key, { value: v, enumerable: true, writable: true, configurable: true });
    kept++;
  }
  return out;
}

function isFigure(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
